"""Results files of an evaluation: `episodes.csv` (one row per policy x variant x episode),
`summary.csv` and `summary.md` (means ± standard deviations, written by
agents.evaluation.write_evaluation_table, with the paper's values beside ours), and for
Fig. 15 `curves.csv` and its `summary.md`. Every file is written atomically."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agents.evaluation import add_normalized_scores, csv_text, summarize_episodes, write_evaluation_table
from experiments.curves import curve_summary
from experiments.figures import Figure, compare_with_paper
from his_common.storage import atomic_write_text


@dataclass
class Report:
    summary: List[Dict[str, Any]]
    markdown: str
    files: List[Path]
    comparison: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def write_grid_report(rows: Sequence[Mapping[str, Any]], figure: Optional[Figure], metrics: Sequence[str],
                      title: str, seeds: Sequence[int], num_ues: Any, out_dir: Path) -> Report:
    """episodes.csv, summary.csv and summary.md of a grid run; the paper's values where the
    figure has them, and the normalised score where random and search were both run."""
    summary = summarize_episodes(rows, metrics)
    add_normalized_scores(summary)
    comparison = compare_with_paper(figure, summary) if figure is not None else []
    heading = (f"{title}\n\nMean ± std over {len(seeds)} episodes (seeds {seeds[0]}..{seeds[-1]}) of the "
               f"per-decision-point network metrics; N = {num_ues}. Reward mode: the reward a trained policy "
               f"learned with (`none` for a baseline, which is not trained).")
    if figure is not None and figure.paper:
        heading += f"\n\nPaper: {figure.paper}."
    episodes = Path(out_dir) / "episodes.csv"
    atomic_write_text(episodes, csv_text(rows))
    csv_path, md_path = write_evaluation_table(summary, out_dir, "summary", metrics, heading, comparison)
    return Report(summary, md_path.read_text(), [episodes, csv_path, md_path], comparison)


def write_curves_report(curves: Sequence[Tuple[str, Sequence[float], Sequence[float]]], num_ues: Mapping[str, Any],
                        warning: str, out_dir: Path) -> Report:
    """curves.csv (run, N, env steps, U) and summary.md of Fig. 15, with the mixed-env warning."""
    rows = [{"run": label, "num_ues": num_ues.get(label), "env_steps": x, "utility": y}
            for label, xs, ys in curves for x, y in zip(xs, ys)]
    curves_csv = Path(out_dir) / "curves.csv"
    atomic_write_text(curves_csv, csv_text(rows) if rows else "run,num_ues,env_steps,utility\n")
    md = "Fig. 15: training reward curves\n\n" + curve_summary(curves, num_ues)
    if warning:
        md += f"\n- {warning}\n"
    md_path = Path(out_dir) / "summary.md"
    atomic_write_text(md_path, md)
    return Report([], md, [curves_csv, md_path], warnings=[warning] if warning else [])
