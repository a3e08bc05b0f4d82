"""UE placement and the ES->UE downlink of the personalised intermediate result (Eqs. 14-15).

UEs lie uniformly over the annulus between the configured radii around the ES (the paper: 50 to
300 m). The channel gain is large-scale path loss, PL(d) = a + b log10(d / 1 km) dB (3GPP-style
macro-cell model; a = 128.1, b = 37.6 by default), times Rayleigh small-scale fading (unit-mean
exponential power gain) when enabled, drawn afresh at every decision point.
"""
from __future__ import annotations

import numpy as np

from his_env.config import ChannelConfig


def sample_distances(rng: np.random.Generator, num_ues: int, radius_range: tuple[float, float]) -> np.ndarray:
    """Distances (m) of UEs uniform over the annulus area: r = sqrt(U(r_lo^2, r_hi^2))."""
    lo, hi = radius_range
    return np.sqrt(rng.uniform(lo * lo, hi * hi, size=num_ues))


def channel_gain(rng: np.random.Generator, distance_m: np.ndarray, cfg: ChannelConfig) -> np.ndarray:
    """Linear power gain g_n: path loss and, if enabled, Rayleigh fading."""
    path_loss_db = cfg.path_loss_db_at_1km + cfg.path_loss_slope_db * np.log10(distance_m / 1000.0)
    gain = 10.0 ** (-path_loss_db / 10.0)
    if cfg.rayleigh_fading:
        gain = gain * rng.exponential(1.0, size=np.shape(distance_m))
    return gain


def downlink_rate(gain: np.ndarray, cfg: ChannelConfig) -> np.ndarray:
    """Eq. (15): r_n = b_n log2(1 + p_n g_n / (sigma_0^2 b_n)), in bit/s."""
    noise_w_per_hz = 10.0 ** ((cfg.noise_psd_dbm_per_hz - 30.0) / 10.0)
    snr = cfg.transmit_power_w * gain / (noise_w_per_hz * cfg.bandwidth_hz)
    return cfg.bandwidth_hz * np.log2(1.0 + snr)


def latent_bits(cfg: ChannelConfig) -> float:
    """Size of one intermediate result on the air: n_h n_w n_c varrho / tau bits (Eq. 14)."""
    n_h, n_w, n_c = cfg.latent_shape
    return n_h * n_w * n_c * cfg.bits_per_value / cfg.compression_ratio
