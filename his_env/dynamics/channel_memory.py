"""Channel memory: Rayleigh fading correlated between slots (first-order Gauss-Markov, Jakes' rho).

The complex small-scale gain of each UE follows

    h_t = rho h_{t-1} + sqrt(1 - rho^2) w_t,    w_t ~ CN(0, 1),    rho = J0(2 pi f_D T_slot)

with f_D = v f_c / c the maximum Doppler shift (Jakes' autocorrelation of the fading, Jakes 1974;
the first-order AR model of Baddour & Beaulieu, IEEE Trans. Wireless Commun. 4(4), 2005). Started
from h_0 ~ CN(0, 1), h_t stays CN(0, 1), so the power gain |h_t|^2 is Exp(1) at every slot, the
unit-mean exponential gain `his_env.channel.channel_gain` multiplies into the path gain today:
the env keeps `gain = path_gain(distance) * power_gain(fading)`. Successive power gains are
correlated by rho^2 (for a circular Gaussian, corr(|h_t|^2, |h_{t-1}|^2) = |E h_t h*_{t-1}|^2).

State: `fading` float (..., N, 2), the in-phase and quadrature parts of h (each N(0, 1/2)).
At 3.5 GHz a pedestrian (1.4 m/s) has f_D = 16 Hz: with one-second slots |rho| < 0.1, so the
fading is nearly independent between slots; memory shows with short slots or slow UEs.
"""
from __future__ import annotations

import math

from his_common.arrays import namespace

from his_env.dynamics import draws
from his_env.dynamics._ops import absolute, cos, log1p, sin

SPEED_OF_LIGHT_MPS = 299_792_458.0
_SERIES_MAX_ARGUMENT = 12.0  # below: power series; above: Hankel's asymptotic expansion

# J0(x) = sum_k (-1)^k (x^2 / 4)^k / (k!)^2 (A&S 9.1.12): 40 terms reach 1e-30 at x = 12; the
# cancellation error there is ~ I0(12) eps ~ 1e-11.
_SERIES = tuple((-1) ** k / math.factorial(k) ** 2 for k in range(40))


def _hankel_coefficient(n: int) -> float:
    """((2n - 1)!!)^2 / (n! 8^n): the n-th coefficient of Hankel's expansion for order 0 (A&S 9.2.9-10)."""
    odd = math.prod(range(1, 2 * n, 2))
    return odd * odd / (math.factorial(n) * 8.0**n)


# J0(x) = sqrt(2 / (pi x)) (P cos chi - Q sin chi), chi = x - pi/4, with
# P = sum_k (-1)^k b_{2k} / x^{2k}, Q = -sum_k (-1)^k b_{2k+1} / x^{2k+1} (A&S 9.2.5, 9.2.9, 9.2.10).
# The terms shrink up to n ~ 2x; 24 of them give ~1e-11 at x = 12 and better above.
_HANKEL_P = tuple((-1) ** k * _hankel_coefficient(2 * k) for k in range(13))
_HANKEL_Q = tuple(-((-1) ** k) * _hankel_coefficient(2 * k + 1) for k in range(12))


def _polynomials(rows, t):
    """sum_k c_k t^k for each row of coefficients c_0, c_1, ... (lowest degree first), by Horner's
    rule, all rows at once: (rows, *t.shape). A row shorter than the longest gets zero leading
    coefficients, which change no bit (0 t + c = c)."""
    xp = namespace(t)
    degree = max(len(row) for row in rows)
    table = xp.float([list(row) + [0.0] * (degree - len(row)) for row in rows])
    table = table.reshape(tuple(table.shape) + (1,) * len(getattr(t, "shape", ())))
    total = table[:, -1] + 0.0 * t
    for k in range(degree - 2, -1, -1):  # in place: the running total stays one buffer
        total *= t
        total += table[:, k]
    return total


def bessel_j0(x):
    """Bessel function of the first kind of order 0, J0(x), without scipy (absolute error < 1e-10).

    Tensors of another float dtype are evaluated in float64 (the series cancels ~1e-4 in float32
    near x = 12) and returned in their own dtype."""
    xp = namespace(x)
    x = xp.float(x)
    if xp.is_torch and x.dtype != xp.torch.float64:
        return bessel_j0(x.double()).to(x.dtype)
    x = absolute(x)
    small = x <= _SERIES_MAX_ARGUMENT
    # each branch is evaluated only if some argument needs it (Doppler arguments are mostly far)
    any_small, all_small = xp.may_any(small), not xp.may_any(~small)
    if any_small:
        near = xp.where(small, x, 0.0)
        series = _polynomials((_SERIES,), near * near / 4.0)[0]
        if all_small:
            return series
    far = xp.where(small, _SERIES_MAX_ARGUMENT, x) if any_small else x
    p, q = _polynomials((_HANKEL_P, _HANKEL_Q), 1.0 / (far * far))
    q = q / far
    chi = far - math.pi / 4.0
    asymptotic = xp.sqrt(2.0 / (math.pi * far)) * (p * cos(chi) - q * sin(chi))
    return xp.where(small, series, asymptotic) if any_small else asymptotic


def doppler_hz(speed_mps, carrier_hz: float):
    """Maximum Doppler shift f_D = v f_c / c (Hz)."""
    return speed_mps * (carrier_hz / SPEED_OF_LIGHT_MPS)


def fading_correlation(speed_mps, carrier_hz: float, slot_s: float):
    """Jakes' lag-one correlation of the complex gain, rho = J0(2 pi f_D T_slot), per UE or scalar."""
    return bessel_j0(2.0 * math.pi * slot_s * doppler_hz(speed_mps, carrier_hz))


def initial_fading(normal):
    """h_0 ~ CN(0, 1) from standard normals (..., N, 2): each part N(0, 1/2)."""
    return normal * math.sqrt(0.5)


def fading_step(fading, correlation, normal):
    """h_t = rho h_{t-1} + sqrt(1 - rho^2) w_t, w_t ~ CN(0, 1) from standard normals (..., N, 2).

    `correlation` rho: a number, or one per UE (..., N) (e.g. from each UE's speed)."""
    xp = namespace(fading, normal)
    rho = xp.float(correlation)
    if getattr(rho, "ndim", 0) > 0:
        rho = rho[..., None]
    innovation = xp.sqrt(xp.maximum(1.0 - rho * rho, 0.0) * 0.5)
    return rho * fading + innovation * normal


def power_gain(fading):
    """|h|^2 (..., N): Exp(1) at every slot, the factor `his_env.channel.channel_gain` draws afresh today."""
    squares = fading * fading
    return squares[..., 0] + squares[..., 1]


def independent_power_gain(uniform):
    """A fresh Exp(1) power gain per UE, -log(1 - u) by inversion: the slot's Rayleigh fading when the
    channel has no memory (the vectorised env draws it so with the dynamics off too)."""
    return -log1p(-uniform)


def draw_fading(generator, num_ues_shape: tuple[int, ...], dtype=None):
    """The standard normals (..., N, 2) one slot of `initial_fading` or `fading_step` consumes."""
    return draws.standard_normal(generator, tuple(num_ues_shape) + (2,), dtype)
