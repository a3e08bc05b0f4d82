"""The reward-mode and scheme registries: one declaration reaches every path (PettingZoo adapter,
vector env, run config, BenchMARL task, error texts); the built-in modes against hand-computed
numbers; one default everywhere; a YAML for every BenchMARL task; infos that survive float32."""
import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import his_env  # noqa: E402
from his_env.config import ConfigError, HISConfig  # noqa: E402
from his_env.reward_modes import DEFAULT_REWARD_MODE, REWARD_MODES, reward_mode  # noqa: E402
from his_env.schemes import SCHEMES, Scheme  # noqa: E402
from his_env.vector import DecisionBank, HISVecEnv  # noqa: E402

torch.set_num_threads(1)
TINY = {"num_ues": 4, "num_clusters": 2, "episode_length": 3}
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "benchmark"


def vector_step(context, actions, config=None, **kwargs):
    """One HISVecEnv step (B = 1) from a PettingZoo env's decision context and actions (N, 2)."""
    bank = DecisionBank(*(np.asarray(context[k])[None] for k in ("prompt_index", "cluster", "num_clusters",
                                                                  "similarity")))
    vec = HISVecEnv(config, num_envs=1, bank=bank, **kwargs)
    td = vec.load_decision_context(context)
    td["agents", "action"] = torch.as_tensor(np.asarray(actions))[None]
    return vec, vec.step(td)["next"]


# ---------------------------------------------------------------- built-in modes by hand
# N = 3: r = (0.5, -0.25, 1.0), U = r_1 + r_2 + r_3 = 1.25; U without UE n: (0.75, 1.5, 0.0).
R, U, WITHOUT = [0.5, -0.25, 1.0], 1.25, [0.75, 1.5, 0.0]
# a second decision point for the torch batch: r = (2, 0, -1), U = 1, U without UE n: (1, 3, 0.5)
R2, U2, WITHOUT2 = [2.0, 0.0, -1.0], 1.0, [1.0, 3.0, 0.5]
EXPECTED = {
    "individual": ([0.5, -0.25, 1.0], [2.0, 0.0, -1.0]),
    "team": ([1.25 / 3] * 3, [1 / 3] * 3),
    "difference": ([0.5, -0.25, 1.25], [0.0, -2.0, 0.5]),  # 1.25 - 0.75, 1.25 - 1.5, 1.25 - 0
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_built_in_modes_by_hand_in_numpy_and_torch(name):
    mode = REWARD_MODES[name]
    got = mode.rewards(np.array(R), np.float64(U), np.array(WITHOUT))
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    np.testing.assert_allclose(got, EXPECTED[name][0], rtol=1e-15)
    batch = mode.rewards(torch.tensor([R, R2], dtype=torch.float64), torch.tensor([U, U2], dtype=torch.float64),
                         torch.tensor([WITHOUT, WITHOUT2], dtype=torch.float64))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 3) and batch.dtype == torch.float64
    torch.testing.assert_close(batch, torch.tensor(EXPECTED[name], dtype=torch.float64), rtol=1e-15, atol=0.0)


def test_a_mode_that_needs_counterfactuals_refuses_to_run_without_them():
    assert [m for m in REWARD_MODES if REWARD_MODES[m].needs_counterfactuals] == ["difference"]
    with pytest.raises(ValueError, match="'difference' needs the counterfactual utilities"):
        REWARD_MODES["difference"].rewards(np.array(R), U)


def test_one_default_on_every_path():
    from agents.config import AlgorithmConfig
    from agents.rllib.env_adapter import HISMultiAgentEnv
    from agents.benchmarl.task import TaskConfig

    assert DEFAULT_REWARD_MODE == "difference"
    assert inspect.signature(HISVecEnv.__init__).parameters["reward_mode"].default == DEFAULT_REWARD_MODE
    assert HISMultiAgentEnv({"env": HISConfig.from_dict(TINY).to_dict()}).reward_mode == DEFAULT_REWARD_MODE
    assert AlgorithmConfig().reward_mode == DEFAULT_REWARD_MODE
    assert TaskConfig().reward_mode == DEFAULT_REWARD_MODE


# ---------------------------------------------------------------- a new reward mode, declared once
@pytest.fixture
def blend(monkeypatch):
    """A mode declared as a user would, in one place; the registry is restored afterwards."""
    monkeypatch.setattr(REWARD_MODES, "_entries", dict(REWARD_MODES._entries))

    @reward_mode("blend", "half Eq. (33), half the difference reward", needs_counterfactuals=True)
    def _blend(individual, utility, counterfactual, charges, num_ues):
        return 0.5 * individual + 0.5 * (utility[..., None] - counterfactual)

    return "blend"


def test_a_new_reward_mode_reaches_every_path(blend):
    from agents.config import AlgorithmConfig, load_run_config
    from agents.rllib.env_adapter import HISMultiAgentEnv
    from agents.benchmarl.task import HISTask, task_config

    # the RLlib adapter (numpy), against the definition computed from independently stepped envs
    adapter = HISMultiAgentEnv({"env": HISConfig.from_dict(TINY).to_dict(), "reward_mode": blend})
    adapter.reset(seed=5)
    context = adapter.par_env.unwrapped.decision_context()
    agents = list(adapter.possible_agents)
    actions = {a: np.array([3 + 4 * n, 2 + n]) for n, a in enumerate(agents)}
    _, numpy_rewards, *_ = adapter.step(actions)

    def step_reference(joint):
        ref = his_env.parallel_env(HISConfig.from_dict(TINY))
        ref.reset(seed=5)
        _, rewards, _, _, infos = ref.step(joint)
        return rewards, infos[agents[0]]["network_utility"]

    individual, utility = step_reference(actions)
    for agent in agents:
        _, without = step_reference({**actions, agent: np.zeros(2, dtype=np.int64)})
        expected = 0.5 * individual[agent] + 0.5 * (utility - without)
        assert numpy_rewards[agent] == pytest.approx(expected, rel=1e-9, abs=1e-12)

    # the vector env (torch) on the same decision point
    _, out = vector_step(context, [actions[a] for a in agents], reward_mode=blend, **TINY)
    torch_rewards = out["agents", "reward"][0, :, 0].numpy()
    np.testing.assert_allclose(torch_rewards, [numpy_rewards[a] for a in agents], rtol=1e-6, atol=1e-7)

    # the run config and the BenchMARL task accept it ...
    assert AlgorithmConfig(reward_mode=blend).reward_mode == blend
    assert load_run_config([], [f"algorithm.reward_mode={blend}"]).algorithm.reward_mode == blend
    assert task_config({"reward_mode": blend}).reward_mode == blend
    assert HISTask.CFIS.get_task({"num_ues": 4, "reward_mode": blend}).config["reward_mode"] == blend

    # the CLI help and the docs' table describe it ...
    from his_env.reward_modes import help_text, markdown_table

    assert help_text().endswith("; blend: half Eq. (33), half the difference reward")
    assert markdown_table().splitlines()[-1] == "| `blend` | half Eq. (33), half the difference reward | yes |"

    # ... and every path's error names it among the allowed values
    allowed = "allowed: individual, team, difference, blend"
    with pytest.raises(ValueError, match=f"reward_mode 'selfish'; {allowed}"):
        HISMultiAgentEnv({"env": HISConfig.from_dict(TINY).to_dict(), "reward_mode": "selfish"})
    with pytest.raises(ValueError, match=f"reward_mode='selfish'; {allowed}"):
        HISVecEnv(reward_mode="selfish")
    with pytest.raises(ConfigError, match=r"algorithm\.reward_mode.*'selfish'.*'blend'"):
        load_run_config([], ["algorithm.reward_mode=selfish"])
    with pytest.raises(ConfigError, match=f"task.reward_mode has value 'selfish'; {allowed}"):
        task_config({"reward_mode": "selfish"})


# ---------------------------------------------------------------- a new scheme, declared once
@pytest.fixture
def random_his():
    """HIS with random clustering as a scheme of its own; the registry (and BenchMARL's view of it)
    is restored afterwards."""
    from agents.benchmarl import task as bt

    saved = dict(SCHEMES._entries)
    SCHEMES.register("hisrandom", Scheme("hisrandom", "random", "generated", True, True, "kkt"))
    try:
        yield "hisrandom"
    finally:
        SCHEMES._entries = saved
        bt.register()


def test_a_new_scheme_reaches_every_path(random_his):
    from benchmarl.environments import task_config_registry

    from agents.benchmarl import task as bt

    config = HISConfig.from_dict({**TINY, "scheme": {"name": random_his}})  # the config accepts it
    env = his_env.parallel_env(config)
    env.reset(seed=2)
    assert env.network_summary()["scheme"] == random_his
    context = env.decision_context()
    actions = np.array([[16, 0], [0, 11], [5, 5], [2, 7]])
    _, rewards, *_ = env.step({a: actions[n] for n, a in enumerate(env.possible_agents)})

    vec, out = vector_step(context, actions, config, reward_mode="individual")
    assert vec.core.scheme.clustering == "random"
    np.testing.assert_allclose(out["agents", "reward"][0, :, 0].numpy(),
                               [rewards[a] for a in env.possible_agents], rtol=1e-6)

    task = bt.task_by_name(f"his/{random_his}")  # the BenchMARL task, with no second declaration
    bt.register()  # what BenchMARL's Hydra runner gets (his_cli.benchmarl_run, the Hydra plugin)
    assert task.name == random_his.upper() and task_config_registry[f"his/{random_his}"] is task
    assert task.get_task({"num_ues": 4}).his_config().scheme.name == random_his
    with pytest.raises(ConfigError, match=f"allowed: his/his, his/ppgfis, his/cfis, his/iis, his/{random_his}"):
        bt.task_by_name("his/nope")
    with pytest.raises(ConfigError, match=f"scheme.name' has value 'nope'.*'{random_his}'"):
        HISConfig.from_dict({"scheme": {"name": "nope"}})


def test_benchmarl_forgets_a_scheme_that_is_no_longer_registered():
    from benchmarl.environments import task_config_registry

    from agents.benchmarl import task as bt

    def his_tasks():
        return sorted(k for k in task_config_registry if k.startswith("his/"))

    built_in, enum = sorted(f"his/{s}" for s in SCHEMES), bt.HISTask
    saved = dict(SCHEMES._entries)
    try:
        SCHEMES.register("solo", Scheme("solo", "single", "random_member", False, True, "kkt"))
        bt.register()
        assert his_tasks() == sorted(built_in + ["his/solo"]) and "SOLO" in bt.HISTask.__members__
    finally:
        SCHEMES._entries = saved
        bt.register()
    assert his_tasks() == built_in and bt.HISTask is enum  # the same enum as before


@pytest.mark.parametrize("scheme", SCHEMES.names)
def test_every_scheme_has_its_benchmarl_task_yaml(scheme):
    """Hydra's `task=his/<scheme>` needs configs/benchmark/task/his/<scheme>.yaml."""
    path = CONFIGS / "task" / "his" / f"{scheme}.yaml"
    assert path.is_file(), f"{path} is missing: copy his.yaml and change the name"
    values = yaml.safe_load(path.read_text())
    assert values["defaults"][0] == f"his_{scheme}_config"
    assert values["reward_mode"] in REWARD_MODES


def test_benchmarl_reward_overlays_name_registered_modes():
    paths = sorted((CONFIGS / "reward").glob("*.yaml"))
    assert paths
    for path in paths:
        assert yaml.safe_load(path.read_text())["reward_mode"] == path.stem and path.stem in REWARD_MODES


# ---------------------------------------------------------------- info precision
def assert_float32_keeps(values, where):
    """Every value survives a float32 round trip with 1e-6 relative precision."""
    values = np.asarray(values, dtype=np.float64)
    assert np.isfinite(values).all(), where
    assert np.all(np.abs(values.astype(np.float32).astype(np.float64) - values) <= 1e-6 * np.abs(values)), where


def test_infos_of_both_envs_survive_float32():
    env = his_env.parallel_env(HISConfig.from_dict(TINY))
    _, reset_infos = env.reset(seed=1)
    context = env.decision_context()
    actions = np.array([[4, 3], [0, 0], [9, 1], [16, 11]])
    *_, step_infos = env.step({a: actions[n] for n, a in enumerate(env.possible_agents)})
    for infos in (reset_infos, step_infos):
        for key in infos["ue_0"]:
            assert_float32_keeps([float(infos[a][key]) for a in env.possible_agents], key)
    assert 1e6 < min(step_infos[a]["downlink_rate_bps"] for a in env.possible_agents)  # bit/s, kept as such

    _, out = vector_step(context, actions, reward_mode="individual", **TINY)
    for group in (("agents", "info"), ("info",)):
        for key, value in out[group].items():
            assert value.dtype == torch.float64, key
            assert_float32_keeps(value.numpy(), key)


def test_benchmarl_keeps_infos_in_float64():
    from tensordict import TensorDict

    from agents.benchmarl import task as bt

    task = bt.HISTask.HIS.get_task({"num_ues": 4, "bank_size": 8})
    env = task.get_env_fun(num_envs=2, continuous_actions=False, seed=0, device="cpu")()
    spec = task.info_spec(env)
    assert {key: leaf.dtype for key, leaf in spec.items(include_nested=True, leaves_only=True)} == {
        ("agents", "info", key): torch.float64
        for key in ("individual_reward", "quality", "delay", "ue_energy", "es_energy_share")}
    # 1e8 + 1 is not a float32 number: a float32 mean would log 1e8
    batch = TensorDict({("next", "info", "energy"): torch.tensor([1e8 + 1, 1e8 + 1], dtype=torch.float64)},
                       batch_size=[2])
    assert task.log_info(batch) == {"collection/his/energy": 1e8 + 1}


def test_a_reward_mode_without_the_charges_argument_is_refused_at_declaration(monkeypatch):
    """A mode written against the signature before the dynamics' charges (no `charges`) would leave
    each UE's waiting and drop charges out; it is refused when declared, naming what is missing."""
    monkeypatch.setattr(REWARD_MODES, "_entries", dict(REWARD_MODES._entries))
    with pytest.raises(TypeError, match=r"reward mode 'old': its function takes \(individual, utility, "
                                        r"counterfactual, num_ues\), without charges; allowed"):
        @reward_mode("old", "four arguments", needs_counterfactuals=True)
        def _old(individual, utility, counterfactual, num_ues):
            return utility[..., None] - counterfactual
    assert "old" not in REWARD_MODES.names
