"""UE placement and the ES->UE downlink of the personalised intermediate result (Eqs. 14-15).

UEs lie uniformly over the annulus between the configured radii around the ES (the paper: 50 to
300 m). The channel gain is large-scale path loss, PL(d) = a + b log10(d / 1 km) dB (3GPP-style
macro-cell model; a = 128.1, b = 37.6 by default), times Rayleigh small-scale fading (unit-mean
exponential power gain) when enabled, drawn afresh at every decision point. The formulas run on numpy arrays and torch tensors alike
(`his_common.arrays`); the vectorised env draws the same distributions with torch.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from his_common.arrays import namespace

if TYPE_CHECKING:  # his_env.config imports the dynamics' config, whose mobility model imports this module
    from his_env.config import ChannelConfig


def distance_from_area_fraction(fraction, radius_range: tuple[float, float]):
    """Distance (m) of a UE at `fraction` in [0, 1) of the annulus area: r = sqrt(r_lo^2 + u (r_hi^2 - r_lo^2))."""
    lo, hi = radius_range
    return namespace(fraction).sqrt(lo * lo + (hi * hi - lo * lo) * fraction)


def sample_distances(rng: np.random.Generator, num_ues: int, radius_range: tuple[float, float]) -> np.ndarray:
    """Distances (m) of UEs uniform over the annulus area."""
    return distance_from_area_fraction(rng.random(num_ues), radius_range)


def path_gain(distance_m, cfg: ChannelConfig):
    """Large-scale linear power gain 10^(-PL(d) / 10), PL(d) = a + b log10(d / 1 km)."""
    xp = namespace(distance_m)
    path_loss_db = cfg.path_loss_db_at_1km + cfg.path_loss_slope_db * xp.log10(distance_m / 1000.0)
    return xp.exp(path_loss_db * (-math.log(10.0) / 10.0))  # 10^(-PL / 10)


def channel_gain(rng: np.random.Generator, distance_m: np.ndarray, cfg: ChannelConfig) -> np.ndarray:
    """Linear power gain g_n: path loss and, if enabled, Rayleigh fading (unit-mean exponential power)."""
    gain = path_gain(distance_m, cfg)
    if cfg.rayleigh_fading:
        gain = gain * rng.exponential(1.0, size=np.shape(distance_m))
    return gain


def downlink_rate(gain, cfg: ChannelConfig):
    """Eq. (15): r_n = b_n log2(1 + p_n g_n / (sigma_0^2 b_n)), in bit/s."""
    noise_w_per_hz = 10.0 ** ((cfg.noise_psd_dbm_per_hz - 30.0) / 10.0)
    snr = cfg.transmit_power_w * gain / (noise_w_per_hz * cfg.bandwidth_hz)
    return cfg.bandwidth_hz * namespace(gain).log2(1.0 + snr)


def latent_bits(cfg: ChannelConfig) -> float:
    """Size of one intermediate result on the air: n_h n_w n_c varrho / tau bits (Eq. 14)."""
    n_h, n_w, n_c = cfg.latent_shape
    return n_h * n_w * n_c * cfg.bits_per_value / cfg.compression_ratio
