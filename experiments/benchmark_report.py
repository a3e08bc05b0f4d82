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
- the field's standard, from the same records (experiments.field_metrics, rliable's definitions):
  per task and across tasks, IQM, median, mean and optimality gap (gamma = 1) of the normalised
  score with 95 % stratified-bootstrap intervals (`bootstrap_reps`, default 2,000, seeded),
  performance profiles, the probability of improvement of every ordered pair of algorithms, and
  IQM curves against frames (sample efficiency) and training seconds (wall clock), as
  `aggregate_metrics.csv/.png`, `performance_profiles.csv/.png`, `probability_of_improvement.csv/.png`,
  `sample_efficiency.csv/.png` and `field_metrics.json` (all of it, with the settings), plus
  `marl_eval.json` (experiments.marl_eval_export: marl-eval's layout); `report.md`'s section
  "Aggregate metrics (rliable)" states the normalisation references, the numbers of seeds, tasks and
  evaluation episodes, the bootstrap settings, and which metrics were skipped and why;
- with W&B (offline by default), one run holding the summary table and the plots.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from experiments import field_metrics as fm
from his_env.reward_modes import DEFAULT_REWARD_MODE
from experiments.marl_eval_export import FILE_NAME as MARL_EVAL_FILE
from experiments.marl_eval_export import final_evaluation, run_curve, write_marl_eval
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


def task_num_ues(spec, scenario: str) -> int:
    """N of the grid's tasks on `scenario`: the grid's num_ues if it sets one, else the scenario's."""
    if spec.task.get("num_ues") is not None:
        return int(spec.task["num_ues"])
    from his_env.scenarios import scenario_config

    return scenario_config(scenario).num_ues


HELD_OUT_FILE = "held_out.csv"


def held_out_summary(records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per task and algorithm, over the seeds whose runs were scored on held-out scenarios: the score on
    the training scenario and the mean score over the held-out ones (both on the evaluation seeds,
    normalised by each scenario's own references), with 95 % bootstrap intervals, and the gap."""
    by_key: Dict[Tuple[str, str], List[Tuple[float, float, int]]] = {}
    for record in records:
        held = record.get("held_out") if record.get("status") == "ok" else None
        train = (record.get("summary") or {}).get("score")
        if not held or not isinstance(train, (int, float)) or not math.isfinite(train):
            continue
        scores = [r["score"] for r in held.values() if isinstance(r.get("score"), (int, float))
                  and math.isfinite(r["score"])]
        if scores:
            c = record["cell"]
            by_key.setdefault((c["scheme"], c["algorithm"]), []).append((float(train), float(np.mean(scores)),
                                                                          len(scores)))
    rows = []
    for (task, algorithm), values in by_key.items():
        train, held = np.array([v[0] for v in values]), np.array([v[1] for v in values])
        t_lo, t_hi = bootstrap_ci(train)
        h_lo, h_hi = bootstrap_ci(held)
        g_lo, g_hi = bootstrap_ci(train - held)
        rows.append({"task": task, "algorithm": algorithm, "seeds": len(values), "scenarios": values[0][2],
                     "train_score": float(train.mean()), "train_ci_low": t_lo, "train_ci_high": t_hi,
                     "held_out_score": float(held.mean()), "held_out_ci_low": h_lo, "held_out_ci_high": h_hi,
                     "gap": float((train - held).mean()), "gap_ci_low": g_lo, "gap_ci_high": g_hi})
    return sorted(rows, key=lambda r: (r["task"], -r["held_out_score"]))


def held_out_markdown(rows: Sequence[Mapping[str, Any]], references: Mapping[str, Mapping[str, Any]]) -> str:
    names = sorted({name for ref in references.values() for name in (ref.get("held_out") or {})})
    lines = ["## Held-out scenarios", "",
             f"Each run's final greedy policy on {len(names)} held-out test scenarios ({', '.join(names)}: drawn by "
             "his_env.scenarios' fixed generator, never trained on, other N, loads, ES capacities and speeds), on "
             "the evaluation seeds, each normalised by its own U_random and U_search. Training score: the same "
             "policy on its training scenario and seeds. Gap = training - held-out (mean over seeds, 95 % "
             f"bootstrap interval). Per run and scenario: {HELD_OUT_FILE}.", "",
             "| task | algorithm | seeds | training score | held-out score | gap |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['algorithm']} | {r['seeds']} | {_fmt(r['train_score'])} "
                     f"[{_fmt(r['train_ci_low'])}, {_fmt(r['train_ci_high'])}] | {_fmt(r['held_out_score'])} "
                     f"[{_fmt(r['held_out_ci_low'])}, {_fmt(r['held_out_ci_high'])}] | {_fmt(r['gap'])} "
                     f"[{_fmt(r['gap_ci_low'])}, {_fmt(r['gap_ci_high'])}] |")
    lines += ["", "| held-out scenario | N | U_random | U_search |", "|---|---|---|---|"]
    for name in names:
        ref = next(r["held_out"][name] for r in references.values() if name in (r.get("held_out") or {}))
        lines.append(f"| {name} | {ref.get('config', {}).get('num_ues', 'n/a')} | {_fmt(ref.get('random'), '{:.4f}')} "
                     f"| {_fmt(ref.get('search'), '{:.4f}')} |")
    return "\n".join(lines + [""])


def held_out_rows(records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One row per run and held-out scenario (the CSV beside the report)."""
    rows = []
    for record in records:
        for name, result in (record.get("held_out") or {}).items():
            c = record["cell"]
            rows.append({"task": c["scheme"], "algorithm": c["algorithm"], "seed": c["seed"], "scenario": name,
                         **{k: result.get(k) for k in ("score", "utility", "quality", "delay", "energy", "episodes")}})
    return rows


def _fmt(x: Any, spec: str = "{:.3f}") -> str:
    return "n/a" if not isinstance(x, (int, float)) or not math.isfinite(x) else spec.format(x)


def _backlog_text(references: Mapping[str, Mapping[str, Any]]) -> str:
    """The backlog search's and the open-loop policy's scores on each task that has them (the
    references' "backlog_search" and "open_loop")."""
    from agents.evaluation import normalized_score

    def scores(name):
        return [f"{normalized_score(ref[name], ref['random'], ref['search']):.2f} on {task}"
                for task, ref in references.items() if isinstance(ref, Mapping) and
                all(isinstance(ref.get(k), (int, float)) for k in (name, "random", "search"))]

    text = ""
    if scores("backlog_search"):
        text += (" The backlog search (`backlog-search`, agents.baselines: the same search, with each active UE's "
                 "delay also charged to the requests waiting behind it) scores " + ", ".join(scores("backlog_search"))
                 + ".")
    if scores("open_loop"):
        text += (" The open-loop policy (`open-loop`: one shared action per slot index, blind to the state) scores "
                 + ", ".join(scores("open_loop")) + ".")
    return text


def markdown(summary: Sequence[Mapping[str, Any]], references: Mapping[str, Mapping[str, float]], spec,
             failed: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]] = (),
             missing: Sequence[str] = (), cell_table: bool = True, sections: Sequence[str] = (),
             sessions: Optional[int] = None) -> str:
    budget = (f"{spec.frame_budget:,} frames" if spec.frame_budget else "") + (
        " / " if spec.frame_budget and spec.time_budget_s else "") + (
        f"{spec.time_budget_s:g} s of training" if spec.time_budget_s else "")
    task = spec.task
    scenarios = [s for s in getattr(spec, "scenarios", ["paper"]) if s != "paper"]
    sizes = ", ".join(f"{task_num_ues(spec, s)} ({s})" for s in getattr(spec, "scenarios", ["paper"]))
    lines = [f"Benchmark: {len(spec.algorithms)} algorithms x {len(spec.tasks)} tasks x {len(spec.seeds)} seeds; "
             f"N = {sizes if scenarios else task.get('num_ues', 50)}, reward "
             f"{task.get('reward_mode', DEFAULT_REWARD_MODE)}, budget "
             f"{budget or 'the experiment config'} per run, networks {list(spec.hidden)}; greedy policy on "
             f"evaluation seeds {spec.eval_seeds[0]}..{spec.eval_seeds[-1]} of the PettingZoo env."
             + (f" Run in {sessions} session{'' if sessions == 1 else 's'} (sessions.json)." if sessions else ""), "",
             "Score = (U - U_random) / (U_search - U_random): 0 is random play, 1 the model-based search "
             "reference; mean over seeds [95 % bootstrap interval].", ""]
    if scenarios:
        lines[-1:-1] = ["On the sequential scenarios (" + ", ".join(scenarios) + ") the search is myopic: the best "
                        "joint action of each slot on its own, blind to what waits in the queues, what the running "
                        "phases hold and what the batteries can pay later. It is not optimal there: learned policies "
                        "can, and should, score above 1." + _backlog_text(references), ""]
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
    for section in sections:
        lines += [section, ""]
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
    if axes[0][0].get_legend_handles_labels()[0]:  # no curve (runs too short for an evaluation): no legend
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


# ---------------------------------------------------------------------- the field's standard (rliable, marl-eval)
FIELD_SECTION = "## Aggregate metrics (rliable)"
AGGREGATE_FILE = "aggregate_metrics"
PROFILE_FILE = "performance_profiles"
IMPROVEMENT_FILE = "probability_of_improvement"
RANKING_FILE = "ranking"
CURVES_FILE = "sample_efficiency"
FIELD_JSON = "field_metrics.json"
CURVE_LABELS = {"frames": "frames (env steps over the batch)", "train_s": "training time (s)"}


def field_inputs(records: Sequence[Mapping[str, Any]], episodes: Optional[int] = None
                 ) -> Tuple[Dict[str, Dict[str, Dict[int, float]]], Dict[str, Dict[str, Dict[int, Dict[str, Any]]]]]:
    """(final scores, curves) of the finished records, as experiments.field_metrics.evaluate takes them:
    task -> algorithm -> seed -> the run's absolute metric (its final evaluation) / its curve arrays."""
    runs: Dict[str, Dict[str, Dict[int, float]]] = {}
    curves: Dict[str, Dict[str, Dict[int, Dict[str, Any]]]] = {}
    for record in records:
        if record.get("status") != "ok":
            continue
        c = record["cell"]
        final = final_evaluation(record, episodes)
        if "score" not in final:
            continue
        runs.setdefault(c["scheme"], {}).setdefault(c["algorithm"], {})[int(c["seed"])] = final["score"]
        curve = run_curve(record, ("score",))
        if curve["frames"].size:
            curves.setdefault(c["scheme"], {}).setdefault(c["algorithm"], {})[int(c["seed"])] = curve
    return runs, curves


def _interval(point: Any, lo: Any, hi: Any, spec: str = "{:.3f}") -> str:
    """'point [lo, hi]', or the point alone where there is no interval."""
    if not (isinstance(lo, (int, float)) and math.isfinite(lo)):
        return _fmt(point, spec)
    return f"{_fmt(point, spec)} [{_fmt(lo, spec)}, {_fmt(hi, spec)}]"


def _ci(row: Mapping[str, Any], name: str) -> str:
    return _interval(row.get(name), row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    atomic_write_bytes(path, _png(fig))
    _plt().close(fig)
    return path


def plot_aggregates(result: Mapping[str, Any], path: Path) -> Optional[Path]:
    """rliable's interval plot: per metric, each algorithm's estimate and 95 % interval, across tasks
    (or on the one task)."""
    task = fm.ALL_TASKS if len(result["tasks"]) > 1 else (result["tasks"] or [None])[0]
    rows = [r for r in result["aggregates"] if r["task"] == task and r["runs"] > 0]
    if not rows:
        return None
    plt = _plt()
    algorithms = [r["algorithm"] for r in rows]
    colors = {a: plt.cm.tab10(i % 10) for i, a in enumerate(result["algorithms"])}
    fig, axes = plt.subplots(1, len(fm.AGGREGATES), figsize=(3.2 * len(fm.AGGREGATES), 0.45 * len(rows) + 1.6),
                             squeeze=False)
    for ax, name in zip(axes[0], fm.AGGREGATES):
        for i, r in enumerate(rows):
            lo, hi = r[f"{name}_ci_low"], r[f"{name}_ci_high"]
            if math.isfinite(lo) and math.isfinite(hi):
                ax.barh(i, hi - lo, left=lo, height=0.6, color=colors[r["algorithm"]], alpha=0.75)
            ax.vlines(r[name], i - 0.3, i + 0.3, color="black", lw=1.5)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(algorithms if name == fm.AGGREGATES[0] else [""] * len(rows))
        ax.set_title(fm.AGGREGATE_NAMES[name])
        ax.set_xlabel("normalised score")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{'across ' + str(len(result['tasks'])) + ' tasks' if task == fm.ALL_TASKS else task} "
                 f"(95 % stratified-bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_profiles(result: Mapping[str, Any], path: Path) -> Optional[Path]:
    profile = result.get("performance_profile")
    if not profile or not profile["profiles"]:
        return None
    plt = _plt()
    taus = np.asarray(profile["taus"])
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for i, (algorithm, p) in enumerate(profile["profiles"].items()):
        color = plt.cm.tab10(result["algorithms"].index(algorithm) % 10)
        ax.plot(taus, p["fraction"], color=color, lw=1.6, label=algorithm)
        lo, hi = np.asarray(p["ci_low"], dtype=float), np.asarray(p["ci_high"], dtype=float)
        if np.isfinite(lo).all():
            ax.fill_between(taus, lo, hi, color=color, alpha=0.2)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("normalised score threshold tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_title("performance profiles across tasks", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_improvement(result: Mapping[str, Any], path: Path) -> Optional[Path]:
    rows = result.get("probability_of_improvement") or []
    if not rows:
        return None
    plt = _plt()
    names = list(dict.fromkeys([r["x"] for r in rows] + [r["y"] for r in rows]))
    matrix = np.full((len(names), len(names)), np.nan)
    for r in rows:
        matrix[names.index(r["x"]), names.index(r["y"])] = r["probability"]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.4, 0.9 * len(names) + 1.6))
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="RdBu")
    for r in rows:
        i, j = names.index(r["x"]), names.index(r["y"])
        ax.text(j, i, f"{r['probability']:.2f}\n[{r['ci_low']:.2f}, {r['ci_high']:.2f}]", ha="center",
                va="center", fontsize=7, color="white" if abs(r["probability"] - 0.5) > 0.3 else "black")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xlabel("Y")
    ax.set_ylabel("X")
    ax.set_title("P(X > Y) across tasks [95 % interval]", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


def plot_sample_efficiency(result: Mapping[str, Any], path: Path) -> Optional[Path]:
    rows = result.get("sample_efficiency") or []
    if not rows:
        return None
    plt = _plt()
    panels = list(dict.fromkeys(r["task"] for r in rows))
    panels.sort(key=lambda t: t != fm.ALL_TASKS)  # across tasks first
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.4), squeeze=False)
    for col, task in enumerate(panels):
        for row, axis in enumerate(fm.CURVE_AXES):
            ax = axes[row][col]
            for algorithm in result["algorithms"]:
                pts = [r for r in rows if r["task"] == task and r["axis"] == axis and r["algorithm"] == algorithm]
                if not pts:
                    continue
                color = plt.cm.tab10(result["algorithms"].index(algorithm) % 10)
                x = [p["x"] for p in pts]
                # a step function: each grid point holds the runs' last evaluation at or before it
                ax.plot(x, [p["iqm"] for p in pts], color=color, lw=1.5, drawstyle="steps-post",
                        marker="." if len(pts) < 3 else None, label=algorithm)
                lo, hi = np.array([p["ci_low"] for p in pts]), np.array([p["ci_high"] for p in pts])
                if np.isfinite(lo).all():
                    ax.fill_between(x, lo, hi, color=color, alpha=0.2, step="post")
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
            ax.set_xlabel(CURVE_LABELS[axis])
            ax.set_ylabel("IQM normalised score")
            ax.set_title("across tasks" if task == fm.ALL_TASKS else task)
            ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:  # no curve (runs too short for an evaluation): no legend
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _seed_counts(result: Mapping[str, Any], runs: Mapping[str, Mapping[str, Mapping[int, float]]]) -> str:
    counts = sorted({len(runs[t].get(a, {})) for t in result["tasks"] for a in result["algorithms"]})
    if not counts:
        return "0"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"


def field_markdown(result: Mapping[str, Any], runs: Mapping[str, Any], references: Mapping[str, Mapping[str, Any]],
                   spec, marl: Mapping[str, Any], failed: Sequence[Mapping[str, Any]], files: Sequence[str],
                   error: Optional[str] = None) -> str:
    """report.md's section "Aggregate metrics (rliable)"."""
    lines = [FIELD_SECTION, ""]
    if error is not None:
        return "\n".join(lines + [f"Not computed: {error}"])
    s = result["settings"]
    tasks, algorithms = result["tasks"], result["algorithms"]
    episodes = getattr(spec, "eval_episodes", None)
    eval_seeds = list(getattr(spec, "eval_seeds", []) or [])
    lines += ["Computed from the cells' records (no rerun), after Agarwal et al., \"Deep RL at the Edge of the "
              "Statistical Precipice\" (NeurIPS 2021, rliable): interquartile mean (IQM), median, mean and "
              f"optimality gap (gamma = {s['gamma']:g}, the search reference) of the normalised score, with "
              f"{100 * s['confidence']:g} % stratified-bootstrap intervals; performance profiles; the probability "
              "of improvement; IQM curves against frames and training time. Files: " + ", ".join(files) + ".", ""]
    lines += ["Normalisation: score = (U - U_random) / (U_search - U_random), per task, with these references "
              "(agents.baselines' random and search policies on the PettingZoo env, on the evaluation seeds "
              "of the trained policies):", "",
              "| task | U_random | U_search | search sweeps | evaluation seeds |", "|---|---|---|---|---|"]
    for task in dict.fromkeys(list(getattr(spec, "tasks", None) or getattr(spec, "schemes", []) or []) + list(tasks)):
        ref = references.get(task, {})
        seeds = ref.get("seeds") or eval_seeds
        seed_text = f"{seeds[0]}..{seeds[-1]} ({len(seeds)})" if seeds else "n/a"
        lines.append(f"| {task} | {_fmt(ref.get('random'), '{:.4f}')} | {_fmt(ref.get('search'), '{:.4f}')} | "
                     f"{ref.get('search_sweeps', getattr(spec, 'search_sweeps', 'n/a'))} | {seed_text} |")
        final = ref.get("absolute")
        if isinstance(final, Mapping) and final.get("seeds"):  # the final evaluation's own references
            fs = final["seeds"]
            lines.append(f"| {task}, final evaluation | {_fmt(final.get('random'), '{:.4f}')} | "
                         f"{_fmt(final.get('search'), '{:.4f}')} | {final.get('search_sweeps', 'n/a')} | "
                         f"{fs[0]}..{fs[-1]} ({len(fs)}) |")
    sources = marl.get("absolute_source") or ["summary"]
    absolute = ("each run's final greedy evaluation (its summary: the last curve point"
                + (f", on {episodes} evaluation episode{'s' if episodes != 1 else ''}" if episodes else "")
                + "; the records hold no final evaluation on more episodes, which marl-eval's protocol asks for)"
                if sources == ["summary"] else
                "each run's final evaluation on more episodes (its record's `absolute` evaluation, episodes "
                f"{', '.join(str(e) for e in marl.get('absolute_episodes', [])) or 'n/a'})"
                + (" where it has one, else its summary's final evaluation" if "summary" in sources else ""))
    seeds = _seed_counts(result, runs)
    lines += ["", f"Runs: {len(algorithms)} algorithm{'s' if len(algorithms) != 1 else ''} x {len(tasks)} "
              f"task{'s' if len(tasks) != 1 else ''} ({', '.join(tasks) or 'none'}), {seeds} finished "
              f"seed{'' if seeds == '1' else 's'} per algorithm and task; evaluation episodes per evaluation: "
              f"{episodes if episodes else 'n/a'}. A run's score is its absolute metric: {absolute}.",
              "",
              f"Bootstrap: stratified (within each task, the runs resampled with replacement; two algorithms "
              f"independently for P(X > Y)), {s['reps']:,} resamples, {100 * s['confidence']:g} % percentile "
              f"intervals, seed {s['seed']} (each interval has its own numpy generator seeded by the seed and its "
              "name, so the report is reproducible). IQM cuts int(n/4) of the n scores from each end (none with "
              "fewer than 4 runs: then it is the mean); the median is rliable's, the median of the per-task "
              "means (on one task, the mean).", ""]

    def table(rows: Sequence[Mapping[str, Any]], with_task: bool) -> List[str]:
        head = ("| task " if with_task else "") + "| algorithm | runs | IQM | median | mean | optimality gap |"
        out = [head, "|---" * (head.count("|") - 1) + "|"]
        for r in rows:
            size = f"{r['runs']}" + (f" x {r['tasks']}" if r["tasks"] > 1 else "")
            out.append((f"| {r['task']} " if with_task else "") + f"| {r['algorithm']} | {size} | "
                       + " | ".join(_ci(r, name) for name in fm.AGGREGATES) + " |")
        return out

    across = [r for r in result["aggregates"] if r["task"] == fm.ALL_TASKS]
    if across:
        lines += [f"### Across tasks ({', '.join(tasks)}): each algorithm's seeds finished on every task", ""]
        lines += table(across, False) + [""]
    per_task = [r for r in result["aggregates"] if r["task"] != fm.ALL_TASKS]
    if per_task:
        lines += ["### Per task", ""] + table(per_task, True) + [""]
    if result["probability_of_improvement"]:
        names = list(dict.fromkeys(r["x"] for r in result["probability_of_improvement"]))
        cell = {(r["x"], r["y"]): r for r in result["probability_of_improvement"]}
        lines += [f"### Probability of improvement P(row > column), across tasks [{100 * s['confidence']:g} % "
                  "interval]", "", "| X \\ Y | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for x in names:
            lines.append(f"| {x} | " + " | ".join(
                "-" if x == y else f"{cell[(x, y)]['probability']:.2f} [{cell[(x, y)]['ci_low']:.2f}, "
                f"{cell[(x, y)]['ci_high']:.2f}]" for y in names) + " |")
        lines.append("")
    ranking = result.get("ranking")
    if ranking:
        lines += ranking_markdown(ranking, s["reps"]) + [""]
    curve_rows = result["sample_efficiency"]
    if curve_rows:
        last: Dict[Tuple[str, str], Dict[str, Any]] = {}
        for r in curve_rows:
            if r["task"] == (fm.ALL_TASKS if len(tasks) > 1 else tasks[0]):
                last[(r["algorithm"], r["axis"])] = r  # rows are in grid order: the last one wins
        lines += ["### Sample efficiency and wall clock", "",
                  f"IQM of the normalised score against frames and against training seconds ({CURVES_FILE}.png, "
                  f"{CURVES_FILE}.csv), from the greedy evaluations along each run. Alignment: for each algorithm "
                  "(and task), the grid is its runs' evaluation points between the latest first evaluation and the "
                  f"earliest last one (at most {s['max_grid_points']}, else that many evenly spaced); a run's "
                  "value at a grid point is its last evaluation at or before it (no interpolation).", "",
                  "| algorithm | last grid frame | IQM there | last grid training s | IQM there |",
                  "|---|---|---|---|---|"]
        for a in algorithms:
            f, t = last.get((a, "frames")), last.get((a, "train_s"))
            lines.append(f"| {a} | {_fmt(f['x'] if f else None, '{:,.0f}')} | "
                         f"{_interval(f['iqm'], f['ci_low'], f['ci_high']) if f else 'n/a'} | "
                         f"{_fmt(t['x'] if t else None, '{:,.1f}')} | "
                         f"{_interval(t['iqm'], t['ci_low'], t['ci_high']) if t else 'n/a'} |")
        lines.append("")
    if marl.get("empty_because"):
        lines += [f"marl-eval: {MARL_EVAL_FILE} holds no run: {marl['empty_because']}.", ""]
    else:
        grid = marl.get("grid_frames") or [math.nan]
        lines += [f"marl-eval (Gorsane et al., NeurIPS 2022): {MARL_EVAL_FILE} in marl-eval's layout (environment "
                  f"{marl['env_name']!r}, runs `seed_<seed>`, steps `step_<i>` with `step_count` = frames, metrics "
                  f"{', '.join(marl['metrics'])} as one-element lists, `absolute_metrics` = the absolute metric "
                  "above): "
                  f"tasks {', '.join(marl['tasks'])}; algorithms {', '.join(marl['algorithms'])}; seeds "
                  f"{', '.join(str(x) for x in marl['seeds'])}; {marl['steps']} steps on one frame grid "
                  f"({grid[0]:,.0f}..{grid[-1]:,.0f} frames), the same for every run as marl-eval needs. Read it with "
                  "`marl_eval.utils.data_processing_utils.data_process_pipeline(raw, metrics_to_normalize=[])` then "
                  f"`create_matrices_for_rliable(processed, {marl['env_name']!r}, [])` (metric `mean_score`).", ""]
    notes: List[str] = []
    if failed:
        notes.append("failed cells, excluded from every metric: "
                     + ", ".join(f"{r['algorithm']} {r['scheme']} seed {r['seed']}" for r in failed))
    notes += [f"left out of the across-task metrics: {e}" for e in result["excluded"]]
    notes += [f"left out of {MARL_EVAL_FILE}: {e}" for e in marl.get("left_out", []) if not e.endswith(": failed")]
    skipped = list(result["skipped"])
    if skipped or notes:
        lines += ["Skipped and excluded:", ""]
        lines += [f"- skipped: {k['metric']}: {k['reason']}" for k in skipped]
        lines += [f"- {n}" for n in notes]
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def ranking_markdown(ranking: Mapping[str, Any], reps: int) -> List[str]:
    """report.md's lines on the IQM ranking and its stability (field_metrics.ranking_stability)."""
    c = 100 * ranking["confidence"]
    groups = " > ".join(" = ".join(g) for g in ranking["groups"])
    verdict = ("holds" if ranking["stable"] else "does not hold") + f" in {100 * ranking['group_ranking_holds']:.1f} %"
    lines = [f"### Ranking and its stability ({RANKING_FILE}.csv)", "",
             f"Algorithms ranked by IQM across tasks. Two neighbours are tied unless the higher one's IQM is above "
             f"the lower one's in at least {c:g} % of {reps:,} bootstrap resamples (each algorithm's runs resampled "
             f"independently); the ranking of the tie groups is stable if it holds in at least {c:g} % of them. "
             f"Ranking: **{groups}**; it {verdict} of the resamples (the full ranking, ties broken, in "
             f"{100 * ranking['same_full_ranking']:.1f} %). Split-half agreement (Kendall's tau-b between the rankings "
             f"of two disjoint halves of each algorithm's seeds): mean {ranking['split_half_tau_mean']:.2f} over "
             f"{ranking['split_half_splits']} random splits, tau >= {fm.AGREEMENT:g} in "
             f"{100 * ranking['split_half_agreement']:.0f} % of them; first half of the seeds against the second: "
             f"{_fmt(ranking['first_vs_second_half_tau'], '{:.2f}')}.", "",
             f"| rank | algorithm | IQM | rank {c:g} % interval | P(same rank) | P(above the next) | group |",
             "|---|---|---|---|---|---|---|"]
    for r in ranking["rows"]:
        lines.append(f"| {r['rank']:g} | {r['algorithm']} | {r['iqm']:.3f} | [{r['rank_ci_low']:g}, "
                     f"{r['rank_ci_high']:g}] | {r['p_same_rank']:.2f} | {_fmt(r['p_above_next'], '{:.2f}')} | "
                     f"{r['group']} |")
    return lines


def write_field_metrics(records: Sequence[Mapping[str, Any]], references: Mapping[str, Mapping[str, Any]], spec,
                        folder: Path, failed: Sequence[Mapping[str, Any]], reps: int = fm.DEFAULT_REPS,
                        seed: int = fm.DEFAULT_SEED) -> Dict[str, Any]:
    """The field-standard files beside the report and report.md's section; returns {"result",
    "marl_eval", "section", "files", "plots"}."""
    episodes = getattr(spec, "eval_episodes", None)
    runs, curves = field_inputs(records, episodes)
    result = fm.evaluate(runs, curves, reps=reps, seed=seed)
    marl = write_marl_eval(records, folder / MARL_EVAL_FILE, episodes)
    columns = ["task", "algorithm", "runs", "tasks", "seeds"] + [
        f"{n}{suffix}" for n in fm.AGGREGATES for suffix in ("", "_ci_low", "_ci_high")]
    atomic_write_text(folder / f"{AGGREGATE_FILE}.csv", _csv_text(result["aggregates"], columns))
    profile_rows = []
    profile = result["performance_profile"] or {"taus": [], "profiles": {}}
    for algorithm, p in profile["profiles"].items():
        for tau, frac, lo, hi in zip(profile["taus"], p["fraction"], p["ci_low"], p["ci_high"]):
            profile_rows.append({"algorithm": algorithm, "tau": tau, "fraction": frac, "ci_low": lo, "ci_high": hi,
                                 "runs": p["runs"]})
    atomic_write_text(folder / f"{PROFILE_FILE}.csv",
                      _csv_text(profile_rows, ["algorithm", "tau", "fraction", "ci_low", "ci_high", "runs"]))
    atomic_write_text(folder / f"{IMPROVEMENT_FILE}.csv", _csv_text(
        result["probability_of_improvement"], ["x", "y", "probability", "ci_low", "ci_high", "runs_x", "runs_y",
                                               "tasks"]))
    ranking = result.get("ranking")
    if ranking:
        atomic_write_text(folder / f"{RANKING_FILE}.csv", _csv_text(
            ranking["rows"], ["algorithm", "iqm", "rank", "rank_ci_low", "rank_ci_high", "p_same_rank", "p_above_next",
                              "group"]))
    atomic_write_text(folder / f"{CURVES_FILE}.csv", _csv_text(
        result["sample_efficiency"], ["axis", "task", "algorithm", "x", "iqm", "ci_low", "ci_high", "runs", "tasks"]))
    used = {t: {k: references.get(t, {}).get(k) for k in ("random", "search", "seeds", "search_sweeps")}
            for t in result["tasks"]}
    document = {**result, "references": used, "evaluation_episodes": episodes,
                "failed_cells": [f"{r['algorithm']} {r['scheme']} seed {r['seed']}" for r in failed],
                "marl_eval": {k: v for k, v in marl.items() if k != "path"}}
    atomic_write_text(folder / FIELD_JSON, json.dumps(_json_safe(document), indent=1))
    plots = []
    for plot, name in ((plot_aggregates, AGGREGATE_FILE), (plot_profiles, PROFILE_FILE),
                       (plot_improvement, IMPROVEMENT_FILE), (plot_sample_efficiency, CURVES_FILE)):
        path = plot(result, folder / f"{name}.png")
        if path is not None:
            plots.append(path)
        elif (folder / f"{name}.png").is_file():  # an earlier report's plot of a metric skipped now
            (folder / f"{name}.png").unlink()
    files = [f"{AGGREGATE_FILE}.csv", f"{PROFILE_FILE}.csv", f"{IMPROVEMENT_FILE}.csv", f"{CURVES_FILE}.csv",
             FIELD_JSON, MARL_EVAL_FILE] + ([f"{RANKING_FILE}.csv"] if ranking else []) + [p.name for p in plots]
    section = field_markdown(result, runs, references, spec, marl, failed, files)
    return {"result": result, "marl_eval": marl, "section": section, "files": files, "plots": plots}


def _json_safe(obj: Any) -> Any:
    """NaN and infinities as null (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


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
                 folder: str | Path, log: Callable[[str], None] = print, missing: Sequence[str] = (),
                 bootstrap_reps: Optional[int] = None, bootstrap_seed: Optional[int] = None,
                 sessions: Optional[int] = None) -> Dict[str, Any]:
    """The report of the finished cells `records`; `missing` names the grid's cells not finished;
    `sessions`, where given, how many sessions (runs of the command) the grid has taken so far.

    The field-standard metrics resample `bootstrap_reps` times (else the spec's `bootstrap_reps`,
    else 2,000) from `bootstrap_seed` (else the spec's, else 0). Should they fail, the rest of the
    report is still written and its section says why."""
    folder = Path(folder)
    rows = cell_rows(records)
    summary = summarise(rows)
    curves = curve_rows([r for r in records if r["status"] == "ok"])
    failed = [r for r in rows if r["status"] != "ok"]
    atomic_write_text(folder / "cells.csv", _csv_text(rows, CELL_COLUMNS))
    atomic_write_text(folder / "summary.csv", _csv_text(summary))
    atomic_write_text(folder / "curves.csv", _csv_text(curves))
    reps = bootstrap_reps or getattr(spec, "bootstrap_reps", None) or fm.DEFAULT_REPS
    seed = next((s for s in (bootstrap_seed, getattr(spec, "bootstrap_seed", None)) if s is not None),
                fm.DEFAULT_SEED)
    try:
        field = write_field_metrics(records, references, spec, folder, failed, reps=int(reps), seed=int(seed))
    except Exception as exc:  # noqa: BLE001 - the rest of the report is kept; the section names the error
        error = f"{type(exc).__name__}: {exc}"
        log(f"report: the aggregate metrics (rliable) were not computed: {error}")
        field = {"result": None, "marl_eval": None, "files": [], "plots": [],
                 "section": field_markdown({}, {}, references, spec, {}, failed, [], error=error)}
    sections = [field["section"]]
    held = held_out_summary(records)
    if held:
        atomic_write_text(folder / HELD_OUT_FILE, _csv_text(held_out_rows(records)))
        sections.append(held_out_markdown(held, references))
    md = markdown(summary, references, spec, failed, rows, missing, sections=sections, sessions=sessions)
    atomic_write_text(folder / "report.md", md)
    tasks = list(getattr(spec, "tasks", None) or dict.fromkeys(spec.schemes))
    plots = [p for p in (plot_scores(summary, folder / "scores.png"),
                         plot_curves(curves, tasks, folder / "curves.png")) if p]
    wandb_id = log_wandb(spec, folder, summary, plots + list(field["plots"]))
    log(markdown(summary, references, spec, failed, rows, missing, cell_table=False))
    files = ["cells.csv", "summary.csv", "curves.csv"] + ([HELD_OUT_FILE] if held else []) + [p.name for p in plots]
    files += [name for name in field["files"] if name not in files]
    log(f"report: {folder / 'report.md'} ({', '.join(files)})"
        + (f"; W&B {spec.wandb_mode} run {wandb_id}" if wandb_id else ""))
    return {"summary": summary, "cells": rows, "markdown": md, "plots": [str(p) for p in plots + field["plots"]],
            "wandb_run": wandb_id, "field_metrics": field["result"], "marl_eval": field["marl_eval"]}
