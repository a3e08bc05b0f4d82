"""The configuration of a training run: the env, the learning algorithm, and the experiment.

    from agents.config import load_run_config
    run = load_run_config(["configs/train_small.yaml"], ["algorithm.lr=0.001"], seed=3)
    run.env            # his_env.HISConfig
    run.algorithm      # AlgorithmConfig: what is learned and how (the learner's settings)
    run.experiment     # ExperimentConfig: how the run is executed (seed, processes, evaluation)

A run config file holds the env's keys at the top level (as `his_env.HISConfig` reads them)
and the sections `algorithm:`, `experiment:` and, for the BenchMARL backend, `benchmarl:`.
`load_run_config` lays `configs/default.yaml`, then the given files in order, then `--set KEY=VALUE`
strings (`num_ues=10`, `algorithm.lr=0.001`, `experiment.seed=3`), then named values (`algo=`,
`seed=`, ...: each goes to the section that has that field). Everything is checked by the one
mechanism of `his_common.config`; every error is a `ConfigError` naming the dotted key.

The namespaces of a dotted key (`NAMESPACES`) mean the same in every command that takes `--set`
(train.py, evaluate.py, benchmark.py, the benchmarks); `route_key` is the one router, and
`route_overrides` splits `--set` pairs by namespace, refusing those a command does not take:

| namespace | settings |
|---|---|
| `env.<key>`, or the bare key | the simulator (`his_env.HISConfig`): `num_ues=10` is `env.num_ues=10` |
| `algorithm.<key>` | what is learned and how (`AlgorithmConfig`) |
| `experiment.<key>` | how the run is executed (`ExperimentConfig`: seed, processes, evaluation) |
| `benchmarl.experiment.<key>`, `benchmarl.algorithm.<key>`, `benchmarl.task.<key>` | BenchMARL's own settings, laid over what the run settings map to: its `ExperimentConfig`, the algorithm's config, the HIS task's (`bank_size`) |

The named choices are registries whose keys are the allowed values: `LEARNERS`
(`algorithm.algo`) and `REWARD_MODES` (`algorithm.reward_mode`; the env side's
`his_env.reward_modes.REWARD_MODES`, re-exported here, which the RLlib adapter and the vector
env read too).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from his_common.config import (Config, ConfigError, check, deep_merge, load_yaml, parse_assignment, set_dotted,
                               setting, shipped_configs_dir)
from his_common.registry import Registry
from his_env.config import HISConfig
from his_env.reward_modes import DEFAULT_REWARD_MODE, REWARD_MODES


@dataclass(frozen=True)
class Learner:
    """How a learner maps UEs to networks and what its critics see, on both backends (the one place
    a learner of train.py is declared: RLlib's modules, BenchMARL's algorithm, the CLIs' choices)."""

    description: str
    shared_module: bool  # one network for all UEs (parameter sharing)
    global_critic: bool  # critics see every UE's observation (centralised critic)
    benchmarl_algorithm: str  # BenchMARL's algorithm of `train.py --backend benchmarl`


# `train.py --backend benchmarl --preset NAME`: configs/presets/benchmarl_<name>.yaml, laid under --config and --set
DEFAULT_BENCHMARL_PRESET = "fast"  # the settings measured fastest to a score of 0.9 on the 2-core CPU
MARKOV_GAME_PRESET = "markov"  # the default instead where any dynamics process is on (measured stable there)


def default_benchmarl_preset(env: HISConfig) -> str:
    """The preset `train.py --backend benchmarl` starts from when `--preset` is not given: `markov` if
    any dynamics process of `env` is on (a sequential scenario), else `fast`."""
    return MARKOV_GAME_PRESET if env.dynamics.enabled_processes else DEFAULT_BENCHMARL_PRESET


def benchmarl_preset_names() -> list[str]:
    """The presets of the BenchMARL backend: the files configs/presets/benchmarl_<name>.yaml."""
    return sorted(p.stem[len("benchmarl_"):].replace("_", "-")
                  for p in (shipped_configs_dir() / "presets").glob("benchmarl_*.yaml"))


def benchmarl_preset_config(name: str) -> str:
    """The shipped config name of preset `name` (configs/presets/benchmarl_<name>.yaml)."""
    return f"presets/benchmarl_{name.replace('-', '_')}"


LEARNERS: Registry[Learner] = Registry("learner")
LEARNERS.register("ippo", Learner("one actor-critic per UE (the paper's MIRA tier 1)", False, False, "ippo"))
LEARNERS.register("ppo-shared", Learner("one actor-critic shared by all UEs", True, False, "ippo"))
LEARNERS.register("mappo", Learner("one actor per UE, critics that see all UEs' observations", False, True, "mappo"))

ACTIVATIONS = ("tanh", "relu")
INDEPENDENT_DRAWS_GAMMA = 0.5  # dynamics off: each decision point an independent draw, a long horizon only adds noise
# dynamics on: measured best of 0 / 0.5 / 0.9 / 0.99 (MAPPO, seq-medium-heavy, 5 seeds, ~310,000 frames:
# scores 0.66 / 0.58 / 0.42 / 0.25), and of 0 / 0.99 with the markov preset (~1.1 M frames: 0.90 / 0.74); those
# with the difference reward blind to the queues' charges. With it charging each UE its own (markov preset,
# ~1.45 M frames, 2 seeds): 0 / 0.9 / 0.99 score 0.99 / 0.73 / -0.33 (docs/benchmarks.md)
MARKOV_GAME_GAMMA = 0.0


def default_discount(env: HISConfig) -> float:
    """The discount a run on `env` gets when `algorithm.gamma` is null: 0 if any dynamics process is on,
    else 0.5; each the best measured at the budgets users run (docs/training.md has the measurements)."""
    return MARKOV_GAME_GAMMA if env.dynamics.enabled_processes else INDEPENDENT_DRAWS_GAMMA

# The learner's switches (agents.rllib.learner.HISPPOTorchLearner reads them from learner_config_dict).
LEARNER_SWITCHES = ("reward_normalization", "advantage_normalization", "policy_clip", "value_clip",
                    "reward_norm_clip")


@dataclass
class AlgorithmConfig(Config):
    """What is learned and how: the `algorithm:` section.

    Table II's hyperparameters (lr 0.005, [256, 256, 256], Adam, minibatch D = 128 per module,
    clip 0.2, value clip 0.2, entropy 0.002) plus the choices the paper leaves open; the README
    ("Training") gives the reasons and the measurements behind them."""

    algo: str = setting("ippo", choices=lambda: LEARNERS.names)  # learner: ippo | ppo-shared | mappo
    lr: float = setting(0.005, gt=0)  # Table II
    hidden: list[int] = setting(default_factory=lambda: [256, 256, 256], ge=1)  # Table II, actor and critic
    activation: str = setting("tanh", choices=ACTIVATIONS)  # the paper does not say
    # discount (not in the paper); null: by the env (`default_discount`): 0.5 where decision points are
    # independent draws (dynamics off), 0 in the Markov game (any dynamics process on), both measured best
    gamma: Optional[float] = setting(None, ge=0, le=1)
    lambda_: float = setting(0.95, ge=0, le=1)  # GAE lambda
    clip: float = setting(0.2, gt=0)  # epsilon, Eq. (34)
    value_clip: Optional[float] = setting(0.2, gt=0)  # epsilon, Eq. (37); null = no value clipping
    entropy: float = setting(0.002, ge=0)  # eta, Eq. (36)
    vf_loss_coeff: float = setting(1.0, ge=0)  # actor and critic have disjoint weights: only scales the critic's step
    grad_clip: Optional[float] = setting(None, gt=0)  # global-norm gradient clip; null = none
    minibatch_size: int = setting(128, ge=1)  # per module per gradient step (Table II: D = 128)
    num_epochs: int = setting(4, ge=1)  # passes over each iteration's batch
    episodes_per_iteration: int = setting(8, ge=1)  # episodes sampled per training iteration
    reward_mode: str = setting(DEFAULT_REWARD_MODE, choices=lambda: REWARD_MODES.names)  # his_env.reward_modes
    reward_normalization: bool = True  # running per-agent reward mean/std (Sec. VI-B)
    advantage_normalization: bool = True  # per-batch advantage standardisation [40]
    policy_clip: bool = True  # Eq. (34) clipping; false = unclipped surrogate ("vanilla")
    reward_norm_clip: Optional[float] = setting(None, gt=0)  # clip normalised rewards to [-c, c]; null = none

    def validate(self, prefix: str = "") -> None:
        check(len(self.hidden) >= 1, prefix + "hidden", self.hidden, "a non-empty list of integers >= 1")

    @property
    def learner(self) -> Learner:
        return LEARNERS[self.algo]

    def learner_switches(self) -> Dict[str, Any]:
        """The switches `agents.rllib.learner.HISPPOTorchLearner` reads from `learner_config_dict`."""
        return {name: getattr(self, name) for name in LEARNER_SWITCHES}


@dataclass
class ExperimentConfig(Config):
    """How a run is executed: the `experiment:` section (none of it changes what is learned,
    except the seed)."""

    seed: int = setting(0, ge=0)
    num_env_runners: int = setting(0, ge=0)  # sampling processes; 0: sample in the driver process
    num_envs_per_env_runner: int = setting(8, ge=1)  # vectorised env copies per runner
    num_learners: int = setting(0, ge=0)  # 0: learn in the driver process
    torch_threads: int = setting(1, ge=1)  # torch threads per process (more is much slower on small CPUs)
    evaluation_episodes: int = setting(4, ge=0)  # greedy evaluation episodes at the end of training
    env_factory: Optional[str] = None  # "module:function" building the ParallelEnv (null: his_env:parallel_env)

    def validate(self, prefix: str = "") -> None:
        if self.env_factory is not None:
            module, sep, function = self.env_factory.partition(":")
            check(bool(sep and module and function), prefix + "env_factory", self.env_factory,
                  "null or 'module:function' (e.g. his_env:parallel_env)")


SECTIONS = {"algorithm": AlgorithmConfig, "experiment": ExperimentConfig}
DEFAULT_CONFIG = "default"  # configs/default.yaml, the base layer of every run

# The namespaces of dotted keys (see the module docstring), the same in every command.
NAMESPACES = {
    "env": "the simulator's settings (his_env.HISConfig; a bare key means the same)",
    "algorithm": "what is learned and how (agents.config.AlgorithmConfig)",
    "experiment": "how the run is executed (agents.config.ExperimentConfig: seed, processes, evaluation)",
    "benchmarl": "BenchMARL's own settings: benchmarl.experiment.<key> (its ExperimentConfig), "
                 "benchmarl.algorithm.<key> (the algorithm's config), benchmarl.task.<key> (the HIS task's)",
}
# The parts of the `benchmarl` namespace: BenchMARL's ExperimentConfig, the algorithm's config, the HIS task.
BENCHMARL_SECTIONS = ("experiment", "algorithm", "task")


def empty_benchmarl_settings() -> Dict[str, Dict[str, Any]]:
    return {section: {} for section in BENCHMARL_SECTIONS}


def check_benchmarl_settings(data: Any, source: str = "the config") -> Dict[str, Dict[str, Any]]:
    """The `benchmarl:` section as {experiment: {...}, algorithm: {...}, task: {...}}; its keys are checked
    against BenchMARL's classes when the BenchMARL run is built (agents.benchmarl.experiment.validate_spec)."""
    out = empty_benchmarl_settings()
    if data is None:
        return out
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key 'benchmarl' in {source} must be a mapping with the sections "
                          f"{', '.join(BENCHMARL_SECTIONS)}, got {data!r}")
    for section, values in data.items():
        if section not in BENCHMARL_SECTIONS:
            raise ConfigError(f"config key 'benchmarl.{section}' in {source}: unknown section; allowed: "
                              f"{', '.join('benchmarl.' + s for s in BENCHMARL_SECTIONS)}")
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"config key 'benchmarl.{section}' in {source} must be a mapping of settings, "
                              f"got {values!r}")
        out[section] = dict(values or {})
    return out


@dataclass
class RunConfig:
    """The env, algorithm and experiment configs of one run."""

    env: HISConfig = field(default_factory=HISConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    # BenchMARL's own settings (the `benchmarl` namespace), for the BenchMARL backend only
    benchmarl: Dict[str, Dict[str, Any]] = field(default_factory=empty_benchmarl_settings)

    @property
    def discount(self) -> float:
        """The discount of the run: `algorithm.gamma`, or the env's default (`default_discount`) when null."""
        return default_discount(self.env) if self.algorithm.gamma is None else float(self.algorithm.gamma)

    @property
    def has_benchmarl_settings(self) -> bool:
        return any(self.benchmarl.values())

    def benchmarl_keys(self) -> list[str]:
        """The dotted keys set in the `benchmarl` namespace (`benchmarl.experiment.lr`)."""
        return [f"benchmarl.{section}.{key}" for section, values in self.benchmarl.items() for key in values]

    def to_dict(self) -> Dict[str, Any]:
        """{"env": {...}, "algorithm": {...}, "experiment": {...}} (plain data), and "benchmarl" when set."""
        data = {"env": self.env.to_dict(), "algorithm": self.algorithm.to_dict(),
                "experiment": self.experiment.to_dict()}
        if self.has_benchmarl_settings:
            data["benchmarl"] = copy.deepcopy(self.benchmarl)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "RunConfig":
        """The inverse of `to_dict`; a missing part keeps its defaults."""
        data = dict(data or {})
        unknown = sorted(set(data) - {"env", "algorithm", "experiment", "benchmarl"})
        if unknown:
            raise ConfigError(f"unknown run config part {unknown[0]!r}; allowed: env, algorithm, experiment, "
                              f"benchmarl")
        return cls(env=HISConfig.from_dict(data.get("env") or {}),
                   algorithm=AlgorithmConfig.from_dict(data.get("algorithm") or {}, prefix="algorithm."),
                   experiment=ExperimentConfig.from_dict(data.get("experiment") or {}, prefix="experiment."),
                   benchmarl=check_benchmarl_settings(data.get("benchmarl"), "the run config"))

    def to_file_dict(self) -> Dict[str, Any]:
        """The file layout: env keys at the top level, then `algorithm:`, `experiment:` (and `benchmarl:`)."""
        parts = self.to_dict()
        return {**parts.pop("env"), **parts}

    @classmethod
    def from_file_dict(cls, data: Mapping[str, Any], source: str = "the config") -> "RunConfig":
        """A run config from the file layout (see `to_file_dict`)."""
        return cls.from_dict(split_file_dict(data, source))

    def with_overrides(self, overrides: Mapping[str, Any]) -> "RunConfig":
        """A new run config with dotted overrides: env keys as they are (`es.sm_range`),
        `algorithm.<key>` and `experiment.<key>`."""
        tree = self.to_dict()
        tree["benchmarl"] = copy.deepcopy(self.benchmarl)
        for key, value in overrides.items():
            part, dotted = route_key(key)
            if part == "benchmarl":
                section, name = dotted.split(".", 1)
                tree["benchmarl"][section][name] = value
                continue
            set_dotted(HISConfig if part == "env" else SECTIONS[part], tree[part], dotted, value,
                       prefix="" if part == "env" else part + ".")
        return RunConfig.from_dict(tree)


def route_key(key: str) -> tuple[str, str]:
    """The one router of dotted keys: (namespace, key within it) (see `NAMESPACES`): ("algorithm", "lr")
    for "algorithm.lr", ("env", "es.sm_range") for "es.sm_range" or "env.es.sm_range", ("benchmarl",
    "experiment.lr") for "benchmarl.experiment.lr"."""
    head, _, rest = key.partition(".")
    if head in SECTIONS or head == "env":
        if not rest:
            example = "num_ues" if head == "env" else _first_field(head)
            raise ConfigError(f"config key {key!r} is a section; set one of its keys, e.g. {key}.{example}")
        return head, rest
    if head == "benchmarl":
        section, _, name = rest.partition(".")
        if section not in BENCHMARL_SECTIONS or not name:
            raise ConfigError(f"config key {key!r}: BenchMARL's settings are benchmarl.<section>.<key>; allowed "
                              f"sections: {', '.join(BENCHMARL_SECTIONS)} (e.g. benchmarl.experiment.lr)")
        return head, rest
    if head == "train":
        raise ConfigError(moved_train_keys([rest] if rest else [], f"config key {key!r}"))
    if head == "task":
        raise ConfigError(f"config key {key!r}: the BenchMARL task's settings are benchmarl.task.<key> "
                          f"(benchmarl.task.bank_size); num_ues, reward_mode and config are num_ues, "
                          f"algorithm.reward_mode and --config")
    return "env", key


def route_overrides(overrides: Mapping[str, Any], accepted: Sequence[str], where: str,
                    why: str = "") -> Dict[str, Dict[str, Any]]:
    """`--set` pairs {dotted key: value} split by namespace (`route_key`): {"env": {...}, "algorithm": {...},
    "experiment": {...}, "benchmarl": {section: {...}}}; a key of a namespace not in `accepted` is refused with
    a ConfigError that names it, `where` (the command) and `why` (what that command takes instead)."""
    out: Dict[str, Dict[str, Any]] = {"env": {}, "algorithm": {}, "experiment": {},
                                      "benchmarl": empty_benchmarl_settings()}
    for key, value in overrides.items():
        part, name = route_key(key)
        if part not in accepted:
            raise ConfigError(f"{where}: --set {key}=... sets {NAMESPACES[part]}, which {where} does not take"
                              f"{'; ' + why if why else ''}; allowed namespaces here: "
                              f"{', '.join(NAMESPACES_SHOWN[p] for p in accepted)}")
        if part == "benchmarl":
            section, name = name.split(".", 1)
            out[part][section][name] = value
        else:
            out[part][name] = value
    return out


NAMESPACES_SHOWN = {"env": "env.<key> (or the bare key)", "algorithm": "algorithm.<key>",
                    "experiment": "experiment.<key>", "benchmarl": "benchmarl.<experiment|algorithm|task>.<key>"}


def split_file_dict(data: Mapping[str, Any], source: str = "the config") -> Dict[str, Dict[str, Any]]:
    """The file layout split into {"env", "algorithm", "experiment"} (and "benchmarl" when there); a `train:`
    section is refused."""
    data = dict(data)
    if "train" in data:
        section = data["train"]
        keys = list(section) if isinstance(section, Mapping) else []
        raise ConfigError(moved_train_keys(keys, f"{source} has a 'train:' section"))
    parts: Dict[str, Any] = {"env": {}, "algorithm": {}, "experiment": {}}
    for key, value in data.items():
        if key == "benchmarl":
            parts["benchmarl"] = check_benchmarl_settings(value, source)
        elif key in SECTIONS:
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"config key {key!r} in {source} must be a mapping of "
                                  f"{sorted(f.name for f in dataclasses.fields(SECTIONS[key]))}, got {value!r}")
            parts[key] = dict(value or {})
        else:
            parts["env"][key] = value
    return parts


def _train_key_home(key: str) -> str:
    """Where a key of the retired `train:` section lives now ("algorithm.lr"), or ""."""
    name = "lambda_" if key == "lambda" else key
    for section, cls in SECTIONS.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return f"{section}.{name}"
    return ""


def split_train_section(train: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """A retired `train:` mapping (as older run records hold it) as {"algorithm": ..., "experiment": ...}."""
    parts: Dict[str, Dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in train.items():
        home = _train_key_home(str(key))
        if not home:
            raise ConfigError(moved_train_keys([str(key)], "a recorded 'train' config"))
        section, name = home.split(".")
        parts[section][name] = value
    return parts


def moved_train_keys(keys: Sequence[str], what: str) -> str:
    """The message for a key of the retired `train:` section: where each of its keys now lives."""
    home = _train_key_home
    moved = [f"train.{k} -> {home(k)}" for k in keys if home(k)]
    unknown = [f"train.{k}" for k in keys if not home(k)]
    text = (f"{what}: the 'train:' section is split into 'algorithm:' (the learner's settings: "
            f"{', '.join(f.name for f in dataclasses.fields(AlgorithmConfig))}) and 'experiment:' (the run's "
            f"settings: {', '.join(f.name for f in dataclasses.fields(ExperimentConfig))})")
    if moved:
        text += "; move " + ", ".join(moved)
    if unknown:
        text += f"; {', '.join(unknown)} is not a key of either"
    return text


def _first_field(section: str) -> str:
    return dataclasses.fields(SECTIONS[section])[0].name


def load_benchmarl_run_config(preset: Optional[str], config_files: Sequence[str | Path] = (),
                              overrides: Sequence[str] = (), **named: Any) -> "RunConfig":
    """`load_run_config` with the BenchMARL backend's preset `preset` laid under `config_files`; None: by
    the env (`default_benchmarl_preset` of the config the fast preset gives: no preset switches dynamics)."""
    def load(name: str) -> RunConfig:
        return load_run_config([benchmarl_preset_config(name), *config_files], overrides, **named)

    if preset is not None:
        return load(preset)
    run = load(DEFAULT_BENCHMARL_PRESET)
    chosen = default_benchmarl_preset(run.env)
    return run if chosen == DEFAULT_BENCHMARL_PRESET else load(chosen)


def load_run_config(config_files: Sequence[str | Path] = (), overrides: Sequence[str] = (),
                    scenario: Optional[str] = None, **named: Any) -> RunConfig:
    """configs/default.yaml, then the env overlay of `scenario` (his_env.scenarios: `paper`, the ladder
    `seq-<size>-<load>`, the held-out `heldout-<k>`), then `config_files` in order (paths or shipped
    names), then the `--set` strings `overrides` ("KEY=VALUE"), then the `named` values that are not
    None (`algo=`, `seed=`, `num_env_runners=`, or any field of the algorithm, experiment or env)."""
    tree: Dict[str, Any] = {}
    layers: list[tuple[str, Any]] = [(f"config file {DEFAULT_CONFIG!r}", load_yaml(DEFAULT_CONFIG))]
    if scenario is not None:
        from his_env.scenarios import scenario_overlay

        layers.append((f"scenario {scenario!r}", scenario_overlay(scenario)))
    layers += [(f"config file {str(name)!r}", load_yaml(name)) for name in config_files]
    for source, data in layers:
        split_file_dict(data, source)  # refuses a train: section, naming the file
        tree = deep_merge(tree, data)
    run = RunConfig.from_file_dict(tree, "the merged config files")
    assignments: Dict[str, Any] = {}
    for text in overrides:
        key, value = parse_assignment(text, "--set num_ues=10 or --set algorithm.lr=0.001")
        route_key(key)  # a train.* key is refused here, with where it moved
        assignments[key] = value
    for name, value in named.items():
        if value is not None:
            assignments[named_key(name)] = value
    return run.with_overrides(assignments) if assignments else run


def named_key(name: str) -> str:
    """The dotted key of a named value: the section that has a field `name`, else the env."""
    for section, cls in SECTIONS.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return f"{section}.{name}"
    return name


__all__ = ["ACTIVATIONS", "AlgorithmConfig", "BENCHMARL_SECTIONS", "ConfigError", "ExperimentConfig",
           "INDEPENDENT_DRAWS_GAMMA", "LEARNERS", "LEARNER_SWITCHES", "Learner", "MARKOV_GAME_GAMMA",
           "MARKOV_GAME_PRESET", "NAMESPACES", "REWARD_MODES", "RunConfig", "default_benchmarl_preset", "default_discount",
           "load_benchmarl_run_config", "load_run_config", "route_key", "route_overrides",
           "split_file_dict", "split_train_section"]
