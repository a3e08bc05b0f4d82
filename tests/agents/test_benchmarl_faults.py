"""Faults on train.py's BenchMARL backend: SIGTERM or SIGINT in the middle of a run stop it cleanly
(final checkpoint at the last iteration, evaluation, W&B finished, exit 0), two signals stop it at
once (exit 130); a cache folder that is a file, and budgets that cannot end, are refused with exit 2
before anything is written (and by the library with BenchmarlSettingsError)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")

from tests.wandb_files import history_by_step, newest_offline_run, read_records  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = ["--backend", "benchmarl", "--set", "num_ues=4", "--set", "num_clusters=2", "--set", "episode_length=10",
        "--set", "algorithm.hidden=[16]", "--set", "algorithm.episodes_per_iteration=4",
        "--set", "experiment.evaluation_episodes=1", "--eval-baselines", "random"]
FRAMES_PER_ITERATION = 4 * 10  # 4 envs x 10 decision points


def train_py(*argv, env=None, **popen):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", **(env or {}))
    env.pop("WANDB_SERVICE", None)  # a W&B service of this test process must not be shared with the child
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *map(str, argv)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def start_and_signal(run, signals, after_rows=3, **popen):
    """train.py on the tiny run; once `after_rows` metrics rows are written, `signals` are sent back to back."""
    proc = train_py(*TINY, "--time-limit", 600, "--checkpoint-every", 2, "--keep-checkpoints", 2,
                    "--wandb-mode", "offline", "--output-dir", run, **popen)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if metrics.is_file() and metrics.read_text().count("\n") >= after_rows:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    for sig in signals:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=240)
    return proc.returncode, out


def rows_of(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def checkpoint_frames(run):
    names = [p.name for p in (run / "checkpoints").iterdir()]
    assert all(n.startswith("checkpoint_") and n.endswith(".pt") for n in names), names  # no temporary files
    return sorted(int(n[len("checkpoint_"):-len(".pt")]) for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_the_run_with_a_final_checkpoint_and_evaluation(tmp_path, sig):
    import torch

    run = tmp_path / "run"
    code, out = start_and_signal(run, [sig])
    name = signal.Signals(sig).name
    assert code == 0, out[-3000:]
    assert f"{name}: stopping after this iteration" in out and f"stopped: interrupted ({name})" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    rows = rows_of(run)
    n = len(rows)
    assert n >= 3 and [r["iteration"] for r in rows] == list(range(1, n + 1))
    frames = int(rows[-1]["perf/env_steps_total"])
    assert frames == n * FRAMES_PER_ITERATION
    saved = checkpoint_frames(run)
    # the newest checkpoint is the last iteration's, whatever the cadence (every 2); keep 2, none twice
    assert saved[-1] == frames and len(saved) <= 2 and len(set(saved)) == len(saved)
    state = torch.load(run / "checkpoints" / f"checkpoint_{frames}.pt", weights_only=False)["state"]
    assert (state["total_frames"], state["n_iters_performed"]) == (frames, n)
    for name_ in ("eval.csv", "eval.md", "plots/learning_curve.png"):
        assert (run / name_).is_file(), name_
    assert "trained (ippo shared, BenchMARL, greedy)" in (run / "eval.csv").read_text()  # the default preset's
    wandb_file = newest_offline_run(run)
    assert sorted(history_by_step(wandb_file)) == list(range(1, n + 1))
    assert any(r.WhichOneof("record_type") == "exit" for r in read_records(wandb_file))  # W&B finished


@pytest.mark.slow
def test_a_second_signal_stops_at_once_with_exit_130(tmp_path):
    run = tmp_path / "run"
    # two different signals, so that neither is merged into the other while the first is pending
    code, out = start_and_signal(run, [signal.SIGINT, signal.SIGTERM])
    assert code == 130, out[-3000:]
    assert "train.py: stopped at once; the checkpoints on disk are as they were" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not (run / "eval.csv").exists()
    written = {int(r["perf/env_steps_total"]) for r in rows_of(run)}
    assert set(checkpoint_frames(run)) <= written  # whole checkpoints of finished iterations, no temporary files


def test_a_cache_folder_that_is_a_file_is_refused_before_anything_is_written(tmp_path):
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    run = tmp_path / "run"
    proc = train_py(*TINY, "--iterations", 1, "--wandb-mode", "disabled", "--output-dir", run,
                    env={"HIS_MARL_CACHE": str(cache)})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-3000:]
    assert f"train.py: error: HIS_MARL_CACHE='{cache}'" in out and "is a file, not a folder" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not run.exists()


@pytest.mark.parametrize("value", ["inf", "nan", "0"])
def test_a_time_limit_that_cannot_end_is_refused_naming_the_flag(tmp_path, value):
    proc = train_py(*TINY, "--time-limit", value, "--output-dir", tmp_path / "run")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out[-3000:]
    assert "argument --time-limit" in out and "a finite positive number of seconds" in out, out[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, value", [("time_limit_s", float("inf")), ("time_limit_s", float("nan")),
                                            ("time_limit_s", 0.0), ("iterations", 0), ("timesteps", -40)])
def test_the_library_refuses_a_budget_that_cannot_end_before_anything_is_built(tmp_path, monkeypatch, setting, value):
    from agents.benchmarl import training as benchmarl_training
    from agents.benchmarl.experiment import BenchmarlSettingsError

    def never(*args, **kwargs):
        raise AssertionError("the experiment was built")

    monkeypatch.setattr(benchmarl_training, "build_experiment", never)
    out = tmp_path / "run"
    with pytest.raises(BenchmarlSettingsError, match=f"{setting} = {value!r}; allowed: "):
        benchmarl_training.train_benchmarl({"num_ues": 4, "episode_length": 10}, {"hidden": [16]}, {}, out,
                                           wandb_mode="disabled", log=lambda line: None, **{setting: value})
    assert not out.exists()


def test_the_library_refuses_a_cache_folder_that_is_a_file_before_anything_is_written(tmp_path, monkeypatch):
    from agents.benchmarl.training import train_benchmarl
    from agents.training import PreflightError

    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    monkeypatch.setenv("HIS_MARL_CACHE", str(cache))
    out = tmp_path / "run"
    with pytest.raises(PreflightError, match="HIS_MARL_CACHE=.* is a file, not a folder"):
        train_benchmarl({"num_ues": 4, "episode_length": 10}, {"hidden": [16]}, {}, out, iterations=1,
                        wandb_mode="disabled", log=lambda line: None)
    assert not out.exists()


def test_a_wandb_mode_without_the_wandb_package_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import sys

    from agents.benchmarl.training import BenchmarlSettingsError, train_benchmarl

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as where it is not installed
    out = tmp_path / "run"
    with pytest.raises(BenchmarlSettingsError, match="W&B mode 'offline' needs the wandb package .*--wandb-mode "
                                                     "disabled"):
        train_benchmarl({"num_ues": 4, "episode_length": 10}, {"hidden": [16]}, {}, out, iterations=1,
                        wandb_mode="offline", log=lambda line: None)
    assert not out.exists()


@pytest.mark.parametrize("baseline, message", [
    ("random search", "unknown baseline 'random search'; allowed: random \\| iis-fixed"),
    ("backlog-search", "'backlog-search' weighs the request queues, and config key 'dynamics.requests.enabled' "
                       "is false"),
])
def test_final_evaluation_baselines_are_checked_before_anything_is_written(tmp_path, baseline, message):
    """A baseline that does not parse, or cannot act on the run's env, is refused before training (the
    final evaluation would otherwise fail after the whole budget)."""
    from agents.benchmarl.training import BenchmarlSettingsError, train_benchmarl

    out = tmp_path / "run"
    with pytest.raises(BenchmarlSettingsError, match=f"--eval-baselines: .*{message}"):
        train_benchmarl({"num_ues": 4, "episode_length": 10}, {"hidden": [16]}, {}, out, iterations=1,
                        eval_baselines=("random", baseline), wandb_mode="disabled", log=lambda line: None)
    assert not out.exists()


def test_a_failure_while_running_exits_1_with_a_message(tmp_path, monkeypatch, capsys):
    from agents.benchmarl import training as benchmarl_training
    from his_cli import train

    def fail(*args, **kwargs):
        raise RuntimeError("the collector lost its env")

    monkeypatch.setattr(benchmarl_training, "train_benchmarl_request", fail)
    assert train.main([*TINY, "--iterations", "1", "--output-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.rstrip().endswith("train.py: error: the run failed (RuntimeError: the collector lost its env)"), err
