"""Trained policies in the grid: a tiny train.py run evaluated per variant and on all variants;
every row names the reward mode the checkpoint was trained with; a checkpoint meets only envs
with its number of UEs."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.grid import ExperimentError
from experiments.runner import EvaluationRequest, prepare, run_evaluation

REPO = Path(__file__).resolve().parents[2]
TINY = {"num_ues": 3, "num_clusters": 1, "episode_length": 3}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    sets = [f"{k}={v}" for k, v in TINY.items()] + ["algorithm.hidden=[16]", "algorithm.episodes_per_iteration=2",
                                                     "experiment.evaluation_episodes=1", "algorithm.reward_mode=team"]
    argv = [sys.executable, str(REPO / "train.py"), "--iterations", "1", "--eval-baselines", "none",
            "--output-dir", str(out)]
    for item in sets:
        argv += ["--set", item]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_checkpoint_rows_name_their_reward_mode(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_run.parent)  # VARIANT=PATH with relative paths (RLlib loads only absolute ones)
    out = tmp_path / "fig10"
    run_evaluation(EvaluationRequest(figure=10, checkpoints=[f"his={tiny_run.name}", f"cfis={tiny_run.name}/checkpoints",
                                                             tiny_run.name],
                                     baselines=["iis-fixed"], episodes=1, output_dir=out), log=lambda line: None)
    with (out / "episodes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    trained = [(r["policy"], r["variant"], r["reward_mode"]) for r in rows if r["policy"].startswith("trained")]
    assert sorted(trained) == sorted([("trained:ippo", "his", "team"), ("trained:ippo", "cfis", "team")]
                                     + [("trained:ippo#2", s, "team") for s in ("his", "ppgfis", "cfis", "iis")])
    assert {r["reward_mode"] for r in rows if r["policy"] == "iis-fixed"} == {"none"}
    md = (out / "summary.md").read_text()
    assert "| IPPO (team reward) | HIS | team |" in md and "| IPPO #2 (team reward) | IIS | team |" in md
    assert "| fixed IIS-like split | HIS | none |" in md


@pytest.mark.slow
def test_checkpoint_meets_only_envs_with_its_number_of_ues(tiny_run, tmp_path):
    with pytest.raises(ExperimentError, match="trained with num_ues=3, but variant 'base' has num_ues=5"):
        prepare(EvaluationRequest(checkpoints=[str(tiny_run)], overrides={"num_ues": 5}, output_dir=tmp_path))
    with pytest.raises(ExperimentError, match="no variant 'nope' here; variants: his, ppgfis, cfis, iis"):
        prepare(EvaluationRequest(figure=10, checkpoints=[f"nope={tiny_run}"], output_dir=tmp_path))
