"""train.py end to end on a small configuration: learning beyond noise, checkpoints that restore
to identical greedy actions, resume without losing steps, an offline W&B run that holds the
metrics, and clear errors for bad flags, values and checkpoints."""
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train

REPO = Path(__file__).resolve().parents[2]
# Small enough for CI, big enough to learn: 4 UEs, 2 clusters, 10 decision points per episode.
SMALL = ["--set", "num_ues=4", "--set", "num_clusters=2", "--set", "episode_length=10",
         "--set", "algorithm.hidden=[64,64]", "--set", "algorithm.episodes_per_iteration=8",
         "--set", "experiment.evaluation_episodes=8"]


def run_train(args, tmp_path, check=True, timeout=400):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline",
               WANDB_DIR=str(tmp_path / "wandb-dir"), WANDB_SILENT="true")
    (tmp_path / "wandb-dir").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_wandb_file(path):
    """Records of a W&B transaction log (.wandb): LevelDB-style 32 KiB blocks of chunks, each
    with a 7-byte header (crc32c, length, type), after a 7-byte ':W&B' file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks, pending = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    records = []
    for raw in chunks:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    out = tmp / "run"
    proc = run_train([*SMALL, "--iterations", "25", "--checkpoint-every", "10", "--output-dir", str(out),
                      "--seed", "3", "--eval-baselines", "random"], tmp)
    return out, tmp, proc


@pytest.mark.slow
def test_small_config_learns_beyond_noise(small_run):
    from agents.baselines import RandomPolicy
    from agents.evaluation import evaluate_policy

    out, _, proc = small_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, 26))
    first = rows[0]["his/utility"]
    last = float(np.mean([r["his/utility"] for r in rows[-3:]]))
    # Noise: spread over seeds of the per-episode utility of the random policy (what the
    # initial, near-uniform policy plays), as the standard error of a mean over one
    # iteration's 8 episodes.
    env_cfg = json.loads(next((out / "checkpoints").glob("iter_*/his_run.json")).read_text())["env_config"]
    noise_rows = evaluate_policy(RandomPolicy(0), env_cfg, list(range(500, 516)))
    sigma = float(np.std([r["utility"] for r in noise_rows], ddof=1))
    se = sigma / np.sqrt(8)
    print(f"first {first:.4f} last {last:.4f} episode-sigma {sigma:.4f} se {se:.4f}")
    assert last - first > 4 * se, (first, last, se)
    # The greedy trained policy beats random on the same 8 evaluation seeds by more than noise.
    table = {line.split("|")[1].strip(): line for line in (out / "eval.md").read_text().splitlines()
             if line.startswith("| ")}
    import csv

    with (out / "eval.csv").open() as fh:
        ev = {r["policy"]: float(r["utility"]) for r in csv.DictReader(fh)}
    trained = next(v for k, v in ev.items() if k.startswith("trained"))
    assert trained - ev["random"] > 4 * se, (ev, se)
    assert "stopped: reached 25 iterations" in proc.stdout
    assert "agent-steps/s" in proc.stdout and "peak memory" in proc.stdout
    assert any(k.startswith("trained") for k in table)


@pytest.mark.slow
def test_offline_wandb_run_holds_the_metrics(small_run):
    out, tmp, _ = small_run
    files = sorted((tmp / "wandb-dir").rglob("run-*.wandb"))
    assert files, list((tmp / "wandb-dir").rglob("*"))
    records = read_wandb_file(files[-1])
    history = [{"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    logged = {int(h["iteration"]): h for h in history if "iteration" in h}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert set(logged) == {r["iteration"] for r in rows}
    for r in rows:
        for key in ("his/utility", "his/quality", "his/delay", "his/energy", "learner/policy_loss",
                    "perf/agent_steps_per_s"):
            assert logged[r["iteration"]][key] == pytest.approx(r[key], rel=1e-9), key
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {c.key: json.loads(c.value_json) for c in run.config.update}
    assert config["num_ues"] == 4 and config["algorithm"]["algo"] == "ippo"
    # The final evaluation table went in as a W&B table artifact.
    assert any(r.WhichOneof("record_type") == "artifact" or r.WhichOneof("record_type") == "files" for r in records)


@pytest.mark.slow
def test_checkpoint_restore_gives_identical_actions_and_stats(small_run, tmp_path):
    import torch

    from agents.checkpoints import resolve_checkpoint, save_checkpoint
    from agents.checkpoints import read_run_info, run_config_from_record
    from agents.evaluation import CheckpointPolicy
    from agents.ippo import build_algo_config
    from agents.learner import REWARD_NORMALIZER_STATE_KEY

    import ray

    out, _, _ = small_run
    ckpt = resolve_checkpoint(out)
    info = read_run_info(ckpt)
    assert ckpt.name == "iter_000025" and info["iteration"] == 25
    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        algo = build_algo_config(run_config_from_record(info)).build_algo()
        algo.restore_from_path(str(ckpt))
        assert algo.iteration == 25
        learner = algo.learner_group._learner
        obs = torch.rand(64, 3, generator=torch.Generator().manual_seed(0))
        restored = {mid: learner.module[mid].greedy_actions(obs).numpy() for mid in learner.module.keys()}
        policy = CheckpointPolicy(ckpt)
        for mid, acts in restored.items():
            np.testing.assert_array_equal(policy.modules[mid].greedy_actions(obs).numpy(), acts)
        stats = learner.get_state()[REWARD_NORMALIZER_STATE_KEY]["stats"]
        assert set(stats) == {f"ue_{i}" for i in range(4)}
        assert all(s["count"] == 25 * 8 * 10 for s in stats.values())  # every reward seen exactly once
        # save -> restore round trip from this process too
        again = save_checkpoint(algo, tmp_path / "ck", {**info, "iteration": algo.iteration})
        algo.stop()
        algo2 = build_algo_config(run_config_from_record(info)).build_algo()
        algo2.restore_from_path(str(again))
        learner2 = algo2.learner_group._learner
        for mid, acts in restored.items():
            np.testing.assert_array_equal(learner2.module[mid].greedy_actions(obs).numpy(), acts)
        assert learner2.get_state()[REWARD_NORMALIZER_STATE_KEY]["stats"] == stats
        algo2.stop()
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_resume_continues_the_same_run(small_run, tmp_path):
    out, _, _ = small_run
    run_dir = tmp_path / "resumed"
    shutil.copytree(out, run_dir, ignore=shutil.ignore_patterns("wandb"))
    # Iterations after the last checkpoint (none here: 25 was saved) would be re-run.
    info_before = json.loads((run_dir / "checkpoints" / "iter_000025" / "his_run.json").read_text())
    proc = run_train(["--resume", str(run_dir), "--iterations", "27", "--output-dir", str(run_dir),
                      "--eval-baselines", "none"], tmp_path)
    assert "resumed" in proc.stdout and "at iteration 25" in proc.stdout
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, 28))
    steps = [r["perf/env_steps_total"] for r in rows]
    assert steps == sorted(steps) and steps[-1] == 27 * 8 * 10
    info = json.loads((run_dir / "checkpoints" / "iter_000027" / "his_run.json").read_text())
    assert info["wandb_run_id"] == info_before["wandb_run_id"]
    assert info["env_steps"] == 27 * 8 * 10 and info["elapsed_s"] > info_before["elapsed_s"]
    import pickle

    state_file = run_dir / "checkpoints" / "iter_000027" / "learner_group" / "learner" / "state.pkl"
    state = pickle.loads(state_file.read_bytes())
    stats = state["his_reward_normalizer"]["stats"]
    assert all(s["count"] == 27 * 8 * 10 for s in stats.values())


# ---------------------------------------------------------------------- errors (no training)
@pytest.mark.parametrize("argv, needle", [
    (["--set", "num_ues=0"], "'num_ues' has value 0"),
    (["--set", "scheme.name=magic"], "scheme.name"),
    (["--set", "no_such_key=1"], "no_such_key"),
    (["--set", "algorithm.lr=-1"], "algorithm.lr"),
    (["--set", "algorithm.lr=inf"], "'algorithm.lr' has value inf; allowed: a finite number"),
    (["--set", "algorithm.algo=dqn"], "algorithm.algo"),
    (["--set", "algorithm.nope=1"], "algorithm.nope"),
    (["--set", "train.lr=0.001"], "train.lr -> algorithm.lr"),
    (["--set", "num_ues"], "expected KEY=VALUE"),
    (["--eval-baselines", "oracle"], "unknown baseline 'oracle'"),
    (["--resume", "/nonexistent/run"], "does not exist"),
])
def test_bad_values_give_clear_errors(argv, needle, capsys):
    assert train.main(argv + ["--iterations", "1", "--wandb-mode", "disabled"]) == 2
    err = capsys.readouterr().err
    assert needle in err, err


@pytest.mark.parametrize("argv, needle", [
    (["--algo", "dqn"], "invalid choice: 'dqn'"),
    (["--iterations", "0"], "--iterations must be a positive integer"),
    (["--time-limit", "soon"], "--time-limit must be a positive number"),
    (["--wandb-mode", "cloud"], "invalid choice: 'cloud'"),
])
def test_bad_flags_give_clear_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.slow
def test_corrupt_checkpoints_give_clear_errors(small_run, tmp_path, capsys):
    out, _, _ = small_run
    src = out / "checkpoints" / "iter_000025"
    # 1) run info garbled
    bad = tmp_path / "bad1"
    shutil.copytree(src, bad)
    (bad / "his_run.json").write_text("{not json")
    assert train.main(["--resume", str(bad), "--wandb-mode", "disabled"]) == 2
    assert "his_run.json is corrupt" in capsys.readouterr().err
    # 2) RLlib files missing
    bad = tmp_path / "bad2"
    shutil.copytree(src, bad)
    shutil.rmtree(bad / "learner_group" / "learner" / "rl_module")
    assert train.main(["--resume", str(bad), "--wandb-mode", "disabled"]) == 2
    assert "is incomplete: missing learner_group/learner/rl_module" in capsys.readouterr().err
    # 3) a truncated weights file: caught when restoring (in a fresh process)
    bad = tmp_path / "bad3"
    shutil.copytree(src, bad)
    state = bad / "learner_group" / "learner" / "state.pkl"
    state.write_bytes(state.read_bytes()[:100])
    proc = run_train(["--resume", str(bad), "--iterations", "26", "--wandb-mode", "disabled",
                      "--output-dir", str(tmp_path / "bad3-out")], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot restore checkpoint" in proc.stderr
