"""Quiet by default: train.py piped to a file prints one line per iteration and its summary, and no
library warning, progress bar or escape code, on both backends; --verbose lets TorchRL's warnings
and coloured log lines through (BenchMARL's progress bar, only on a terminal, stays off in a pipe)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "num_ues=4", "--set", "num_clusters=2", "--set", "episode_length=10", "--set", "algorithm.hidden=[16]",
        "--set", "algorithm.episodes_per_iteration=4", "--set", "experiment.evaluation_episodes=1",
        "--eval-baselines", "random", "--wandb-mode", "offline"]
NOISE = ("warning", "\x1b[", "it/s", "\r")  # warnings, colour codes, progress bars (tqdm's rate, its carriage returns)


def noise(text):
    """What of NOISE the text holds, "warning" in any case (RLlib's logger writes WARNING)."""
    return [part for part in NOISE if part in text.lower()]


def piped_run(tmp_path, *argv):
    """train.py with stdout and stderr in one file, as `train.py ... > log 2>&1` leaves them; (status, text)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WANDB_SERVICE", None)  # a W&B service of this test process must not be shared with the child
    env.pop("WANDB_MODE", None)  # as a user's shell has it (--wandb-mode says it); transformers prints a line for it
    log = tmp_path / "train.log"
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, str(REPO / "train.py"), *TINY, *map(str, argv)], cwd=REPO, env=env,
                              stdout=fh, stderr=subprocess.STDOUT, timeout=300)
    return proc.returncode, log.read_text()


def iteration_lines(text):
    return [line for line in text.splitlines() if line.startswith("[iter ")]


@pytest.mark.slow
def test_a_benchmarl_run_piped_to_a_file_prints_one_line_per_iteration_and_nothing_else(tmp_path):
    pytest.importorskip("benchmarl")
    run = tmp_path / "run"
    code, text = piped_run(tmp_path, "--backend", "benchmarl", "--time-limit", 4, "--output-dir", run)
    assert code == 0, text[-3000:]
    assert not noise(text), text[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 2 and len(iteration_lines(text)) == len(rows)
    other = [line for line in text.splitlines() if line and not line.startswith(("[iter ", "|"))]
    assert other[0].startswith("BenchMARL ippo shared on 4 UEs") and other[1].startswith("stopped: time limit 4 s")
    assert other[2].startswith("Greedy evaluation on 1 episodes") and len(other) == 3, other


@pytest.mark.slow
def test_verbose_shows_the_libraries_warnings_and_logs(tmp_path):
    pytest.importorskip("benchmarl")
    code, text = piped_run(tmp_path, "--backend", "benchmarl", "--iterations", 1, "--verbose",
                           "--output-dir", tmp_path / "run")
    assert code == 0, text[-3000:]
    assert "DeprecationWarning" in text and "\x1b[" in text  # TorchRL's deprecation, its coloured log line
    assert "it/s" not in text  # BenchMARL's progress bar is for a terminal


@pytest.mark.slow
def test_an_rllib_run_piped_to_a_file_is_quiet_too(tmp_path):
    code, text = piped_run(tmp_path, "--iterations", 1, "--output-dir", tmp_path / "run")
    assert code == 0, text[-3000:]
    assert not noise(text), text[-3000:]  # RLlib's new-API-stack WARNING included
    assert len(iteration_lines(text)) == 1
