"""train.py as a command: --help, flag and value errors (exit 2, one line, no traceback), one
small run end to end in a subprocess, and the same --seed giving the same run in two processes.
The training run itself is tested through the library in tests/agents/test_training_*.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from his_cli import train

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "num_ues=3", "--set", "num_clusters=1", "--set", "episode_length=5",
        "--set", "algorithm.hidden=[16]", "--set", "algorithm.episodes_per_iteration=2",
        "--set", "experiment.evaluation_episodes=1"]


def run_cli(args, tmp_path, env=None, timeout=400):
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", **(env or {}))
    env.pop("PYTHONHASHSEED", None)
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_launcher_is_thin():
    assert len((REPO / "train.py").read_text().splitlines()) < 40
    # "about 150" for two backends, and the presets and the backend taken from a resumed run's folder
    assert len((REPO / "his_cli" / "train.py").read_text().splitlines()) < 200


def test_help_documents_every_flag_and_the_reward(capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    parser = train.build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
        for flag in action.option_strings:
            assert flag in out
    assert "difference reward" in out and "NOT the paper's per-UE reward of Eq. (33)" in " ".join(out.split())
    assert "configs/train_paper_reward.yaml" in out


@pytest.mark.parametrize("argv, needle", [
    (["--set", "num_ues=0"], "num_ues"),
    (["--set", "scheme.name=magic"], "scheme.name"),
    (["--set", "no_such_key=1"], "no_such_key"),
    (["--set", "algorithm.lr=-1"], "algorithm.lr"),
    (["--set", "algorithm.algo=dqn"], "algorithm.algo"),
    (["--set", "train.lr=1"], "algorithm.lr"),
    (["--set", "num_ues"], "KEY=VALUE"),
    (["--eval-baselines", "oracle"], "unknown baseline 'oracle'"),
    (["--resume", "/nonexistent/run"], "does not exist"),
    (["--device", "cuda"], "--device cuda is for --backend benchmarl"),
    (["--backend", "benchmarl", "--resume", "/nonexistent/run"], "'/nonexistent/run' does not exist"),
    (["--backend", "benchmarl", "--ray-address", "auto"], "it takes no --ray-address"),
    (["--preset", "like-for-like"], "--preset like-for-like is for --backend benchmarl"),
])
def test_bad_values_give_clear_errors(argv, needle, capsys, tmp_path):
    assert train.main(argv + ["--iterations", "1", "--wandb-mode", "disabled",
                              "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error:") and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--algo", "dqn"], "invalid choice: 'dqn'"),
    (["--iterations", "0"], "--iterations must be a positive integer"),
    (["--time-limit", "soon"], "--time-limit must be a finite positive number"),
    (["--wandb-mode", "cloud"], "invalid choice: 'cloud'"),
])
def test_bad_flags_give_clear_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_resume_refuses_what_would_change_the_run(capsys, tmp_path):
    assert train.main(["--resume", str(tmp_path), "--set", "algorithm.lr=0.1"]) == 2
    assert "would change what the run learns" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path), "--seed", "3"]) == 2
    assert "cannot change it" in capsys.readouterr().err


def metrics_without_timing(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s" and not k.startswith("perf/") or k.endswith("_total")}
            for r in rows]


@pytest.mark.slow
def test_a_small_run_end_to_end_and_the_same_seed_repeats_it(tmp_path):
    """Two processes, same flags and seed, PYTHONHASHSEED unset: identical metrics (train.py
    fixes the hash seed that decides RLlib's agent order, and modules are built in agent order)."""
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = run_cli([*TINY, "--iterations", "2", "--seed", "5", "--eval-baselines", "random",
                        "--output-dir", str(out)], tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        runs.append(out)
    assert "stopped: reached 2 iterations" in proc.stdout
    assert "| trained (ppo-shared, greedy) |" not in proc.stdout  # ippo by default
    assert "| trained (ippo, greedy) | difference |" in proc.stdout and "| random | none |" in proc.stdout
    a, b = (metrics_without_timing(r) for r in runs)
    assert [r["iteration"] for r in a] == [1, 2]
    assert a == b
