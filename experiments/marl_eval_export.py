"""`marl_eval.json`: a benchmark's runs in marl-eval's JSON layout (Gorsane et al., "Towards a
Standardised Performance Evaluation Protocol for Cooperative MARL", NeurIPS 2022; the
`id-marl-eval` package, which BenchMARL and Mava write to), read by marl-eval's
`data_process_pipeline` and `create_matrices_for_rliable` unchanged.

Layout (id-marl-eval 0.0.4's README and `marl_eval.json_tools.JsonLogger`; BenchMARL 1.5.2's
`benchmarl.experiment.logger.JsonWriter`, which names runs `seed_<seed>` as here):

    {"his-marl": {<scheme>: {<algorithm>: {"seed_<seed>": {
        "step_0": {"step_count": <frames>, "elapsed_time": <training s>, "score": [x], "utility": [x], ...},
        ...
        "step_<k>": {...},
        "absolute_metrics": {"score": [x], "utility": [x], ...}}}}}}

- tasks are the HIS schemes, algorithms BenchMARL's names (marl-eval lower-cases every key and
  refuses commas in algorithm names; both hold here);
- each step is a greedy evaluation along the run (`score` the normalised score (U - U_random) /
  (U_search - U_random), `utility` U, `quality` Q, `delay` T, `energy` E, each the mean over the
  evaluation episodes, so a one-element list as marl-eval allows for a metric computed over
  episodes); `elapsed_time` holds the run's training seconds at that evaluation (evaluations not
  counted), where marl-eval's JsonLogger writes wall-clock seconds since the first evaluation;
- marl-eval needs the same runs and the same steps everywhere ("same algorithms, on the same
  tasks, for the same number of independent runs and for the same amount of evaluation steps"), so
  the file holds the seeds that finished in every (scheme, algorithm) of the grid (algorithms with
  no finished run on some scheme are left out), and the steps are one frame grid for all runs
  (experiments.field_metrics.common_grid: the runs' evaluation frames between the latest first and
  the earliest last evaluation); a run's step is its last evaluation at or before the grid frame,
  and `step_count` is the grid frame; what was left out is returned and named in the report;
- `absolute_metrics` is the final evaluation of each run: the record's `absolute` evaluation when
  it has one (a final evaluation on more episodes: {"score", "utility", ..., "episodes"}), else its
  summary (the last curve point, on the benchmark's evaluation episodes). marl-eval's protocol
  takes the best policy evaluated on 10x the episodes; the report says which was used.

Metrics with no number (a run without references has no score) are left out of every step, since
marl-eval reads the metric names of the first run everywhere.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from experiments.field_metrics import MAX_GRID_POINTS, common_grid, values_on_grid
from his_common.storage import atomic_write_text

ENV_NAME = "his-marl"
FILE_NAME = "marl_eval.json"
METRICS = ("score", "utility", "quality", "delay", "energy")
ABSOLUTE_KEY = "absolute"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def final_evaluation(record: Mapping[str, Any], episodes: Optional[int] = None) -> Dict[str, Any]:
    """The run's absolute metric: its `absolute` evaluation when it has a finite score there, else
    its summary's final evaluation; {metric: value, ..., "episodes", "source"}."""
    absolute = record.get(ABSOLUTE_KEY)
    if isinstance(absolute, Mapping) and _finite(absolute.get("score")):
        out = {m: float(absolute[m]) for m in METRICS if _finite(absolute.get(m))}
        return {**out, "episodes": absolute.get("episodes", episodes), "source": ABSOLUTE_KEY}
    summary = record.get("summary", {})
    out = {m: float(summary[m]) for m in METRICS if _finite(summary.get(m))}
    return {**out, "episodes": episodes, "source": "summary"}


def run_curve(record: Mapping[str, Any], metrics: Sequence[str] = METRICS) -> Dict[str, np.ndarray]:
    """The run's curve points as arrays ("frames", "train_s" and each metric), in frame order; points
    without finite frames, training time and score are left out."""
    points = [p for p in record.get("curve", []) if isinstance(p, Mapping)
              and all(_finite(p.get(k)) for k in ("frames", "train_s", "score"))]
    points.sort(key=lambda p: p["frames"])
    out = {k: np.array([float(p[k]) for p in points]) for k in ("frames", "train_s")}
    for m in metrics:
        out[m] = np.array([float(p[m]) if _finite(p.get(m)) else math.nan for p in points])
    return out


def _ok(records: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    return [r for r in records if r.get("status") == "ok"]


def marl_eval_data(records: Sequence[Mapping[str, Any]], episodes: Optional[int] = None, env_name: str = ENV_NAME,
                   max_points: int = MAX_GRID_POINTS) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(marl-eval data, what was written and left out) from the benchmark's records."""
    ok = _ok(records)
    left_out: List[str] = [f"{r['cell']['algorithm']} {r['cell']['scheme']} seed {r['cell']['seed']}: failed"
                           for r in records if r.get("status") != "ok"]
    by_cell = {(r["cell"]["scheme"], r["cell"]["algorithm"], int(r["cell"]["seed"])): r for r in ok}
    tasks = list(dict.fromkeys(r["cell"]["scheme"] for r in records))
    algorithms = list(dict.fromkeys(r["cell"]["algorithm"] for r in records))
    kept_algorithms = []
    for a in algorithms:
        missing = [t for t in tasks if not any(k[0] == t and k[1] == a for k in by_cell)]
        if missing:
            left_out.append(f"{a}: no finished run on {', '.join(missing)} (marl-eval needs every algorithm on "
                            f"every task)")
        else:
            kept_algorithms.append(a)
    seed_sets = [{k[2] for k in by_cell if k[0] == t and k[1] == a} for t in tasks for a in kept_algorithms]
    seeds = sorted(set.intersection(*seed_sets)) if seed_sets else []
    for (t, a, s) in by_cell:
        if a in kept_algorithms and s not in seeds:
            left_out.append(f"{a} {t} seed {s}: seed {s} did not finish everywhere (marl-eval needs the same runs "
                            f"in every task and algorithm)")
    written = [by_cell[(t, a, s)] for t in tasks for a in kept_algorithms for s in seeds]
    curves = {id(r): run_curve(r) for r in written}
    finals = {id(r): final_evaluation(r, episodes) for r in written}
    grid = common_grid([c["frames"] for c in curves.values()], max_points)
    metrics = [m for m in METRICS
               if all(m in f for f in finals.values())
               and all(np.isfinite(values_on_grid(c["frames"], c[m], grid)).all() for c in curves.values())]
    info = {"env_name": env_name, "tasks": tasks if written else [], "algorithms": kept_algorithms if written else [],
            "seeds": seeds if written else [], "steps": int(grid.size), "grid_frames": grid.tolist(),
            "metrics": metrics, "left_out": left_out,
            "absolute_source": sorted({f["source"] for f in finals.values()}),
            "absolute_episodes": sorted({f["episodes"] for f in finals.values() if f["episodes"] is not None})}
    if not written or grid.size == 0 or "score" not in metrics:
        why = ("no seed finished on every task and algorithm" if not written else
               "the runs' evaluation frames do not overlap" if grid.size == 0 else "no finite score on every step")
        info["empty_because"] = why
        return {}, info
    data: Dict[str, Any] = {env_name: {}}
    for t in tasks:
        for a in kept_algorithms:
            for s in seeds:
                r = by_cell[(t, a, s)]
                c, f = curves[id(r)], finals[id(r)]
                values = {m: values_on_grid(c["frames"], c[m], grid) for m in ("train_s", *metrics)}
                run: Dict[str, Any] = {}
                for i, frame in enumerate(grid):
                    step: Dict[str, Any] = {"step_count": int(round(frame)),
                                            "elapsed_time": float(values["train_s"][i])}
                    step.update({m: [float(values[m][i])] for m in metrics})
                    run[f"step_{i}"] = step
                run["absolute_metrics"] = {m: [f[m]] for m in metrics}
                data[env_name].setdefault(t, {}).setdefault(a, {})[f"seed_{s}"] = run
    return data, info


def write_marl_eval(records: Sequence[Mapping[str, Any]], path: str | Path, episodes: Optional[int] = None,
                    env_name: str = ENV_NAME, max_points: int = MAX_GRID_POINTS) -> Dict[str, Any]:
    """Write `path` (marl-eval's layout; an empty object when no run can be written, then
    info["empty_because"] says why) and return what was written and left out."""
    data, info = marl_eval_data(records, episodes, env_name, max_points)
    atomic_write_text(Path(path), json.dumps(data, indent=1))
    info["path"] = str(path)
    return info
