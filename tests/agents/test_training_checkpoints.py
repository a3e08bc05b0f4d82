"""Checkpoint files without Ray: saving never deletes what it just wrote, a failed save leaves the
previous checkpoint intact and says so, interrupted saves are cleaned up, folders get the usual
permissions, a damaged `latest` gives a message, and the modules a checkpoint holds are read
from its files (also from checkpoints written before the RLlib modules moved to agents/rllib/)."""
import errno
import json
import os
import pickle

import gymnasium as gym
import numpy as np
import pytest

from agents.checkpoints import (CheckpointError, checkpoint_module_shapes, clean_interrupted_saves,
                                describe_module_mismatch, list_checkpoints, resolve_checkpoint, save_checkpoint)


class FakeAlgo:
    """What save_checkpoint needs of an RLlib Algorithm: save_to_path writing RLlib's file names."""

    def __init__(self, fail_with=None):
        self.fail_with = fail_with

    def save_to_path(self, path):
        path = os.fspath(path)
        os.makedirs(os.path.join(path, "learner_group", "learner", "rl_module"), exist_ok=True)
        with open(os.path.join(path, "algorithm_state.pkl"), "wb") as fh:
            fh.write(b"x" * 10)
        if self.fail_with is not None:
            raise self.fail_with
        for name in ("rllib_checkpoint.json",):
            with open(os.path.join(path, name), "w") as fh:
                fh.write("{}")


def info(it):
    return {"algo": "ippo", "env_config": {}, "algorithm_config": {}, "experiment_config": {}, "iteration": it}


def test_saving_an_older_iteration_keeps_it_and_points_latest_at_it(tmp_path):
    # The pruning by name that used to delete the checkpoint just written (issue: resume from
    # iteration 3 of a 6-iteration run, keep 10).
    root = tmp_path / "checkpoints"
    for it in range(1, 7):
        save_checkpoint(FakeAlgo(), root, info(it), keep=10)
    saved = save_checkpoint(FakeAlgo(), root, info(4), keep=2)
    assert saved.is_dir() and saved.name == "iter_000004"
    assert (root / "latest").read_text().strip() == "iter_000004"
    names = [p.name for p in list_checkpoints(root)]
    # Older than 4: only iter_000003 kept (keep 2 counts the new one); later ones untouched.
    assert names == ["iter_000003", "iter_000004", "iter_000005", "iter_000006"]


def test_pruning_keeps_the_newest(tmp_path):
    root = tmp_path / "checkpoints"
    for it in range(1, 6):
        save_checkpoint(FakeAlgo(), root, info(it), keep=2)
    assert [p.name for p in list_checkpoints(root)] == ["iter_000004", "iter_000005"]


def test_disk_full_during_save_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    root = tmp_path / "checkpoints"
    first = save_checkpoint(FakeAlgo(), root, info(1))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(CheckpointError) as exc:
        save_checkpoint(FakeAlgo(OSError(errno.ENOSPC, "No space left on device")), root, info(2))
    msg = str(exc.value)
    assert "iter_000002" in msg and "disk is full" in msg and "previous checkpoint iter_000001 is intact" in msg
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # no temporary folder left
    assert (root / "latest").read_text().strip() == "iter_000001" and first.is_dir()


def test_checkpoint_folders_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    saved = save_checkpoint(FakeAlgo(), tmp_path / "checkpoints", info(1))
    assert saved.stat().st_mode & 0o777 == 0o777 & ~umask  # 0755 under the usual umask, not mkdtemp's 0700


def test_interrupted_saves_are_cleaned(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(FakeAlgo(), root, info(1))
    (root / ".iter_000002.ab12cd.tmp" / "learner_group").mkdir(parents=True)
    (root / ".iter_000001.xy.old").mkdir()
    (root / "notes.tmp").write_text("the user's file")
    removed = clean_interrupted_saves(root)
    assert sorted(p.name for p in removed) == [".iter_000001.xy.old", ".iter_000002.ab12cd.tmp"]
    assert sorted(p.name for p in root.iterdir()) == ["iter_000001", "latest", "notes.tmp"]


def test_binary_garbage_in_latest_gives_a_message(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(FakeAlgo(), run / "checkpoints", info(1))
    (run / "checkpoints" / "latest").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(CheckpointError, match="latest.*not text"):
        resolve_checkpoint(run)
    (run / "checkpoints" / "latest").write_text("../../etc\n")
    with pytest.raises(CheckpointError, match="not a checkpoint name"):
        resolve_checkpoint(run)


def write_module(ckpt, mid, obs_dim, nvec):
    sub = ckpt / "learner_group" / "learner" / "rl_module" / mid
    sub.mkdir(parents=True)
    ctor = {"class": object, "ctor_args_and_kwargs": ((), {
        "observation_space": gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32),
        "action_space": gym.spaces.MultiDiscrete(nvec)})}
    (sub / "class_and_ctor_args.pkl").write_bytes(pickle.dumps(ctor))


def test_module_shapes_are_read_from_the_checkpoint_and_compared(tmp_path):
    ckpt = tmp_path / "iter_000001"
    for i in range(3):
        write_module(ckpt, f"ue_{i}", 3, [17, 12])
    found = checkpoint_module_shapes(ckpt)
    assert found == {f"ue_{i}": ((3,), (17, 12)) for i in range(3)}
    same = {f"ue_{i}": ((3,), (17, 12)) for i in range(3)}
    assert describe_module_mismatch(same, found) is None
    more = {f"ue_{i}": ((3,), (17, 12)) for i in range(10)}
    assert "ue_0..ue_9 (10 modules)" in describe_module_mismatch(more, found)
    assert "shared" in describe_module_mismatch({"shared": ((3,), (17, 12))}, found)
    wider = {f"ue_{i}": ((12,), (17, 12)) for i in range(3)}
    assert "observation size 3" in describe_module_mismatch(wider, found)
    json.dumps(found)  # plain values


def test_checkpoints_written_before_the_rllib_modules_moved_still_read(tmp_path):
    """RLlib pickles the RLModule class by import path; checkpoints from before agents/rllib/ name
    `agents.modules`, which reading a checkpoint maps to `agents.rllib.modules`."""
    import importlib
    import sys

    pytest.importorskip("ray")
    from agents.checkpoints import MODULES_DIR, MOVED_RLLIB_MODULES, alias_moved_modules
    from agents.rllib.modules import HISActorCriticModule

    stored = {"class": HISActorCriticModule,
              "ctor_args_and_kwargs": ((), {"observation_space": gym.spaces.Box(0, 1, (3,), np.float32),
                                            "action_space": gym.spaces.MultiDiscrete([4, 5])})}
    new, old = b"cagents.rllib.modules\nHISActorCriticModule\n", b"cagents.modules\nHISActorCriticModule\n"
    body = pickle.dumps(stored, protocol=0)  # protocol 0 names a class on one text line
    assert new in body
    sub = tmp_path / MODULES_DIR / "ue_0"
    sub.mkdir(parents=True)
    (sub / "class_and_ctor_args.pkl").write_bytes(body.replace(new, old))
    assert checkpoint_module_shapes(tmp_path) == {"ue_0": ((3,), (4, 5))}
    alias_moved_modules()  # what RLlib's own loaders (RLModule.from_checkpoint, restore_from_path) need
    assert pickle.loads(body.replace(new, old))["class"] is HISActorCriticModule
    assert all(sys.modules[o] is importlib.import_module(n) for o, n in MOVED_RLLIB_MODULES.items())


def test_benchmarl_run_folders_from_before_the_move_reload_with_the_aliases():
    """BenchMARL's config.pkl names `his_env.vector.benchmarl_task.HISTask` in run folders written
    before the task moved to agents/benchmarl/task.py."""
    import importlib
    import sys

    pytest.importorskip("benchmarl")
    from agents.checkpoints import MOVED_BENCHMARL_MODULES, alias_moved_modules

    try:
        alias_moved_modules(MOVED_BENCHMARL_MODULES)
        from agents.benchmarl.task import HISTask

        assert pickle.loads(b"chis_env.vector.benchmarl_task\nHISTask\n.") is HISTask
        assert all(sys.modules[o] is importlib.import_module(n) for o, n in MOVED_BENCHMARL_MODULES.items())
    finally:  # the simulator's namespace holds no BenchMARL name for the other tests
        for old in MOVED_BENCHMARL_MODULES:
            sys.modules.pop(old, None)

