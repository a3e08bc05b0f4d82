"""Figures: the legend sits in its own band above the axes (it covers no bar or line), and
ticks and legend entries use the paper's names, not internal ids."""
import pytest

pytest.importorskip("matplotlib")

from experiments.figures import get_figure  # noqa: E402
from experiments.plots import bars_figure, figure_for, save_png  # noqa: E402


def summary_for(number, policies=(("search", "search reference"), ("trained:ippo", "IPPO (difference reward)"))):
    figure = get_figure(number)
    rows = []
    for j, (policy, name) in enumerate(policies):
        for k, variant in enumerate(figure.variants({"num_ues": 8, "reward": {"quality_weight": 10.0}})):
            row = {"policy": policy, "name": name, "variant": variant.label, "variant_name": variant.display,
                   "group": variant.group, "x": variant.x, "episodes": 2}
            for m in ("utility", "quality", "delay", "energy", "intra_cluster_similarity",
                      "public_personal_similarity"):
                row[m], row[m + "_std"] = 10.0 + k + j, 0.5
            rows.append(row)
    return figure, rows


def overlaps(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("number", [10, 11, 13, 14, 16, 17])
def test_legend_covers_no_axes_and_labels_are_the_papers(number):
    figure, summary = summary_for(number)
    fig = figure_for(figure.kind, summary, figure.metrics, figure.title, figure.x_label)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not overlaps(box, ax.get_tightbbox(renderer)), f"legend overlaps {ax.get_title()!r}"
    assert fig._suptitle.get_window_extent(renderer).y0 >= box.y1 - 1  # title above the legend
    entries = [t.get_text() for t in legend.get_texts()]
    if figure.kind == "panels":
        assert "HIS (search reference)" in entries and "IIS (IPPO (difference reward))" in entries
    else:
        assert entries == ["search reference", "IPPO (difference reward)"]
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    if figure.kind == "bars":
        assert ticks == [v.display for v in figure.variants({"num_ues": 8})]
    assert not {"his", "user_equal", "cluster_equal", "trained:ippo"} & set(ticks + entries)


def test_fig16_ticks_and_png(tmp_path):
    figure, summary = summary_for(16)
    fig = bars_figure(summary, figure.metrics, figure.title)
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["KKT", "user-wise equal", "cluster-wise equal"]
    path = save_png(fig, tmp_path / "fig16.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*.tmp"))
