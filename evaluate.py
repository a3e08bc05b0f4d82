"""Evaluate trained checkpoints and baselines on the HIS env; reproduce the paper's Figs. 10-17.

    python evaluate.py --checkpoint runs/my-run                 # one table: the policy on the run's env
    python evaluate.py --policy search --policy random          # baselines on configs/default.yaml
    python evaluate.py --figure 10 --policy search              # HIS vs PPGFIS vs CFIS vs IIS
    python evaluate.py --figure 10 --checkpoint runs/my-run --policy search
    python evaluate.py --figure 15 --runs runs/fig15/*          # reward curves from train.py logs

Policies: `--checkpoint PATH` (a train.py checkpoint or run folder; greedy actions) and
`--policy random|iis-fixed|fixed:X,Y|search|search:SWEEPS`, each repeatable; every policy is
run on every variant of the figure for `--episodes` episodes with the fixed seeds
`--seed-base + i`. A checkpoint may be given as `VARIANT=PATH` to be used only for that
variant (e.g. `--checkpoint cfis=runs/cfis` in Fig. 10); a bare path is used for all.
A checkpoint acts on envs with the number of UEs it was trained for.

Figures (variants are env overrides on top of the base config; see FIGURES below):
  10  scheme.name in his, ppgfis, cfis, iis: Q, T, E, U and HIS's utility gain over each
      (paper: 36.8 %, 51.0 %, 94.3 %)
  11  (a) ES SM budget, (b) UE SMs, for each scheme: U, and each scheme's utility drop over
      the range (paper: ES 18.7/23.1/29.0/74.1 %, UE 9.0/11.6/15.3/14.9 %)
  12  HIS with and without SIM+NPI: Q, T, E, U (paper: +19.1 % utility with both)
  13  number of clusters M: Q, T, E, U
  14  clustering semantic, entity (TKG), random, single, with 3 and with 5 intent groups for
      M = 3 clusters: intra-cluster and public-personal similarity, U (paper: semantic
      public-personal similarity 0.65)
  15  training reward curves of runs (e.g. the ablations in configs/ablations/) from their
      metrics.csv
  16  ES SM allocation kkt, user_equal, cluster_equal: T, E, U
  17  reward quality weight x 0.25 .. x 4: Q, T, E

Output (`--output-dir`, default results/fig<N>/ or results/eval/): `episodes.csv` (one row per
policy x variant x episode), `summary.csv` and `summary.md` (means and standard deviations),
`fig<N>.png`; every file is written atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from his_cli.args import UsageError, nonneg_int, parse_overrides, positive_int  # noqa: E402

REPO = Path(__file__).resolve().parent
SCHEMES = ("his", "ppgfis", "cfis", "iis")
METRIC_LABELS = {
    "utility": "network utility U", "quality": "service quality Q", "delay": "service delay T (s)",
    "energy": "energy E (J)", "intra_cluster_similarity": "intra-cluster similarity",
    "public_personal_similarity": "public-personal similarity",
}
PAPER_FIG10_GAIN = {"ppgfis": 36.8, "cfis": 51.0, "iis": 94.3}
PAPER_FIG11_DROP = {"es": {"his": 18.7, "ppgfis": 23.1, "cfis": 29.0, "iis": 74.1},
                    "ue": {"his": 9.0, "ppgfis": 11.6, "cfis": 15.3, "iis": 14.9}}
PAPER_FIG12_GAIN = 19.1


@dataclass
class Variant:
    label: str
    overrides: Dict[str, Any]
    group: str = ""  # panel (Fig. 11 a/b) or series within a panel
    x: Any = None  # position on the x axis for line plots


@dataclass
class Figure:
    number: int
    title: str
    metrics: Tuple[str, ...]
    variants: Callable[[Mapping[str, Any]], List[Variant]]
    kind: str = "bars"  # bars | lines
    notes: str = ""


def _fig10(base):
    return [Variant(s, {"scheme.name": s}) for s in SCHEMES]


def _fig11(base):
    out = []
    # Table II's ranges (ES 1026-1674, UE 64-84) plus points below them; the utility drops
    # printed beside the paper's depend on this span.
    for v in (700, 860, 1026, 1350, 1674):
        for s in SCHEMES:
            out.append(Variant(f"{s}@es={v}", {"scheme.name": s, "es.sm_range": [v, v]}, group=f"es/{s}", x=v))
    for v in (44, 54, 64, 74, 84):
        for s in SCHEMES:
            out.append(Variant(f"{s}@ue={v}", {"scheme.name": s, "ue.sm_range": [v, v]}, group=f"ue/{s}", x=v))
    return out


def _fig12(base):
    return [Variant("HIS (SIM+NPI)", {"scheme.name": "his", "scheme.sim_npi": True}),
            Variant("HIS w/o SIM+NPI", {"scheme.name": "his", "scheme.sim_npi": False})]


def _fig13(base):
    n = int(base.get("num_ues", 50))
    return [Variant(f"M={m}", {"scheme.name": "his", "num_clusters": m}, x=m) for m in (1, 2, 3, 4, 5, 6, 8) if m <= n]


FIG14_MORE_INTENTS = 5  # intent groups per decision point in Fig. 14's second half


def _fig14(base):
    # With as many intent groups as clusters (the default 3) a prompt's main entity is its intent,
    # so entity (TKG) clustering finds the same clusters as semantic HAC. With more intents than
    # clusters the two differ: HAC merges related intents, entity grouping merges the smallest.
    strategies = ("semantic", "entity", "random", "single")
    out = [Variant(c, {"scheme.name": "his", "scheme.clustering": c}) for c in strategies]
    out += [Variant(f"{c}/{FIG14_MORE_INTENTS} intents", {"scheme.name": "his", "scheme.clustering": c,
                                                         "workload.num_intent_groups": FIG14_MORE_INTENTS})
            for c in strategies]
    return out


def _fig16(base):
    return [Variant(a, {"scheme.name": "his", "scheme.allocation": a}) for a in ("kkt", "user_equal", "cluster_equal")]


def _fig17(base):
    w = float(base.get("reward", {}).get("quality_weight", 10.0))
    return [Variant(f"w_q x{f:g}", {"scheme.name": "his", "reward.quality_weight": w * f}, x=w * f)
            for f in (0.25, 0.5, 1.0, 2.0, 4.0)]


FIGURES: Dict[int, Figure] = {
    10: Figure(10, "Fig. 10: inference schemes", ("quality", "delay", "energy", "utility"), _fig10),
    11: Figure(11, "Fig. 11: robustness to computing resources", ("utility",), _fig11, kind="lines"),
    12: Figure(12, "Fig. 12: SIM/NPI ablation", ("quality", "delay", "energy", "utility"), _fig12),
    13: Figure(13, "Fig. 13: number of clusters", ("quality", "delay", "energy", "utility"), _fig13, kind="lines"),
    14: Figure(14, "Fig. 14: clustering strategies",
               ("intra_cluster_similarity", "public_personal_similarity", "utility"), _fig14),
    16: Figure(16, "Fig. 16: ES SM allocation", ("delay", "energy", "utility"), _fig16),
    17: Figure(17, "Fig. 17: reward weight of quality", ("quality", "delay", "energy"), _fig17, kind="lines"),
}


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--figure", type=int, choices=sorted(list(FIGURES) + [15]), help="paper figure to reproduce")
    p.add_argument("--checkpoint", action="append", default=[], metavar="[VARIANT=]PATH",
                   help="train.py checkpoint or run folder (repeatable)")
    p.add_argument("--policy", action="append", default=[], metavar="NAME",
                   help="baseline: random | iis-fixed | fixed:X,Y | search | search:SWEEPS (repeatable)")
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN_DIR", help="train.py output folders (Fig. 15)")
    p.add_argument("--labels", nargs="+", default=None, help="legend labels for --runs (Fig. 15)")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="base env config: a path or a shipped name, overlaid on configs/default.yaml "
                        "(default: the checkpoint's env, else configs/default.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override an env key of the base config (dotted), e.g. num_ues=10")
    p.add_argument("--episodes", type=positive_int("--episodes"), default=5, help="episodes per policy and variant")
    p.add_argument("--seed-base", type=nonneg_int("--seed-base"), default=20_000, help="episode i uses seed base+i")
    p.add_argument("--output-dir", default=None, help="results folder (default results/fig<N> or results/eval)")
    p.add_argument("--env-factory", default=None, metavar="MODULE:FUNCTION",
                   help="ParallelEnv factory for the baselines (default: a checkpoint's, else his_env:parallel_env)")
    return p


# ---------------------------------------------------------------------- policies
@dataclass
class PolicySpec:
    label: str
    make: Callable[[], Any]
    variant: Optional[str] = None  # only this variant (checkpoint given as VARIANT=PATH)
    env_config: Optional[Dict[str, Any]] = None  # the env it was trained on
    env_factory: Optional[str] = None


def collect_policies(args) -> List[PolicySpec]:
    from agents.baselines import make_baseline
    from agents.checkpoints import resolve_checkpoint, validate_checkpoint
    from agents.evaluation import CheckpointPolicy

    specs: List[PolicySpec] = []
    for item in args.checkpoint:
        variant, sep, path = item.partition("=")
        if not sep:
            variant, path = None, item
        ckpt = resolve_checkpoint(path)
        info = validate_checkpoint(ckpt)
        # Per-variant checkpoints of one algo form one policy across the figure's variants.
        label = f"trained:{info['algo']}"
        def clashes(name: str) -> bool:  # another policy of this name already acts on one of our variants
            return any(s.label == name and (s.variant is None or variant is None or s.variant == variant)
                       for s in specs)

        k = 2
        while clashes(label):
            label = f"trained:{info['algo']}#{k}"
            k += 1
        specs.append(PolicySpec(label=label, make=lambda c=ckpt: CheckpointPolicy(c), variant=variant,
                                env_config=info["env_config"],
                                env_factory=info["experiment_config"].get("env_factory")))
    factory = args.env_factory or next((s.env_factory for s in specs if s.env_factory), None)
    for name in args.policy:
        make_baseline(name)  # validates the name now
        specs.append(PolicySpec(label=name, make=lambda n=name: make_baseline(n, seed=args.seed_base),
                                env_factory=factory))
    return specs


def base_env_config(args, policies: Sequence[PolicySpec]) -> Dict[str, Any]:
    from his_env.config import HISConfig

    from agents.config import load_run_config

    trained = [p.env_config for p in policies if p.env_config is not None]
    if trained and not args.config:
        cfg = HISConfig.from_dict(trained[0])
    else:  # configs/default.yaml under the --config file (a run config: its env keys)
        cfg = load_run_config([args.config] if args.config else []).env
    overrides = parse_overrides(args.overrides)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    return cfg.to_dict()


# ---------------------------------------------------------------------- running
def run_grid(policies: Sequence[PolicySpec], variants: Sequence[Variant], base: Mapping[str, Any],
             seeds: Sequence[int], log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    from his_env.config import HISConfig

    from agents.evaluation import evaluate_policy

    rows: List[Dict[str, Any]] = []
    for spec in policies:
        policy = spec.make()
        for variant in variants:
            if spec.variant is not None and spec.variant != variant.label:
                continue
            env_cfg = HISConfig.from_dict(dict(base)).with_overrides(variant.overrides).to_dict()
            if spec.env_config is not None and int(spec.env_config.get("num_ues", 0)) != int(env_cfg["num_ues"]):
                raise UsageError(f"{spec.label} was trained with num_ues={spec.env_config.get('num_ues')}, "
                                 f"but the evaluation env has num_ues={env_cfg['num_ues']}")
            t0 = time.perf_counter()
            eps = evaluate_policy(policy, env_cfg, seeds, env_factory=spec.env_factory)
            for ep in eps:
                rows.append({"policy": spec.label, "variant": variant.label, "group": variant.group,
                             "x": variant.x, **ep})
            u = np.mean([e.get("utility", np.nan) for e in eps])
            log(f"  {spec.label:>24} | {variant.label:<18} U {u:10.4f}  ({len(eps)} episodes, "
                f"{time.perf_counter() - t0:.1f} s)")
    return rows


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> List[Dict[str, Any]]:
    groups: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
    order: List[Tuple[str, str]] = []
    for r in rows:
        key = (r["policy"], r["variant"])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    out = []
    for key in order:
        rs = groups[key]
        row: Dict[str, Any] = {"policy": key[0], "variant": key[1], "group": rs[0].get("group", ""),
                               "x": rs[0].get("x"), "episodes": len(rs)}
        for m in dict.fromkeys(list(metrics) + ["utility", "quality", "delay", "energy"]):
            vals = np.array([r.get(m, np.nan) for r in rs], dtype=float)
            row[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
            row[f"{m}_std"] = float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else 0.0
        out.append(row)
    return out


def pct(a: float, b: float) -> float:
    """Relative gain of a over b in percent (of |b|)."""
    return float("nan") if not np.isfinite(b) or b == 0 else 100.0 * (a - b) / abs(b)


def paper_comparison(fig: int, summary: Sequence[Mapping[str, Any]]) -> List[str]:
    lines: List[str] = []
    by_policy: Dict[str, Dict[str, Mapping[str, Any]]] = {}
    for r in summary:
        by_policy.setdefault(r["policy"], {})[r["variant"]] = r
    for policy, rs in by_policy.items():
        if fig == 10 and "his" in rs:
            u_his = rs["his"]["utility"]
            parts = [f"vs {s.upper()}: {pct(u_his, rs[s]['utility']):+.1f} % (paper +{PAPER_FIG10_GAIN[s]:.1f} %)"
                     for s in ("ppgfis", "cfis", "iis") if s in rs]
            order = sorted((s for s in SCHEMES if s in rs), key=lambda s: -rs[s]["utility"])
            lines.append(f"{policy}: HIS utility gain " + "; ".join(parts)
                         + f". Ordering: {' > '.join(s.upper() for s in order)} (paper: HIS > PPGFIS > CFIS > IIS)")
        if fig == 11:
            for panel in ("es", "ue"):
                parts = []
                for s in SCHEMES:
                    pts = sorted((r["x"], r["utility"]) for r in rs.values() if r["group"] == f"{panel}/{s}")
                    if len(pts) >= 2:
                        lo, hi = pts[0][1], pts[-1][1]
                        drop = 100.0 * (hi - lo) / abs(hi) if hi else float("nan")
                        parts.append(f"{s.upper()} {drop:.1f} % (paper {PAPER_FIG11_DROP[panel][s]:.1f} %)")
                if parts:
                    name = "ES SM budget" if panel == "es" else "UE SMs"
                    lines.append(f"{policy}: utility drop from the largest to the smallest {name}: " + ", ".join(parts))
        if fig == 12 and len(rs) == 2:
            with_, without = rs.get("HIS (SIM+NPI)"), rs.get("HIS w/o SIM+NPI")
            if with_ and without:
                lines.append(f"{policy}: SIM+NPI utility gain {pct(with_['utility'], without['utility']):+.1f} % "
                             f"(paper +{PAPER_FIG12_GAIN:.1f} %)")
        if fig == 14 and "semantic" in rs:
            lines.append(f"{policy}: semantic clustering public-personal similarity "
                         f"{rs['semantic'].get('public_personal_similarity', float('nan')):.3f} (paper 0.65)")
    return lines


# ---------------------------------------------------------------------- writing
def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    from his_common.storage import atomic_write_text

    keys: List[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def markdown_table(summary: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    head = "| policy | variant | " + " | ".join(metrics) + " |"
    sep = "|---|---|" + "---|" * len(metrics)
    lines = [head, sep]
    for r in summary:
        cells = [f"{r[m]:.4g} ± {r[m + '_std']:.2g}" if np.isfinite(r[m]) else "n/a" for m in metrics]
        lines.append(f"| {r['policy']} | {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_png(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from his_common.storage import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_bars(summary, metrics, title, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in summary))
    policies = list(dict.fromkeys(r["policy"] for r in summary))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
    width = 0.8 / max(len(policies), 1)
    for ax, m in zip(axes[0], metrics):
        for j, pol in enumerate(policies):
            vals = [next((r[m] for r in summary if r["policy"] == pol and r["variant"] == v), np.nan) for v in variants]
            errs = [next((r[m + "_std"] for r in summary if r["policy"] == pol and r["variant"] == v), 0)
                    for v in variants]
            xs = np.arange(len(variants)) + (j - (len(policies) - 1) / 2) * width
            ax.bar(xs, vals, width, yerr=errs, capsize=2, label=pol)
        ax.set_xticks(np.arange(len(variants)))
        ax.set_xticklabels(variants, rotation=20, ha="right", fontsize=8)
        ax.set_title(METRIC_LABELS.get(m, m), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def plot_lines(summary, metrics, title, path: Path, fig_no: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if fig_no == 11:
        panels = [("es", "ES SM budget v_max^ES"), ("ue", "UE SMs v_n^UE")]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
        for ax, (panel, xlabel) in zip(axes[0], panels):
            for pol in dict.fromkeys(r["policy"] for r in summary):
                for s in SCHEMES:
                    pts = sorted((r["x"], r["utility"], r["utility_std"]) for r in summary
                                 if r["policy"] == pol and r["group"] == f"{panel}/{s}")
                    if pts:
                        xs, ys, es = zip(*pts)
                        ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=f"{s.upper()} ({pol})")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("network utility U")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    else:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            for pol in dict.fromkeys(r["policy"] for r in summary):
                pts = sorted((r["x"], r[m], r[m + "_std"]) for r in summary if r["policy"] == pol)
                if pts:
                    xs, ys, es = zip(*pts)
                    ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=pol)
            ax.set_xlabel("number of clusters M" if fig_no == 13 else "quality weight w_q")
            ax.set_title(METRIC_LABELS.get(m, m), fontsize=9)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


# ---------------------------------------------------------------------- Fig. 15
def read_run_curve(run_dir: Path) -> Tuple[List[float], List[float]]:
    csv_path = run_dir / "metrics.csv"
    jsonl = run_dir / "metrics.jsonl"
    rows: List[Dict[str, Any]] = []
    if csv_path.is_file():
        with csv_path.open() as fh:
            rows = list(csv.DictReader(fh))
    elif jsonl.is_file():
        rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    else:
        raise UsageError(f"--runs {str(run_dir)!r}: no metrics.csv or metrics.jsonl (not a train.py output folder)")
    xs, ys = [], []
    for r in rows:
        try:
            x, y = float(r["perf/env_steps_total"]), float(r["his/utility"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def smooth(ys: Sequence[float], k: int) -> np.ndarray:
    ys = np.asarray(ys, dtype=float)
    if k <= 1 or ys.size < 2:
        return ys
    out = np.empty_like(ys)
    for i in range(ys.size):
        out[i] = ys[max(0, i - k + 1): i + 1].mean()
    return out


def figure15(args, out_dir: Path) -> int:
    if not args.runs:
        raise UsageError("--figure 15 needs --runs RUN_DIR [RUN_DIR ...] (train.py output folders)")
    if args.labels is not None and len(args.labels) != len(args.runs):
        raise UsageError(f"--labels has {len(args.labels)} entries but --runs has {len(args.runs)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for i, run in enumerate(args.runs):
        xs, ys = read_run_curve(Path(run))
        label = args.labels[i] if args.labels else Path(run).name
        curves.append((label, xs, ys))
    rows = []
    for label, xs, ys in curves:
        for x, y in zip(xs, ys):
            rows.append({"run": label, "env_steps": x, "utility": y})
    write_csv(rows, out_dir / "curves.csv")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, xs, ys in curves:
        ax.plot(xs, smooth(ys, 5), label=label, lw=1.5)
    ax.set_xlabel("env steps (decision points)")
    ax.set_ylabel("network utility U per decision point")
    ax.set_title("Fig. 15: reward curves (5-iteration moving average)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, out_dir / "fig15.png")
    # Early mean: how fast a run learns (the area under the first 10 iterations of its curve).
    lines = ["| run | iterations | U, mean of iterations 1-10 | final U (mean of last 5) | best U (5-iteration mean) |",
             "|---|---|---|---|---|"]
    for label, xs, ys in curves:
        early = float(np.mean(ys[:10])) if ys else float("nan")
        tail = float(np.mean(ys[-5:])) if ys else float("nan")
        best = float(np.max(smooth(ys, 5))) if ys else float("nan")
        lines.append(f"| {label} | {len(ys)} | {early:.4f} | {tail:.4f} | {best:.4f} |")
    from his_common.storage import atomic_write_text

    md = "Fig. 15: training reward curves\n\n" + "\n".join(lines) + "\n"
    atomic_write_text(out_dir / "summary.md", md)
    print(md)
    print(f"wrote {out_dir / 'fig15.png'}, {out_dir / 'curves.csv'}, {out_dir / 'summary.md'}")
    return 0


# ---------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from his_env.config import ConfigError

    from agents.checkpoints import CheckpointError

    try:
        return run(args)
    except (UsageError, ConfigError, CheckpointError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import torch

    torch.set_num_threads(1)
    out_dir = Path(args.output_dir or (REPO / "results" / (f"fig{args.figure}" if args.figure else "eval")))
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.figure == 15:
        return figure15(args, out_dir)
    try:
        policies = collect_policies(args)
    except ValueError as exc:
        if type(exc).__name__ in ("ConfigError",):
            raise
        raise UsageError(str(exc)) from exc
    if not policies:
        raise UsageError("nothing to evaluate: give --checkpoint PATH and/or --policy "
                         "random|iis-fixed|fixed:X,Y|search (or --figure 15 --runs ...)")
    base = base_env_config(args, policies)
    seeds = [args.seed_base + i for i in range(args.episodes)]
    if args.figure:
        figure = FIGURES[args.figure]
        variants = figure.variants(base)
        metrics = figure.metrics
        title = figure.title
    else:
        variants = [Variant("base", {})]
        metrics = ("quality", "delay", "energy", "utility")
        title = f"N={base.get('num_ues')}, scheme {base.get('scheme', {}).get('name')}"
    for spec in policies:
        if spec.variant is not None and spec.variant not in [v.label for v in variants]:
            raise UsageError(f"--checkpoint {spec.variant}=...: no variant {spec.variant!r} in this figure; "
                             f"variants: {[v.label for v in variants]}")
    print(f"evaluate.py: {title}; {len(policies)} policies x {len(variants)} variants x {len(seeds)} episodes "
          f"(seeds {seeds[0]}..{seeds[-1]}), N={base.get('num_ues')}", flush=True)
    rows = run_grid(policies, variants, base, seeds)
    summary = summarize(rows, metrics)
    write_csv(rows, out_dir / "episodes.csv")
    write_csv(summary, out_dir / "summary.csv")
    comparison = paper_comparison(args.figure or 0, summary)
    from his_common.storage import atomic_write_text

    md = (f"{title}\n\nMean ± std over {len(seeds)} episodes (seeds {seeds[0]}..{seeds[-1]}) of the per-decision-point "
          f"network metrics; N = {base.get('num_ues')}.\n\n" + markdown_table(summary, metrics) + "\n")
    if comparison:
        md += "\n" + "\n".join(f"- {line}" for line in comparison) + "\n"
    atomic_write_text(out_dir / "summary.md", md)
    png = out_dir / (f"fig{args.figure}.png" if args.figure else "eval.png")
    if args.figure and FIGURES[args.figure].kind == "lines":
        plot_lines(summary, metrics, title, png, args.figure)
    else:
        plot_bars(summary, metrics, title, png)
    print(md)
    print(f"wrote {out_dir / 'episodes.csv'}, {out_dir / 'summary.csv'}, {out_dir / 'summary.md'}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
