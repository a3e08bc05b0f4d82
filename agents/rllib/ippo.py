"""RLlib AlgorithmConfig builders for the HIS learners: IPPO (the paper's MIRA tier 1),
shared-parameter PPO and MAPPO, all on RLlib's new API stack.

- `ippo`: one actor-critic RLModule per UE, `policy_mapping_fn` maps `ue_n` -> module `ue_n`
  (Sec. VI-B, Alg. 2: independent actors and critics hosted on the ES).
- `ppo-shared`: one RLModule for all UEs (parameter sharing).
- `mappo`: one actor per UE that sees its own observation, and a centralised critic per UE
  that sees the observations of all UEs (the env adapter appends them).

All three use `agents.rllib.learner.HISPPOTorchLearner` (Eqs. 34-37, reward and advantage
normalisation switches) and `agents.rllib.modules.HISActorCriticModule`. Their settings are an
`agents.config.RunConfig` (`algorithm:` and `experiment:` sections of the YAML configs).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from agents.config import LEARNERS, RunConfig

SHARED_MODULE_ID = "shared"


# ---------------------------------------------------------------------- building
ENV_NAME = "his_marl"


def env_creator(config: Mapping[str, Any]):
    """RLlib env creator (runs in every EnvRunner process)."""
    import torch

    from agents.rllib.env_adapter import HISMultiAgentEnv

    threads = int(config.get("torch_threads", 1))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return HISMultiAgentEnv(config)


def register_env() -> None:
    from ray.tune.registry import register_env as _register

    _register(ENV_NAME, env_creator)


def module_ids(algo: str, agents: list[str]) -> list[str]:
    return [SHARED_MODULE_ID] if LEARNERS[algo].shared_module else list(agents)


def policy_mapping(algo: str) -> Callable[..., str]:
    if LEARNERS[algo].shared_module:
        return _map_shared
    return _map_own


def _map_own(agent_id, *args, **kwargs) -> str:
    return str(agent_id)


def _map_shared(agent_id, *args, **kwargs) -> str:
    return SHARED_MODULE_ID


def build_algo_config(run: RunConfig):
    """A PPOConfig for `run.algorithm.algo` on the HIS env `run.env`, executed as `run.experiment` says."""
    import numpy as np

    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from agents.rllib.callbacks import HISMetricsCallback
    from agents.rllib.env_adapter import HISMultiAgentEnv
    from agents.rllib.env_runner import HISMultiAgentEnvRunner
    from agents.rllib.learner import HISPPOTorchLearner
    from agents.rllib.modules import HISActorCriticModule

    register_env()
    algorithm, experiment = run.algorithm, run.experiment
    env_config = run.env.to_dict()
    global_obs = algorithm.learner.global_critic
    adapter_config = {"env": env_config, "global_obs": global_obs, "torch_threads": experiment.torch_threads,
                      "env_factory": experiment.env_factory, "reward_mode": algorithm.reward_mode}
    # One probe env gives the agents and spaces (cheap: the env builds lazily).
    probe = HISMultiAgentEnv(adapter_config)
    agents = list(probe.possible_agents)
    obs_space = probe.observation_spaces[agents[0]]
    act_space = probe.action_spaces[agents[0]]
    probe.close()
    episode_length = run.env.episode_length

    model_config = {"hidden": list(algorithm.hidden), "activation": algorithm.activation,
                    "critic": "global" if global_obs else "local",
                    "local_obs_dim": int(np.prod(probe.par_env.observation_space(agents[0]).shape))}
    specs = {mid: RLModuleSpec(module_class=HISActorCriticModule, observation_space=obs_space,
                               action_space=act_space, model_config=model_config)
             for mid in module_ids(algorithm.algo, agents)}

    env_runners = max(experiment.num_env_runners, 1)
    # No more env copies than episodes per iteration: each copy then plays whole episodes.
    envs = max(1, min(experiment.num_envs_per_env_runner, algorithm.episodes_per_iteration // env_runners))
    batch_env_steps = algorithm.episodes_per_iteration * episode_length
    # Sample whole episodes per env copy where the numbers allow it.
    fragment = batch_env_steps // (env_runners * envs)
    if fragment < 1 or fragment * env_runners * envs != batch_env_steps:
        fragment = "auto"

    worker_env = {"OMP_NUM_THREADS": str(experiment.torch_threads), "MKL_NUM_THREADS": str(experiment.torch_threads)}
    config = (
        PPOConfig()
        .environment(ENV_NAME, env_config=adapter_config, disable_env_checking=True,
                     normalize_actions=False, clip_actions=False)  # discrete actions: no deep copy to clip
        .framework("torch")
        .env_runners(
            env_runner_cls=HISMultiAgentEnvRunner,
            num_env_runners=experiment.num_env_runners,
            num_envs_per_env_runner=envs,
            rollout_fragment_length=fragment,
            num_cpus_per_env_runner=1,
            gym_env_vectorize_mode="sync",
        )
        .learners(num_learners=experiment.num_learners, learner_class=HISPPOTorchLearner,
                  learner_config_dict=algorithm.learner_switches())
        .multi_agent(policies=list(specs), policy_mapping_fn=policy_mapping(algorithm.algo),
                     count_steps_by="env_steps")
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
        .training(
            lr=algorithm.lr,
            gamma=run.discount,
            lambda_=algorithm.lambda_,
            clip_param=algorithm.clip,
            vf_clip_param=float("inf"),  # unused: HISPPOTorchLearner clips values per Eq. (37)
            entropy_coeff=algorithm.entropy,
            vf_loss_coeff=algorithm.vf_loss_coeff,
            use_kl_loss=False,
            kl_coeff=0.0,
            grad_clip=algorithm.grad_clip,
            train_batch_size_per_learner=batch_env_steps,
            # RLlib requires minibatch <= train batch (in env steps); tiny configs get less.
            minibatch_size=min(algorithm.minibatch_size, batch_env_steps),
            num_epochs=algorithm.num_epochs,
            shuffle_batch_per_epoch=True,
        )
        .callbacks(HISMetricsCallback)
        .python_environment(extra_python_environs_for_worker=worker_env,
                            extra_python_environs_for_driver=worker_env)
        .debugging(seed=experiment.seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=max(algorithm.episodes_per_iteration, 1))
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
