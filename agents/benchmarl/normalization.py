"""The RLlib learner's reward and advantage normalisation (Sec. VI-B, Alg. 2), for BenchMARL's PPO.

BenchMARL's IPPO and MAPPO train on raw rewards and raw advantages, without a value clip. The paper's
MIRA (and this project's RLlib learner, agents.rllib.learner) normalises both and clips values; this adds
that to a BenchMARL experiment, so that `train.py --backend benchmarl` trains what `train.py` trains:

`LearnerSwitches`, a BenchMARL callback, holds them:

- reward normalisation: after each collection it merges every
  agent's new rewards into that agent's running statistics (`agents.running_stats.RunningMeanStd`,
  the RLlib learner's class), then rewrites the batch's rewards as `(r - mean) / sqrt(var + eps)`,
  clipped to [-clip, clip] when `clip` is given; advantages and value targets are then computed
  from these rewards, as in RLlib's learner pipeline. Its statistics go into every checkpoint.
- advantage normalisation: TorchRL's advantage standardisation in the PPO losses, per network (per
  agent, or over all agents when they share one policy). TorchRL standardises each minibatch; the
  RLlib learner standardises each module's whole training batch.
- the value clip of Eq. (37), TorchRL's `clip_value` of the PPO losses.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional

import numpy as np
from benchmarl.experiment.callback import Callback

from agents.running_stats import RunningMeanStd

STATE_KEY = "his_reward_normalization"
PPO_LOSS_ALGORITHMS = ("ippo", "mappo")  # BenchMARL algorithms whose loss is TorchRL's ClipPPOLoss


class LearnerSwitches(Callback):
    """The RLlib learner's switches on a BenchMARL experiment (see the module docstring).

    `reward_normalization` (with `reward_norm_clip`) works for every algorithm;
    `advantage_normalization` and `value_clip` (Eq. (37)'s epsilon) for the PPO losses only.
    The callback is part of the run: HISExperiment pickles it with the experiment's settings, so a
    run reloaded from a checkpoint (`Experiment.reload_from_file`) keeps the switches and the
    reward statistics it had.
    """

    part_of_run = True  # agents.benchmarl.experiment.HISExperiment pickles such callbacks

    def __init__(self, reward_normalization: bool = False, reward_norm_clip: Optional[float] = None,
                 advantage_normalization: bool = False, value_clip: Optional[float] = None,
                 group: str = "agents", eps: float = 1e-8) -> None:
        super().__init__()
        self.settings = {"reward_normalization": bool(reward_normalization),
                         "reward_norm_clip": None if reward_norm_clip is None else float(reward_norm_clip),
                         "advantage_normalization": bool(advantage_normalization),
                         "value_clip": None if value_clip is None else float(value_clip),
                         "group": group, "eps": float(eps)}
        self.stats: List[RunningMeanStd] = []

    def __getstate__(self) -> Dict[str, Any]:  # the experiment is not part of the pickle
        return {"settings": dict(self.settings), "stats": [s.get_state() for s in self.stats]}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(**state["settings"])
        self.stats = [RunningMeanStd.from_state(s) for s in state["stats"]]

    # ------------------------------------------------------------------ PPO losses
    def on_setup(self) -> None:
        for group, loss in self.experiment.losses.items():
            if (self.settings["advantage_normalization"] or self.settings["value_clip"] is not None) and not hasattr(
                    loss, "normalize_advantage"):
                raise ValueError(f"advantage normalisation and the value clip need a PPO loss; the "
                                 f"{type(loss).__name__} of group {group!r} has neither (allowed: "
                                 f"{', '.join(PPO_LOSS_ALGORITHMS)})")
            if self.settings["advantage_normalization"]:
                loss.normalize_advantage = True
                # advantages are (minibatch, N, 1): one statistic per UE's network, or one over all UEs when
                # they share one network (as RLlib standardises per module)
                shared = self.experiment.config.share_policy_params
                loss.normalize_advantage_exclude_dims = () if shared else (-2,)
                if shared:  # TorchRL warns at every step that the agent axis is pooled: here it is meant to be
                    warnings.filterwarnings("ignore", message="You requested advantage normalization and the "
                                            "advantage key has more dimensions")
            if self.settings["value_clip"] is not None:
                import torch

                loss.clip_value = torch.tensor(self.settings["value_clip"], device=self.experiment.config.train_device)

    # ------------------------------------------------------------------ rewards
    def on_batch_collected(self, batch) -> None:
        if not self.settings["reward_normalization"]:
            return
        import torch

        key = ("next", self.settings["group"], "reward")
        reward = batch.get(key)  # (..., N, 1)
        n = reward.shape[-2]
        moved = reward.detach().movedim(-2, 0)  # (N, ..., 1)
        per_agent = moved.to("cpu", torch.float64).reshape(n, -1).numpy()
        if not self.stats:
            self.stats = [RunningMeanStd() for _ in range(n)]
        # 1) merge this batch's rewards into each agent's running statistics ...
        for stats, values in zip(self.stats, per_agent):
            stats.update(values)
        # 2) ... then normalise with the updated statistics, as the RLlib learner does.
        normed = np.stack([stats.normalize(values, self.settings["eps"]) for stats, values in zip(self.stats, per_agent)])
        clip = self.settings["reward_norm_clip"]
        if clip is not None:
            normed = np.clip(normed, -clip, clip)
        normed = torch.as_tensor(normed, dtype=reward.dtype, device=reward.device).reshape(moved.shape)
        batch.set(key, normed.movedim(0, -2))

    def on_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state_dict[STATE_KEY] = [s.get_state() for s in self.stats]

    def on_load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if STATE_KEY in state_dict:
            self.stats = [RunningMeanStd.from_state(s) for s in state_dict[STATE_KEY]]

    def summary(self) -> Dict[str, float]:
        """Mean over agents of the running reward mean, std and count (for logging), as the RLlib learner's."""
        if not self.stats:
            return {}
        return {"reward_norm_mean": float(np.mean([s.mean for s in self.stats])),
                "reward_norm_std": float(np.mean([s.std for s in self.stats])),
                "reward_norm_count": float(np.mean([s.count for s in self.stats]))}
