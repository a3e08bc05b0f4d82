"""Aggregate metrics to the field's standard: rliable (Agarwal et al., "Deep Reinforcement Learning
at the Edge of the Statistical Precipice", NeurIPS 2021), from normalised scores, with no rerun.

Scores are arrays shaped (runs, tasks[, ...]): run n of task m is one (algorithm, scheme, seed) cell's
normalised score (U - U_random) / (U_search - U_random). The definitions are rliable's
(`rliable.metrics`), computed on the last two axes so that one call also scores a whole batch of
bootstrap resamples:

- `iqm`: interquartile mean over all runs and tasks, scipy.stats.trim_mean(x, 0.25, axis=None):
  int(0.25 n) values cut from each end of the n sorted scores (IQM of 8 = mean of the middle 4;
  of 3, nothing is cut and it is the mean);
- `median`: the median over tasks of the per-task mean score (for one task: its mean);
- `mean`: the mean over tasks of the per-task mean score;
- `optimality_gap`: gamma - mean(min(score, gamma)), gamma = 1 (the search reference);
- `probability_of_improvement(x, y)`: P(X > Y) per task, over every pair of a run of X and a run of
  Y, a tie counting 1/2 (the Mann-Whitney U over nx ny), averaged over tasks;
- `performance_profile`: the fraction of runs (all tasks) whose score is above each threshold tau.

Confidence intervals: a stratified bootstrap (rliable's `StratifiedBootstrap` /
`StratifiedIndependentBootstrap`): each resample draws, within each task, as many runs as it has,
with replacement (two algorithms compared by P(X > Y) are resampled independently); the interval is
the percentile interval of the statistic over `reps` resamples (default 2,000, 95 %). Each interval
draws from its own generator seeded by (`seed`, the interval's name), so a report is reproducible
and adding an algorithm or a task leaves the other intervals as they were. The resampling is done
here with numpy rather than through `rliable.library.get_interval_estimates`: rliable 1.2 needs
arch < 8, which does not import beside pandas 3, and its per-resample loop (Mann-Whitney per task
per resample) takes minutes on a full grid. The statistics equal rliable's own functions
(`rliable.metrics`); tests/experiments/test_field_metrics.py checks them against rliable, and the
intervals against `rliable.library` where it imports.

Ranking and its stability (`ranking_stability`): algorithms ranked by IQM across tasks (rank 1 the
highest, ties sharing the mean rank). Adjacent algorithms form one *tie group* unless the higher one's
IQM exceeds the lower one's in at least `confidence` of the bootstrap resamples (each algorithm's runs
resampled independently, stratified by task); the ranking of the groups is *stable* when it holds
(every algorithm of a group above every algorithm of the groups below) in at least `confidence` of
the resamples. Reported beside it: each algorithm's rank interval over the resamples, and the
split-half agreement: Kendall's tau-b between the IQM rankings of two disjoint halves of each
algorithm's seeds, over random splits (mean and fraction of splits with tau >= 0.8), and for the
first half of the seeds against the second.

Sample-efficiency and wall-clock curves come from the curve points (greedy evaluations along each
run): the runs of an algorithm are aligned on a common grid of frames (or training seconds), the
evaluation points of those runs between the latest first evaluation and the earliest last one (at
most `MAX_GRID_POINTS`, else that many evenly spaced), every run reaching every grid point; a run's
value at a grid point is its last evaluation at or before it (what the policy trained up to then
scored; no interpolation). The IQM at each grid point gets its own interval.

Degrading: with fewer than 2 runs no interval (a bootstrap of one run has no spread) and no
probability of improvement; with one algorithm no probability of improvement; every skipped metric
is listed in the result's `skipped` with the reason. Across tasks, an algorithm's runs are the seeds
that finished on every task (rliable's matrices are runs x tasks); the seeds left out are named.
"""
from __future__ import annotations

import math
import zlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

DEFAULT_REPS = 2_000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
GAMMA = 1.0
MAX_GRID_POINTS = 50
PROFILE_POINTS = 101
ALL_TASKS = "all"
AGGREGATES = ("iqm", "median", "mean", "optimality_gap")
AGGREGATE_NAMES = {"iqm": "IQM", "median": "median", "mean": "mean", "optimality_gap": "optimality gap"}
CURVE_AXES = ("frames", "train_s")
SPLITS = 200  # random split halves of the seeds for the split-half agreement
AGREEMENT = 0.8  # Kendall's tau counted as agreement between two halves' rankings


# ---------------------------------------------------------------------- the statistics (rliable's definitions)
def _array(scores: Any) -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"scores of shape {a.shape}; expected (runs, tasks), with optional leading batch axes")
    return a


def iqm(scores: Any) -> np.ndarray:
    """Interquartile mean over the last two axes (runs, tasks): the mean of the sorted scores with
    int(0.25 n) cut from each end (scipy.stats.trim_mean(., 0.25, axis=None), rliable's aggregate_iqm)."""
    a = _array(scores)
    flat = np.sort(a.reshape(a.shape[:-2] + (-1,)), axis=-1)
    n = flat.shape[-1]
    cut = int(0.25 * n)
    return flat[..., cut:n - cut].mean(axis=-1)


def mean(scores: Any) -> np.ndarray:
    """Mean over tasks of the per-task mean (rliable's aggregate_mean)."""
    return _array(scores).mean(axis=-2).mean(axis=-1)


def median(scores: Any) -> np.ndarray:
    """Median over tasks of the per-task mean (rliable's aggregate_median)."""
    return np.median(_array(scores).mean(axis=-2), axis=-1)


def optimality_gap(scores: Any, gamma: float = GAMMA) -> np.ndarray:
    """gamma - mean over runs and tasks of min(score, gamma) (rliable's aggregate_optimality_gap)."""
    a = _array(scores)
    return gamma - np.minimum(a, gamma).mean(axis=(-2, -1))


AGGREGATE_FUNCTIONS: Dict[str, Callable[[Any], np.ndarray]] = {
    "iqm": iqm, "median": median, "mean": mean, "optimality_gap": optimality_gap}


def aggregates(scores: Any) -> np.ndarray:
    """IQM, median, mean and optimality gap (in AGGREGATES' order) on the last axis."""
    return np.stack([AGGREGATE_FUNCTIONS[name](scores) for name in AGGREGATES], axis=-1)


def probability_of_improvement(scores_x: Any, scores_y: Any) -> np.ndarray:
    """P(X > Y): per task the fraction of (run of X, run of Y) pairs where X scores higher, a tie
    counting 1/2, averaged over tasks (rliable's probability_of_improvement). Shapes (..., nx, tasks)
    and (..., ny, tasks)."""
    x, y = _array(scores_x), _array(scores_y)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"X has {x.shape[-1]} tasks, Y {y.shape[-1]}")
    xs, ys = x[..., :, None, :], y[..., None, :, :]
    per_task = ((xs > ys) + 0.5 * (xs == ys)).mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def performance_profile(scores: Any, taus: Sequence[float]) -> np.ndarray:
    """Fraction of all runs of all tasks whose score is above each tau (rliable's score distribution)."""
    a = _array(scores)
    flat = a.reshape(a.shape[:-2] + (-1,))
    return (flat[..., :, None] > np.asarray(taus, dtype=np.float64)).mean(axis=-2)


def profile_thresholds(values: Sequence[float], points: int = PROFILE_POINTS) -> np.ndarray:
    """Thresholds for a performance profile: from min(0, lowest score) to max(1, highest score)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    lo = min(0.0, float(v.min())) if v.size else 0.0
    hi = max(1.0, float(v.max())) if v.size else 1.0
    return np.linspace(lo, hi, points)


# ---------------------------------------------------------------------- the stratified bootstrap
def generator(seed: int, key: str) -> np.random.Generator:
    """The generator of one interval: seeded by (seed, key), independent of the other intervals."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))


def stratified_resamples(scores: Any, reps: int, rng: np.random.Generator) -> np.ndarray:
    """`reps` resamples of scores (runs, tasks, ...): within each task, as many runs as there are,
    drawn with replacement (rliable's StratifiedBootstrap); shape (reps, runs, tasks, ...)."""
    a = _array(scores)
    n, m = a.shape[0], a.shape[1]
    idx = rng.integers(0, n, size=(reps, n, m))
    return a[idx, np.arange(m)[None, None, :]]


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> Tuple[np.ndarray, np.ndarray]:
    """The percentile interval over the first axis (the resamples)."""
    alpha = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(samples, [alpha, 100.0 - alpha], axis=0)
    return lo, hi


def interval_estimate(scores: Any, func: Callable[[np.ndarray], np.ndarray], reps: int = DEFAULT_REPS,
                      confidence: float = CONFIDENCE, seed: int = DEFAULT_SEED, key: str = ""
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point estimate, interval low, interval high) of `func` (vectorised over leading axes) on
    scores (runs, tasks, ...), by the stratified bootstrap."""
    a = _array(scores)
    point = np.asarray(func(a))
    boot = np.asarray(func(stratified_resamples(a, reps, generator(seed, key))))
    lo, hi = percentile_interval(boot, confidence)
    return point, lo, hi


def improvement_interval(scores_x: Any, scores_y: Any, reps: int = DEFAULT_REPS, confidence: float = CONFIDENCE,
                         seed: int = DEFAULT_SEED, key: str = "") -> Tuple[float, float, float]:
    """P(X > Y) and its interval; X and Y resampled independently (rliable's StratifiedIndependentBootstrap)."""
    x, y = _array(scores_x), _array(scores_y)
    rng = generator(seed, key)
    point = float(probability_of_improvement(x, y))
    boot = probability_of_improvement(stratified_resamples(x, reps, rng), stratified_resamples(y, reps, rng))
    lo, hi = percentile_interval(boot, confidence)
    return point, float(lo), float(hi)


# ---------------------------------------------------------------------- ranking and its stability
def ranks(values: Any) -> np.ndarray:
    """Rank of each entry of the last axis, 1 for the highest, ties sharing their mean rank
    (scipy.stats.rankdata(-v, method="average")), vectorised over leading axes."""
    v = np.asarray(values, dtype=np.float64)
    above = (v[..., None, :] > v[..., :, None]).sum(axis=-1)
    tied = (v[..., None, :] == v[..., :, None]).sum(axis=-1)  # itself included
    return 1.0 + above + 0.5 * (tied - 1)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score vectors over the same items (ties in either count as
    neither concordant nor discordant; scipy.stats.kendalltau's default). NaN when either is constant."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(x.size, k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = i.size
    n1, n2 = int((dx == 0).sum()), int((dy == 0).sum())
    if n0 == n1 or n0 == n2:
        return math.nan
    return float((dx * dy).sum() / math.sqrt((n0 - n1) * (n0 - n2)))


def _tie_groups(order: Sequence[str], kept: Sequence[float], confidence: float) -> List[List[str]]:
    """Split the ranking `order` where the adjacent pair's order holds in >= confidence of the resamples."""
    groups = [[order[0]]] if order else []
    for name, p in zip(order[1:], kept):
        if p >= confidence:
            groups.append([name])
        else:
            groups[-1].append(name)
    return groups


def ranking_stability(matrices: Mapping[str, np.ndarray], reps: int = DEFAULT_REPS, confidence: float = CONFIDENCE,
                      seed: int = DEFAULT_SEED, splits: int = SPLITS) -> Dict[str, Any]:
    """The IQM ranking of the algorithms whose score matrices (runs, tasks) are given, and how stable
    it is (the module docstring's rules). Needs at least 2 algorithms, each with at least 2 runs."""
    names = list(matrices)
    if len(names) < 2 or any(np.asarray(matrices[a]).shape[0] < 2 for a in names):
        raise ValueError("a ranking's stability needs at least 2 algorithms with at least 2 runs each")
    point = np.array([float(iqm(matrices[a])) for a in names])
    order_idx = np.argsort(-point, kind="stable")
    order = [names[i] for i in order_idx]
    point_ranks = ranks(point)
    boot = np.stack([iqm(stratified_resamples(matrices[a], reps, generator(seed, f"ranking/{a}"))) for a in names],
                    axis=-1)  # (reps, algorithms)
    boot_ranks = ranks(boot)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(boot_ranks, [alpha, 100.0 - alpha], axis=0)
    kept = [float(np.mean((boot[:, a] > boot[:, b]) + 0.5 * (boot[:, a] == boot[:, b])))
            for a, b in zip(order_idx[:-1], order_idx[1:])]
    groups = _tie_groups(order, kept, confidence)
    index = {a: i for i, a in enumerate(names)}
    holds = np.ones(reps, dtype=bool)
    for upper, lower in zip(groups[:-1], groups[1:]):
        lower_all = [index[a] for g in groups[groups.index(lower):] for a in g]
        holds &= boot[:, [index[a] for a in upper]].min(axis=1) > boot[:, lower_all].max(axis=1)
    group_holds = float(holds.mean()) if len(groups) > 1 else 1.0
    rows = [{"algorithm": a, "iqm": float(point[index[a]]), "rank": float(point_ranks[index[a]]),
             "rank_ci_low": float(lo[index[a]]), "rank_ci_high": float(hi[index[a]]),
             "p_same_rank": float(np.mean(boot_ranks[:, index[a]] == point_ranks[index[a]])),
             "p_above_next": kept[k] if k < len(kept) else math.nan,
             "group": next(g for g, members in enumerate(groups, start=1) if a in members)}
            for k, a in enumerate(order)]
    # split-half agreement: random halves of each algorithm's runs (stratification kept: whole rows)
    rng = generator(seed, "ranking/splits")
    taus = []
    for _ in range(splits):
        first, second = [], []
        for a in names:
            m = np.asarray(matrices[a], dtype=np.float64)
            perm = rng.permutation(m.shape[0])
            half = m.shape[0] // 2
            first.append(float(iqm(m[perm[:half]])))
            second.append(float(iqm(m[perm[half:2 * half]])))
        taus.append(kendall_tau(first, second))
    taus_a = np.asarray(taus, dtype=np.float64)
    halves = [[float(iqm(np.asarray(matrices[a])[:np.asarray(matrices[a]).shape[0] // 2])) for a in names],
              [float(iqm(np.asarray(matrices[a])[np.asarray(matrices[a]).shape[0] // 2:])) for a in names]]
    return {"order": order, "rows": rows, "groups": groups, "group_ranking_holds": group_holds,
            "stable": bool(group_holds >= confidence), "same_full_ranking": float(np.mean(
                (boot_ranks == point_ranks[None, :]).all(axis=1))),
            "split_half_tau_mean": float(np.nanmean(taus_a)) if np.isfinite(taus_a).any() else math.nan,
            "split_half_agreement": float(np.mean(taus_a >= AGREEMENT)), "split_half_splits": int(splits),
            "first_vs_second_half_tau": kendall_tau(*halves), "confidence": float(confidence)}


# ---------------------------------------------------------------------- curves on a common grid
def common_grid(xs: Sequence[Sequence[float]], max_points: int = MAX_GRID_POINTS) -> np.ndarray:
    """The grid on which runs with evaluation points `xs` (one sorted sequence per run) are compared:
    their points between the latest first point and the earliest last point (every run has an
    evaluation at or before each grid point and has reached it); more than `max_points` of them:
    `max_points` evenly spaced over that range. Empty when the ranges do not overlap."""
    runs = [np.asarray(x, dtype=np.float64) for x in xs if len(x)]
    if not runs:
        return np.zeros(0)
    lo = max(float(r.min()) for r in runs)
    hi = min(float(r.max()) for r in runs)
    if lo > hi:
        return np.zeros(0)
    points = np.unique(np.concatenate(runs))
    points = points[(points >= lo) & (points <= hi)]
    if points.size > max_points:
        points = np.linspace(lo, hi, max_points)
    return points


def values_on_grid(x: Sequence[float], y: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """y of the last point with x at or before each grid point (NaN before the first point)."""
    x, y, g = (np.asarray(v, dtype=np.float64) for v in (x, y, grid))
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    at = np.searchsorted(x, g, side="right") - 1
    out = np.where(at >= 0, y[np.clip(at, 0, None)] if y.size else np.nan, np.nan)
    return out.astype(np.float64)


def iqm_curve(scores: Any) -> np.ndarray:
    """IQM at each grid point of scores (..., runs, tasks, points)."""
    return iqm(np.moveaxis(_array(scores), -1, -3))


# ---------------------------------------------------------------------- the whole evaluation
Runs = Mapping[str, Mapping[str, Mapping[int, float]]]          # task -> algorithm -> seed -> final score
Curves = Mapping[str, Mapping[str, Mapping[int, Mapping[str, Sequence[float]]]]]  # ... -> {frames, train_s, score}


def _nan_row() -> Dict[str, float]:
    row: Dict[str, float] = {}
    for name in AGGREGATES:
        row.update({name: math.nan, f"{name}_ci_low": math.nan, f"{name}_ci_high": math.nan})
    return row


def _aggregate_row(task: str, algorithm: str, scores: np.ndarray, seeds: Sequence[int], reps: int,
                   confidence: float, seed: int) -> Dict[str, Any]:
    row: Dict[str, Any] = {"task": task, "algorithm": algorithm, "runs": int(scores.shape[0]),
                           "tasks": int(scores.shape[1]), "seeds": " ".join(str(s) for s in seeds), **_nan_row()}
    if scores.shape[0] == 0:
        return row
    if scores.shape[0] >= 2:
        point, lo, hi = interval_estimate(scores, aggregates, reps, confidence, seed, f"aggregates/{task}/{algorithm}")
    else:
        point, lo, hi = aggregates(scores), np.full(len(AGGREGATES), np.nan), np.full(len(AGGREGATES), np.nan)
    for i, name in enumerate(AGGREGATES):
        row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = float(point[i]), float(lo[i]), float(hi[i])
    return row


def complete_seeds(runs: Runs, algorithm: str, tasks: Sequence[str]) -> List[int]:
    """The seeds of `algorithm` with a score on every task."""
    sets = [set(runs.get(task, {}).get(algorithm, {})) for task in tasks]
    return sorted(set.intersection(*sets)) if sets else []


def score_matrix(runs: Runs, algorithm: str, tasks: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
    """(runs, tasks) matrix of `algorithm`'s final scores for `seeds` (rows) and `tasks` (columns)."""
    return np.array([[float(runs[task][algorithm][s]) for task in tasks] for s in seeds],
                    dtype=np.float64).reshape(len(seeds), len(tasks))


def _curve_rows(axis: str, task: str, algorithm: str, curves: Curves, tasks: Sequence[str], seeds: Sequence[int],
                reps: int, confidence: float, seed: int, max_points: int) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    runs = [curves[t][algorithm][s] for s in seeds for t in tasks]
    runs = [r for r in runs if len(r.get(axis, ()))]
    if len(runs) < len(seeds) * len(tasks) or not seeds:
        return [], "a run without curve points"
    grid = common_grid([r[axis] for r in runs], max_points)
    if grid.size == 0:
        return [], "the runs' evaluation ranges do not overlap"
    cube = np.stack([np.stack([values_on_grid(curves[t][algorithm][s][axis], curves[t][algorithm][s]["score"], grid)
                               for t in tasks]) for s in seeds])  # (runs, tasks, grid)
    if len(seeds) >= 2:
        point, lo, hi = interval_estimate(cube, iqm_curve, reps, confidence, seed, f"curve/{axis}/{task}/{algorithm}")
    else:
        point, lo, hi = iqm_curve(cube), np.full(grid.size, np.nan), np.full(grid.size, np.nan)
    return [{"axis": axis, "task": task, "algorithm": algorithm, "x": float(x), "iqm": float(p), "ci_low": float(a),
             "ci_high": float(b), "runs": len(seeds), "tasks": len(tasks)}
            for x, p, a, b in zip(grid, point, lo, hi)], None


def evaluate(runs: Runs, curves: Optional[Curves] = None, reps: int = DEFAULT_REPS, confidence: float = CONFIDENCE,
             seed: int = DEFAULT_SEED, max_points: int = MAX_GRID_POINTS,
             profile_points: int = PROFILE_POINTS) -> Dict[str, Any]:
    """Every metric of the module docstring from the final scores `runs` (task -> algorithm -> seed ->
    score) and the curve points `curves` (task -> algorithm -> seed -> {"frames", "train_s", "score"}:
    sequences of one run's evaluations). Returns a JSON-able dict: settings, tasks, algorithms,
    `aggregates` (rows per task and across tasks ("all")), `performance_profile`,
    `probability_of_improvement` (rows per ordered pair, across tasks), `ranking` (`ranking_stability`
    across tasks, or None), `sample_efficiency` (rows per
    axis, task, algorithm and grid point), `excluded` (runs left out of the across-task metrics, and
    why) and `skipped` (metrics not computed, and why)."""
    if reps < 1:
        raise ValueError(f"bootstrap reps {reps!r}; allowed: an integer >= 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r}; allowed: a number between 0 and 1")
    curves = curves or {}
    tasks = [t for t in runs if any(runs[t].values())]
    algorithms = list(dict.fromkeys(a for t in tasks for a, seeds in runs[t].items() if seeds))
    skipped: List[Dict[str, str]] = []
    excluded: List[str] = []

    def skip(metric: str, reason: str) -> None:
        skipped.append({"metric": metric, "reason": reason})

    # per task: each algorithm's finished runs on it
    rows: List[Dict[str, Any]] = []
    for task in tasks:
        for algorithm in algorithms:
            seeds = sorted(runs[task].get(algorithm, {}))
            rows.append(_aggregate_row(task, algorithm, score_matrix(runs, algorithm, [task], seeds), seeds, reps,
                                       confidence, seed))
    # across tasks: each algorithm's seeds finished on every task
    matrices: Dict[str, np.ndarray] = {}
    seeds_of: Dict[str, List[int]] = {}
    for algorithm in algorithms:
        seeds = complete_seeds(runs, algorithm, tasks)
        left = sorted({s for t in tasks for s in runs[t].get(algorithm, {})} - set(seeds))
        for s in left:
            missing = [t for t in tasks if s not in runs[t].get(algorithm, {})]
            excluded.append(f"{algorithm} seed {s}: no finished run on {', '.join(missing)}")
        if not seeds:
            excluded.append(f"{algorithm}: no seed finished on every task")
            continue
        seeds_of[algorithm] = seeds
        matrices[algorithm] = score_matrix(runs, algorithm, tasks, seeds)
        if len(tasks) > 1:
            rows.append(_aggregate_row(ALL_TASKS, algorithm, matrices[algorithm], seeds, reps, confidence, seed))
    few = [r for r in rows if r["runs"] < 2]
    if few:
        where = ("every algorithm and task" if len(few) == len(rows) else
                 "; ".join(f"{r['algorithm']} on {r['task']} ({r['runs']})" for r in few))
        skip("confidence intervals (IQM, median, mean, optimality gap, performance profiles, curves)",
             f"fewer than 2 seeds for {where}: a bootstrap over one run has no spread")

    # performance profiles across tasks
    profile: Optional[Dict[str, Any]] = None
    if matrices:
        taus = profile_thresholds(np.concatenate([m.ravel() for m in matrices.values()]), profile_points)
        profile = {"taus": taus.tolist(), "profiles": {}}
        for algorithm, m in matrices.items():
            if m.shape[0] >= 2:
                point, lo, hi = interval_estimate(m, lambda s: performance_profile(s, taus), reps, confidence, seed,
                                                  f"profile/{algorithm}")
            else:
                point, lo, hi = performance_profile(m, taus), np.full(taus.size, np.nan), np.full(taus.size, np.nan)
            profile["profiles"][algorithm] = {"fraction": point.tolist(), "ci_low": lo.tolist(),
                                              "ci_high": hi.tolist(), "runs": int(m.shape[0])}
    else:
        skip("performance profiles", "no algorithm has a seed finished on every task")

    # probability of improvement, every ordered pair
    improvement: List[Dict[str, Any]] = []
    compared = [a for a in matrices if matrices[a].shape[0] >= 2]
    if len(matrices) < 2:
        skip("probability of improvement", f"{len(matrices)} algorithm{'' if len(matrices) == 1 else 's'} "
             f"with runs on every task; it compares two")
    else:
        if len(compared) < len(matrices):
            one = [a for a in matrices if a not in compared]
            skip("probability of improvement" + (f" for {', '.join(one)}" if len(compared) >= 2 else ""),
                 f"fewer than 2 seeds ({', '.join(f'{a}: {matrices[a].shape[0]}' for a in one)}): P(X > Y) over "
                 f"single runs is 0, 1/2 or 1, not an estimate")
        for x in compared:
            for y in compared:
                if x == y:
                    continue
                p, lo, hi = improvement_interval(matrices[x], matrices[y], reps, confidence, seed, f"poi/{x}/{y}")
                improvement.append({"x": x, "y": y, "probability": p, "ci_low": lo, "ci_high": hi,
                                    "runs_x": int(matrices[x].shape[0]), "runs_y": int(matrices[y].shape[0]),
                                    "tasks": len(tasks)})

    # the IQM ranking across tasks and its stability
    ranking: Optional[Dict[str, Any]] = None
    if len(compared) >= 2:
        ranking = ranking_stability({a: matrices[a] for a in compared}, reps, confidence, seed)
    else:
        skip("ranking stability", "fewer than 2 algorithms with at least 2 seeds on every task")

    # sample-efficiency (frames) and wall-clock (training seconds) curves
    sample: List[Dict[str, Any]] = []
    if not curves:
        skip("sample-efficiency and wall-clock curves", "no curve points in the records")
    else:
        no_curve: List[str] = []
        for axis in CURVE_AXES:
            for algorithm in algorithms:
                groups = [(task, [task], sorted(runs[task].get(algorithm, {}))) for task in tasks]
                if algorithm in seeds_of and len(tasks) > 1:
                    groups.append((ALL_TASKS, tasks, seeds_of[algorithm]))
                for label, group_tasks, seeds in groups:
                    if not seeds:
                        continue
                    try:
                        got, why = _curve_rows(axis, label, algorithm, curves, group_tasks, seeds, reps, confidence,
                                               seed, max_points)
                    except KeyError:
                        got, why = [], "a run without curve points"
                    sample += got
                    if why:
                        no_curve.append(f"{algorithm} on {label} vs {axis} ({why})")
        if no_curve:
            skip("curves for " + "; ".join(sorted(set(no_curve))), "runs cannot be aligned on a common grid")
    return {"settings": {"reps": int(reps), "confidence": float(confidence), "seed": int(seed), "gamma": GAMMA,
                         "bootstrap": "stratified: runs resampled with replacement within each task",
                         "interval": "percentile", "max_grid_points": int(max_points)},
            "tasks": tasks, "algorithms": algorithms, "seeds": {a: s for a, s in seeds_of.items()},
            "aggregates": rows, "performance_profile": profile, "probability_of_improvement": improvement,
            "ranking": ranking, "sample_efficiency": sample, "excluded": excluded, "skipped": skipped}
