"""What `--resume PATH` means, without Ray: the folder given is the run (never a path recorded
in it), another --output-dir is refused, and resuming from an older checkpoint sets the later
history aside instead of deleting or mixing it. Also the stop rules."""
import json
import shutil

import pytest

from agents.checkpoints import CheckpointError
from agents.training.metrics_files import read_jsonl
from agents.training.run_folder import (RunFolderError, check_new_run_folder, plan_resume, restore_metrics_rows,
                                        set_aside_later_history)
from agents.training.stop_rules import StopRules

RLLIB_FILES = ["rllib_checkpoint.json", "algorithm_state.pkl", "learner_group/learner/state.pkl"]


def make_run(run, iterations, checkpoints, recorded_dir=None):
    """A run folder as the trainer leaves it: rows 1..iterations, the given checkpoints."""
    (run / "checkpoints").mkdir(parents=True)
    with (run / "metrics.jsonl").open("w") as fh:
        for it in range(1, iterations + 1):
            fh.write(json.dumps({"iteration": it, "his/utility": float(it)}) + "\n")
    for it in checkpoints:
        ck = run / "checkpoints" / f"iter_{it:06d}"
        (ck / "learner_group" / "learner" / "rl_module").mkdir(parents=True)
        for name in RLLIB_FILES:
            (ck / name).write_text("{}")
        record = {"algo": "ippo", "env_config": {}, "algorithm_config": {}, "experiment_config": {}, "iteration": it,
                  "metrics_row": {"iteration": it, "his/utility": float(it)}}
        if recorded_dir:
            record["output_dir"] = str(recorded_dir)  # what older runs recorded
        (ck / "his_run.json").write_text(json.dumps(record))
    (run / "checkpoints" / "latest").write_text(f"iter_{max(checkpoints):06d}\n")
    return run


def test_a_copied_run_resumes_in_the_copy(tmp_path):
    original = make_run(tmp_path / "k1", 4, [2, 4], recorded_dir=tmp_path / "k1")
    copy = tmp_path / "c"
    shutil.copytree(original, copy)
    plan = plan_resume(copy)
    assert plan.run_dir == copy.resolve()
    assert plan.checkpoint == copy.resolve() / "checkpoints" / "iter_000004"
    assert not plan.has_later_history


def test_output_dir_other_than_the_run_is_refused(tmp_path):
    run = make_run(tmp_path / "k2", 2, [2])
    with pytest.raises(RunFolderError, match="another folder"):
        plan_resume(run, output_dir=tmp_path / "other")
    assert plan_resume(run, output_dir=run).run_dir == run.resolve()


def test_a_checkpoint_outside_a_run_folder_is_refused(tmp_path):
    run = make_run(tmp_path / "k3", 2, [2])
    loose = tmp_path / "loose"
    shutil.copytree(run / "checkpoints" / "iter_000002", loose)
    with pytest.raises(RunFolderError, match="outside a run folder"):
        plan_resume(loose)
    with pytest.raises(CheckpointError, match="does not exist"):
        plan_resume(tmp_path / "nope")


def test_resuming_from_an_older_checkpoint_sets_later_history_aside(tmp_path):
    run = make_run(tmp_path / "k5", 6, [1, 2, 3, 4, 5, 6])
    plan = plan_resume(run / "checkpoints" / "iter_000003")
    assert plan.iteration == 3
    assert [p.name for p in plan.later_checkpoints] == ["iter_000004", "iter_000005", "iter_000006"]
    assert [r["iteration"] for r in plan.later_rows] == [4, 5, 6]
    moved = set_aside_later_history(plan)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001", "iter_000002", "iter_000003",
                                                                      "latest"]
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["iter_000004", "iter_000005", "iter_000006"]
    assert [r["iteration"] for r in read_jsonl(moved / "metrics.jsonl")] == [4, 5, 6]
    assert [r["iteration"] for r in restore_metrics_rows(plan)] == [1, 2, 3]


def test_rows_after_the_last_checkpoint_are_set_aside_too(tmp_path):
    # kill -9 after iteration 7 with checkpoints every 5: rows 6, 7 were never checkpointed.
    run = make_run(tmp_path / "k6", 7, [5])
    plan = plan_resume(run)
    assert plan.iteration == 5 and [r["iteration"] for r in plan.later_rows] == [6, 7]
    assert not plan.later_checkpoints


def test_the_checkpoint_row_fills_a_row_lost_in_a_crash(tmp_path):
    # Killed after the checkpoint of iteration 3 was saved but before its row was appended.
    run = make_run(tmp_path / "k7", 2, [2, 3])
    plan = plan_resume(run)
    assert [r["iteration"] for r in restore_metrics_rows(plan)] == [1, 2, 3]


def test_a_new_run_does_not_take_over_another_runs_folder(tmp_path):
    run = make_run(tmp_path / "k8", 2, [2])
    with pytest.raises(RunFolderError, match="--resume"):
        check_new_run_folder(run)
    check_new_run_folder(tmp_path / "fresh")


def test_stop_rules():
    assert StopRules().with_default().time_limit_s == 300
    rules = StopRules(iterations=5, timesteps=1000)
    assert rules.reason(4, 999, 1e9) is None
    assert rules.reason(5, 0, 0) == "reached 5 iterations"
    assert rules.reason(1, 1000, 0) == "reached 1,000 env steps"
    assert StopRules(time_limit_s=2).reason(0, 0, 2.0) == "time limit 2 s"
    with pytest.raises(ValueError, match="iterations=0"):
        StopRules(iterations=0)
    with pytest.raises(ValueError, match="time_limit_s=inf"):
        StopRules(time_limit_s=float("inf"))
