"""The fitted Hybrid Inference Quality Metric (HIQM, Eq. 7) and its fit from measurements.

Eq. (7) models the CLIP alignment of an HIS image as a modified sigmoid of the number of common
steps x, with coefficients that depend on the public-personal similarity phi and on whether SIM
and NPI are on (iota):

    Q(x) = L / (1 + exp(K (x - B))) + G.

The paper gives the curve only at measured similarities. Here each coefficient is a continuous,
piecewise-linear function of phi through the measured similarity bins (the "knots"), so Q is
exactly Eq. (7) at every phi and continuous in phi. Outside the measured range the coefficients
are held at the nearest measured bin (no extrapolation): Q is defined for every phi in [-1, 1].

Fitting, per iota (`fit_family_checked`):

1. Per-similarity fit: the coefficients at the knots are fitted jointly by least squares, with
   L > 0 and K > 0 (so Q never rises with more common steps) and a penalty on any fall of Q with
   higher similarity; what is left of such a fall is removed exactly by tilting G(phi) by a linear
   term, so Q is non-decreasing in phi everywhere.
2. The fit is accepted only if that tilt is small (`MAX_TILT`) and Q stays within the measured
   scores widened by `RANGE_MARGIN` of their spread. Otherwise (noisy or non-monotone data make
   the per-similarity curves cross) a shared-shape fit is used instead: one K and B for all
   similarities, and the values of Q at the first and last measured step constrained to be
   non-decreasing in phi and within the measured scores, so Q is monotone and bounded by
   construction.
3. The fit is refused (`HIQMFitError`, naming every curve and its RMSE) when it explains less than
   `MIN_EXPLAINED` of the scores' variance, or if it still leaves the allowed range; it is accepted
   with a `HIQMFitWarning` giving the numbers when a curve's RMSE exceeds `WARN_RMSE` of the
   scores' spread or when the shared-shape fit was needed.

`HIQMOracle.from_csv(path)` refits from any CSV with the columns
``sim_npi, similarity, common_steps, clip_score`` (the shipped SD3-medium measurements are the
default); `fit_report()` gives the per-curve RMSE next to a free fit of Eq. (7) to that curve alone,
and `fit_checks()` the range, explained variance and method of each family.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit, least_squares, minimize

from his_common.arrays import namespace
from quality_oracle.base import QualityRequest
from his_common.storage import atomic_write_json, cache_root

DEFAULT_CSV = Path(__file__).parent / "data" / "hiqm_sd3_medium.csv"
ECDIFF_CSV = Path(__file__).parent / "data" / "ecdiff_reference.csv"
REQUIRED_COLUMNS = ("sim_npi", "similarity", "common_steps", "clip_score")

_PENALTY_WEIGHT = 1.0  # weight of a negative dQ/dphi against the data residuals
_GRID_STEPS = 28  # x grid of the monotonicity penalty
_GRID_PHI = 101  # similarity grid of the monotonicity penalty
_FREE_FIT_MAXFEV = 2000  # evaluations of one curve's free fit (well-behaved curves need far fewer)
_MAX_NFEV = 300  # evaluations of the joint fit (well-behaved data converge in a few dozen)
_MAX_K = 5.0  # steepest per-step slope K the per-similarity fit may use: integer steps cannot resolve more

# Acceptance of a fit, per iota; fractions of the measured scores' spread (max - min), so they
# hold whatever the scale of the scores (cosine or 100 x cosine).
RANGE_MARGIN = 0.10  # Q over all x and phi stays within [min - 10 %, max + 10 %] of the scores
MAX_TILT = 0.05  # the per-similarity fit's monotonicity repair may lift G by at most 5 %
WARN_RMSE = 0.05  # warn when a curve's RMSE exceeds 5 %
MIN_EXPLAINED = 0.5  # refuse when the fit explains less than half of the scores' variance (R^2)


class HIQMFitError(ValueError):
    """The measurements cannot support a monotone, bounded Eq. (7) fit.

    `fit_table` holds the per-curve errors of the rejected fit, `checks` its `FamilyCheck`s.
    """

    def __init__(self, message: str, fit_table: list["CurveFit"], checks: list["FamilyCheck"]):
        super().__init__(message)
        self.fit_table = fit_table
        self.checks = checks


class HIQMFitWarning(UserWarning):
    """A fit was accepted, but its error or method deserves a look (the message has the numbers)."""


def modified_sigmoid(x, L, K, B, G):
    """Eq. (7): L / (1 + exp(K (x - B))) + G, broadcasting over all arguments (numpy or torch)."""
    return L / (1.0 + namespace(x, L).exp(K * (x - B))) + G


def eq7_quality(common_steps, similarity, knots, coefficients, step_range: tuple[float, float]):
    """Q(x; phi) of Eq. (7) with (L, K, B, G) piecewise linear in phi through `knots` (S,) and
    `coefficients` (S, 4), held at the end knots beyond them, and x held inside `step_range`.

    Written once for numpy arrays and torch tensors (`knots` and `coefficients` then tensors of
    the same device); broadcasts over `common_steps` and `similarity`. The interpolation is the
    sum of the knot segments below phi (c_0 + sum_s slope_s clip(phi - k_s, 0, k_{s+1} - k_s)):
    one small matrix product, no per-UE lookup.
    """
    xp = namespace(similarity, common_steps, coefficients)
    phi = xp.float(similarity)[..., None]
    widths = knots[1:] - knots[:-1]
    slopes = (coefficients[1:] - coefficients[:-1]) / widths[:, None]  # (S - 1, 4)
    coef = coefficients[0] + xp.minimum(xp.maximum(phi - knots[:-1], 0.0), widths) @ slopes
    x = xp.clip(xp.float(common_steps), float(step_range[0]), float(step_range[1]))
    return modified_sigmoid(x, coef[..., 0], coef[..., 1], coef[..., 2], coef[..., 3])


def with_approximation_loss(quality, approximated_es_steps, loss_per_step: float):
    """EC-Diff's quality model: each approximated ES step scales Q by (1 - loss per step)."""
    return quality * (1.0 - loss_per_step * approximated_es_steps)


@dataclass(frozen=True)
class CurveFamily:
    """Eq. (7) coefficients at the measured similarities of one iota, linear in between."""

    knots: np.ndarray  # measured similarities, increasing (S,)
    coefficients: np.ndarray  # (S, 4): L, K, B, G at each knot
    step_range: tuple[float, float]  # measured common steps; Q holds its end values beyond them

    def coefficients_at(self, similarity: np.ndarray) -> tuple[np.ndarray, ...]:
        phi = np.clip(similarity, self.knots[0], self.knots[-1])
        return tuple(np.interp(phi, self.knots, self.coefficients[:, i]) for i in range(4))

    def quality(self, common_steps: np.ndarray, similarity: np.ndarray) -> np.ndarray:
        return eq7_quality(common_steps, similarity, self.knots, self.coefficients, self.step_range)

    def similarity_slope(self, common_steps: np.ndarray, similarity: np.ndarray) -> np.ndarray:
        """dQ/dphi inside the knot segments (analytic, for the monotonicity guarantee)."""
        L, K, B, G = self.coefficients_at(similarity)
        seg = np.clip(np.searchsorted(self.knots, similarity, side="right") - 1, 0, len(self.knots) - 2)
        dphi = np.diff(self.knots)[seg]
        dL, dK, dB, dG = (np.diff(self.coefficients[:, i])[seg] / dphi for i in range(4))
        s = 1.0 / (1.0 + np.exp(K * (common_steps - B)))
        return dL * s + L * s * (1 - s) * (K * dB - (common_steps - B) * dK) + dG


@dataclass(frozen=True)
class CurveFit:
    sim_npi: int
    similarity: float
    points: int
    rmse: float  # of the HIQM oracle on this curve
    free_fit_rmse: float  # of Eq. (7) fitted to this curve alone


@dataclass(frozen=True)
class FamilyCheck:
    """How one iota's fit relates to its data: what `_judge` accepts, warns about or refuses."""

    sim_npi: int
    method: str  # "per-similarity" (step 1) or "shared-shape" (step 2's fallback)
    score_range: tuple[float, float]  # min and max measured score
    quality_range: tuple[float, float]  # min and max of the fitted Q over all x and phi
    explained: float  # 1 - SSE / SST of the fit on all the family's points
    tilt: float  # how far step 1's monotonicity repair lifted G at the highest similarity
    note: str = ""  # why step 1's per-similarity fit was not used


def _read_measurements(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    if not path.is_file():
        raise FileNotFoundError(f"HIQM measurements file {str(path)!r} does not exist")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"HIQM measurements file {str(path)!r} lacks columns {missing}; "
                             f"found {reader.fieldnames}, need {list(REQUIRED_COLUMNS)}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"HIQM measurements file {str(path)!r} has no rows")
    try:
        data = np.array([[float(r[c]) for c in REQUIRED_COLUMNS] for r in rows])
    except ValueError as exc:
        raise ValueError(f"HIQM measurements file {str(path)!r} holds a non-numeric value: {exc}") from exc
    out = {}
    for iota in (0, 1):
        sel = data[data[:, 0] == iota]
        if len(sel):
            out[iota] = (sel[:, 1], sel[:, 2], sel[:, 3])
    bad = set(np.unique(data[:, 0])) - {0.0, 1.0}
    if bad:
        raise ValueError(f"HIQM measurements file {str(path)!r}: sim_npi must be 0 or 1, found {sorted(bad)}")
    return out


def _free_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Eq. (7) fitted to one curve alone (L, K made non-negative); memoised per curve."""
    x, y = np.ascontiguousarray(x, dtype=float), np.ascontiguousarray(y, dtype=float)
    return _free_fit_of(x.tobytes(), y.tobytes()).copy()


@functools.lru_cache(maxsize=64)
def _free_fit_of(x_bytes: bytes, y_bytes: bytes) -> np.ndarray:
    x, y = np.frombuffer(x_bytes), np.frombuffer(y_bytes)
    span = max(y.max() - y.min(), 1e-3)
    p0 = [span, 0.3, float(np.median(x)), float(y.min())]
    try:
        with warnings.catch_warnings(), np.errstate(over="ignore"):
            warnings.simplefilter("ignore", OptimizeWarning)  # no covariance needed
            params, _ = curve_fit(modified_sigmoid, x, y, p0=p0, maxfev=_FREE_FIT_MAXFEV)
    except RuntimeError:
        params = np.array(p0)
    if params[0] < 0 or params[1] < 0:  # a rising curve: Eq. (7) with L, K > 0 cannot follow it
        params = np.array([abs(params[0]), abs(params[1]), params[2], params[3]])
    return params


def _per_similarity_fit(knots: np.ndarray, curves: list[tuple[np.ndarray, np.ndarray]],
                        step_range: tuple[float, float]) -> tuple[CurveFamily, float]:
    """Step 1: Eq. (7) coefficients at each knot jointly, then the exact tilt of G; (family, tilt)."""
    free = np.array([_free_fit(x, y) for x, y in curves])
    if len(knots) == 1:
        return CurveFamily(np.array([knots[0], knots[0] + 1e-9]), np.repeat(free, 2, axis=0), step_range), 0.0

    x_all = np.concatenate([x for x, _ in curves])
    y_all = np.concatenate([y for _, y in curves])
    knot_of = np.concatenate([np.full(len(x), j) for j, (x, _) in enumerate(curves)])
    x_grid = np.linspace(*step_range, _GRID_STEPS)[:, None]
    phi_grid = np.linspace(knots[0], knots[-1], _GRID_PHI)[None, :]

    def unpack(theta: np.ndarray) -> np.ndarray:
        coef = theta.reshape(len(knots), 4).copy()
        coef[:, :2] = np.exp(coef[:, :2])  # L > 0, K > 0: Q never rises with more common steps
        return coef

    def residuals(theta: np.ndarray) -> np.ndarray:
        family = CurveFamily(knots, unpack(theta), step_range)
        c = family.coefficients[knot_of]
        data_res = modified_sigmoid(x_all, c[:, 0], c[:, 1], c[:, 2], c[:, 3]) - y_all
        fall = np.maximum(-family.similarity_slope(x_grid, phi_grid), 0.0).ravel()
        return np.concatenate([data_res, _PENALTY_WEIGHT * fall])

    theta0 = free.copy()
    theta0[:, :2] = np.log(np.maximum(theta0[:, :2], 1e-6))
    solution = least_squares(residuals, theta0.ravel(), method="trf", x_scale="jac", max_nfev=_MAX_NFEV)
    coef = unpack(solution.x)

    # Remove the penalty's residual fall exactly: tilt G by c * phi with c above the steepest fall
    # of Q in phi, so dQ/dphi >= 0 everywhere (G stays piecewise linear). Step 2 bounds the tilt.
    family = CurveFamily(knots, coef, step_range)
    x_check = np.linspace(*step_range, 400)[:, None]
    phi_check = np.linspace(knots[0], knots[-1], 4001)[None, :]
    steepest_fall = max(0.0, -float(np.nan_to_num(family.similarity_slope(x_check, phi_check), nan=-np.inf).min()))
    tilt = 0.0
    if steepest_fall > 0:
        coef = coef.copy()
        coef[:, 3] += (2.0 * steepest_fall + 1e-9) * (knots - knots[0])
        tilt = float((2.0 * steepest_fall + 1e-9) * (knots[-1] - knots[0]))
    return CurveFamily(knots, coef, step_range), tilt


def _shared_shape_fit(knots: np.ndarray, curves: list[tuple[np.ndarray, np.ndarray]],
                      step_range: tuple[float, float], score_range: tuple[float, float]) -> CurveFamily:
    """Step 2's fallback: one K and B for every knot; Q monotone and within `score_range` by construction.

    With K and B shared, Q(x, phi_j) = b_j + (a_j - b_j) w(x), where a_j and b_j are Q at the first
    and last measured step and w falls from 1 to 0 over the steps. Constraining a and b to be
    non-decreasing in j, a_j >= b_j and both within `score_range` makes Q non-increasing in x,
    non-decreasing in phi (the coefficients, hence Q at fixed x, are linear between knots) and bounded.
    """
    S = len(knots)
    x_lo, x_hi = step_range
    span = max(x_hi - x_lo, 1.0)
    y_lo, y_hi = score_range
    knot_of = np.concatenate([np.full(len(x), j) for j, (x, _) in enumerate(curves)])
    x_all = np.concatenate([x for x, _ in curves])
    y_all = np.concatenate([y for _, y in curves])

    def sigmoid(x, K, B):
        return 1.0 / (1.0 + np.exp(np.clip(K * (x - B), -700, 700)))

    def weight(x, K, B):  # 1 at the first measured step, 0 at the last
        top, bottom = sigmoid(x_lo, K, B), sigmoid(x_hi, K, B)
        return (sigmoid(x, K, B) - bottom) / max(top - bottom, 1e-300)

    def sse(v):
        K, B, a, b = np.exp(v[0]), v[1], v[2:2 + S], v[2 + S:]
        pred = b[knot_of] + (a - b)[knot_of] * weight(x_all, K, B)
        return float(np.sum((pred - y_all) ** 2))

    rows = []  # linear constraints A v >= 0: a, b non-decreasing in j, a_j >= b_j
    for j in range(S - 1):
        for offset in (2, 2 + S):
            row = np.zeros(2 + 2 * S)
            row[offset + j + 1], row[offset + j] = 1.0, -1.0
            rows.append(row)
    for j in range(S):
        row = np.zeros(2 + 2 * S)
        row[2 + j], row[2 + S + j] = 1.0, -1.0
        rows.append(row)
    constraints = [{"type": "ineq", "fun": lambda v, A=np.array(rows): A @ v, "jac": lambda v, A=np.array(rows): A}]
    # K in [1e-3, 10] and B within the measured steps keep Q's fall over them, sigma(x_lo) - sigma(x_hi),
    # at least ~K span / 4: L = (a - b) / that fall stays finite
    bounds = ([(np.log(1e-3), np.log(10.0)), (x_lo, x_hi)] + [(y_lo, y_hi)] * (2 * S))

    first = np.array([y[x == x.min()].mean() for x, y in curves])
    last = np.array([y[x == x.max()].mean() for x, y in curves])
    a0 = np.clip(np.maximum.accumulate(np.maximum(first, last)), y_lo, y_hi)
    b0 = np.minimum(np.clip(np.maximum.accumulate(np.minimum(first, last)), y_lo, y_hi), a0)
    best = np.concatenate([[np.log(0.3), x_lo + 0.5 * span], a0, b0])  # feasible: a0, b0 meet the constraints
    for K in (0.1, 0.3, 1.0):
        for B in (x_lo + 0.25 * span, x_lo + 0.5 * span, x_lo + 0.75 * span):
            v0 = np.concatenate([[np.log(K), B], a0, b0])
            result = minimize(sse, v0, method="SLSQP", bounds=bounds, constraints=constraints,
                              options={"maxiter": 500, "ftol": 1e-12})
            if np.all(np.isfinite(result.x)) and sse(result.x) < sse(best):
                best = result.x
    K, B = float(np.exp(best[0])), float(best[1])
    # make the constraints exact (SLSQP meets them to its tolerance only)
    b = np.maximum.accumulate(np.clip(best[2 + S:], y_lo, y_hi))
    a = np.maximum(np.maximum.accumulate(np.clip(best[2:2 + S], y_lo, y_hi)), b)
    top, bottom = sigmoid(x_lo, K, B), sigmoid(x_hi, K, B)
    L = (a - b) / (top - bottom)
    G = b - L * bottom
    coef = np.column_stack([L, np.full(S, K), np.full(S, B), G])
    if S == 1:
        return CurveFamily(np.array([knots[0], knots[0] + 1e-9]), np.repeat(coef, 2, axis=0), step_range)
    return CurveFamily(knots, coef, step_range)


def _quality_range(family: CurveFamily) -> tuple[float, float]:
    """min and max of Q over all x and phi: at the corners, Q being monotone in both."""
    ends = family.quality(np.array(family.step_range)[:, None], family.knots[None, :])
    return float(np.nanmin(ends)), float(np.nanmax(ends))


def _is_monotone(family: CurveFamily, tolerance: float = 1e-12) -> bool:
    """Q non-increasing in x and non-decreasing in phi on a fine grid (a check of the fit, not a proof)."""
    x = np.linspace(*family.step_range, 271)[:, None]
    phi = np.linspace(family.knots[0], family.knots[-1], 2001)[None, :]
    q = family.quality(x, phi)
    return bool(np.all(np.isfinite(q)) and np.diff(q, axis=0).max() <= tolerance
                and np.diff(q, axis=1).min() >= -tolerance)


def fit_family_checked(similarity: np.ndarray, common_steps: np.ndarray,
                       clip_score: np.ndarray, sim_npi: int = 1) -> tuple[CurveFamily, FamilyCheck]:
    """Fit Eq. (7) at each measured similarity, monotone in phi and x, bounded by the data (steps 1-2).

    Returns the family and its `FamilyCheck`; whether to accept, warn or refuse is `_judge`'s call.
    """
    knots = np.unique(similarity)
    curves = [(common_steps[similarity == k], clip_score[similarity == k]) for k in knots]
    for k, (x, _) in zip(knots, curves):
        if len(np.unique(x)) < 4:
            raise ValueError(f"similarity bin {k}: need at least 4 distinct common_steps to fit Eq. (7), "
                             f"got {len(np.unique(x))}")
    if not np.all(np.isfinite(clip_score)):
        raise ValueError(f"sim_npi={sim_npi}: clip_score holds non-finite values")
    step_range = (float(common_steps.min()), float(common_steps.max()))
    score_range = (float(clip_score.min()), float(clip_score.max()))
    spread = score_range[1] - score_range[0]
    allowed = (score_range[0] - RANGE_MARGIN * spread, score_range[1] + RANGE_MARGIN * spread)

    def sse(family: CurveFamily) -> float:
        return float(np.sum((family.quality(common_steps, similarity) - clip_score) ** 2))

    with np.errstate(over="ignore", invalid="ignore"):
        family, tilt = _per_similarity_fit(knots, curves, step_range)
        q_range = _quality_range(family)
        method, note = "per-similarity", ""
        if not np.all(np.isfinite(family.coefficients)):
            note = "its coefficients are not finite"
        elif family.coefficients[:, 1].max() > _MAX_K:
            note = f"its slope K reached {family.coefficients[:, 1].max():.3g} per step (at most {_MAX_K:g})"
        elif tilt > MAX_TILT * spread:
            note = (f"keeping it monotone in similarity needed a tilt of G by {tilt:.3g} "
                    f"(at most {MAX_TILT:.0%} of the spread, {MAX_TILT * spread:.3g})")
        elif not allowed[0] <= q_range[0] <= q_range[1] <= allowed[1]:
            note = f"its quality spans [{q_range[0]:.4g}, {q_range[1]:.4g}]"
        elif not _is_monotone(family):
            note = "it is not monotone"
        shared = _shared_shape_fit(knots, curves, step_range, score_range)
        if note or sse(shared) < sse(family):
            method, note = "shared-shape", note or "it fits worse than one shared shape"
            family, q_range = shared, _quality_range(shared)
        residual = sse(family)
    total = float(np.sum((clip_score - clip_score.mean()) ** 2))
    explained = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return family, FamilyCheck(sim_npi, method, score_range, q_range, explained, tilt, note)


def fit_family(similarity: np.ndarray, common_steps: np.ndarray, clip_score: np.ndarray) -> CurveFamily:
    """Fit Eq. (7) coefficients at each measured similarity jointly, monotone in phi and x."""
    return fit_family_checked(similarity, common_steps, clip_score)[0]


def _judge(checks: list[FamilyCheck], table: list[CurveFit]) -> tuple[list[str], list[str]]:
    """Step 3: (reasons to refuse, reasons to warn), each with the numbers."""
    refuse, warn = [], []
    for check in checks:
        low, high = check.score_range
        spread = high - low
        rows = [r for r in table if r.sim_npi == check.sim_npi]
        curves = "; ".join(f"similarity {r.similarity:g}: RMSE {r.rmse:.4g} (free fit {r.free_fit_rmse:.4g})"
                           for r in rows)
        name = f"sim_npi={check.sim_npi}"
        allowed = (low - RANGE_MARGIN * spread, high + RANGE_MARGIN * spread)
        if not (allowed[0] <= check.quality_range[0] and check.quality_range[1] <= allowed[1]):
            refuse.append(f"{name}: the fitted quality spans [{check.quality_range[0]:.4g}, "
                          f"{check.quality_range[1]:.4g}], outside the measured scores [{low:.4g}, {high:.4g}] "
                          f"widened by {RANGE_MARGIN:.0%} of their spread; {curves}")
        elif check.explained < MIN_EXPLAINED:
            refuse.append(f"{name}: a monotone Eq. (7) fit explains only {check.explained:.0%} of the "
                          f"scores' variance (at least {MIN_EXPLAINED:.0%} needed: noise, or quality that "
                          f"rises with common steps or falls with similarity); {curves}")
        else:
            worst = max(rows, key=lambda r: r.rmse)
            if worst.rmse > WARN_RMSE * spread:
                warn.append(f"{name}: curve RMSE up to {worst.rmse:.4g} at similarity {worst.similarity:g}, "
                            f"above {WARN_RMSE:.0%} of the scores' spread {spread:.4g} (noisy measurements?); "
                            f"{curves}")
            if check.method == "shared-shape":
                warn.append(f"{name}: one shape (K, B) is shared by all similarities, as the per-similarity "
                            f"fit was not usable ({check.note}); explained variance {check.explained:.0%}; "
                            f"{curves}")
    return refuse, warn


class HIQMOracle:
    """Fitted HIQM (Eq. 7), separately for SIM/NPI on (iota=1) and off (iota=0)."""

    needs_prompts = False

    def __init__(self, families: dict[int, CurveFamily], fit_table: list[CurveFit] | None = None,
                 approximation_loss_per_step: float = 0.0, source: str = "",
                 checks: list[FamilyCheck] | None = None):
        if not families:
            raise ValueError("HIQMOracle needs at least one curve family (sim_npi 0 or 1)")
        self.families = families
        self.fit_table = fit_table or []
        self.checks = checks or []
        self.approximation_loss_per_step = float(approximation_loss_per_step)
        self.source = source

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_csv(cls, path: str | Path | None = None) -> "HIQMOracle":
        """Fit from a measurements CSV (default: shipped SD3-medium data). Memoised per file content.

        Raises `HIQMFitError` when the data cannot support a monotone, bounded fit, and warns
        (`HIQMFitWarning`, on every call) when the fit is accepted with a large error; see the
        module docstring for the thresholds.
        """
        path = Path(path) if path is not None else DEFAULT_CSV
        if not path.is_file():
            raise FileNotFoundError(f"HIQM measurements file {str(path)!r} does not exist")
        families, table, checks = _fit_cached(str(path), hashlib.sha1(path.read_bytes()).hexdigest())
        for message in _judge(list(checks), list(table))[1]:
            warnings.warn(f"HIQM fit of {str(path)!r}: {message}", HIQMFitWarning, stacklevel=2)
        return cls(dict(families), list(table), source=str(path), checks=list(checks))

    def with_approximation_loss(self, loss_per_step: float) -> "HIQMOracle":
        """A copy whose `evaluate` applies the EC-Diff approximation quality model (see `evaluate`)."""
        if not 0 <= loss_per_step < 1:
            raise ValueError(f"approximation loss per step {loss_per_step!r}; allowed: a number in [0, 1)")
        return HIQMOracle(self.families, self.fit_table, loss_per_step, self.source, self.checks)

    # ------------------------------------------------------------------ queries
    def _family(self, iota: int) -> CurveFamily:
        try:
            return self.families[iota]
        except KeyError:
            raise ValueError(f"the HIQM measurements in {self.source!r} have no curves for sim_npi={iota}; "
                             f"available: {sorted(self.families)}") from None

    def quality(self, common_steps, similarity, sim_npi) -> np.ndarray:
        """Q(x; phi, iota) of Eq. (7), broadcast over arrays; `sim_npi` a bool or bool array."""
        x = np.asarray(common_steps, dtype=float)
        phi = np.asarray(similarity, dtype=float)
        flags = np.asarray(sim_npi, dtype=bool)
        if flags.ndim == 0:
            return self._family(int(flags)).quality(x, phi)
        on = self._family(1).quality(x, phi) if flags.any() else 0.0
        off = self._family(0).quality(x, phi) if (~flags).any() else 0.0
        return np.where(flags, on, off)

    def evaluate(self, request: QualityRequest) -> np.ndarray:
        """Per-UE quality. With EC-Diff, each approximated ES step scales Q by (1 - loss per step).

        The approximation model is multiplicative and linear in the number of approximated steps,
        calibrated on EC-Diff's Table 1 (`calibrate_approximation_loss`); 0 loss reproduces HIS.
        """
        quality = self._family(int(request.sim_npi)).quality(request.common_steps, request.similarity)
        if self.approximation_loss_per_step and request.ecdiff is not None:
            quality = with_approximation_loss(quality, request.approximated_es_steps, self.approximation_loss_per_step)
        return quality

    def coefficients(self, similarity, sim_npi: bool) -> tuple[np.ndarray, ...]:
        """(L, K, B, G) of Eq. (7) at the given similarities."""
        return self._family(int(sim_npi)).coefficients_at(np.asarray(similarity, dtype=float))

    def fit_report(self) -> list[CurveFit]:
        return list(self.fit_table)

    def fit_checks(self) -> list[FamilyCheck]:
        """Per iota: the method used, measured score range, fitted quality range, explained variance."""
        return list(self.checks)

    def fit_report_markdown(self) -> str:
        return fit_table_markdown(self.fit_table)


def fit_table_markdown(table: list[CurveFit]) -> str:
    """The per-curve RMSE table (also of a refused fit: `HIQMFitError.fit_table`)."""
    lines = ["| sim_npi | similarity | points | RMSE (this fit) | RMSE (free fit of that curve) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.sim_npi} | {r.similarity:.2f} | {r.points} | {r.rmse:.5f} | {r.free_fit_rmse:.5f} |"
              for r in table]
    return "\n".join(lines)


def fit_checks_markdown(checks: list[FamilyCheck]) -> str:
    """Per iota: method, explained variance, and the fitted quality range against the measured scores."""
    lines = ["| sim_npi | method | explained variance | measured scores | fitted quality |", "|---|---|---|---|---|"]
    lines += [f"| {c.sim_npi} | {c.method} | {c.explained:.3f} | {c.score_range[0]:.4f} .. {c.score_range[1]:.4f} "
              f"| {c.quality_range[0]:.4f} .. {c.quality_range[1]:.4f} |" for c in checks]
    return "\n".join(lines)


_FIT_VERSION = 2  # bump when the fitting procedure changes: invalidates the disk cache

_Fit = tuple[tuple[tuple[int, CurveFamily], ...], tuple[CurveFit, ...], tuple[FamilyCheck, ...]]


@functools.lru_cache(maxsize=8)
def _fit_cached(path: str, digest: str) -> _Fit:
    """Fit once per file content: memoised in memory and on disk (the fit takes seconds).

    Only accepted fits are stored; a refused one raises `HIQMFitError` each time.
    """
    stored = cache_root() / "hiqm" / f"{digest}-v{_FIT_VERSION}.json"
    try:
        blob = json.loads(stored.read_text())
        families = tuple((int(k), CurveFamily(np.array(v["knots"]), np.array(v["coefficients"]),
                                              tuple(v["step_range"]))) for k, v in blob["families"].items())
        checks = tuple(FamilyCheck(**{**row, "score_range": tuple(row["score_range"]),
                                      "quality_range": tuple(row["quality_range"])}) for row in blob["checks"])
        return families, tuple(CurveFit(**row) for row in blob["fit_table"]), checks
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: fit afresh
    families, table, checks = _fit(Path(path))
    try:
        atomic_write_json(stored, {
            "families": {str(k): {"knots": f.knots.tolist(), "coefficients": f.coefficients.tolist(),
                                  "step_range": list(f.step_range)} for k, f in families},
            "fit_table": [dataclasses.asdict(row) for row in table],
            "checks": [dataclasses.asdict(row) for row in checks]})
    except OSError as exc:
        warnings.warn(f"cannot store the HIQM fit in {str(stored)!r} ({exc}); it stays in memory only "
                      "and is redone in each new process", RuntimeWarning, stacklevel=3)
    return families, table, checks


def _fit(path: Path) -> _Fit:
    measurements = _read_measurements(path)
    families, table, checks = {}, [], []
    for iota, (phi, x, y) in measurements.items():
        family, check = fit_family_checked(phi, x, y, iota)
        families[iota] = family
        checks.append(check)
        for k in np.unique(phi):
            sel = phi == k
            pred = family.quality(x[sel], np.full(sel.sum(), k))
            with np.errstate(over="ignore"):
                free = modified_sigmoid(x[sel], *_free_fit(x[sel], y[sel]))
            table.append(CurveFit(iota, float(k), int(sel.sum()),
                                  float(np.sqrt(np.mean((pred - y[sel]) ** 2))),
                                  float(np.sqrt(np.mean((free - y[sel]) ** 2)))))
    refuse, _ = _judge(checks, table)
    if refuse:
        raise HIQMFitError(f"cannot fit the HIQM (Eq. 7) to {str(path)!r}: " + " | ".join(refuse)
                           + "; re-measure with more pairs or seeds per bin (the scores are too noisy) "
                           "or check the file's columns", table, checks)
    return tuple(families.items()), tuple(table), tuple(checks)


def calibrate_approximation_loss(path: str | Path | None = None, reinit_calls: int = 2) -> float:
    """Relative quality loss per approximated ES step, from EC-Diff's Table 1 (image rows).

    For each cloud/edge pair, the SSIM (vs cloud-only) of EC-Diff is compared with HybridSD(k=10),
    which runs the same models with no approximation and fewer edge steps; the whole relative
    shortfall is charged to EC-Diff's approximated steps (an upper bound on their cost, since
    EC-Diff also runs more edge steps). The switching point s is the number of cloud steps
    (EC-Diff's latency figures fit that reading: CogVideoX 105.1 s predicted vs 105.6 s reported);
    the approximated steps are those of `quality_oracle.ecdiff.real_call_mask` over those s steps.
    Returns the median over the image rows, a fraction per step.
    """
    from quality_oracle.ecdiff import real_call_mask

    path = Path(path) if path is not None else ECDIFF_CSV
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    losses = []
    for row in rows:
        if row["method"] != "EC-Diff" or row["vbench"]:  # image rows only
            continue
        reference = next(r for r in rows if r["cloud_model"] == row["cloud_model"]
                         and r["edge_model"] == row["edge_model"] and r["method"] == "HybridSD(k=10)")
        p, k, s = int(row["p"]), int(row["k"]), int(row["s"])
        approximated = s - int(real_call_mask(0, s, p, k, reinit_calls).sum())
        shortfall = max(0.0, 1.0 - float(row["ssim"]) / float(reference["ssim"]))
        losses.append(shortfall / approximated)
    return float(np.median(losses))
