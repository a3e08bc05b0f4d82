"""train.py --backend benchmarl runs are first class: a run killed with SIGKILL in the middle of a
checkpoint save resumes (`train.py --resume RUN`, no --backend: the backend is the run folder's) from
its newest complete checkpoint, the temporary file of the save is removed, and rows and checkpoints
continue without gap or duplicate; resuming from an older checkpoint moves the later rows and
checkpoints to superseded/; the newest W&B run holds the rows of metrics.jsonl; `evaluate.py
--checkpoint` scores the run's greedy policy in the table of an RLlib run, and in a figure; the
default preset is in the run's config.yaml, `--preset like-for-like` gives per-UE IPPO with 4 epochs.

The kill is injected in a child process that wraps os.replace with a SIGKILL to itself when the
checkpoint of a given iteration is about to be renamed into place (nothing in the library knows)."""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")

from tests.wandb_files import history_by_step, newest_offline_run  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "num_ues=4", "--set", "num_clusters=2", "--set", "episode_length=10", "--set", "algorithm.hidden=[16]",
        "--set", "algorithm.episodes_per_iteration=4", "--set", "experiment.evaluation_episodes=1"]
COMMON = ["--eval-baselines", "random", "--wandb-mode", "offline"]
FRAMES = 40  # env steps per iteration: 4 envs x 10 decision points
DRIVER = r'''
import os, signal, sys
from pathlib import Path

killed_at = sys.argv[1]  # the checkpoint file whose atomic rename is cut short
real_replace = os.replace

def replace(src, dst, *args, **kwargs):
    if Path(dst).name == killed_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
from his_cli import train
sys.exit(train.main(sys.argv[2:]))
'''


def train_in_process(*argv):
    """train.py's main in this process (BenchMARL is imported once for the module); (exit status, output)."""
    from his_cli import train

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = train.main([str(a) for a in argv])
    return code, out.getvalue()


def rows_of(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def names(folder):
    return sorted((p.name for p in Path(folder).iterdir()), key=lambda n: (n.startswith("."), len(n), n))


def snapshot(run):
    return {"iterations": [r["iteration"] for r in rows_of(run / "metrics.jsonl")],
            "checkpoints": names(run / "checkpoints")}


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A tiny run killed in the save of iteration 4's checkpoint, resumed to 6 iterations, then resumed
    from iteration 4's checkpoint to 5: the run folder and a snapshot after each step."""
    tmp = tmp_path_factory.mktemp("benchmarl-resume")
    run = tmp / "run"
    script = tmp / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONHASHSEED="0", WANDB_MODE="offline")
    env.pop("WANDB_SERVICE", None)  # a W&B service of this test process must not be shared with the child
    proc = subprocess.run([sys.executable, str(script), f"checkpoint_{4 * FRAMES}.pt", "--backend", "benchmarl", *TINY,
                           *COMMON, "--iterations", "6", "--checkpoint-every", "2", "--keep-checkpoints", "5",
                           "--output-dir", str(run)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    steps = {"killed": (proc.returncode, proc.stdout + proc.stderr, snapshot(run))}
    code, out = train_in_process("--resume", run, "--iterations", 6, *COMMON)
    steps["resumed"] = (code, out, snapshot(run))
    code, out = train_in_process("--resume", run / "checkpoints" / f"checkpoint_{4 * FRAMES}.pt", "--iterations", 5,
                                 *COMMON)
    steps["older"] = (code, out, snapshot(run))
    return run, steps


@pytest.mark.slow
def test_a_run_killed_in_a_save_resumes_from_its_newest_complete_checkpoint(history):
    run, steps = history
    code, out, seen = steps["killed"]
    assert code == -signal.SIGKILL, out[-3000:]
    # row 4 was written, its checkpoint never reached its name: only a temporary file of the save
    assert seen["iterations"] == [1, 2, 3, 4]
    assert seen["checkpoints"][:1] == [f"checkpoint_{2 * FRAMES}.pt"] and len(seen["checkpoints"]) == 2
    temporary = seen["checkpoints"][1]
    assert temporary.startswith(f".checkpoint_{4 * FRAMES}.pt.") and temporary.endswith(".tmp")

    code, out, seen = steps["resumed"]
    assert code == 0, out[-3000:]
    assert "removed 1 unfinished checkpoint save(s)" in out
    assert f"resumed checkpoints/checkpoint_{2 * FRAMES}.pt at iteration 2" in out
    assert "history reaches iteration 4" in out  # rows 3, 4 were trained but never checkpointed
    assert seen["iterations"] == [1, 2, 3, 4, 5, 6]
    assert seen["checkpoints"] == [f"checkpoint_{k * FRAMES}.pt" for k in (2, 4, 6)]  # every 2, no temporary file
    assert [line.split("]")[0] for line in out.splitlines() if line.startswith("[iter")] == [
        f"[iter    {k}" for k in (3, 4, 5, 6)]  # one line per iteration, numbered as the run's


@pytest.mark.slow
def test_resuming_from_an_older_checkpoint_sets_the_later_history_aside(history):
    import torch

    run, steps = history
    code, out, seen = steps["older"]
    assert code == 0, out[-3000:]
    assert "resuming run from iteration 4, but its history reaches iteration 6" in out
    assert seen["iterations"] == [1, 2, 3, 4, 5]
    assert seen["checkpoints"] == [f"checkpoint_{k * FRAMES}.pt" for k in (2, 4, 5)]
    rows = rows_of(run / "metrics.jsonl")
    assert [r["perf/env_steps_total"] for r in rows] == [FRAMES * k for k in range(1, 6)]
    assert all(a["elapsed_s"] < b["elapsed_s"] for a, b in zip(rows, rows[1:]))  # training time adds up over runs
    assert (run / "metrics.csv").read_text().count("\n") == 1 + len(rows)
    moved = sorted((run / "superseded").iterdir())
    assert [p.name.split("-")[0] for p in moved] == ["after_iter_000002", "after_iter_000004"]
    assert [r["iteration"] for r in rows_of(moved[0] / "metrics.jsonl")] == [3, 4]
    assert not names(moved[0] / "checkpoints")
    assert [r["iteration"] for r in rows_of(moved[1] / "metrics.jsonl")] == [5, 6]
    assert names(moved[1] / "checkpoints") == [f"checkpoint_{6 * FRAMES}.pt"]  # moved, not deleted
    state = torch.load(run / "checkpoints" / f"checkpoint_{5 * FRAMES}.pt", weights_only=True)
    assert (state["state"]["n_iters_performed"], state["state"]["total_frames"]) == (5, 5 * FRAMES)
    assert state["his_run"]["metrics_row"] == rows[-1] and state["his_run"]["checkpoint_every"] == 2
    history_ = history_by_step(newest_offline_run(run))  # a new W&B run got the history again
    assert sorted(history_) == [1, 2, 3, 4, 5]
    assert all(history_[r["iteration"]]["his/utility"] == pytest.approx(r["his/utility"]) for r in rows)


@pytest.mark.slow
def test_the_run_folder_names_the_backend_and_the_default_preset(history):
    from his_cli import train

    run, _ = history
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["backend"] == "benchmarl"
    assert (config["algorithm"]["algo"], config["algorithm"]["num_epochs"]) == ("ppo-shared", 2)
    assert config["benchmarl"]["experiment"]["share_policy_params"] is True
    assert config["benchmarl"]["experiment"]["on_policy_n_minibatch_iters"] == 2
    code, out = train_in_process("--backend", "rllib", "--resume", run, "--iterations", 9)
    assert code == 2 and f"--backend rllib with --resume '{run}', a run of --backend benchmarl" in out, out
    assert snapshot(run)["iterations"] == [1, 2, 3, 4, 5]  # nothing ran


def test_the_like_for_like_preset_is_per_ue_ippo_with_4_epochs_and_the_fast_one_the_default():
    from his_cli import train

    def algorithm(*argv):
        args = train.build_parser().parse_args(list(argv))
        return train.resolve_config(args, "benchmarl").algorithm

    fast = algorithm()
    assert (fast.algo, fast.num_epochs, fast.episodes_per_iteration, fast.minibatch_size) == ("ppo-shared", 2, 8, 6400)
    like = algorithm("--preset", "like-for-like")
    assert (like.algo, like.num_epochs, like.episodes_per_iteration, like.minibatch_size) == ("ippo", 4, 8, 128)
    assert algorithm("--set", "algorithm.num_epochs=3").num_epochs == 3  # --set goes over the preset
    rllib = train.resolve_config(train.build_parser().parse_args([]), "rllib").algorithm
    assert (rllib.algo, rllib.num_epochs) == ("ippo", 4)  # the RLlib backend's defaults are unchanged


def test_a_sequential_scenario_starts_from_the_markov_preset_unless_another_is_named():
    from his_cli import train

    def algorithm(*argv):
        args = train.build_parser().parse_args(list(argv))
        return train.resolve_config(args, "benchmarl").algorithm

    seq = algorithm("--scenario", "seq-small-heavy")
    assert (seq.algo, seq.lr, seq.episodes_per_iteration, seq.minibatch_size, seq.value_clip) == (
        "ppo-shared", 0.0005, 128, 32000, None)
    # dynamics switched on by --set alone count too; paper keeps the fast preset
    assert algorithm("--set", "dynamics.requests.enabled=true").lr == 0.0005
    assert algorithm("--scenario", "paper").lr == 0.005
    named = algorithm("--scenario", "seq-small-heavy", "--preset", "fast")
    assert (named.lr, named.episodes_per_iteration, named.value_clip) == (0.005, 8, 0.2)
    assert algorithm("--scenario", "seq-small-heavy", "--set", "algorithm.lr=0.001").lr == 0.001  # --set wins
    rllib = train.resolve_config(train.build_parser().parse_args(["--scenario", "seq-small-heavy"]), "rllib")
    assert rllib.algorithm.lr == 0.005  # the RLlib backend has no presets


@pytest.mark.slow
def test_evaluate_scores_the_benchmarl_run_in_the_table_of_an_rllib_run(history, tmp_path):
    import csv

    from his_cli import evaluate

    run, _ = history
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the run's own evaluation seeds: the final policy's eval.csv row again
        assert evaluate.main(["--checkpoint", str(run), "--policy", "random", "--episodes", "1", "--seed-base",
                              "10000", "--output-dir", str(tmp_path / "table")]) == 0
    printed = out.getvalue()
    assert "| policy | reward mode | U | Q | T (s) | E (J) |" in printed  # the columns of an RLlib checkpoint's table
    assert "| BenchMARL shared PPO (difference reward) | difference |" in printed and "| random | none |" in printed
    summary = {r["policy"]: r for r in csv.DictReader((tmp_path / "table" / "summary.csv").open())}
    trained = next(r for r in csv.DictReader((run / "eval.csv").open()) if r["policy"].startswith("trained"))
    assert float(summary["trained:benchmarl-ppo-shared"]["utility"]) == pytest.approx(float(trained["utility"]))
    with contextlib.redirect_stdout(io.StringIO()):  # a figure, from a checkpoint file
        assert evaluate.main(["--figure", "10", "--checkpoint", f"his={run}/checkpoints/checkpoint_{5 * FRAMES}.pt",
                              "--policy", "random", "--episodes", "1", "--output-dir", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "fig10.png").stat().st_size > 0
    assert "BenchMARL shared PPO" in (tmp_path / "fig" / "summary.md").read_text()


def fake_run(run, frames=(40, 80)):
    """A BenchMARL run folder as far as finding and planning read it: config.yaml and checkpoint states."""
    import torch

    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({
        "num_ues": 4, "backend": "benchmarl", "algorithm": {"algo": "ippo", "reward_mode": "team"}, "experiment": {},
        "benchmarl": {"experiment": {"on_policy_collected_frames_per_batch": FRAMES}}}))
    for n in frames:
        torch.save({"state": {"total_frames": n, "n_iters_performed": n // FRAMES}}, run / "checkpoints" /
                   f"checkpoint_{n}.pt")
    return run


def test_benchmarl_checkpoints_are_found_read_and_planned_without_building_anything(tmp_path):
    import shutil

    from agents.checkpoints import BENCHMARL, CheckpointError, LooseCheckpointError, find_checkpoint, run_backend
    from agents.training.run_folder import RunFolderError, plan_resume

    run = fake_run(tmp_path / "run")
    assert run_backend(run) == "benchmarl"
    kind, newest = find_checkpoint(run)
    assert kind is BENCHMARL and newest == run / "checkpoints" / f"checkpoint_{2 * FRAMES}.pt"
    info = kind.read(newest)
    assert (info["iteration"], info["env_steps"], info["algo"], info["env_config"]) == (2, 2 * FRAMES, "ippo",
                                                                                      {"num_ues": 4})
    plan = plan_resume(run / "checkpoints" / f"checkpoint_{FRAMES}.pt", kind=BENCHMARL)
    assert plan.iteration == 1 and [p.name for p in plan.later_checkpoints] == [newest.name]
    with pytest.raises(CheckpointError, match="backend benchmarl"):
        plan_resume(run)  # the RLlib side says what the folder is
    shutil.copy(newest, tmp_path / newest.name)
    with pytest.raises(LooseCheckpointError, match="outside a run folder"):
        find_checkpoint(tmp_path / newest.name)
    with pytest.raises(RunFolderError, match="outside a run folder"):
        plan_resume(tmp_path / newest.name, kind=BENCHMARL)
    shutil.copy(newest, run / "checkpoints" / f"checkpoint_{3 * FRAMES}.pt")  # named for other env steps
    with pytest.raises(CheckpointError, match=f"holds {2 * FRAMES} env steps, not the {3 * FRAMES} in its name"):
        find_checkpoint(run)[0].read(run / "checkpoints" / f"checkpoint_{3 * FRAMES}.pt")
    (run / "checkpoints" / f"checkpoint_{3 * FRAMES}.pt").write_bytes(newest.read_bytes()[:100])  # cut short
    with pytest.raises(CheckpointError, match="not a complete BenchMARL checkpoint"):
        plan_resume(run, kind=BENCHMARL)
