"""agents.benchmarl.training: the BenchMARL backend of train.py writes train.py's run folder."""
import json

import pytest
import yaml

pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")

from agents.benchmarl.experiment import BenchmarlSettingsError  # noqa: E402
from agents.benchmarl.training import learner_label, run_spec_from_settings, train_benchmarl  # noqa: E402


def test_run_settings_map_onto_benchmarl():
    spec = run_spec_from_settings({"num_ues": 6, "episode_length": 5, "scheme": {"name": "cfis"}},
                                  {"algo": "mappo", "lr": 0.001, "num_epochs": 3, "minibatch_size": 16,
                                   "episodes_per_iteration": 4, "clip": 0.3, "reward_mode": "team"},
                                  {"seed": 2, "evaluation_episodes": 3})
    assert (spec.algorithm, spec.scheme, spec.seed) == ("mappo", "cfis", 2)
    assert spec.task["num_ues"] == 6 and spec.task["reward_mode"] == "team"
    e = spec.experiment
    assert e["on_policy_n_envs_per_worker"] == 4 and e["on_policy_collected_frames_per_batch"] == 4 * 5
    assert e["on_policy_n_minibatch_iters"] == 3 and e["on_policy_minibatch_size"] == 16 and e["lr"] == 0.001
    assert e["share_policy_params"] is False and spec.algorithm_settings["share_param_critic"] is False
    assert spec.algorithm_settings["clip_epsilon"] == 0.3
    assert spec.eval_seeds == [12_000, 12_001, 12_002]  # train.py's seeds: 10000 + 1000 * seed + i
    assert spec.learner_switches == {"reward_normalization": True, "reward_norm_clip": None,
                                     "advantage_normalization": True, "value_clip": 0.2}  # train.py's defaults
    with pytest.raises(Exception, match="allowed: ippo, ppo-shared, mappo"):
        run_spec_from_settings({"num_ues": 4}, {"algo": "iql"}, {})


def test_ppo_shared_is_benchmarls_ippo_with_one_network_and_minibatches_in_samples():
    spec = run_spec_from_settings({"num_ues": 6, "episode_length": 5},
                                  {"algo": "ppo-shared", "minibatch_size": 13, "episodes_per_iteration": 4,
                                   "value_clip": None, "reward_normalization": False}, {})
    assert spec.algorithm == "ippo" and learner_label(spec) == "ippo shared"
    assert spec.experiment["share_policy_params"] is True and spec.algorithm_settings["share_param_critic"] is True
    assert spec.experiment["on_policy_minibatch_size"] == 3  # 13 samples of one network = 13 / 6 frames, rounded up
    assert spec.learner_switches["value_clip"] is None and spec.learner_switches["reward_normalization"] is False


def test_run_folder_metrics_checkpoints_and_evaluation(tmp_path):
    from benchmarl.experiment import Experiment

    out = tmp_path / "run"
    lines = []
    summary = train_benchmarl({"num_ues": 4, "episode_length": 5},
                              {"algo": "ippo", "hidden": [16], "episodes_per_iteration": 2, "minibatch_size": 5,
                               "value_clip": 0.2},
                              {"seed": 0, "evaluation_episodes": 1}, out, iterations=3, checkpoint_every=2,
                              eval_baselines=["random"], wandb_mode="offline", log=lines.append)
    frames = 2 * 5  # 2 envs x 5 decision points per iteration
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert all(type(r["iteration"]) is int for r in rows)  # as train.py's RLlib rows, which its checks read
    assert [r["perf/env_steps_total"] for r in rows] == [frames, 2 * frames, 3 * frames]
    assert all(r["perf/agent_steps_this_iter"] == frames * 4 for r in rows)
    assert "his/utility" in rows[0] and any(k.startswith("learner/loss") for k in rows[0])
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("iteration,")
    # a checkpoint at iteration 2 and at the end (iteration 3), BenchMARL's own format
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_20.pt", "checkpoint_30.pt"]
    restored = Experiment.reload_from_file(str(out / "checkpoints" / "checkpoint_30.pt"))
    assert restored.total_frames == 3 * frames and restored.n_iters_performed == 3
    # the learner switches are part of the reloaded run, with the reward statistics of the checkpoint
    switches = [cb for cb in restored.callbacks if type(cb).__name__ == "LearnerSwitches"]
    assert len(switches) == 1 and [s.count for s in switches[0].stats] == [frames * 3] * 4
    loss = restored.losses["agents"]
    assert loss.normalize_advantage and loss.normalize_advantage_exclude_dims == (-2,)
    assert float(loss.clip_value) == pytest.approx(0.2)
    restored.close()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["backend"] == "benchmarl" and config["num_ues"] == 4
    assert config["backend_unused"] == {}  # the value clip is applied (agents.benchmarl.normalization)
    assert config["benchmarl"]["learner_switches"] == {"reward_normalization": True, "reward_norm_clip": None,
                                                       "advantage_normalization": True, "value_clip": 0.2}
    assert "learner/reward_norm_std" in rows[-1] and rows[-1]["learner/reward_norm_count"] == 3 * frames
    eval_md = (out / "eval.md").read_text()
    assert "| trained (ippo, BenchMARL, greedy) | difference |" in eval_md and "| random | none |" in eval_md
    assert list((out / "wandb").glob("offline-run-*"))
    assert (out / "plots" / "learning_curve.png").stat().st_size > 0
    assert summary["iterations"] == 3 and summary["env_steps"] == 3 * frames
    # a second run into the same folder is refused before it writes anything
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(BenchmarlSettingsError, match="already holds a run"):
        train_benchmarl({"num_ues": 4, "episode_length": 5}, {"algo": "ippo", "hidden": [16]}, {"seed": 1}, out,
                        iterations=1, wandb_mode="disabled", log=lines.append)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # train.py's RLlib side neither resumes nor overwrites it, and says what the folder is
    from agents.checkpoints import CheckpointError, resolve_checkpoint
    from agents.training.run_folder import RunFolderError, check_new_run_folder, plan_resume

    for call, error in ((plan_resume, CheckpointError), (resolve_checkpoint, CheckpointError),
                        (check_new_run_folder, RunFolderError)):
        with pytest.raises(error, match="backend benchmarl"):
            call(out)
