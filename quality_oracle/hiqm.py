"""The fitted Hybrid Inference Quality Metric (HIQM, Eq. 7) and its fit from measurements.

Eq. (7) models the CLIP alignment of an HIS image as a modified sigmoid of the number of common
steps x, with coefficients that depend on the public-personal similarity phi and on whether SIM
and NPI are on (iota):

    Q(x) = L / (1 + exp(K (x - B))) + G.

The paper gives the curve only at measured similarities. Here each coefficient is a continuous,
piecewise-linear function of phi through the measured similarity bins (the "knots"), so Q is
exactly Eq. (7) at every phi and continuous in phi. The coefficients at the knots are fitted
jointly per iota by least squares, with L > 0 and K > 0 (so Q never rises with more common steps)
and a penalty on any fall of Q with higher similarity; what is left of such a fall after the fit
(a slope of about -1e-3 per unit similarity at worst) is removed exactly by tilting G(phi) by a tiny linear term, so Q is
non-decreasing in phi everywhere. Outside the measured range the coefficients are held at the
nearest measured bin (no extrapolation): Q is defined for every phi in [-1, 1].

`HIQMOracle.from_csv(path)` refits from any CSV with the columns
``sim_npi, similarity, common_steps, clip_score`` (the shipped SD3-medium measurements are the
default); `fit_report()` gives the per-curve RMSE next to a free fit of Eq. (7) to that curve alone.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit, least_squares

from his_common.arrays import namespace
from quality_oracle.base import QualityRequest
from his_common.storage import atomic_write_json, cache_root

DEFAULT_CSV = Path(__file__).parent / "data" / "hiqm_sd3_medium.csv"
ECDIFF_CSV = Path(__file__).parent / "data" / "ecdiff_reference.csv"
REQUIRED_COLUMNS = ("sim_npi", "similarity", "common_steps", "clip_score")

_PENALTY_WEIGHT = 1.0  # weight of a negative dQ/dphi against the data residuals
_GRID_STEPS = 28  # x grid of the monotonicity penalty
_GRID_PHI = 101  # similarity grid of the monotonicity penalty


def modified_sigmoid(x, L, K, B, G):
    """Eq. (7): L / (1 + exp(K (x - B))) + G, broadcasting over all arguments (numpy or torch)."""
    return L / (1.0 + namespace(x, L).exp(K * (x - B))) + G


def eq7_quality(common_steps, similarity, knots, coefficients, step_range: tuple[float, float]):
    """Q(x; phi) of Eq. (7) with (L, K, B, G) piecewise linear in phi through `knots` (S,) and
    `coefficients` (S, 4), held at the end knots beyond them, and x held inside `step_range`.

    Written once for numpy arrays and torch tensors (`knots` and `coefficients` then tensors of
    the same device); broadcasts over `common_steps` and `similarity`.
    """
    xp = namespace(similarity, common_steps, coefficients)
    phi = xp.clip(xp.float(similarity), float(knots[0]), float(knots[-1]))
    segment = xp.clip(xp.searchsorted(knots, phi) - 1, 0, len(knots) - 2)
    left, right = knots[segment], knots[segment + 1]
    fraction = ((phi - left) / (right - left))[..., None]
    coef = coefficients[segment] + fraction * (coefficients[segment + 1] - coefficients[segment])
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
    span = max(y.max() - y.min(), 1e-3)
    p0 = [span, 0.3, float(np.median(x)), float(y.min())]
    try:
        params, _ = curve_fit(modified_sigmoid, x, y, p0=p0, maxfev=20000)
    except RuntimeError:
        params = np.array(p0)
    if params[0] < 0 or params[1] < 0:  # a rising curve: Eq. (7) with L, K > 0 cannot follow it
        params = np.array([abs(params[0]), abs(params[1]), params[2], params[3]])
    return params


def fit_family(similarity: np.ndarray, common_steps: np.ndarray, clip_score: np.ndarray) -> CurveFamily:
    """Fit Eq. (7) coefficients at each measured similarity jointly, monotone in phi and x."""
    knots = np.unique(similarity)
    curves = [(common_steps[similarity == k], clip_score[similarity == k]) for k in knots]
    for k, (x, _) in zip(knots, curves):
        if len(np.unique(x)) < 4:
            raise ValueError(f"similarity bin {k}: need at least 4 distinct common_steps to fit Eq. (7), "
                             f"got {len(np.unique(x))}")
    free = np.array([_free_fit(x, y) for x, y in curves])
    step_range = (float(common_steps.min()), float(common_steps.max()))
    if len(knots) == 1:
        return CurveFamily(np.array([knots[0], knots[0] + 1e-9]), np.repeat(free, 2, axis=0), step_range)

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
    solution = least_squares(residuals, theta0.ravel(), method="trf", x_scale="jac", max_nfev=2000)
    coef = unpack(solution.x)

    # Remove the penalty's residual (a fall below ~1e-6 CLIP points) exactly: tilt G by c * phi with
    # c above the steepest fall of Q in phi, so dQ/dphi >= 0 everywhere (G stays piecewise linear).
    family = CurveFamily(knots, coef, step_range)
    x_check = np.linspace(*step_range, 400)[:, None]
    phi_check = np.linspace(knots[0], knots[-1], 4001)[None, :]
    steepest_fall = max(0.0, -float(family.similarity_slope(x_check, phi_check).min()))
    if steepest_fall > 0:
        coef = coef.copy()
        coef[:, 3] += (2.0 * steepest_fall + 1e-9) * (knots - knots[0])
    return CurveFamily(knots, coef, step_range)


class HIQMOracle:
    """Fitted HIQM (Eq. 7), separately for SIM/NPI on (iota=1) and off (iota=0)."""

    needs_prompts = False

    def __init__(self, families: dict[int, CurveFamily], fit_table: list[CurveFit] | None = None,
                 approximation_loss_per_step: float = 0.0, source: str = ""):
        if not families:
            raise ValueError("HIQMOracle needs at least one curve family (sim_npi 0 or 1)")
        self.families = families
        self.fit_table = fit_table or []
        self.approximation_loss_per_step = float(approximation_loss_per_step)
        self.source = source

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_csv(cls, path: str | Path | None = None) -> "HIQMOracle":
        """Fit from a measurements CSV (default: shipped SD3-medium data). Memoised per file content."""
        path = Path(path) if path is not None else DEFAULT_CSV
        if not path.is_file():
            raise FileNotFoundError(f"HIQM measurements file {str(path)!r} does not exist")
        families, table = _fit_cached(str(path), hashlib.sha1(path.read_bytes()).hexdigest())
        return cls(dict(families), list(table), source=str(path))

    def with_approximation_loss(self, loss_per_step: float) -> "HIQMOracle":
        """A copy whose `evaluate` applies the EC-Diff approximation quality model (see `evaluate`)."""
        if not 0 <= loss_per_step < 1:
            raise ValueError(f"approximation loss per step {loss_per_step!r}; allowed: a number in [0, 1)")
        return HIQMOracle(self.families, self.fit_table, loss_per_step, self.source)

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

    def fit_report_markdown(self) -> str:
        lines = ["| sim_npi | similarity | points | RMSE (this fit) | RMSE (free fit of that curve) |",
                 "|---|---|---|---|---|"]
        lines += [f"| {r.sim_npi} | {r.similarity:.2f} | {r.points} | {r.rmse:.5f} | {r.free_fit_rmse:.5f} |"
                  for r in self.fit_table]
        return "\n".join(lines)


_FIT_VERSION = 1  # bump when the fitting procedure changes: invalidates the disk cache


@functools.lru_cache(maxsize=8)
def _fit_cached(path: str, digest: str) -> tuple[tuple[tuple[int, CurveFamily], ...], tuple[CurveFit, ...]]:
    """Fit once per file content: memoised in memory and on disk (the fit takes seconds)."""
    stored = cache_root() / "hiqm" / f"{digest}-v{_FIT_VERSION}.json"
    try:
        blob = json.loads(stored.read_text())
        families = tuple((int(k), CurveFamily(np.array(v["knots"]), np.array(v["coefficients"]),
                                              tuple(v["step_range"]))) for k, v in blob["families"].items())
        return families, tuple(CurveFit(**row) for row in blob["fit_table"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: fit afresh
    families, table = _fit(Path(path))
    try:
        atomic_write_json(stored, {
            "families": {str(k): {"knots": f.knots.tolist(), "coefficients": f.coefficients.tolist(),
                                  "step_range": list(f.step_range)} for k, f in families},
            "fit_table": [dataclasses.asdict(row) for row in table]})
    except OSError:
        pass  # a read-only home is no reason to fail: the fit is still in memory
    return families, table


def _fit(path: Path) -> tuple[tuple[tuple[int, CurveFamily], ...], tuple[CurveFit, ...]]:
    measurements = _read_measurements(path)
    families, table = {}, []
    for iota, (phi, x, y) in measurements.items():
        family = fit_family(phi, x, y)
        families[iota] = family
        for k in np.unique(phi):
            sel = phi == k
            pred = family.quality(x[sel], np.full(sel.sum(), k))
            free = modified_sigmoid(x[sel], *_free_fit(x[sel], y[sel]))
            table.append(CurveFit(iota, float(k), int(sel.sum()),
                                  float(np.sqrt(np.mean((pred - y[sel]) ** 2))),
                                  float(np.sqrt(np.mean((free - y[sel]) ** 2)))))
    return tuple(families.items()), tuple(table)


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
