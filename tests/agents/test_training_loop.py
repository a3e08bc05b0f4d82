"""The training run through the library, in process: the run folder it leaves, resuming a copy
(the copy is the run; the run's checkpoint cadence is kept), resuming from an older checkpoint
(later history set aside, nothing deleted, W&B continued in a new run that holds the whole
history), a non-finite loss (stops, keeps the last good checkpoint) and SIGTERM handling."""
import csv
import json
import os
import shutil
import signal

import numpy as np
import pytest

from agents.training import EXIT_NONFINITE, StopRules, TrainingRequest, run_training
from tests.wandb_files import history_by_step, newest_offline_run, run_record

pytestmark = pytest.mark.slow  # trains (a few seconds per run)
HISTORY_KEYS = ("his/utility", "his/quality", "his/delay", "his/energy", "learner/policy_loss",
                "perf/env_steps_total")


def rows_of(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def record_of(ckpt):
    return json.loads((ckpt / "his_run.json").read_text())


def assert_wandb_matches_metrics(run):
    """The newest W&B run holds exactly the metrics rows, value for value."""
    history = history_by_step(newest_offline_run(run))
    rows = rows_of(run)
    assert sorted(history) == [r["iteration"] for r in rows]
    for r in rows:
        for key in HISTORY_KEYS:
            assert history[r["iteration"]][key] == pytest.approx(r[key], rel=1e-12), (r["iteration"], key)


def resume(run, **kwargs):
    kwargs.setdefault("wandb_mode", "offline")
    kwargs.setdefault("eval_baselines", [])
    return run_training(TrainingRequest(resume=run, **kwargs), log=lambda line: None)


def test_the_run_folder(trained_run):
    run = trained_run
    rows = rows_of(run)
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert [r["perf/env_steps_total"] for r in rows] == [40.0, 80.0, 120.0]  # 4 episodes x 10 decision points
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["iter_000001", "iter_000002", "iter_000003", "latest"]
    record = record_of(run / "checkpoints" / "iter_000003")
    assert "output_dir" not in record  # no path: the folder a checkpoint sits in is its run
    assert record["checkpoint_every"] == 1 and record["keep_checkpoints"] == 10
    assert record["metrics_row"] == rows[-1]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (run / "checkpoints" / "iter_000003").stat().st_mode & 0o777 == 0o777 & ~umask
    with (run / "eval.csv").open() as fh:
        eval_rows = list(csv.DictReader(fh))
    assert [(r["policy"], r["reward_mode"]) for r in eval_rows] == [("trained (ippo, greedy)", "difference"),
                                                                    ("random", "none")]
    assert "| trained (ippo, greedy) | difference |" in (run / "eval.md").read_text()
    assert_wandb_matches_metrics(run)
    wb_run = run_record(newest_offline_run(run))
    assert wb_run.run_group == "ippo-his"
    assert set(wb_run.tags) == {"ippo", "his", "N4", "reward-difference"}
    config = {c.key: json.loads(c.value_json) for c in wb_run.config.update}
    assert config["num_ues"] == 4 and config["algorithm"]["algo"] == "ippo"


def test_a_copy_resumes_in_itself_with_the_runs_checkpoint_cadence(trained_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    original_rows = (trained_run / "metrics.jsonl").read_text()
    original_ckpts = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    result = resume(copy, stop=StopRules(iterations=5))
    assert result.exit_code == 0 and result.run_dir == copy.resolve()
    # The run's cadence (every iteration) was kept: iterations 4 and 5 are both checkpointed.
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == [
        "iter_000001", "iter_000002", "iter_000003", "iter_000004", "iter_000005", "latest"]
    rows = rows_of(copy)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["perf/env_steps_total"] for r in rows] == [40.0 * i for i in range(1, 6)]
    # The original run is untouched.
    assert (trained_run / "metrics.jsonl").read_text() == original_rows
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == original_ckpts
    # Same W&B run (nothing to rewrite), and its newest offline part holds the whole history.
    assert record_of(copy / "checkpoints" / "iter_000005")["wandb_run_id"] == \
        record_of(trained_run / "checkpoints" / "iter_000003")["wandb_run_id"]
    assert_wandb_matches_metrics(copy)


def test_resuming_from_an_older_checkpoint_replaces_later_history_without_losing_it(trained_run, tmp_path):
    run = tmp_path / "older"
    shutil.copytree(trained_run, run)
    old_row_3 = rows_of(run)[2]
    lines = []
    result = run_training(TrainingRequest(resume=run / "checkpoints" / "iter_000002", stop=StopRules(iterations=4),
                                          checkpoint_every=1, keep_checkpoints=10, eval_baselines=[],
                                          wandb_mode="offline"), log=lines.append)
    assert result.exit_code == 0
    assert any("history reaches iteration 3" in line and "superseded/" in line for line in lines), lines
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "iter_000001", "iter_000002", "iter_000003", "iter_000004", "latest"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter_000004"
    assert record_of(run / "checkpoints" / "iter_000004")["iteration"] == 4
    rows = rows_of(run)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert [r["perf/env_steps_total"] for r in rows] == [40.0, 80.0, 120.0, 160.0]
    (moved,) = list((run / "superseded").iterdir())
    assert [p.name for p in (moved / "checkpoints").iterdir()] == ["iter_000003"]
    assert [json.loads(line) for line in (moved / "metrics.jsonl").read_text().splitlines()] == [old_row_3]
    # W&B steps cannot be rewritten: a new W&B run, holding the history again.
    old_id = record_of(trained_run / "checkpoints" / "iter_000003")["wandb_run_id"]
    new_id = record_of(run / "checkpoints" / "iter_000004")["wandb_run_id"]
    assert new_id != old_id and result.wandb_run_id == new_id
    assert_wandb_matches_metrics(run)
    # Resuming again picks the new line of history, not the set-aside iteration 3.
    again = resume(run, stop=StopRules(iterations=5), wandb_mode="disabled")
    assert [r["iteration"] for r in rows_of(run)] == [1, 2, 3, 4, 5] and again.iterations == 5


def test_resume_into_another_folder_is_refused(trained_run, tmp_path):
    from agents.training import RunFolderError

    with pytest.raises(RunFolderError, match="another folder"):
        resume(trained_run, output_dir=tmp_path / "elsewhere", stop=StopRules(iterations=9))
    assert not (tmp_path / "elsewhere").exists()


def small_request(run, **algorithm):
    from tests.agents.conftest import small_run_config

    return TrainingRequest(run_config=small_run_config(algorithm=algorithm), output_dir=run,
                           stop=StopRules(iterations=4), checkpoint_every=1, eval_baselines=[], wandb_mode="disabled")


def test_a_nonfinite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from agents.training import trainer

    real = trainer.flat_metrics

    def loss_turns_nan_at_iteration_3(result, num_agents, iter_s):
        row = real(result, num_agents, iter_s)
        if result["training_iteration"] == 3:
            row["learner/policy_loss"] = float("nan")
        return row

    monkeypatch.setattr(trainer, "flat_metrics", loss_turns_nan_at_iteration_3)
    run = tmp_path / "nan"
    lines = []
    result = run_training(small_request(run), log=lines.append)
    assert result.exit_code == EXIT_NONFINITE and result.iterations == 3
    message = next(line for line in lines if "error" in line)
    assert "training stopped at iteration 3: learner/policy_loss = nan" in message
    assert "the last good checkpoint is checkpoints/iter_000002" in message
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter_000002"
    assert not (run / "checkpoints" / "iter_000003").exists()
    rows = rows_of(run)
    assert [r["iteration"] for r in rows] == [1, 2, 3] and np.isnan(rows[2]["learner/policy_loss"])
    assert not (run / "eval.csv").exists()


def test_an_absurd_learning_rate_stops_on_the_nonfinite_state_it_produces(tmp_path):
    run = tmp_path / "lr"
    lines = []
    result = run_training(small_request(run, lr=1e30), log=lines.append)
    assert result.exit_code == EXIT_NONFINITE
    message = next(line for line in lines if "error" in line)
    assert "not finite" in message or "= inf" in message or "= nan" in message, message
    # No checkpoint holds a non-finite state: every one saved has finite weights.
    import pickle

    for ckpt in sorted((run / "checkpoints").glob("iter_*")):
        for state in ckpt.glob("learner_group/learner/rl_module/*/module_state.pkl"):
            assert all(np.isfinite(v).all() for v in pickle.loads(state.read_bytes()).values())


def test_sigterm_and_sigint_ask_for_a_stop_after_the_iteration():
    from agents.training.signals import StopSignals, TrainingInterrupted

    lines = []
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(lines.append) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.requested == "SIGTERM" and "stopping after this iteration" in lines[0]
        with pytest.raises(TrainingInterrupted):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
