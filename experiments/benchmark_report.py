"""The report of a benchmark: scores with bootstrap confidence intervals, learning curves, peak memory.

`write_report(records, references, spec, folder)` writes, atomically:

- `cells.csv`: one row per (algorithm, scheme, seed): status, attempts, normalised score, U, Q, T,
  E of the final greedy policy, frames, training seconds, agent-steps/s, peak memory, node;
- `summary.csv` and `report.md`: per scheme and algorithm, ranked by mean score: the mean over
  seeds of score = (U - U_random) / (U_search - U_random) with a 95 % percentile-bootstrap
  confidence interval (10,000 resamples of the seeds), mean U, training time, throughput and the
  largest peak memory; failed cells are listed with their last error; `report.md` also lists every
  cell with its status, and the cells of the grid not finished yet (a stopped benchmark);
- `curves.csv`, `curves.png` (score against frames and against training time, one line per seed)
  and `scores.png` (mean score with its interval per algorithm and scheme);
- with W&B (offline by default), one run holding the summary table and both plots.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from his_common.storage import atomic_write_bytes, atomic_write_text

BOOTSTRAP_RESAMPLES = 10_000
CELL_COLUMNS = ("algorithm", "scheme", "seed", "status", "attempts", "score", "utility", "quality", "delay",
                "energy", "frames", "agent_steps", "iterations", "train_s", "wall_s", "agent_steps_per_s",
                "peak_rss_mb", "peak_gpu_mb", "continuous_actions", "node", "error")


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling `values` with replacement)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def cell_rows(records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for record in records:
        row: Dict[str, Any] = {k: record["cell"][k] for k in ("algorithm", "scheme", "seed")}
        row["status"] = record["status"]
        row["attempts"] = record.get("attempts", 1)
        s = record.get("summary", {})
        for key in CELL_COLUMNS[5:-2]:
            row[key] = s.get(key, math.nan) if key != "continuous_actions" else s.get(key, "")
        row["node"] = (f"{s.get('node_ip', '')} {s['node_id'][:8]}" if s.get("node_id") else s.get("host", ""))
        row["error"] = (record.get("errors") or [""])[-1].splitlines()[-1] if record["status"] != "ok" else ""
        rows.append(row)
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (scheme, algorithm), ranked by mean score within each scheme."""
    groups: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scheme"], row["algorithm"]), []).append(row)
    out = []
    for (scheme, algorithm), group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        scores = [float(r["score"]) for r in ok]
        lo, hi = bootstrap_ci(scores)

        def mean(key: str) -> float:
            vals = [float(r[key]) for r in ok if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            return float(np.mean(vals)) if vals else math.nan

        peaks = [float(r["peak_rss_mb"]) for r in ok if math.isfinite(float(r["peak_rss_mb"]))]
        out.append({"scheme": scheme, "algorithm": algorithm, "seeds": len(ok), "failed": len(group) - len(ok),
                    "score_mean": float(np.mean(scores)) if scores else math.nan, "score_ci_low": lo,
                    "score_ci_high": hi, "utility_mean": mean("utility"), "frames_mean": mean("frames"),
                    "train_s_mean": mean("train_s"), "agent_steps_per_s_mean": mean("agent_steps_per_s"),
                    "peak_rss_mb_max": max(peaks) if peaks else math.nan})
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    ranked = []
    for scheme in schemes:
        part = [r for r in out if r["scheme"] == scheme]
        part.sort(key=lambda r: -r["score_mean"] if math.isfinite(r["score_mean"]) else math.inf)
        for rank, row in enumerate(part, 1):
            row["rank"] = rank
        ranked.extend(part)
    return ranked


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(x: Any, spec: str = "{:.3f}") -> str:
    return "n/a" if not isinstance(x, (int, float)) or not math.isfinite(x) else spec.format(x)


def markdown(summary: Sequence[Mapping[str, Any]], references: Mapping[str, Mapping[str, float]], spec,
             failed: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]] = (),
             missing: Sequence[str] = (), cell_table: bool = True) -> str:
    budget = (f"{spec.frame_budget:,} frames" if spec.frame_budget else "") + (
        " / " if spec.frame_budget and spec.time_budget_s else "") + (
        f"{spec.time_budget_s:g} s of training" if spec.time_budget_s else "")
    task = spec.task
    lines = [f"Benchmark: {len(spec.algorithms)} algorithms x {len(spec.schemes)} schemes x {len(spec.seeds)} seeds; "
             f"N = {task.get('num_ues', 50)}, reward {task.get('reward_mode', 'difference')}, budget "
             f"{budget or 'the experiment config'} per run, networks {list(spec.hidden)}; greedy policy on "
             f"evaluation seeds {spec.eval_seeds[0]}..{spec.eval_seeds[-1]} of the PettingZoo env.", "",
             "Score = (U - U_random) / (U_search - U_random): 0 is random play, 1 the model-based search "
             "reference; mean over seeds [95 % bootstrap interval].", ""]
    for scheme in dict.fromkeys(r["scheme"] for r in summary):
        ref = references.get(scheme, {})
        lines += [f"### {scheme} (U_random {_fmt(ref.get('random'), '{:.4f}')}, U_search "
                  f"{_fmt(ref.get('search'), '{:.4f}')})", "",
                  "| rank | algorithm | score | 95 % CI | U | seeds | frames | train s | agent-steps/s | peak MB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (x for x in summary if x["scheme"] == scheme):
            seeds = f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
            lines.append(f"| {r['rank']} | {r['algorithm']} | {_fmt(r['score_mean'])} | "
                         f"[{_fmt(r['score_ci_low'])}, {_fmt(r['score_ci_high'])}] | {_fmt(r['utility_mean'])} | "
                         f"{seeds} | {_fmt(r['frames_mean'], '{:,.0f}')} | {_fmt(r['train_s_mean'], '{:.0f}')} | "
                         f"{_fmt(r['agent_steps_per_s_mean'], '{:,.0f}')} | {_fmt(r['peak_rss_mb_max'], '{:,.0f}')} |")
        lines.append("")
    if failed:
        lines += ["Failed cells (each run twice):", ""]
        lines += [f"- {r['algorithm']} {r['scheme']} seed {r['seed']}: {r['error']}" for r in failed]
        lines.append("")
    if missing:
        lines += [f"Not finished ({len(missing)} of {len(cells) + len(missing)} cells; the benchmark was stopped, run "
                  f"it again with the same settings to resume): {', '.join(missing)}", ""]
    if cells and cell_table:
        lines += ["Cells:", "", "| algorithm | scheme | seed | status | attempts | score | U | frames | train s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['algorithm']} | {r['scheme']} | {r['seed']} | {r['status']} | {r['attempts']} | "
                  f"{_fmt(r['score'])} | {_fmt(r['utility'])} | {_fmt(r['frames'], '{:,.0f}')} | "
                  f"{_fmt(r['train_s'], '{:.0f}')} |" for r in cells]
        lines.append("")
    return "\n".join(lines)


def curve_rows(records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for record in records:
        for point in record.get("curve", []):
            rows.append({**record["cell"], **point})
    return rows


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def plot_curves(curves: Sequence[Mapping[str, Any]], schemes: Sequence[str], path: Path) -> Optional[Path]:
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = list(dict.fromkeys(r["algorithm"] for r in curves))
    colors = {a: plt.cm.tab10(i % 10) for i, a in enumerate(algorithms)}
    fig, axes = plt.subplots(2, len(schemes), figsize=(4.2 * len(schemes), 6.4), squeeze=False)
    for col, scheme in enumerate(schemes):
        for row, (xkey, xlabel) in enumerate((("frames", "frames (env steps over the batch)"),
                                              ("train_s", "training time (s)"))):
            ax = axes[row][col]
            for algorithm in algorithms:
                seeds = sorted({r["seed"] for r in curves if r["scheme"] == scheme and r["algorithm"] == algorithm})
                for i, seed in enumerate(seeds):
                    pts = [r for r in curves if r["scheme"] == scheme and r["algorithm"] == algorithm
                           and r["seed"] == seed]
                    ax.plot([p[xkey] for p in pts], [p.get("score", math.nan) for p in pts], color=colors[algorithm],
                            lw=1.2, alpha=0.8, label=algorithm if i == 0 else None)
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("normalised score")
            ax.set_title(scheme)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)
    return path


def plot_scores(summary: Sequence[Mapping[str, Any]], path: Path) -> Optional[Path]:
    if not summary:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = list(dict.fromkeys(r["scheme"] for r in summary))
    algorithms = list(dict.fromkeys(r["algorithm"] for r in summary))
    width = 0.8 / max(len(schemes), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(algorithms) * max(1, len(schemes)) ** 0.5 + 2), 3.8))
    for j, scheme in enumerate(schemes):
        xs, ys, lo, hi = [], [], [], []
        for i, algorithm in enumerate(algorithms):
            r = next((x for x in summary if x["scheme"] == scheme and x["algorithm"] == algorithm), None)
            if r is None or not math.isfinite(r["score_mean"]):
                continue
            xs.append(i + (j - (len(schemes) - 1) / 2) * width)
            ys.append(r["score_mean"])
            lo.append(r["score_mean"] - r["score_ci_low"])
            hi.append(r["score_ci_high"] - r["score_mean"])
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, label=scheme)
    ax.set_xticks(range(len(algorithms)))
    ax.set_xticklabels(algorithms)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("normalised score (95 % CI)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write_bytes(path, _png(fig))
    plt.close(fig)
    return path


def log_wandb(spec, folder: Path, summary: Sequence[Mapping[str, Any]], plots: Sequence[Path]) -> Optional[str]:
    if spec.wandb_mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(project=spec.wandb_project, name=f"benchmark-{folder.name}", mode=spec.wandb_mode,
                     dir=str(folder), config={"benchmark": {k: v for k, v in vars(spec).items()}},
                     settings=wandb.Settings(silent=True, console="off"), job_type="benchmark-report")
    if summary:
        columns = list(summary[0].keys())
        run.log({"benchmark/summary": wandb.Table(columns=columns, data=[[r.get(c) for c in columns]
                                                                          for r in summary])})
    for plot in plots:
        run.log({f"benchmark/{plot.stem}": wandb.Image(str(plot))})
    run_id = run.id
    run.finish()
    return run_id


def write_report(records: Sequence[Mapping[str, Any]], references: Mapping[str, Mapping[str, float]], spec,
                 folder: str | Path, log: Callable[[str], None] = print, missing: Sequence[str] = ()
                 ) -> Dict[str, Any]:
    """The report of the finished cells `records`; `missing` names the grid's cells not finished."""
    folder = Path(folder)
    rows = cell_rows(records)
    summary = summarise(rows)
    curves = curve_rows([r for r in records if r["status"] == "ok"])
    failed = [r for r in rows if r["status"] != "ok"]
    atomic_write_text(folder / "cells.csv", _csv_text(rows, CELL_COLUMNS))
    atomic_write_text(folder / "summary.csv", _csv_text(summary))
    atomic_write_text(folder / "curves.csv", _csv_text(curves))
    md = markdown(summary, references, spec, failed, rows, missing)
    atomic_write_text(folder / "report.md", md)
    plots = [p for p in (plot_scores(summary, folder / "scores.png"),
                         plot_curves(curves, list(dict.fromkeys(spec.schemes)), folder / "curves.png")) if p]
    wandb_id = log_wandb(spec, folder, summary, plots)
    log(markdown(summary, references, spec, failed, rows, missing, cell_table=False))
    files = ["cells.csv", "summary.csv", "curves.csv"] + [p.name for p in plots]
    log(f"report: {folder / 'report.md'} ({', '.join(files)})"
        + (f"; W&B {spec.wandb_mode} run {wandb_id}" if wandb_id else ""))
    return {"summary": summary, "cells": rows, "markdown": md, "plots": [str(p) for p in plots],
            "wandb_run": wandb_id}
