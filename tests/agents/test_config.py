"""The run configuration: algorithm and experiment sections, layering of files, --set and named
values, the retired `train:` section, run records, and clear errors for bad values."""
import json
from pathlib import Path

import pytest

from agents.config import (LEARNERS, REWARD_MODES, AlgorithmConfig, ConfigError, ExperimentConfig, RunConfig,
                           load_run_config)
from his_env.config import HISConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_table_ii_and_the_documented_choices():
    a, e = AlgorithmConfig(), ExperimentConfig()
    assert (a.algo, a.lr, a.hidden, a.activation) == ("ippo", 0.005, [256, 256, 256], "tanh")
    assert (a.gamma, a.lambda_, a.clip, a.value_clip, a.entropy, a.vf_loss_coeff) == (None, 0.95, 0.2, 0.2, 0.002, 1.0)
    assert (a.grad_clip, a.minibatch_size, a.num_epochs, a.episodes_per_iteration) == (None, 128, 4, 8)
    assert (a.reward_mode, a.reward_normalization, a.advantage_normalization, a.policy_clip) == (
        "difference", True, True, True)
    assert (e.seed, e.num_env_runners, e.num_envs_per_env_runner, e.num_learners) == (0, 0, 8, 0)
    assert (e.torch_threads, e.evaluation_episodes, e.env_factory) == (1, 4, None)


def test_registries_hold_the_allowed_names():
    assert LEARNERS.names == ("ippo", "ppo-shared", "mappo")
    assert set(REWARD_MODES.names) == {"difference", "team", "individual"}
    assert LEARNERS["ppo-shared"].shared_module and LEARNERS["mappo"].global_critic
    assert not LEARNERS["ippo"].shared_module and not LEARNERS["ippo"].global_critic
    with pytest.raises(ConfigError, match=r"'algorithm\.algo' has value 'dqn'; allowed: one of 'ippo', "
                                          r"'ppo-shared', 'mappo'"):
        load_run_config([], ["algorithm.algo=dqn"])
    with pytest.raises(ConfigError, match=r"algorithm\.reward_mode.*'difference'"):
        load_run_config([], ["algorithm.reward_mode=selfish"])


def test_layers_apply_in_order(tmp_path):
    first = write(tmp_path, "a.yaml", "num_ues: 12\nalgorithm:\n  lr: 0.01\n  gamma: 0.9\nexperiment:\n  seed: 5\n")
    second = write(tmp_path, "b.yaml", "algorithm:\n  lr: 0.02\n")
    run = load_run_config([first, second], ["algorithm.gamma=0.7", "experiment.seed=6", "scheme.name=cfis"],
                          seed=7, algo="mappo", num_env_runners=None)
    assert run.env.num_ues == 12 and run.env.scheme.name == "cfis"
    assert (run.algorithm.lr, run.algorithm.gamma, run.algorithm.algo) == (0.02, 0.7, "mappo")
    assert run.experiment.seed == 7 and run.experiment.num_env_runners == 0  # None leaves the default
    # untouched keys keep configs/default.yaml's (= the dataclass) values
    assert run.env.reward == HISConfig().reward and run.algorithm.hidden == [256, 256, 256]


def test_set_values_are_typed_by_the_field(tmp_path):
    run = load_run_config([], ["algorithm.lr=1e-3", "algorithm.hidden=[64, 32]", "algorithm.value_clip=null",
                               "experiment.env_factory=his_env:parallel_env"])
    assert run.algorithm.lr == 0.001 and isinstance(run.algorithm.lr, float)  # YAML reads 1e-3 as text
    assert run.algorithm.hidden == [64, 32] and run.algorithm.value_clip is None
    assert run.experiment.env_factory == "his_env:parallel_env"
    with pytest.raises(ConfigError, match=r"'algorithm\.policy_clip' has value 'yes please'; allowed: true or false"):
        load_run_config([], ["algorithm.policy_clip=yes please"])
    with pytest.raises(ConfigError, match=r"'experiment\.seed' has value 1\.5; allowed: an integer"):
        load_run_config([], ["experiment.seed=1.5"])


def test_train_section_is_refused_with_where_its_keys_went(tmp_path):
    old = write(tmp_path, "old.yaml", "num_ues: 4\ntrain:\n  lr: 0.01\n  lambda: 0.9\n  seed: 2\n  bogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_run_config([old])
    text = str(err.value)
    assert "old.yaml" in text and "'train:' section is split" in text
    assert "train.lr -> algorithm.lr" in text and "train.lambda -> algorithm.lambda_" in text
    assert "train.seed -> experiment.seed" in text and "train.bogus is not a key of either" in text
    with pytest.raises(ConfigError, match=r"train\.num_learners -> experiment\.num_learners"):
        load_run_config([], ["train.num_learners=2"])


def test_unknown_keys_name_their_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'algorithm\.learning_rate'; allowed keys here: "
                                          r"\['activation', 'advantage_normalization', 'algo'"):
        load_run_config([write(tmp_path, "x.yaml", "algorithm:\n  learning_rate: 0.1\n")])
    with pytest.raises(ConfigError, match=r"unknown config key 'experiment\.seeds'"):
        load_run_config([], ["experiment.seeds=3"])
    with pytest.raises(ConfigError, match=r"config key 'algorithm' in .* must be a mapping"):
        load_run_config([write(tmp_path, "y.yaml", "algorithm: 3\n")])
    with pytest.raises(ConfigError, match=r"config key 'experiment' is a section"):
        load_run_config([], ["experiment=3"])


@pytest.mark.parametrize("key, value, allowed", [
    ("algorithm.lr", "inf", "a finite number"),
    ("algorithm.lr", "0", "a number > 0"),
    ("algorithm.entropy", "inf", "a finite number"),
    ("algorithm.entropy", "-0.1", "a number >= 0"),
    ("algorithm.vf_loss_coeff", ".inf", "a finite number"),
    ("algorithm.vf_loss_coeff", "nan", "a finite number"),
    ("algorithm.gamma", "1.5", "null or a number in [0, 1]"),
    ("algorithm.lambda_", "-1", "a number in [0, 1]"),
    ("algorithm.clip", "-inf", "a finite number"),
    ("algorithm.value_clip", "0", "null or a number > 0"),
    ("algorithm.grad_clip", "inf", "null or a finite number"),
    ("algorithm.reward_norm_clip", "-1", "null or a number > 0"),
    ("algorithm.hidden", "[64, 0]", "a list of integers, each >= 1"),
    ("algorithm.minibatch_size", "0", "an integer >= 1"),
    ("experiment.num_env_runners", "-1", "an integer >= 0"),
    ("experiment.torch_threads", "0", "an integer >= 1"),
    ("experiment.env_factory", "foo", "null or 'module:function'"),
])
def test_out_of_range_and_non_finite_values_name_the_key(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        load_run_config([], [f"{key}={value}"])
    assert f"config key {key!r} has value" in str(err.value) and f"allowed: {allowed}" in str(err.value)


def test_run_config_round_trips():
    run = load_run_config(["train_small"], ["algorithm.algo=ppo-shared", "es.sm_range=[900, 1000]"], seed=4)
    plain = run.to_dict()
    assert set(plain) == {"env", "algorithm", "experiment"}
    assert plain["env"]["es"]["sm_range"] == [900, 1000] and plain["experiment"]["seed"] == 4
    assert RunConfig.from_dict(json.loads(json.dumps(plain))) == run
    layout = run.to_file_dict()  # what train.py writes as config.yaml: loadable as a --config file
    assert layout["num_ues"] == 10 and layout["algorithm"]["algo"] == "ppo-shared"
    assert RunConfig.from_file_dict(layout) == run
    with pytest.raises(ConfigError, match="unknown run config part 'train'"):
        RunConfig.from_dict({"train": {}})


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.rglob("*.yaml") if p.relative_to(CONFIGS).parts[0] != "benchmark"),
                         ids=lambda p: p.relative_to(CONFIGS).as_posix())  # benchmark/: BenchMARL's Hydra configs
def test_every_shipped_config_loads(path):
    run = load_run_config([path])
    assert isinstance(run.env, HISConfig)


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_shipped_yaml_key_has_a_comment(path):
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in line, f"{path.name}: uncommented key: {line}"


def test_shipped_configs_say_what_they_change():
    assert load_run_config(["ablations/vanilla"]).algorithm.learner_switches() == {
        "reward_normalization": False, "advantage_normalization": False, "policy_clip": False, "value_clip": None,
        "reward_norm_clip": None}
    small = load_run_config(["configs/train_small.yaml"])
    assert (small.env.num_ues, small.algorithm.episodes_per_iteration, small.experiment.evaluation_episodes) == (
        10, 8, 8)
    assert load_run_config(["train_paper_reward"]).algorithm.reward_mode == "individual"


def test_learner_defaults_are_the_algorithm_defaults():
    from agents.rllib.learner import DEFAULT_SWITCHES

    assert DEFAULT_SWITCHES == {"reward_normalization": True, "advantage_normalization": True, "policy_clip": True,
                                "value_clip": 0.2, "reward_norm_clip": None}


def test_older_run_records_are_read_with_their_train_config_split(tmp_path):
    from agents.checkpoints import RUN_INFO_FILE, read_run_info, record_config, run_config_from_record

    ckpt = tmp_path / "iter_000001"
    ckpt.mkdir()
    old = {"algo": "mappo", "iteration": 1, "env_config": HISConfig.from_dict({"num_ues": 4}).to_dict(),
           "train_config": {"algo": "mappo", "lr": 0.01, "seed": 3, "env_factory": None}}
    (ckpt / RUN_INFO_FILE).write_text(json.dumps(old))
    info = read_run_info(ckpt)
    assert info["algorithm_config"] == {"algo": "mappo", "lr": 0.01}
    assert info["experiment_config"] == {"seed": 3, "env_factory": None}
    run = run_config_from_record(info)
    assert (run.env.num_ues, run.algorithm.algo, run.algorithm.lr, run.experiment.seed) == (4, "mappo", 0.01, 3)
    assert run_config_from_record(record_config(run)) == run


def test_the_discount_follows_the_env_unless_set():
    # independent decision points (dynamics off): 0.5; the Markov game (any dynamics process on): 0
    assert load_run_config().discount == 0.5
    assert load_run_config(scenario="seq-small-heavy").discount == 0.0
    assert load_run_config(overrides=["dynamics.battery.enabled=true"]).discount == 0.0
    assert load_run_config(scenario="seq-small-heavy", overrides=["algorithm.gamma=0.99"]).discount == 0.99
    assert load_run_config(overrides=["algorithm.gamma=0.9"]).discount == 0.9


def test_the_n1000_preset_scales_the_cell_and_its_es_with_n():
    # N = 1,000 and M = 30; the ES's SMs x 20 (Table II's [1026, 1674] at N = 50); shared PPO, 2 epochs,
    # 64 envs per iteration, 65,536 samples of the one network per gradient step
    from agents.config import benchmarl_preset_config

    run = load_run_config([benchmarl_preset_config("n1000")])
    assert (run.env.num_ues, run.env.num_clusters, list(run.env.es.sm_range)) == (1000, 30, [20520, 33480])
    algo = run.algorithm
    assert (algo.algo, algo.num_epochs, algo.episodes_per_iteration, algo.minibatch_size) == ("ppo-shared", 2, 64, 65536)
    assert LEARNERS[algo.algo].shared_module
