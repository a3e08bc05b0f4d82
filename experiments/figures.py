"""The paper's Figs. 10-17 as declarative entries: which env variants each one runs, which metrics
it shows, how it is drawn and what the paper reports for it.

A `Figure`'s variants are env overrides on top of a base config (`variants(base_config)`); each
`Variant` has an id (`label`, used in the CSV files and in `--checkpoint VARIANT=PATH`) and the
paper's name for it (`name`, used on axes, legends and in tables). `compare(rows_by_variant)`
turns one policy's summary rows into sentences that set our values beside the paper's: its
percentages where it gives numbers, its shape ("U peaks at an interior M") where it gives
only a shape. Fig. 15 (training reward curves) reads train.py's logs instead of running
variants (`kind == "curves"`, see experiments.curves).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from his_common.registry import Registry

SCHEME_NAMES = {"his": "HIS", "ppgfis": "PPGFIS", "cfis": "CFIS", "iis": "IIS"}
ALLOCATION_NAMES = {"kkt": "KKT", "user_equal": "user-wise equal", "cluster_equal": "cluster-wise equal"}
CLUSTERING_NAMES = {"semantic": "semantic", "entity": "entity (TKG)", "random": "random", "single": "one cluster"}
METRIC_LABELS = {
    "utility": "network utility U", "quality": "service quality Q", "delay": "service delay T (s)",
    "energy": "energy E (J)", "intra_cluster_similarity": "intra-cluster similarity",
    "public_personal_similarity": "public-personal similarity",
}
ALL_METRICS = ("quality", "delay", "energy", "utility")

# What the paper reports (Sec. VII).
PAPER_FIG10_GAIN = {"ppgfis": 36.8, "cfis": 51.0, "iis": 94.3}  # HIS's utility gain over each, %
PAPER_FIG11_DROP = {"es": {"his": 18.7, "ppgfis": 23.1, "cfis": 29.0, "iis": 74.1},
                    "ue": {"his": 9.0, "ppgfis": 11.6, "cfis": 15.3, "iis": 14.9}}  # utility drop, %
PAPER_FIG12_GAIN = 19.1  # utility gain of SIM + NPI, %
PAPER_FIG13_DEFAULT_M = 3  # Table II; Fig. 13 gives only the shape: U rises with M, then falls
PAPER_FIG14_SIMILARITY = 0.65  # public-personal similarity of semantic clustering
PAPER_FIG16_UTILITY = 0.26  # KKT's network utility, on the paper's own (unstated) reward scale
FIG14_MORE_INTENTS = 5  # intent groups per decision point in Fig. 14's second half


@dataclass(frozen=True)
class Variant:
    """One env setting of a figure: `overrides` (dotted env keys) on top of the base config."""

    label: str
    overrides: Mapping[str, Any]
    name: str = ""
    group: str = ""  # panel (Fig. 11 a/b and scheme) or series
    x: Any = None  # position on the x axis of a line plot

    @property
    def display(self) -> str:
        return self.name or self.label


Rows = Mapping[str, Mapping[str, Any]]  # one policy's summary rows by variant label


@dataclass(frozen=True)
class Figure:
    number: int
    title: str
    metrics: Tuple[str, ...]
    variants: Optional[Callable[[Mapping[str, Any]], List[Variant]]]
    kind: str = "bars"  # bars | lines | panels (Fig. 11) | curves (Fig. 15)
    x_label: str = ""
    paper: str = ""  # what the paper reports, in one line
    compare: Optional[Callable[[Rows], List[str]]] = field(default=None, compare=False)


def pct(a: float, b: float) -> float:
    """Relative gain of a over b in percent (of |b|)."""
    return float("nan") if not (math.isfinite(a) and math.isfinite(b)) or b == 0 else 100.0 * (a - b) / abs(b)


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


# ---------------------------------------------------------------------- Fig. 10
def _fig10(base: Mapping[str, Any]) -> List[Variant]:
    return [Variant(s, {"scheme.name": s}, SCHEME_NAMES[s]) for s in SCHEME_NAMES]


def _compare10(rows: Rows) -> List[str]:
    if "his" not in rows:
        return []
    u_his = rows["his"]["utility"]
    gains = [f"vs {SCHEME_NAMES[s]}: {pct(u_his, rows[s]['utility']):+.1f} % (paper +{PAPER_FIG10_GAIN[s]:.1f} %)"
             for s in ("ppgfis", "cfis", "iis") if s in rows]
    order = sorted((s for s in SCHEME_NAMES if s in rows), key=lambda s: -rows[s]["utility"])
    return ["HIS utility gain " + "; ".join(gains) + f". Ordering: {' > '.join(SCHEME_NAMES[s] for s in order)} "
            f"(paper: HIS > PPGFIS > CFIS > IIS)"]


# ---------------------------------------------------------------------- Fig. 11
FIG11_ES_SMS = (700, 860, 1026, 1350, 1674)  # Table II's range 1026-1674 plus points below it
FIG11_UE_SMS = (44, 54, 64, 74, 84)  # Table II's range 64-84 plus points below it


def _fig11(base: Mapping[str, Any]) -> List[Variant]:
    # The utility drops printed beside the paper's depend on this span.
    out = []
    for v in FIG11_ES_SMS:
        out += [Variant(f"{s}@es={v}", {"scheme.name": s, "es.sm_range": [v, v]}, f"{SCHEME_NAMES[s]}, ES {v} SMs",
                        group=f"es/{s}", x=v) for s in SCHEME_NAMES]
    for v in FIG11_UE_SMS:
        out += [Variant(f"{s}@ue={v}", {"scheme.name": s, "ue.sm_range": [v, v]}, f"{SCHEME_NAMES[s]}, UE {v} SMs",
                        group=f"ue/{s}", x=v) for s in SCHEME_NAMES]
    return out


def _compare11(rows: Rows) -> List[str]:
    lines = []
    for panel, what in (("es", "ES SM budget"), ("ue", "UE SMs")):
        parts = []
        for s in SCHEME_NAMES:
            pts = sorted((r["x"], r["utility"]) for r in rows.values() if r.get("group") == f"{panel}/{s}")
            if len(pts) >= 2:
                lo, hi = pts[0][1], pts[-1][1]
                drop = 100.0 * (hi - lo) / abs(hi) if hi else float("nan")
                parts.append(f"{SCHEME_NAMES[s]} {drop:.1f} % (paper {PAPER_FIG11_DROP[panel][s]:.1f} %)")
        if parts:
            lines.append(f"utility drop from the largest to the smallest {what}: " + ", ".join(parts))
    return lines


# ---------------------------------------------------------------------- Fig. 12
def _fig12(base: Mapping[str, Any]) -> List[Variant]:
    return [Variant("sim_npi", {"scheme.name": "his", "scheme.sim_npi": True}, "HIS (SIM+NPI)"),
            Variant("no_sim_npi", {"scheme.name": "his", "scheme.sim_npi": False}, "HIS w/o SIM+NPI")]


def _compare12(rows: Rows) -> List[str]:
    if "sim_npi" not in rows or "no_sim_npi" not in rows:
        return []
    gain = pct(rows["sim_npi"]["utility"], rows["no_sim_npi"]["utility"])
    return [f"SIM+NPI utility gain {gain:+.1f} % (paper +{PAPER_FIG12_GAIN:.1f} %)"]


# ---------------------------------------------------------------------- Fig. 13
FIG13_CLUSTERS = (1, 2, 3, 4, 5, 6, 8)


def _fig13(base: Mapping[str, Any]) -> List[Variant]:
    n = int(base.get("num_ues", 50))
    return [Variant(f"M={m}", {"scheme.name": "his", "num_clusters": m}, f"M = {m}", x=m)
            for m in FIG13_CLUSTERS if m <= n]


def _compare13(rows: Rows) -> List[str]:
    pts = sorted((r["x"], r) for r in rows.values() if r.get("x") is not None)
    if len(pts) < 3:
        return []
    ms = [m for m, _ in pts]
    peak_m, peak = max(pts, key=lambda p: p[1]["utility"])
    interior = ms[0] < peak_m < ms[-1]
    lines = [f"U peaks at M = {peak_m} (U {peak['utility']:.4g}; M = {ms[0]}: {pts[0][1]['utility']:.4g}, "
             f"M = {ms[-1]}: {pts[-1][1]['utility']:.4g}); paper: U rises with M, then falls past an interior "
             f"peak (Table II's M = {PAPER_FIG13_DEFAULT_M}): same shape: {yes_no(interior)}"]
    fewest = pts[0][1]
    more_t = fewest["delay"] > peak["delay"]
    more_e = fewest["energy"] > peak["energy"]
    lines.append(f"delay and energy with M = {ms[0]} above those at the peak: T {fewest['delay']:.4g} vs "
                 f"{peak['delay']:.4g} s ({yes_no(more_t)}), E {fewest['energy']:.4g} vs {peak['energy']:.4g} J "
                 f"({yes_no(more_e)}); paper: fewer clusters, more steps, more delay and energy")
    return lines


# ---------------------------------------------------------------------- Fig. 14
def _fig14(base: Mapping[str, Any]) -> List[Variant]:
    # With as many intent groups as clusters (the default 3) a prompt's main entity is its intent,
    # so entity (TKG) clustering finds the same clusters as semantic HAC. With more intents than
    # clusters the two differ: HAC merges related intents, entity grouping merges the smallest.
    out = [Variant(c, {"scheme.name": "his", "scheme.clustering": c}, name) for c, name in CLUSTERING_NAMES.items()]
    out += [Variant(f"{c}/{FIG14_MORE_INTENTS} intents",
                    {"scheme.name": "his", "scheme.clustering": c, "workload.num_intent_groups": FIG14_MORE_INTENTS},
                    f"{name}, {FIG14_MORE_INTENTS} intents") for c, name in CLUSTERING_NAMES.items()]
    return out


def _compare14(rows: Rows) -> List[str]:
    if "semantic" not in rows:
        return []
    sim = rows["semantic"].get("public_personal_similarity", float("nan"))
    first = [r for label, r in rows.items() if "/" not in label]
    best = max(first, key=lambda r: r.get("public_personal_similarity", float("-inf")))
    return [f"semantic clustering public-personal similarity {sim:.3f} (paper {PAPER_FIG14_SIMILARITY:.2f}); "
            f"highest among the strategies: {yes_no(best is rows['semantic'])} (paper: yes)"]


# ---------------------------------------------------------------------- Fig. 16
def _fig16(base: Mapping[str, Any]) -> List[Variant]:
    return [Variant(a, {"scheme.name": "his", "scheme.allocation": a}, name) for a, name in ALLOCATION_NAMES.items()]


def _compare16(rows: Rows) -> List[str]:
    present = [a for a in ALLOCATION_NAMES if a in rows]
    if "kkt" not in present or len(present) < 2:
        return []

    def best(metric: str, sign: float) -> str:
        return ALLOCATION_NAMES[max(present, key=lambda a: sign * rows[a][metric])]

    return [f"highest U: {best('utility', 1)}, lowest T: {best('delay', -1)}, lowest E: {best('energy', -1)} "
            f"(paper: KKT in all three; its U {PAPER_FIG16_UTILITY} is on the paper's reward scale, ours "
            f"{rows['kkt']['utility']:.4g})"]


# ---------------------------------------------------------------------- Fig. 17
FIG17_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _fig17(base: Mapping[str, Any]) -> List[Variant]:
    w = float(base.get("reward", {}).get("quality_weight", 10.0))
    return [Variant(f"w_q x{f:g}", {"scheme.name": "his", "reward.quality_weight": w * f}, f"w_q × {f:g}", x=w * f)
            for f in FIG17_FACTORS]


def _compare17(rows: Rows) -> List[str]:
    pts = sorted((r["x"], r) for r in rows.values() if r.get("x") is not None)
    if len(pts) < 2:
        return []
    parts = []
    for metric, short in (("quality", "Q"), ("delay", "T"), ("energy", "E")):
        vals = [r[metric] for _, r in pts]
        rising = all(b >= a - 1e-9 * max(1.0, abs(a)) for a, b in zip(vals, vals[1:])) and vals[-1] > vals[0]
        parts.append(f"{short} {yes_no(rising)}")
    return ["Q, T and E rise with the quality weight: " + ", ".join(parts) + " (paper: all three rise)"]


FIGURES: Registry[Figure] = Registry("figure")
for _figure in (
    Figure(10, "Fig. 10: inference schemes", ALL_METRICS, _fig10, "bars",
           paper="HIS's utility gain over PPGFIS, CFIS, IIS: 36.8 %, 51.0 %, 94.3 %", compare=_compare10),
    Figure(11, "Fig. 11: robustness to computing resources", ("utility",), _fig11, "panels",
           paper="utility drop over the range, ES: HIS 18.7, PPGFIS 23.1, CFIS 29.0, IIS 74.1 %; "
                 "UE: 9.0, 11.6, 15.3, 14.9 %", compare=_compare11),
    Figure(12, "Fig. 12: SIM/NPI ablation", ALL_METRICS, _fig12, "bars",
           paper="SIM + NPI raise the utility by 19.1 %", compare=_compare12),
    Figure(13, "Fig. 13: number of clusters", ALL_METRICS, _fig13, "lines", x_label="number of clusters M",
           paper="U rises with M, then falls past an interior peak; fewer clusters cost delay and energy",
           compare=_compare13),
    Figure(14, "Fig. 14: clustering strategies", ("intra_cluster_similarity", "public_personal_similarity", "utility"),
           _fig14, "bars", paper="semantic clustering: public-personal similarity 0.65, the best", compare=_compare14),
    Figure(15, "Fig. 15: reward curves", ("utility",), None, "curves",
           paper="full MIRA learns fastest; each normalisation removed slows it; vanilla converges lower"),
    Figure(16, "Fig. 16: ES SM allocation", ("delay", "energy", "utility"), _fig16, "bars",
           paper="KKT: lowest delay and energy, highest utility (0.26)", compare=_compare16),
    Figure(17, "Fig. 17: reward weight of quality", ("quality", "delay", "energy"), _fig17, "lines",
           x_label="quality weight w_q", paper="Q, T and E all rise with the quality weight", compare=_compare17),
):
    FIGURES.register(str(_figure.number), _figure)


def get_figure(number: int | str) -> Figure:
    """The figure registered under `number`, or a ValueError naming the allowed numbers."""
    if str(number) not in FIGURES:
        raise ValueError(f"figure {number!r} is not one of the paper's figures here; allowed: {', '.join(FIGURES.names)}")
    return FIGURES[str(number)]


def compare_with_paper(figure: Figure, summary: Sequence[Mapping[str, Any]]) -> List[str]:
    """`figure.compare` for each policy's rows, each sentence prefixed with the policy's name."""
    if figure.compare is None:
        return []
    by_policy: Dict[str, Dict[str, Mapping[str, Any]]] = {}
    names: Dict[str, str] = {}
    for row in summary:
        by_policy.setdefault(row["policy"], {})[row["variant"]] = row
        names[row["policy"]] = row.get("name") or row["policy"]
    return [f"{names[policy]}: {line}" for policy, rows in by_policy.items() for line in figure.compare(rows)]
