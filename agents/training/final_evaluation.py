"""The greedy evaluation a training run ends with: the final policy beside baselines on fixed
seeds (agents.evaluation), written as `eval.csv` and `eval.md` in the run folder.

Every row names the reward mode: the trained policy's training signal (`difference`, `team` or
`individual`), or `none` for a baseline, which is not trained. U is always the network
utility per decision point (Eq. 33 summed over UEs), whatever the training reward.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from agents.evaluation import ModulePolicy, evaluate_policy, mean_metric, normalized_score
from his_common.storage import atomic_write_text

EVAL_SEED_BASE = 10_000
BASELINE_REWARD_MODE = "none"


def evaluation_seeds(run_seed: int, episodes: int) -> List[int]:
    return [EVAL_SEED_BASE + run_seed * 1000 + i for i in range(episodes)]


def std(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def evaluate_final_policy(policy: ModulePolicy, label: str, reward_mode: str, env_config: Mapping[str, Any],
                          baselines: Sequence[str], seed: int, episodes: int,
                          env_factory: Optional[str] = None, search_device: Optional[str] = None
                          ) -> List[Dict[str, Any]]:
    """One summary row per policy (the trained one first, then `baselines`; a `search` baseline
    scores its candidates on the torch device `search_device` where given)."""
    from agents.baselines import make_baseline

    if episodes <= 0:
        return []
    seeds = evaluation_seeds(seed, episodes)
    y_min = int(env_config.get("steps", {}).get("min_es_personal", 0))
    policies = [(label, reward_mode, policy)]
    policies += [(spec, BASELINE_REWARD_MODE,
                  make_baseline(spec, seed=seed, es_personal_min=y_min, search_device=search_device))
                 for spec in baselines]
    table = []
    for name, mode, pol in policies:
        rows = evaluate_policy(pol, env_config, seeds, env_factory=env_factory)
        table.append({"policy": name, "reward_mode": mode, "episodes": len(rows),
                      "utility": mean_metric(rows, "utility"), "quality": mean_metric(rows, "quality"),
                      "delay": mean_metric(rows, "delay"), "energy": mean_metric(rows, "energy"),
                      "utility_std": std([r.get("utility", float("nan")) for r in rows]),
                      "seeds": f"{seeds[0]}..{seeds[-1]}"})
    by = {row["policy"]: row["utility"] for row in table}
    if "random" in by and "search" in by:
        for row in table:
            row["score"] = normalized_score(row["utility"], by["random"], by["search"])
    return table


def markdown(table: Sequence[Mapping[str, Any]]) -> str:
    if not table:
        return ""
    has_score = "score" in table[0]
    lines = ["| policy | reward mode | U | Q | T | E |" + (" score |" if has_score else ""),
             "|---|---|---|---|---|---|" + ("---|" if has_score else "")]
    for row in table:
        line = (f"| {row['policy']} | {row['reward_mode']} | {row['utility']:.4f} ± {row['utility_std']:.4f} | "
                f"{row['quality']:.4f} | {row['delay']:.4f} | {row['energy']:.4f} |")
        if has_score:
            line += f" {row['score']:.3f} |"
        lines.append(line)
    return (f"Greedy evaluation on {table[0]['episodes']} episodes, seeds {table[0]['seeds']} (mean ± std over "
            f"episodes of the per-decision-point network utility U, quality Q, delay T, energy E; reward mode: "
            f"the signal the policy was trained on, none for baselines).\n\n" + "\n".join(lines) + "\n")


def write_tables(table: Sequence[Mapping[str, Any]], run_dir: Path) -> None:
    if not table:
        return
    atomic_write_text(run_dir / "eval.md", markdown(table))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0].keys()))
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(run_dir / "eval.csv", buf.getvalue())


def plot_learning_curve(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Optional[Path]:
    xs = [r["perf/env_steps_total"] for r in rows if "his/utility" in r]
    ys = [r["his/utility"] for r in rows if "his/utility" in r]
    if not xs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from his_common.storage import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, lw=1.5)
    ax.set_xlabel("env steps (decision points)")
    ax.set_ylabel("network utility U (training episodes)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
