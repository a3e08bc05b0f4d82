"""PNG figures of the evaluation summaries: grouped bars (Figs. 10, 12, 14, 16), lines over a
variant's x value (Figs. 13, 17), the two panels of Fig. 11 and the reward curves of Fig. 15.

Axes, ticks and legends use the paper's names (the summary rows' `name` and `variant_name`);
the legend sits in its own band between the title and the axes, so it covers no data.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np

from experiments.figures import METRIC_LABELS, SCHEME_NAMES
from his_common.storage import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ordered(summary: Sequence[Mapping[str, Any]], key: str, name_key: str) -> List[Tuple[str, str]]:
    return list(dict.fromkeys((r[key], r.get(name_key) or r[key]) for r in summary))


def _layout(fig, title: str, handles, labels):
    """Title on top, then the legend in a band of its own, then the axes."""
    ncol = max(1, min(len(labels), 4))
    rows = -(-len(labels) // ncol) if labels else 0
    height = fig.get_figheight()
    title_h, row_h = 0.32 / height, 0.22 / height
    fig.suptitle(title, fontsize=10, y=1 - 0.05 / height, va="top")
    if labels:
        fig.legend(handles, labels, loc="upper center", ncol=ncol, fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, 1 - title_h))
    fig.tight_layout(rect=(0, 0, 1, 1 - title_h - rows * row_h), pad=0.6)
    return fig


def save_png(fig, path: Path) -> Path:
    """Write `fig` as a PNG atomically and close it."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _value(summary, policy: str, variant: str, key: str, default: float = np.nan) -> float:
    return next((r.get(key, default) for r in summary if r["policy"] == policy and r["variant"] == variant), default)


def bars_figure(summary: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str):
    """One panel per metric; variants on the x axis, one bar per policy (mean ± std)."""
    plt = _pyplot()
    variants = _ordered(summary, "variant", "variant_name")
    policies = _ordered(summary, "policy", "name")
    rotate = max(len(name) for _, name in variants) > 8
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.6 * len(metrics), 6), 4.0 + 0.25 * len(policies) / 4),
                             squeeze=False)
    width = 0.8 / max(len(policies), 1)
    for ax, metric in zip(axes[0], metrics):
        for j, (pol, _) in enumerate(policies):
            vals = [_value(summary, pol, v, metric) for v, _ in variants]
            errs = [_value(summary, pol, v, metric + "_std", 0.0) for v, _ in variants]
            xs = np.arange(len(variants)) + (j - (len(policies) - 1) / 2) * width
            ax.bar(xs, vals, width, yerr=errs, capsize=2, color=f"C{j}")
        ax.set_xticks(np.arange(len(variants)))
        ax.set_xticklabels([name for _, name in variants], rotation=25 if rotate else 0,
                           ha="right" if rotate else "center", fontsize=8)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=f"C{j}") for j in range(len(policies))]
    return _layout(fig, title, handles, [name for _, name in policies])


def lines_figure(summary: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str, x_label: str):
    """One panel per metric; the variants' x values on the x axis, one line per policy."""
    plt = _pyplot()
    policies = _ordered(summary, "policy", "name")
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.6 * len(metrics), 6), 3.8), squeeze=False)
    handles = []
    for ax, metric in zip(axes[0], metrics):
        handles = []
        for j, (pol, _) in enumerate(policies):
            pts = sorted((r["x"], r[metric], r.get(metric + "_std", 0.0)) for r in summary if r["policy"] == pol)
            xs, ys, es = zip(*pts)
            handles.append(ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, color=f"C{j}"))
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.grid(alpha=0.3)
    return _layout(fig, title, handles, [name for _, name in policies])


def resource_panels_figure(summary: Sequence[Mapping[str, Any]], title: str):
    """Fig. 11: U against the ES SM budget (a) and the UE SMs (b); one line per scheme and policy."""
    plt = _pyplot()
    policies = _ordered(summary, "policy", "name")
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), squeeze=False)
    handles, labels = [], []
    markers = "os^Dvx"
    for ax, (panel, x_label) in zip(axes[0], (("es", "(a) ES SM budget v_max^ES"), ("ue", "(b) UE SMs v_n^UE"))):
        for k, scheme in enumerate(SCHEME_NAMES):
            for j, (pol, pol_name) in enumerate(policies):
                pts = sorted((r["x"], r["utility"], r.get("utility_std", 0.0)) for r in summary
                             if r["policy"] == pol and r.get("group") == f"{panel}/{scheme}")
                if not pts:
                    continue
                xs, ys, es = zip(*pts)
                h = ax.errorbar(xs, ys, yerr=es, marker=markers[j % len(markers)], ms=3, capsize=2, color=f"C{k}",
                                linestyle="-" if j == 0 else "--")
                label = SCHEME_NAMES[scheme] + (f" ({pol_name})" if len(policies) > 1 else "")
                if label not in labels:
                    handles.append(h)
                    labels.append(label)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel(METRIC_LABELS["utility"], fontsize=8)
        ax.grid(alpha=0.3)
    if len(policies) == 1:
        title = f"{title} ({policies[0][1]})"
    return _layout(fig, title, handles, labels)


def curves_figure(curves: Sequence[Tuple[str, Sequence[float], Sequence[float]]], title: str):
    """Fig. 15: one smoothed training curve (env steps, U) per run."""
    from experiments.curves import moving_average

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    handles = [ax.plot(xs, moving_average(ys, 5), lw=1.5, color=f"C{j}")[0] for j, (_, xs, ys) in enumerate(curves)]
    ax.set_xlabel("env steps (decision points)")
    ax.set_ylabel("network utility U per decision point")
    ax.grid(alpha=0.3)
    return _layout(fig, title, handles, [label for label, _, _ in curves])


def figure_for(kind: str, summary: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str,
               x_label: str = ""):
    """The matplotlib figure of a summary for a Figure.kind (bars, lines or panels)."""
    if kind == "panels":
        return resource_panels_figure(summary, title)
    if kind == "lines":
        return lines_figure(summary, metrics, title, x_label)
    return bars_figure(summary, metrics, title)
