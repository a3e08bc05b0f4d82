"""The BenchMARL task his/<scheme>: registration, settings, specs, Hydra, and every algorithm for a few iterations."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")

from benchmarl.environments import task_config_registry  # noqa: E402
from torchrl.data import Bounded, Categorical  # noqa: E402

from his_env.config import ConfigError  # noqa: E402
from agents.benchmarl import task as bt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# N = 4 and a small decision-point bank keep the whole file fast; 20 decision points per episode (the default).
SMALL_TASK = {"num_ues": 4, "bank_size": 64}
FRAMES_PER_BATCH = 40  # 2 envs x 20 decision points
SMALL_EXPERIMENT = {
    "on_policy_collected_frames_per_batch": FRAMES_PER_BATCH, "on_policy_n_envs_per_worker": 2,
    "on_policy_minibatch_size": 20, "on_policy_n_minibatch_iters": 1,
    "off_policy_collected_frames_per_batch": FRAMES_PER_BATCH, "off_policy_n_envs_per_worker": 2,
    "off_policy_train_batch_size": 20, "off_policy_n_optimizer_steps": 1, "off_policy_memory_size": 1000,
    "exploration_anneal_frames": 80, "evaluation_interval": 80, "evaluation_episodes": 2, "loggers": [],
}
# BenchMARL 1.5.2's registry: discrete actions for these, continuous ones for iddpg and maddpg (prefer_continuous off).
DISCRETE = ("ippo", "mappo", "iql", "qmix", "vdn", "isac", "masac")
CONTINUOUS = ("iddpg", "maddpg")


def test_importing_the_task_module_touches_no_benchmarl_registry():
    """Only `register()` (BenchMARL's Hydra runner, via his_cli.benchmarl_run or the Hydra plugin) fills
    BenchMARL's registries; importing the task, or running it from Python, leaves them as BenchMARL made them."""
    code = """
import sys
import benchmarl.environments as environments
before = (dict(environments.task_config_registry), dict(environments._task_class_registry), list(environments.tasks))
from agents.benchmarl import task as bt
from agents.benchmarl.experiment import RunSpec, build_task
build_task(RunSpec(algorithm="ippo", scheme="cfis", task={"num_ues": 4}))
after = (dict(environments.task_config_registry), dict(environments._task_class_registry), list(environments.tasks))
assert after == before, "a registry changed"
assert "benchmarl.environments.his" not in sys.modules
bt.register()
assert environments.task_config_registry["his/cfis"] is bt.HISTask.CFIS
assert environments._get_task_config_class("his", "cfis") is bt.TaskConfig
assert environments.tasks[-1] is bt.HISTask
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_tasks_are_registered_under_their_scheme_names():
    bt.register()
    for scheme in ("his", "ppgfis", "cfis", "iis"):
        assert task_config_registry[f"his/{scheme}"] is bt.HISTask[scheme.upper()]
    import benchmarl.environments as environments

    assert environments._get_task_config_class("his", "cfis") is bt.TaskConfig  # BenchMARL's own type-check lookup


def test_task_yaml_is_read_and_the_scheme_is_the_tasks_name():
    path = REPO / "configs" / "benchmark" / "task" / "his" / "cfis.yaml"
    on_disk = yaml.safe_load(path.read_text())
    task = bt.HISTask.CFIS.get_from_yaml()
    assert task.config["num_ues"] == on_disk["num_ues"] == 50
    assert task.config["reward_mode"] == on_disk["reward_mode"] == "difference"
    cfg = bt.HISTask.CFIS.get_task({"num_ues": 6, "env": {"es": {"sm_range": [800, 1200]}}}).his_config()
    assert (cfg.scheme.name, cfg.num_ues, list(cfg.es.sm_range)) == ("cfis", 6, [800, 1200])


@pytest.mark.parametrize("settings, fragment", [
    ({"reward_mode": "selfish"}, "task.reward_mode has value 'selfish'; allowed: individual, team, difference"),
    ({"num_agents": 4}, "task.num_agents is not a setting"),
    ({"num_ues": 0}, "task.num_ues has value 0"),
    ({"capture": "yes"}, "task.capture has value 'yes'; allowed: null (on for CUDA devices, off on the CPU), true or false"),
    ({"env": {"scheme": {"name": "iis"}}}, "task.env.scheme.name cannot be set"),
    ({"env": {"es": {"sm_rang": [1, 2]}}}, "unknown config key"),
])
def test_bad_task_settings_are_refused_with_the_key(settings, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        bt.HISTask.HIS.get_task(settings).his_config()
    assert fragment in str(info.value)


def test_the_capture_setting_reaches_the_env():
    """null: the env's default (off on the CPU); true: captured (compiled at its first step, not here)."""
    for setting, expected in ((None, False), (True, True), (False, False)):
        task = bt.HISTask.HIS.get_task({**SMALL_TASK, "capture": setting})
        assert task.get_env_fun(num_envs=2, continuous_actions=False, seed=0, device="cpu")().capture is expected


def test_unknown_task_name_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        bt.task_by_name("his/fcis")
    assert "his/his, his/ppgfis, his/cfis, his/iis" in str(info.value)


@pytest.mark.parametrize("continuous", [False, True])
def test_specs_seen_by_benchmarl(continuous):
    task = bt.HISTask.HIS.get_task(SMALL_TASK)
    env = task.get_env_fun(num_envs=3, continuous_actions=continuous, seed=0, device="cpu")()
    n = 4
    assert task.group_map(env) == {"agents": ["ue_0", "ue_1", "ue_2", "ue_3"]}
    assert task.max_steps(env) == 20
    assert task.observation_spec(env)["agents", "observation"].shape == (n, 3)
    assert "info" not in task.observation_spec(env)["agents"].keys()
    assert task.state_spec(env)["state"].shape == (3 * n,)
    action = task.action_spec(env)["agents", "action"]
    if continuous:
        assert isinstance(action, Bounded) and action.shape == (n, 2)
    else:  # one categorical over the 17 x 12 (x, y) pairs of Table II
        assert isinstance(action, Categorical) and action.space.n == 17 * 12 and action.shape == (n,)


def small_spec(algorithm, **kw):
    from agents.benchmarl.experiment import RunSpec

    return RunSpec(algorithm=algorithm, scheme=kw.pop("scheme", "his"), seed=kw.pop("seed", 0),
                   task=kw.pop("task", dict(SMALL_TASK)),
                   experiment=dict(SMALL_EXPERIMENT), frame_budget=kw.pop("frame_budget", 3 * FRAMES_PER_BATCH),
                   eval_seeds=[90_000], hidden=[16, 16], **kw)


@pytest.mark.parametrize("algorithm", DISCRETE + CONTINUOUS)
def test_every_algorithm_trains_a_few_iterations(algorithm, tmp_path):
    from agents.benchmarl.experiment import run_benchmarl

    out = run_benchmarl(small_spec(algorithm), tmp_path, references={"random": 0.0, "search": 1.0})
    s = out["summary"]
    assert s["continuous_actions"] is (algorithm in CONTINUOUS)
    assert s["frames"] == 3 * FRAMES_PER_BATCH and s["iterations"] == 3
    assert s["agent_steps"] == 3 * FRAMES_PER_BATCH * 4
    # curve points after iteration 1 and at 80 frames (the evaluation interval), then the final policy
    assert [p["frames"] for p in out["curve"]] == [40.0, 80.0, 120.0]
    assert s["score"] == pytest.approx(s["utility"])  # with references 0 and 1 the score is U itself


def test_a_run_builds_its_task_and_its_his_config_once(tmp_path, monkeypatch):
    from agents.benchmarl.experiment import run_benchmarl

    built, configs = [], []
    init, load = bt.HISTaskClass.__init__, bt.load_config

    def counted_init(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    def counted_load(*args, **kwargs):
        configs.append(args)
        return load(*args, **kwargs)

    monkeypatch.setattr(bt.HISTaskClass, "__init__", counted_init)
    monkeypatch.setattr(bt, "load_config", counted_load)
    out = run_benchmarl(small_spec("ippo", frame_budget=FRAMES_PER_BATCH), tmp_path)
    assert out["summary"]["iterations"] == 1
    assert len(built) == 1 and out["experiment"].task is built[0]
    assert len(configs) == 1  # the task's HIS config, read once though BenchMARL asks for its parts many times


def test_time_budget_stops_after_the_iteration_that_spends_it(tmp_path):
    from agents.benchmarl.experiment import run_benchmarl

    spec = small_spec("ippo", frame_budget=None, time_budget_s=1e-6)
    out = run_benchmarl(spec, tmp_path)
    assert out["summary"]["iterations"] == 1 and out["summary"]["frames"] == FRAMES_PER_BATCH


def test_hydra_composes_the_task_with_overrides():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from benchmarl.hydra_config import load_experiment_config_from_hydra, load_task_config_from_hydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="benchmarl.conf", version_base=None):
        cfg = compose(config_name="config", overrides=[
            "algorithm=qmix", "task=his/cfis", "experiment=his", "task.num_ues=7", "+reward=team",
            "+task.env.es={sm_range: [800, 1200]}", f"hydra.searchpath=[{bt.hydra_search_path()}]"])
    task = load_task_config_from_hydra(cfg.task, "his/cfis")
    assert isinstance(task, bt.HISTaskClass) and task.name == "CFIS"
    assert task.config["num_ues"] == 7 and task.config["reward_mode"] == "team"
    assert list(task.his_config().es.sm_range) == [800, 1200]
    experiment = load_experiment_config_from_hydra(cfg.experiment)
    his_yaml = yaml.safe_load((REPO / "configs" / "benchmark" / "experiment" / "his.yaml").read_text())
    assert experiment.gamma == his_yaml["gamma"] and experiment.lr == his_yaml["lr"]
    assert experiment.on_policy_n_minibatch_iters == his_yaml["on_policy_n_minibatch_iters"]
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="benchmarl.conf", version_base=None):
        with pytest.raises(Exception) as info:
            compose(config_name="config", overrides=["algorithm=ippo", "task=his/his", "task.num_ues=many",
                                                     f"hydra.searchpath=[{bt.hydra_search_path()}]"])
    assert "num_ues" in str(info.value)
    GlobalHydra.instance().clear()


def test_benchmarls_own_run_script_finds_the_task(tmp_path):
    """`python -m benchmarl.run` unchanged: the hydra_plugins search-path plugin registers the tasks."""
    overrides = [f"experiment.{k}={v}".replace("'", "") for k, v in SMALL_EXPERIMENT.items()]
    cmd = [sys.executable, "-m", "benchmarl.run", "algorithm=vdn", "task=his/iis", "experiment=his",
           "task.num_ues=4", "task.bank_size=64", f"experiment.max_n_frames={FRAMES_PER_BATCH}", *overrides,
           "model.num_cells=[16]", "critic_model.num_cells=[16]", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Algorithm: vdn, Task: his/iis" in proc.stdout
    assert list(tmp_path.glob("vdn_iis_mlp_*/config.pkl"))


SEQUENTIAL_TASK = {**SMALL_TASK, "scenario": "seq-small-heavy", "action_mask": True}


def test_a_sequential_task_gives_benchmarl_the_action_mask_apart_from_the_observation():
    task = bt.HISTask.HIS.get_task(SEQUENTIAL_TASK)
    env = task.get_env_fun(num_envs=2, continuous_actions=False, seed=0, device="cpu")()
    mask = task.action_mask_spec(env)
    # BenchMARL's check: one ("agents", "action_mask") entry, a flag per categorical action
    assert list(mask.keys(True, True)) == [("agents", "action_mask")]
    assert mask["agents", "action_mask"].shape == (4, 17 * 12)
    assert "action_mask" not in task.observation_spec(env)["agents"].keys()
    unmasked = {key: value for key, value in SEQUENTIAL_TASK.items() if key != "action_mask"}  # the default: off
    for settings, continuous in ((SMALL_TASK, False), (SEQUENTIAL_TASK, True), (unmasked, False),
                                 ({**SEQUENTIAL_TASK, "action_mask": False}, False)):
        task = bt.HISTask.HIS.get_task(settings)
        env = task.get_env_fun(num_envs=2, continuous_actions=continuous, seed=0, device="cpu")()
        assert task.action_mask_spec(env) is None, settings
    with pytest.raises(ConfigError, match="task.action_mask has value 1; allowed: true"):
        bt.HISTask.HIS.get_task({**SEQUENTIAL_TASK, "action_mask": 1})


@pytest.mark.parametrize("algorithm", DISCRETE)
def test_every_discrete_algorithm_acts_masked_on_a_sequential_scenario(algorithm, tmp_path):
    """Trained on a sequential scenario, each discrete algorithm's policy reads the mask; acting greedily
    on the PettingZoo env, every UE that starts no request takes action (0, 0)."""
    import numpy as np

    import his_env
    from agents.benchmarl.experiment import greedy_policy, run_benchmarl
    from his_env.dynamics.slot import OBSERVATION_FEATURES

    out = run_benchmarl(small_spec(algorithm, task=dict(SEQUENTIAL_TASK)), tmp_path)
    policy = greedy_policy(out["experiment"])
    assert ("agents", "action_mask") in policy.policy.in_keys
    env = his_env.parallel_env(out["task"].his_config())
    observations, _ = env.reset(seed=3)
    active = 3 + OBSERVATION_FEATURES.index("active")  # after Eq. (31)'s three values
    counts = {True: 0, False: 0}
    for _ in range(12):
        actions = policy.act(observations, env)
        for agent, obs in observations.items():
            counts[bool(obs[active] > 0.5)] += 1
            if obs[active] < 0.5:
                assert actions[agent].tolist() == [0, 0], (agent, actions[agent])
        observations, *_ = env.step(actions)
    assert counts[True] > 0 and counts[False] > 0
    assert np.isfinite(out["summary"]["utility"])
