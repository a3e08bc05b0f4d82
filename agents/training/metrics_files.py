"""The per-iteration metrics of a training run: one flat row per iteration, kept in the run
folder as `metrics.jsonl` (appended, one JSON object a line) and `metrics.csv` (rewritten
atomically), and the one-line progress report printed per iteration.

Row keys: `iteration`, `elapsed_s` (training seconds of the whole run), `his/<name>` (the env's
episode means from agents.rllib.callbacks: network U, Q, T, E, similarities, per-UE means),
`learner/<name>` (PPO statistics averaged over the modules, plus the HIS learner's own) and
`perf/<name>` (env and agent steps, iteration seconds, throughput).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from his_common.storage import atomic_write_text

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LEARNER_STAT_KEYS = ("policy_loss", "vf_loss", "vf_loss_unclipped", "entropy", "mean_kl_loss", "clip_fraction",
                     "vf_explained_var", "total_loss")
# Learner statistics that must stay finite for training to go on.
LOSS_KEYS = ("learner/policy_loss", "learner/vf_loss", "learner/total_loss", "learner/entropy")


def flat_metrics(result: Mapping[str, Any], num_agents: int, iter_s: float) -> Dict[str, float]:
    """The per-iteration row (without `iteration` and `elapsed_s`) from RLlib's result dict."""
    row: Dict[str, float] = {}
    env_runners = result.get("env_runners", {}) or {}
    for key, value in (env_runners.get("his", {}) or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[f"his/{key}"] = float(value)
    learners = result.get("learners", {}) or {}
    per_key: Dict[str, List[float]] = {}
    for mid, stats in learners.items():
        if not isinstance(stats, Mapping) or mid in ("__all_modules__", "his"):
            continue
        for key in LEARNER_STAT_KEYS:
            if key in stats:
                try:
                    per_key.setdefault(key, []).append(float(stats[key]))
                except (TypeError, ValueError):
                    pass
    for key, vals in per_key.items():
        row[f"learner/{key}"] = float(sum(vals) / len(vals))
    for key, value in (learners.get("his", {}) or {}).items():
        try:
            row[f"learner/{key}"] = float(value)
        except (TypeError, ValueError):
            pass
    env_steps = float(env_runners.get("num_env_steps_sampled", 0) or 0)
    row["perf/env_steps_this_iter"] = env_steps
    row["perf/agent_steps_this_iter"] = env_steps * num_agents
    row["perf/iteration_s"] = iter_s
    row["perf/agent_steps_per_s"] = env_steps * num_agents / iter_s if iter_s > 0 else float("nan")
    row["perf/env_steps_total"] = float(result.get("num_env_steps_sampled_lifetime", 0) or 0)
    row["perf/agent_steps_total"] = row["perf/env_steps_total"] * num_agents
    return row


def nonfinite_losses(row: Mapping[str, Any]) -> Dict[str, float]:
    """The loss entries of a row that are NaN or infinite."""
    return {k: row[k] for k in LOSS_KEYS if k in row and isinstance(row[k], float) and not math.isfinite(row[k])}


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn last line (a crash in mid-write) ends the list."""
    rows: List[Dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            break
        rows.append(row)
    return rows


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    keys: Dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(keys))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class MetricsFiles:
    """`metrics.jsonl` and `metrics.csv` of a run folder, holding the rows in `self.rows`."""

    def __init__(self, run_dir: Path) -> None:
        self.jsonl = Path(run_dir) / METRICS_JSONL
        self.csv = Path(run_dir) / METRICS_CSV
        self.rows: List[Dict[str, Any]] = []

    def read(self) -> List[Dict[str, Any]]:
        return read_jsonl(self.jsonl)

    def rewrite(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replace both files with exactly `rows` (atomic writes)."""
        self.rows = [dict(r) for r in rows]
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        atomic_write_text(self.csv, csv_text(self.rows))

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        with self.jsonl.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        atomic_write_text(self.csv, csv_text(self.rows))


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(row: Mapping[str, Any]) -> str:
    def g(key: str, fmt: str = "{:.3f}") -> str:
        value = row.get(key)
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)

    return (f"[iter {int(row['iteration']):4d}] env-steps {int(row['perf/env_steps_total']):>9,} | "
            f"U {g('his/utility')}  Q {g('his/quality')}  T {g('his/delay', '{:.2f}')} s  "
            f"E {g('his/energy', '{:,.0f}')} J | "
            f"{g('perf/agent_steps_per_s', '{:,.0f}')} agent-steps/s | elapsed {fmt_duration(row['elapsed_s'])}")
