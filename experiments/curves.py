"""Fig. 15: training reward curves of train.py runs, read from their metrics files.

`read_run_curve` returns a run's (env steps, U) points; `run_env_config` the env it trained on
(its `config.yaml`, else its latest checkpoint's run record); `env_differences` the env keys
on which runs differ. Curves of different envs (above all different numbers of UEs N) put
utilities of different scales on one axis: the figure says so, naming the runs and values.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import yaml

NON_ENV_SECTIONS = ("train", "algorithm", "experiment")


def read_run_curve(run_dir: Path) -> Tuple[List[float], List[float]]:
    """(env steps, network utility U) per training iteration of a train.py output folder."""
    run_dir = Path(run_dir)
    csv_path, jsonl = run_dir / "metrics.csv", run_dir / "metrics.jsonl"
    if csv_path.is_file():
        with csv_path.open(newline="") as fh:
            rows: List[Mapping[str, Any]] = list(csv.DictReader(fh))
    elif jsonl.is_file():
        rows = []
        for line in jsonl.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
    else:
        raise ValueError(f"--runs {str(run_dir)!r}: no metrics.csv or metrics.jsonl (not a train.py output folder)")
    xs, ys = [], []
    for row in rows:
        try:
            x, y = float(row["perf/env_steps_total"]), float(row["his/utility"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def moving_average(ys: Sequence[float], k: int) -> np.ndarray:
    """Trailing mean over up to k points (the first points average what there is)."""
    ys = np.asarray(ys, dtype=float)
    if k <= 1 or ys.size < 2:
        return ys
    csum = np.concatenate([[0.0], np.cumsum(ys)])
    idx = np.arange(1, ys.size + 1)
    lo = np.maximum(0, idx - k)
    return (csum[idx] - csum[lo]) / (idx - lo)


def run_env_config(run_dir: Path) -> Dict[str, Any]:
    """The env config a run trained with: its config.yaml without the learner's sections, else
    the env config in its latest checkpoint's run record; {} when neither is readable."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            data = None
        if isinstance(data, Mapping):
            env = data.get("env")
            return dict(env) if isinstance(env, Mapping) else {k: v for k, v in data.items()
                                                                  if k not in NON_ENV_SECTIONS}
    try:
        from agents.checkpoints import read_run_info, resolve_checkpoint

        return dict(read_run_info(resolve_checkpoint(run_dir))["env_config"])
    except Exception:  # noqa: BLE001 - no readable record: nothing to compare
        return {}


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def env_differences(configs: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """{dotted env key: {run label: value}} for every key whose value is not the same in all runs
    (a key a run's config lacks counts as its value None). Runs without a readable config are left out."""
    flat = {label: _flatten(cfg) for label, cfg in configs.items() if cfg}
    keys = sorted(set().union(*flat.values())) if flat else []
    out = {}
    for key in keys:
        values = {label: cfg.get(key) for label, cfg in flat.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            out[key] = values
    return out


def mixed_env_warning(differences: Mapping[str, Mapping[str, Any]]) -> str:
    """One sentence naming the runs' differing env keys, N first; empty when they agree."""
    if not differences:
        return ""
    keys = sorted(differences, key=lambda k: (k != "num_ues", k))
    parts = ["{} ({})".format(k, ", ".join(f"{label}: {v}" for label, v in differences[k].items()))
             for k in keys[:6]]
    more = f" and {len(keys) - 6} more keys" if len(keys) > 6 else ""
    what = "different numbers of UEs N, so their U are on different scales" if "num_ues" in differences \
        else "different env settings, so their curves are not directly comparable"
    return f"warning: these runs trained on {what}: " + "; ".join(parts) + more


def curve_summary(curves: Sequence[Tuple[str, Sequence[float], Sequence[float]]],
                  num_ues: Mapping[str, Any]) -> str:
    """Markdown: per run, N, iterations, the mean U of iterations 1-10 (how fast it learns), the
    mean of the last 5 and the best 5-iteration mean."""
    lines = ["| run | N | iterations | U, mean of iterations 1-10 | final U (mean of last 5) | "
             "best U (5-iteration mean) |", "|---|---|---|---|---|---|"]
    for label, _, ys in curves:
        early = float(np.mean(ys[:10])) if ys else float("nan")
        tail = float(np.mean(ys[-5:])) if ys else float("nan")
        best = float(np.max(moving_average(ys, 5))) if ys else float("nan")
        n = num_ues.get(label)
        lines.append(f"| {label} | {n if n is not None else '?'} | {len(ys)} | {early:.4f} | {tail:.4f} | {best:.4f} |")
    return "\n".join(lines) + "\n"
