"""Actor-critic RLModule used by all three learners (IPPO, shared PPO, MAPPO).

An actor MLP maps the UE's own observation (Eq. 31: similarity, ES SM budget, UE SMs) to the
logits of the factorised MultiDiscrete action (common steps x, ES personalised steps y); a
separate critic MLP maps either the same local observation (IPPO, shared PPO) or the
centralised state (MAPPO) to a value. For MAPPO the env adapter appends the observations of
all UEs to each UE's own (`agents.rllib.env_adapter`), and the actor reads only the first
`local_obs_dim` entries, so execution stays decentralised.

model_config keys: `hidden` (list of widths, Table II: [256, 256, 256]), `activation`
("tanh" | "relu"), `critic` ("local" | "global"), `local_obs_dim` (3).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(in_dim: int, hidden: list[int], out_dim: int, activation: str, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        lin = nn.Linear(last, width)
        nn.init.orthogonal_(lin.weight, gain=float(np.sqrt(2.0)))
        nn.init.zeros_(lin.bias)
        layers += [lin, ACTIVATIONS[activation]()]
        last = width
    head = nn.Linear(last, out_dim)
    nn.init.orthogonal_(head.weight, gain=out_gain)
    nn.init.zeros_(head.bias)
    layers.append(head)
    return nn.Sequential(*layers)


class HISActorCriticModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Separate actor and critic MLPs; MultiDiscrete factorised categorical policy."""

    def setup(self) -> None:
        cfg = dict(self.model_config or {})
        hidden = list(cfg.get("hidden", [256, 256, 256]))
        activation = cfg.get("activation", "tanh")
        if activation not in ACTIVATIONS:
            raise ValueError(f"model activation {activation!r} is not one of {sorted(ACTIVATIONS)}")
        self.critic_kind = cfg.get("critic", "local")
        self.local_obs_dim = int(cfg.get("local_obs_dim", 3))
        if not isinstance(self.action_space, gym.spaces.MultiDiscrete):
            raise ValueError(f"HISActorCriticModule needs a MultiDiscrete action space, got {self.action_space}")
        self.action_lens = [int(n) for n in self.action_space.nvec]
        obs_dim = int(np.prod(self.observation_space.shape))
        self.pi = mlp(self.local_obs_dim, hidden, sum(self.action_lens), activation, out_gain=0.01)
        if not self.inference_only:
            critic_in = obs_dim if self.critic_kind == "global" else self.local_obs_dim
            self.vf = mlp(critic_in, hidden, 1, activation, out_gain=1.0)
        self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=self.action_lens)

    def _local(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[..., : self.local_obs_dim]

    def _forward(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self._local(batch[Columns.OBS]))}

    # TorchRLModule switches eval()/train() around every forward; this module has no dropout or
    # batch norm, so the switch only costs time (~0.3 ms per call, 1,000 calls per iteration).
    def forward_inference(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        return self._forward_inference(batch, **kwargs)

    def forward_exploration(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        return self._forward_exploration(batch, **kwargs)

    def forward_train(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        if self.inference_only:
            raise RuntimeError("forward_train on an inference_only module")
        if not self.training:
            self.train()
        return self._forward_train(batch, **kwargs)

    def _forward_inference(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        with torch.no_grad():
            return self._forward(batch)

    def _forward_exploration(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        with torch.no_grad():
            return self._forward(batch)

    def _forward_train(self, batch: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        return self._forward(batch)

    def compute_values(self, batch: Dict[str, Any], embeddings: Optional[Any] = None) -> torch.Tensor:
        obs = batch[Columns.OBS]
        if self.critic_kind != "global":
            obs = self._local(obs)
        return self.vf(obs).squeeze(-1)

    def get_non_inference_attributes(self) -> list[str]:
        return ["vf"]

    def greedy_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """argmax of each action component (what evaluation with explore=False does)."""
        with torch.no_grad():
            logits = self.pi(self._local(obs))
            parts = torch.split(logits, self.action_lens, dim=-1)
            return torch.stack([p.argmax(-1) for p in parts], dim=-1)
