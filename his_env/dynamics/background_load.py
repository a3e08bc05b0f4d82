"""ES background load: the SMs other tenants use, a bounded AR(1) process per ES.

The latent load (in SMs) follows

    x_t = mu + phi (x_{t-1} - mu) + sigma sqrt(1 - phi^2) e_t,    e_t ~ N(0, 1)

(a Gaussian AR(1) with stationary mean mu, variance sigma^2 and autocorrelation phi^k at lag k;
Box & Jenkins, Time Series Analysis, ch. 3). The latent value is the state and is never clipped,
so its statistics are exactly these; what the ES sees is the load rounded to whole SMs and
clipped to [0, v_hi - v_lo], so the SMs left to HIS, v_max^ES = v_hi - load, stay inside Table
II's `es.sm_range` [v_lo, v_hi]. The ES then has all v_hi SMs when no one else needs any.

State: `latent_load` float (...) per env (a 0-d array in the PettingZoo env).
"""
from __future__ import annotations

import math

from his_common.arrays import namespace

from his_env.dynamics import draws
from his_env.dynamics._ops import round_half_up


def initial_background_load(normal, mean_sms: float, std_sms: float):
    """Stationary start x_0 ~ N(mu, sigma^2) from standard normals (...)."""
    return mean_sms + std_sms * normal


def background_load_step(latent_load, normal, mean_sms: float, std_sms: float, correlation: float):
    """x_t = mu + phi (x_{t-1} - mu) + sigma sqrt(1 - phi^2) e_t (unclipped)."""
    if not -1.0 < correlation < 1.0:
        raise ValueError(f"background-load correlation phi={correlation}; allowed: (-1, 1) (a stationary AR(1))")
    return mean_sms + correlation * (latent_load - mean_sms) + std_sms * math.sqrt(1.0 - correlation**2) * normal


def background_sms(latent_load, sm_range: tuple[int, int]):
    """The SMs other tenants hold: the latent load rounded and clipped to [0, v_hi - v_lo] (int)."""
    xp = namespace(latent_load)
    lo, hi = (int(v) for v in sm_range)
    return xp.int(xp.clip(round_half_up(latent_load), 0.0, float(hi - lo)))


def available_es_sms(latent_load, sm_range: tuple[int, int]):
    """v_max^ES = v_hi - background SMs: always inside [v_lo, v_hi] (int)."""
    return int(sm_range[1]) - background_sms(latent_load, sm_range)


def draw_background_load(generator, env_shape: tuple[int, ...] = (), dtype=None):
    """The standard normals (...) one slot consumes (shape () for one env)."""
    return draws.standard_normal(generator, tuple(env_shape), dtype)
