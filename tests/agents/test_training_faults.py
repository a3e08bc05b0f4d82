"""Fault injection: a small run is killed with SIGKILL in the middle of a checkpoint save, in the
middle of an iteration and right after W&B got a row; it is resumed from its folder, from a
copy of the folder, and from an older checkpoint (stopped by SIGTERM). After every resume the
metrics rows, the newest W&B run's history and the checkpoints are complete and agree.

The faults are injected in a child process that wraps one library function with a SIGKILL to
itself at a given iteration (nothing in the library knows about it)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.wandb_files import history_by_step, newest_offline_run

REPO = Path(__file__).resolve().parents[2]
DRIVER = r'''
import json, os, signal, sys
from agents.training import StopRules, TrainingRequest, run_training, trainer
from tests.agents.conftest import small_run_config

args = json.loads(sys.argv[1])
fault, at = args.get("fault"), args.get("at")

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if fault == "in_save":  # RLlib's files are written to the temporary folder, then the process dies
    real_save = trainer.save_checkpoint
    def save(algo, root, info, keep=2):
        if info["iteration"] == at:
            real = algo.save_to_path
            algo.save_to_path = lambda path: (real(path), die())
        return real_save(algo, root, info, keep)
    trainer.save_checkpoint = save
elif fault == "in_iteration":  # after algo.train() of iteration `at`, before anything is recorded
    real_flat = trainer.flat_metrics
    def flat(result, num_agents, iter_s):
        if result["training_iteration"] == at:
            die()
        return real_flat(result, num_agents, iter_s)
    trainer.flat_metrics = flat
elif fault == "after_wandb":  # the row went to the metrics files and to W&B, then the process dies
    real_line = trainer.progress_line
    def line(row):
        if row["iteration"] == at:
            die()
        return real_line(row)
    trainer.progress_line = line

common = dict(stop=StopRules(iterations=args["iterations"]), eval_baselines=[], wandb_mode="offline")
if "resume" in args:
    request = TrainingRequest(resume=args["resume"], **common)
else:
    request = TrainingRequest(run_config=small_run_config(), output_dir=args["run"], checkpoint_every=1,
                              keep_checkpoints=3, **common)
result = run_training(request, log=lambda text: print(text, flush=True))
sys.exit(result.exit_code)
'''


def launch(tmp_path, **args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONHASHSEED="0", WANDB_MODE="offline")
    env.pop("WANDB_DIR", None)
    env.pop("WANDB_SERVICE", None)  # a W&B service of this test process must not be shared with the children
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(script), json.dumps({k: str(v) if isinstance(v, Path) else v
                                                                      for k, v in args.items()})],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def rows_of(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def iterations(run):
    return [r["iteration"] for r in rows_of(run)]


def checkpoints(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("."))


def temporaries(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("."))


def assert_consistent(run):
    """Rows 1..n in order with growing step counters; the newest W&B run holds exactly those
    rows; `latest` names the newest checkpoint, whose record and row are the last row's."""
    rows = rows_of(run)
    n = len(rows)
    assert [r["iteration"] for r in rows] == list(range(1, n + 1))
    steps = [r["perf/env_steps_total"] for r in rows]
    assert steps == [40.0 * i for i in range(1, n + 1)]  # 4 episodes x 10 decision points per iteration
    history = history_by_step(newest_offline_run(run))
    assert sorted(history) == list(range(1, n + 1))
    for r in rows:
        for key in ("his/utility", "learner/policy_loss", "perf/env_steps_total"):
            assert history[r["iteration"]][key] == pytest.approx(r[key], rel=1e-12)
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest == checkpoints(run)[-2]  # the newest iter_ folder ("latest" sorts last)
    record = json.loads((run / "checkpoints" / latest / "his_run.json").read_text())
    assert record["iteration"] == n and record["metrics_row"] == rows[-1] and record["env_steps"] == steps[-1]
    assert not temporaries(run)


@pytest.mark.slow
def test_kill_resume_copy_and_branch(tmp_path):
    run = tmp_path / "run"
    # 1. Killed in the middle of saving checkpoint 3: rows 1, 2; checkpoints 1, 2; a temporary folder.
    code, out = finish(launch(tmp_path, run=run, iterations=6, fault="in_save", at=3))
    assert code == -signal.SIGKILL, out[-3000:]
    assert iterations(run) == [1, 2] and checkpoints(run) == ["iter_000001", "iter_000002", "latest"]
    assert [name.startswith(".iter_000003.") for name in temporaries(run)] == [True]

    # 2. Resumed from the folder, killed in the middle of iteration 5: the temporary folder is gone,
    #    rows 1..4 and checkpoints 2..4 (keep 3) agree.
    code, out = finish(launch(tmp_path, resume=run, iterations=6, fault="in_iteration", at=5))
    assert code == -signal.SIGKILL, out[-3000:]
    assert "removed 1 unfinished checkpoint save" in out
    assert iterations(run) == [1, 2, 3, 4] and checkpoints(run) == ["iter_000002", "iter_000003", "iter_000004",
                                                                   "latest"]
    assert not temporaries(run)

    # 3. A copy (cp -a) resumed; killed right after W&B got iteration 5; resumed again to 6.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, symlinks=True)
    before = (run / "metrics.jsonl").read_text(), checkpoints(run)
    code, out = finish(launch(tmp_path, resume=copy, iterations=6, fault="after_wandb", at=5))
    assert code == -signal.SIGKILL, out[-3000:]
    assert iterations(copy) == [1, 2, 3, 4, 5]
    code, out = finish(launch(tmp_path, resume=copy, iterations=6))
    assert code == 0, out[-3000:]
    assert_consistent(copy)
    assert iterations(copy) == [1, 2, 3, 4, 5, 6]
    assert ((run / "metrics.jsonl").read_text(), checkpoints(run)) == before  # the original run is untouched

    # 4. The original resumed from its older checkpoint 3, stopped by SIGTERM: iteration 4 (row and
    #    checkpoint) is set aside, the final checkpoint is saved, W&B continues in a new run.
    proc = launch(tmp_path, resume=run / "checkpoints" / "iter_000003", iterations=10_000)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 6:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 0 and "SIGTERM: stopping after this iteration" in out and "stopped: interrupted (SIGTERM)" in out, \
        out[-3000:]
    assert "history reaches iteration 4" in out
    assert_consistent(run)
    n = len(rows_of(run))
    assert n >= 6 and checkpoints(run)[-2] == f"iter_{n:06d}"
    (moved,) = list((run / "superseded").iterdir())
    assert [p.name for p in (moved / "checkpoints").iterdir()] == ["iter_000004"]
    assert [json.loads(line)["iteration"] for line in (moved / "metrics.jsonl").read_text().splitlines()] == [4]
