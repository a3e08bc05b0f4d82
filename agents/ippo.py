"""RLlib AlgorithmConfig builders for the HIS learners: IPPO (the paper's MIRA tier 1),
shared-parameter PPO and MAPPO, all on RLlib's new API stack.

- `ippo`: one actor-critic RLModule per UE, `policy_mapping_fn` maps `ue_n` -> module `ue_n`
  (Sec. VI-B, Alg. 2: independent actors and critics hosted on the ES).
- `ppo-shared`: one RLModule for all UEs (parameter sharing).
- `mappo`: one actor per UE that sees its own observation, and a centralised critic per UE
  that sees the observations of all UEs (the env adapter appends them).

All three use `agents.learner.HISPPOTorchLearner` (Eqs. 34-37, reward and advantage
normalisation switches) and `agents.modules.HISActorCriticModule`.

`TrainConfig` is the `train:` section of the YAML configs: Table II's hyperparameters by
default (lr 0.005, [256, 256, 256], Adam, minibatch D = 128 per module, clip 0.2, value clip
0.2, entropy 0.002) plus what this repo had to choose, each measured on the N = 50 default
(time for the greedy policy to reach 0.9 of the way from random to the search reference):

- `reward_mode: difference`. With the env's own per-UE reward (Eq. 33, `individual`) a UE
  gains by taking more ES-personalised and common steps than is good for the network (the
  costs land on the other UEs of its cluster), and IPPO settles at that selfish equilibrium:
  score ~0.29 after 4 minutes, best-response dynamics give ~0.37. The shared team reward
  U / N (`team`) is aligned but noisy (score 0.73 after 4 minutes); the difference reward
  D_n = U(a) - U(a_-n, (0, 0)) is aligned and has little noise (0.9 after ~20 s).
- `gamma: 0.5`. Decision points are independent draws (the actions do not change the next
  state), so a long horizon only adds future rewards' noise to the advantages: 0.9 after
  16 s (gamma 0 or 0.5), 48 s (0.9), 127 s (0.99).
- `num_epochs: 4`, 8 episodes per iteration: ~2,300 agent-steps/s on the 2-core machine.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

ALGOS = ("ippo", "ppo-shared", "mappo")
ACTIVATIONS = ("tanh", "relu")
REWARD_MODES = ("team", "difference", "individual")
SHARED_MODULE_ID = "shared"


class TrainConfigError(ValueError):
    """A `train.*` setting is unknown, of the wrong type or out of range."""


@dataclass
class TrainConfig:
    algo: str = "ippo"  # ippo | ppo-shared | mappo
    lr: float = 0.005  # Table II
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])  # Table II, actor and critic
    activation: str = "tanh"  # tanh | relu (the paper does not say)
    gamma: float = 0.5  # discount (not in the paper); decision points are independent draws, see README
    lambda_: float = 0.95  # GAE lambda
    clip: float = 0.2  # epsilon, Eq. (34)
    value_clip: Optional[float] = 0.2  # epsilon, Eq. (37); null = no value clipping
    entropy: float = 0.002  # eta, Eq. (36)
    vf_loss_coeff: float = 1.0  # actor and critic have disjoint weights: only scales the critic's step
    grad_clip: Optional[float] = None  # global-norm gradient clip; null = none
    minibatch_size: int = 128  # per module per gradient step (Table II: D = 128)
    num_epochs: int = 4  # passes over each iteration's batch (5: ~10 % slower, no faster to a 0.9 score)
    episodes_per_iteration: int = 8  # episodes sampled per training iteration
    reward_mode: str = "difference"  # difference: U minus U with the UE at (0, 0) | team: U / N | individual: Eq. (33)
    reward_normalization: bool = True  # running per-agent reward mean/std (Sec. VI-B)
    advantage_normalization: bool = True  # per-batch advantage standardisation [40]
    policy_clip: bool = True  # Eq. (34) clipping; false = unclipped surrogate ("vanilla")
    num_env_runners: int = 0  # 0: sample in the driver process
    num_envs_per_env_runner: int = 8  # vectorised env copies per runner
    num_learners: int = 0  # 0: learn in the driver process
    torch_threads: int = 1  # torch threads per process (more is much slower on small CPUs)
    seed: int = 0
    evaluation_episodes: int = 4  # greedy evaluation episodes at the end of train.py
    env_factory: Optional[str] = None  # "module:function" building the ParallelEnv (default his_env:parallel_env)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrainConfig":
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        aliases = {"lambda": "lambda_"}
        data = {aliases.get(k, k): v for k, v in data.items()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TrainConfigError(f"unknown config key 'train.{unknown[0]}'; allowed keys here: {sorted(names)}")
        cfg = cls()
        for f in dataclasses.fields(cls):
            if f.name in data:
                setattr(cfg, f.name, _coerce(f.name, data[f.name], getattr(cfg, f.name), f.type))
        cfg.validate()
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        merged = self.to_dict()
        merged.update(overrides)
        return TrainConfig.from_dict(merged)

    def validate(self) -> None:
        def check(ok: bool, key: str, allowed: str) -> None:
            if not ok:
                raise TrainConfigError(f"config key 'train.{key}' has value {getattr(self, key)!r}; allowed: {allowed}")

        check(self.algo in ALGOS, "algo", f"one of {ALGOS}")
        check(self.lr > 0, "lr", "a number > 0")
        check(len(self.hidden) >= 1 and all(isinstance(h, int) and h >= 1 for h in self.hidden), "hidden",
              "a non-empty list of integers >= 1")
        check(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}")
        check(self.reward_mode in REWARD_MODES, "reward_mode", f"one of {REWARD_MODES}")
        check(0.0 <= self.gamma <= 1.0, "gamma", "a number in [0, 1]")
        check(0.0 <= self.lambda_ <= 1.0, "lambda_", "a number in [0, 1]")
        check(self.clip > 0, "clip", "a number > 0")
        check(self.value_clip is None or self.value_clip > 0, "value_clip", "null or a number > 0")
        check(self.entropy >= 0, "entropy", "a number >= 0")
        check(self.vf_loss_coeff >= 0, "vf_loss_coeff", "a number >= 0")
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "null or a number > 0")
        check(self.minibatch_size >= 1, "minibatch_size", "an integer >= 1")
        check(self.num_epochs >= 1, "num_epochs", "an integer >= 1")
        check(self.episodes_per_iteration >= 1, "episodes_per_iteration", "an integer >= 1")
        check(self.num_env_runners >= 0, "num_env_runners", "an integer >= 0")
        check(self.num_envs_per_env_runner >= 1, "num_envs_per_env_runner", "an integer >= 1")
        check(self.num_learners >= 0, "num_learners", "an integer >= 0")
        check(self.torch_threads >= 1, "torch_threads", "an integer >= 1")
        check(self.evaluation_episodes >= 0, "evaluation_episodes", "an integer >= 0")


def _coerce(key: str, value: Any, default: Any, annotation: Any) -> Any:
    ann = str(annotation)
    nullable = "Optional" in ann or "None" in ann
    if value is None:
        if nullable:
            return None
        raise TrainConfigError(f"config key 'train.{key}' has value None; allowed: a value of type {ann}")
    if isinstance(value, str) and not isinstance(default, str) and "str" not in ann:
        import yaml  # `--set train.lr=1e-3` arrives as text

        value = yaml.safe_load(value)
        if value is None and nullable:
            return None
    if "bool" in ann:
        if not isinstance(value, bool):
            raise TrainConfigError(f"config key 'train.{key}' has value {value!r}; allowed: true or false")
        return value
    if "list" in ann:
        ints = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ints:
            raise TrainConfigError(f"config key 'train.{key}' has value {value!r}; allowed: a list of integers")
        return list(value)
    if "float" in ann:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainConfigError(f"config key 'train.{key}' has value {value!r}; allowed: a number")
        return float(value)
    if "int" in ann:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrainConfigError(f"config key 'train.{key}' has value {value!r}; allowed: an integer")
        return value
    if "str" in ann:
        if not isinstance(value, str):
            raise TrainConfigError(f"config key 'train.{key}' has value {value!r}; allowed: a string")
        return value
    return value


# ---------------------------------------------------------------------- building
ENV_NAME = "his_marl"


def env_creator(config: Mapping[str, Any]):
    """RLlib env creator (runs in every EnvRunner process)."""
    import torch

    from agents.env_adapter import HISMultiAgentEnv

    threads = int(config.get("torch_threads", 1))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return HISMultiAgentEnv(config)


def register_env() -> None:
    from ray.tune.registry import register_env as _register

    _register(ENV_NAME, env_creator)


def module_ids(algo: str, agents: list[str]) -> list[str]:
    return [SHARED_MODULE_ID] if algo == "ppo-shared" else list(agents)


def policy_mapping(algo: str) -> Callable[..., str]:
    if algo == "ppo-shared":
        return _map_shared
    return _map_own


def _map_own(agent_id, *args, **kwargs) -> str:
    return str(agent_id)


def _map_shared(agent_id, *args, **kwargs) -> str:
    return SHARED_MODULE_ID


def learner_switches(train: TrainConfig) -> Dict[str, Any]:
    return {
        "reward_normalization": train.reward_normalization,
        "advantage_normalization": train.advantage_normalization,
        "policy_clip": train.policy_clip,
        "value_clip": train.value_clip,
    }


def build_algo_config(env_config: Mapping[str, Any], train: TrainConfig):
    """A PPOConfig for `train.algo` on the HIS env described by the plain dict `env_config`.

    `env_config` is `HISConfig.to_dict()` (or any dict the env factory accepts); it must
    carry `num_ues` and `episode_length` (the defaults 50 and 20 are assumed otherwise).
    """
    import numpy as np

    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from agents.callbacks import HISMetricsCallback
    from agents.env_adapter import HISMultiAgentEnv
    from agents.env_runner import HISMultiAgentEnvRunner
    from agents.learner import HISPPOTorchLearner
    from agents.modules import HISActorCriticModule

    register_env()
    global_obs = train.algo == "mappo"
    adapter_config = {"env": dict(env_config), "global_obs": global_obs, "torch_threads": train.torch_threads,
                      "env_factory": train.env_factory, "reward_mode": train.reward_mode}
    # One probe env gives the agents and spaces (cheap: the env builds lazily).
    probe = HISMultiAgentEnv(adapter_config)
    agents = list(probe.possible_agents)
    obs_space = probe.observation_spaces[agents[0]]
    act_space = probe.action_spaces[agents[0]]
    probe.close()
    episode_length = int(env_config.get("episode_length", 20))

    model_config = {"hidden": list(train.hidden), "activation": train.activation,
                    "critic": "global" if global_obs else "local",
                    "local_obs_dim": int(np.prod(probe.par_env.observation_space(agents[0]).shape))}
    specs = {mid: RLModuleSpec(module_class=HISActorCriticModule, observation_space=obs_space,
                               action_space=act_space, model_config=model_config)
             for mid in module_ids(train.algo, agents)}

    env_runners = max(train.num_env_runners, 1)
    # No more env copies than episodes per iteration: each copy then plays whole episodes.
    envs = max(1, min(train.num_envs_per_env_runner, train.episodes_per_iteration // env_runners))
    batch_env_steps = train.episodes_per_iteration * episode_length
    # Sample whole episodes per env copy where the numbers allow it.
    fragment = batch_env_steps // (env_runners * envs)
    if fragment < 1 or fragment * env_runners * envs != batch_env_steps:
        fragment = "auto"

    worker_env = {"OMP_NUM_THREADS": str(train.torch_threads), "MKL_NUM_THREADS": str(train.torch_threads)}
    config = (
        PPOConfig()
        .environment(ENV_NAME, env_config=adapter_config, disable_env_checking=True,
                     normalize_actions=False, clip_actions=False)  # discrete actions: no deep copy to clip
        .framework("torch")
        .env_runners(
            env_runner_cls=HISMultiAgentEnvRunner,
            num_env_runners=train.num_env_runners,
            num_envs_per_env_runner=envs,
            rollout_fragment_length=fragment,
            num_cpus_per_env_runner=1,
            gym_env_vectorize_mode="sync",
        )
        .learners(num_learners=train.num_learners, learner_class=HISPPOTorchLearner,
                  learner_config_dict=learner_switches(train))
        .multi_agent(policies=list(specs), policy_mapping_fn=policy_mapping(train.algo),
                     count_steps_by="env_steps")
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
        .training(
            lr=train.lr,
            gamma=train.gamma,
            lambda_=train.lambda_,
            clip_param=train.clip,
            vf_clip_param=float("inf"),  # unused: HISPPOTorchLearner clips values per Eq. (37)
            entropy_coeff=train.entropy,
            vf_loss_coeff=train.vf_loss_coeff,
            use_kl_loss=False,
            kl_coeff=0.0,
            grad_clip=train.grad_clip,
            train_batch_size_per_learner=batch_env_steps,
            # RLlib requires minibatch <= train batch (in env steps); tiny configs get less.
            minibatch_size=min(train.minibatch_size, batch_env_steps),
            num_epochs=train.num_epochs,
            shuffle_batch_per_epoch=True,
        )
        .callbacks(HISMetricsCallback)
        .python_environment(extra_python_environs_for_worker=worker_env,
                            extra_python_environs_for_driver=worker_env)
        .debugging(seed=train.seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=max(train.episodes_per_iteration, 1))
    )
    # HISPPOTorchLearner.postprocess_gradients does one fused NaN/inf check instead of
    # RLlib's per-tensor one (which this flag switches off).
    config.framework(torch_skip_nan_gradients=True)
    return config


def set_torch_threads(n: int = 1) -> None:
    """One torch thread per process: with two an RLlib PPO update was ~60x slower here."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
