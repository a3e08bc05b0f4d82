"""The HIS PettingZoo ParallelEnv as an RLlib MultiAgentEnv.

`HISMultiAgentEnv` wraps `his_env.parallel_env(config=...)` for RLlib's EnvRunners:

- it passes observations, rewards, terminations and truncations through (adding RLlib's
  `"__all__"` flags); every step is one decision point and episodes end by truncation;
- it rewards the UEs by `reward_mode`, a name of `his_env.reward_modes.REWARD_MODES` (default
  `DEFAULT_REWARD_MODE` there, `difference`; train.py passes `algorithm.reward_mode`), from the
  env's per-UE rewards r_n (Eq. 33) and U = sum_n r_n (Eq. 23). For modes that need the
  counterfactual utilities (`difference`: D_n = U(a) - U(a with UE n at (0, 0)), which for UE
  n's own choice ranks actions exactly as U does, without the other UEs' exploration noise; with
  dynamics on, the counterfactual also returns the ES SMs UE n's running phases hold, and D_n is
  less UE n's own charges, read from its info's `dynamics_penalty`)
  the adapter evaluates the N joint actions with one UE at the counterfactual action through
  `env.unwrapped.evaluate_joint_actions` before stepping (the PettingZoo env offers no O(N M)
  counterfactuals of its own; the vector env has them);
- with `global_obs=True` (MAPPO) it appends the observations of all UEs (in agent order) to
  each UE's own observation, for the centralised critic; the actor reads only the first 3;
- it keeps RLlib's episodes light: per-step infos are not forwarded (a 50-UE info dict per
  step would be copied into every episode and shipped to the Learner). Instead the adapter
  averages the network metrics of each decision point (U, Q, T, E and the clustering metrics
  from the infos' network-wide keys, the per-cluster lists of `env.network_summary()`, and
  per-UE means of the decision variables, similarities and energies) over the episode and
  hands the summary to `agents.rllib.callbacks` in the last step's info of the first agent, under
  `EPISODE_SUMMARY_KEY`.

`make_parallel_env(env_config)` (agents.env_access) builds the underlying PettingZoo env; the
factory is `his_env:parallel_env` unless `env_factory` ("module:function") says otherwise.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import gymnasium as gym
import numpy as np

from ray.rllib.env.multi_agent_env import MultiAgentEnv

from agents.env_access import make_parallel_env, step_metrics
from his_env.reward_modes import COUNTERFACTUAL_ACTION, DEFAULT_REWARD_MODE, REWARD_MODES

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
        self.reward_mode = config.get("reward_mode", DEFAULT_REWARD_MODE)
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

    def counterfactual_utilities(self, action_dict) -> np.ndarray:
        """U of the joint action with UE n's action replaced by `COUNTERFACTUAL_ACTION` (with dynamics,
        and the ES SMs its running phases hold returned to the budget), for each UE n in agent order
        (N,), at the current decision point, from the env's own reward model (`evaluate_joint_actions`)."""
        joint = np.stack([np.asarray(action_dict[a], dtype=np.int64) for a in self.possible_agents])
        n = len(joint)
        batch = np.repeat(joint[None], n, axis=0)
        batch[np.arange(n), np.arange(n), :] = COUNTERFACTUAL_ACTION
        try:
            env = self.par_env.unwrapped
            # with dynamics.work, UE n's counterfactual also returns the ES SMs its running phases hold
            context = getattr(env, "decision_context", None)  # an env of --env-factory may have none
            budget = None if context is None else context().get("es_sm_budget_without_ue")
            result = env.evaluate_joint_actions(batch) if budget is None else env.evaluate_joint_actions(batch, budget)
        except (AttributeError, RuntimeError) as exc:
            others = [m for m in REWARD_MODES if not REWARD_MODES[m].needs_counterfactuals]
            raise RuntimeError(f"reward_mode {self.reward_mode!r} needs env.unwrapped.evaluate_joint_actions "
                               f"({exc}); with this env/oracle use algorithm.reward_mode "
                               f"{' or '.join(others)}") from exc
        return np.asarray(result["utility"], dtype=np.float64)

    def step(self, action_dict):
        mode = REWARD_MODES[self.reward_mode]
        counterfactual = self.counterfactual_utilities(action_dict) if mode.needs_counterfactuals else None
        obs, rewards, terms, truncs, infos = self.par_env.step(action_dict)
        if rewards:  # every UE acts at every step, so the rewards are in agent order as the counterfactuals
            agents = [a for a in self.possible_agents if a in rewards]
            individual = np.array([rewards[a] for a in agents], dtype=np.float64)
            charges = (np.array([infos[a]["dynamics_penalty"] for a in agents], dtype=np.float64)
                       if "dynamics_penalty" in infos[agents[0]] else None)  # each UE's own, dynamics on
            shaped = mode.rewards(individual, individual.sum(), counterfactual, charges)  # U = sum r_n, Eq. (23)
            rewards = dict(zip(agents, shaped.tolist()))
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
