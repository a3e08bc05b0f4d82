"""Running reward normalisation for the learners (Sec. VI-B of the HIS paper).

The paper keeps, for each agent, "the mean and standard deviation of all observed rewards"
and feeds the learner `(r - mean) / std`. RLlib's new API stack has no reward filter, so this
module supplies one:

- `RunningMeanStd` (agents.running_stats): exact running moments of a stream, merged one
  batch at a time. The BenchMARL backend (agents.benchmarl.normalization) uses the same class.
- `RewardNormalizer`: a learner-connector piece that, at the start of every update, merges
  each agent's new rewards into that agent's `RunningMeanStd` and then rewrites the rewards
  of the training episodes as `(r - mean) / sqrt(var + eps)`. It runs on the Learner, so
  every reward sampled by every EnvRunner passes through one set of statistics: there is
  nothing to synchronise between EnvRunners, and the statistics are saved with the Learner
  state in every checkpoint (see `agents.rllib.learner.HISPPOTorchLearner.get_state`).

Statistics are keyed by agent id, not by module id, so the shared-parameter learner keeps the
paper's per-agent normalisation too. With several remote Learners (`experiment.num_learners > 1`)
each Learner keeps the statistics of the data shard it receives (statistically the same
stream); the checkpoint holds the first Learner's.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional

import numpy as np

from ray.rllib.connectors.connector_v2 import ConnectorV2

from agents.running_stats import RunningMeanStd


class RewardNormalizer(ConnectorV2):
    """Learner-connector piece: per-agent running reward normalisation of training episodes.

    Place it first in the Learner pipeline (before the artificial bootstrap timestep is
    appended), so that only real rewards enter the statistics.
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 eps: float = 1e-8, clip: Optional[float] = None, **kwargs) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.eps = float(eps)
        self.clip = clip
        self.stats: Dict[str, RunningMeanStd] = {}

    def __call__(self, *, rl_module, batch, episodes, explore=None, shared_data=None, metrics=None, **kwargs):
        sa_episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        rewards: List[np.ndarray] = []
        per_agent: Dict[str, List[np.ndarray]] = {}
        for sa in sa_episodes:
            r = np.asarray(sa.get_rewards(), dtype=np.float64)
            rewards.append(r)
            per_agent.setdefault(str(sa.agent_id), []).append(r)
        # 1) merge this update's rewards into each agent's running statistics ...
        for agent_id, chunks in per_agent.items():
            self.stats.setdefault(agent_id, RunningMeanStd()).update(np.concatenate(chunks))
        # 2) ... then normalise with the updated statistics.
        for sa, r in zip(sa_episodes, rewards):
            if r.size == 0:
                continue
            normed = self.stats[str(sa.agent_id)].normalize(r, self.eps)
            if self.clip is not None:
                normed = np.clip(normed, -self.clip, self.clip)
            buffer = sa.rewards
            if isinstance(getattr(buffer, "data", None), np.ndarray) and not buffer.data.flags.writeable:
                # Episodes from remote EnvRunners arrive as read-only (zero-copy) arrays.
                buffer.data = buffer.data.copy()
            with warnings.catch_warnings():
                # RLlib checks the first value against the reward Box and gymnasium warns that
                # a numpy scalar is "cast to an array"; harmless, once per episode.
                warnings.filterwarnings("ignore", message="Casting input x to numpy array")
                sa.set_rewards(new_data=normed.astype(np.float32))
        return batch

    # ---------------------------------------------------------------- state
    def get_state(self, components=None, *, not_components=None, **kwargs) -> Dict[str, Any]:
        return {"stats": {k: v.get_state() for k, v in self.stats.items()}, "eps": self.eps, "clip": self.clip}

    def set_state(self, state: Dict[str, Any]) -> None:
        self.stats = {k: RunningMeanStd.from_state(v) for k, v in state.get("stats", {}).items()}
        self.eps = float(state.get("eps", self.eps))
        self.clip = state.get("clip", self.clip)

    def summary(self) -> Dict[str, float]:
        """Mean over agents of the running mean and std (for logging)."""
        if not self.stats:
            return {}
        means = [s.mean for s in self.stats.values()]
        stds = [s.std for s in self.stats.values()]
        return {"reward_norm_mean": float(np.mean(means)), "reward_norm_std": float(np.mean(stds)),
                "reward_norm_count": float(np.mean([s.count for s in self.stats.values()]))}
