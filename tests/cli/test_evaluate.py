"""evaluate.py on a tiny checkpoint: tables (CSV, Markdown) and PNG figures, Fig. 15 from training
logs, and clear errors."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "num_ues=3", "--set", "num_clusters=1", "--set", "episode_length=3"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    out = tmp / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *TINY, "--set", "algorithm.hidden=[16]",
                           "--set", "algorithm.episodes_per_iteration=2", "--set", "experiment.evaluation_episodes=1",
                           "--iterations", "2", "--eval-baselines", "none", "--output-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def run_eval(argv):
    return evaluate.main(argv)


def check_outputs(folder: Path, png: str, min_rows: int):
    for name in ("episodes.csv", "summary.csv", "summary.md", png):
        assert (folder / name).is_file(), name
    assert (folder / png).read_bytes()[:8] == PNG_MAGIC
    with (folder / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= min_rows
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporaries
    return rows


@pytest.mark.slow
def test_figure10_with_checkpoint_and_baseline(tiny_run, tmp_path, capsys):
    out = tmp_path / "fig10"
    assert run_eval(["--figure", "10", "--checkpoint", str(tiny_run), "--policy", "iis-fixed", "--episodes", "2",
                     "--output-dir", str(out)]) == 0
    rows = check_outputs(out, "fig10.png", 8)
    assert {r["variant"] for r in rows} == {"his", "ppgfis", "cfis", "iis"}
    assert {r["policy"] for r in rows} == {"trained:ippo", "iis-fixed"}
    md = (out / "summary.md").read_text()
    assert "| trained:ippo | his |" in md
    assert "paper +36.8 %" in md and "paper +51.0 %" in md and "paper +94.3 %" in md
    assert "HIS utility gain" in capsys.readouterr().out


@pytest.mark.slow
def test_per_variant_checkpoints_given_as_relative_paths(tiny_run, tmp_path, monkeypatch):
    """`--checkpoint VARIANT=PATH` with a path relative to the working folder (RLlib itself
    loads only absolute paths): one policy across the variants it is given for."""
    monkeypatch.chdir(tiny_run.parent)
    out = tmp_path / "fig10"
    assert run_eval(["--figure", "10", "--checkpoint", f"his={tiny_run.name}", "--checkpoint",
                     f"cfis={tiny_run.name}/checkpoints", "--episodes", "1", "--output-dir", str(out)]) == 0
    rows = check_outputs(out, "fig10.png", 2)
    assert sorted((r["policy"], r["variant"]) for r in rows) == [("trained:ippo", "cfis"), ("trained:ippo", "his")]


@pytest.mark.slow
@pytest.mark.parametrize("figure, png, n_variants", [(13, "fig13.png", 3), (14, "fig14.png", 8),
                                                     (16, "fig16.png", 3), (17, "fig17.png", 5)])
def test_other_figures_produce_tables_and_pngs(tiny_run, tmp_path, figure, png, n_variants):
    out = tmp_path / f"fig{figure}"
    assert run_eval(["--figure", str(figure), "--policy", "random", "--episodes", "1",
                     "--set", "num_ues=3", "--set", "episode_length=2", "--output-dir", str(out)]) == 0
    rows = check_outputs(out, png, n_variants)
    assert len(rows) == n_variants
    if figure == 14:
        assert all(r["public_personal_similarity"] not in ("", "nan") for r in rows)


@pytest.mark.slow
def test_figure15_from_training_logs(tiny_run, tmp_path):
    out = tmp_path / "fig15"
    assert evaluate.main(["--figure", "15", "--runs", str(tiny_run), str(tiny_run), "--labels", "a", "b",
                          "--output-dir", str(out)]) == 0
    assert (out / "fig15.png").read_bytes()[:8] == PNG_MAGIC
    with (out / "curves.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["run"] for r in rows} == {"a", "b"} and len(rows) == 4


@pytest.mark.parametrize("argv, needle", [
    ([], "nothing to evaluate"),
    (["--policy", "oracle"], "unknown baseline 'oracle'"),
    (["--checkpoint", "/nonexistent"], "does not exist"),
    (["--figure", "15"], "--figure 15 needs --runs"),
    (["--figure", "15", "--runs", "/tmp"], "no metrics.csv"),
    (["--policy", "random", "--set", "num_ues=-3"], "num_ues"),
])
def test_bad_inputs_give_clear_errors(argv, needle, tmp_path, capsys):
    assert evaluate.main(argv + ["--output-dir", str(tmp_path / "o")]) == 2
    assert needle in capsys.readouterr().err
