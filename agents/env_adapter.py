"""The HIS PettingZoo ParallelEnv as an RLlib MultiAgentEnv.

`HISMultiAgentEnv` wraps `his_env.parallel_env(config=...)` for RLlib's EnvRunners:

- it passes observations, rewards, terminations and truncations through (adding RLlib's
  `"__all__"` flags); every step is one decision point and episodes end by truncation;
- with `reward_mode="team"` every UE receives U / N (the sum of the env's per-UE rewards,
  Eq. 33, divided by N) instead of its own reward; with `"difference"` UE n receives its
  marginal contribution D_n = U(a) - U(a_{-n}, a_n = (0, 0)) (Wolpert & Tumer's difference
  reward, computed with `env.unwrapped.evaluate_joint_actions` before stepping): for UE n's
  own choice it ranks actions exactly as U does, without the other UEs' exploration noise;
  `"individual"` passes Eq. (33) through;
- with `global_obs=True` (MAPPO) it appends the observations of all UEs (in agent order) to
  each UE's own observation, for the centralised critic; the actor reads only the first 3;
- it keeps RLlib's episodes light: per-step infos are not forwarded (a 50-UE info dict per
  step would be copied into every episode and shipped to the Learner). Instead the adapter
  averages the network metrics of each decision point (U, Q, T, E and the clustering metrics
  from the infos' network-wide keys, the per-cluster lists of `env.network_summary()`, and
  per-UE means of the decision variables, similarities and energies) over the episode and
  hands the summary to `agents.callbacks` in the last step's info of the first agent, under
  `EPISODE_SUMMARY_KEY`.

`make_parallel_env(env_config)` (agents.env_access) builds the underlying PettingZoo env; the
factory is `his_env:parallel_env` unless `env_factory` ("module:function") says otherwise.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import gymnasium as gym
import numpy as np

from ray.rllib.env.multi_agent_env import MultiAgentEnv

from agents.config import REWARD_MODES
from agents.env_access import make_parallel_env, step_metrics

EPISODE_SUMMARY_KEY = "his_episode_summary"


def rllib_done_flags(terms: Mapping[str, bool], truncs: Mapping[str, bool]) -> tuple[dict, dict]:
    """Termination/truncation dicts for RLlib, keeping time-limit truncation a truncation.

    RLlib 2.60's `MultiAgentEpisode.add_env_step` declares the whole episode *terminated*
    as soon as every agent is done, counting per-agent truncation flags as "done" ("Case 2"
    there); every agent's last step then gets `terminated=True` and GAE bootstraps with 0
    instead of V(s_T). So when the episode ends for everyone, per-agent truncation flags
    are dropped and only `"__all__"` says "truncated"; RLlib then marks each agent truncated
    (and terminated only where the env said so).
    """
    terms = {k: bool(v) for k, v in terms.items() if k != "__all__"}
    truncs = {k: bool(v) for k, v in truncs.items() if k != "__all__"}
    agents = set(terms) | set(truncs)
    all_done = bool(agents) and all(terms.get(a, False) or truncs.get(a, False) for a in agents)
    all_terminated = bool(agents) and all(terms.get(a, False) for a in agents)
    if all_done and not all_terminated:
        return ({**terms, "__all__": False}, {"__all__": True})
    return ({**terms, "__all__": all_terminated}, {**truncs, "__all__": False})


class HISMultiAgentEnv(MultiAgentEnv):
    """RLlib MultiAgentEnv over the HIS ParallelEnv (see module docstring)."""

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        config = dict(config or {})
        self.global_obs = bool(config.get("global_obs", False))
        self.reward_mode = config.get("reward_mode", "individual")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode {self.reward_mode!r}; allowed: {', '.join(REWARD_MODES.names)}")
        self.par_env = make_parallel_env(config.get("env", {}), config.get("env_factory"))
        self.possible_agents = list(self.par_env.possible_agents)
        self.agents = list(self.possible_agents)
        n = len(self.possible_agents)
        local_spaces = {a: self.par_env.observation_space(a) for a in self.possible_agents}
        if self.global_obs:
            first = local_spaces[self.possible_agents[0]]
            low = np.concatenate([first.low, np.tile(first.low, n)]).astype(np.float32)
            high = np.concatenate([first.high, np.tile(first.high, n)]).astype(np.float32)
            space = gym.spaces.Box(low, high, dtype=np.float32)
            self.observation_spaces = {a: space for a in self.possible_agents}
        else:
            self.observation_spaces = local_spaces
        self.action_spaces = {a: self.par_env.action_space(a) for a in self.possible_agents}
        first_space = self.action_spaces[self.possible_agents[0]]
        self._default_action = np.asarray(getattr(first_space, "start", np.zeros(2)), dtype=np.int64)
        self._sums: Dict[str, float] = {}
        self._steps = 0

    @property
    def unwrapped_env(self):
        return self.par_env.unwrapped

    def _obs(self, obs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not self.global_obs:
            return obs
        joint = np.concatenate([np.asarray(obs[a], dtype=np.float32) for a in self.possible_agents])
        return {a: np.concatenate([np.asarray(o, dtype=np.float32), joint]) for a, o in obs.items()}

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        obs, _ = self.par_env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._sums, self._steps = {}, 0
        return self._obs(obs), {}

    def difference_rewards(self, action_dict) -> Dict[str, float]:
        """D_n = U(a) - U(a with UE n's action replaced by the default (0, 0)), at the current
        decision point, from the env's own reward model (`evaluate_joint_actions`)."""
        agents = [a for a in self.possible_agents if a in action_dict]
        joint = np.stack([np.asarray(action_dict[a], dtype=np.int64) for a in agents])
        n = len(agents)
        batch = np.repeat(joint[None], n + 1, axis=0)
        idx = np.arange(n)
        batch[idx + 1, idx, :] = self._default_action
        try:
            result = self.par_env.unwrapped.evaluate_joint_actions(batch)
        except (AttributeError, RuntimeError) as exc:
            raise RuntimeError(f"reward_mode 'difference' needs env.unwrapped.evaluate_joint_actions ({exc}); "
                               f"use algorithm.reward_mode=team or individual with this env/oracle") from exc
        utility = np.asarray(result["utility"], dtype=np.float64)
        return {a: float(utility[0] - utility[i + 1]) for i, a in enumerate(agents)}

    def step(self, action_dict):
        diff = self.difference_rewards(action_dict) if self.reward_mode == "difference" else None
        obs, rewards, terms, truncs, infos = self.par_env.step(action_dict)
        if diff is not None:
            rewards = {a: diff.get(a, 0.0) for a in rewards}
        elif self.reward_mode == "team" and rewards:
            # Every UE gets U / N: the network utility shared (see agents.config.REWARD_MODES).
            shared = float(sum(rewards.values())) / len(rewards)
            rewards = {a: shared for a in rewards}
        summary_of = getattr(self.par_env.unwrapped, "network_summary", None)
        for k, v in step_metrics(infos, self.possible_agents, summary_of() if summary_of else None).items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._steps += 1
        done = bool(truncs) and all(truncs.values()) or bool(terms) and all(terms.values())
        out_infos: Dict[str, Any] = {}
        if done:
            summary = {k: v / self._steps for k, v in self._sums.items()}
            summary["decision_points"] = float(self._steps)
            out_infos = {self.possible_agents[0]: {EPISODE_SUMMARY_KEY: summary}}
            self.agents = []
        terms, truncs = rllib_done_flags(terms, truncs)
        return self._obs(obs), rewards, terms, truncs, out_infos

    def close(self) -> None:
        close = getattr(self.par_env, "close", None)
        if close is not None:
            close()
