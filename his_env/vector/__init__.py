"""The fast path: the HIS environment batched over B copies in torch (CPU or CUDA).

`HISVecEnv` is a TorchRL `EnvBase` (env.py); `VectorCore` the batched step over the shared
formula code (core.py); `DecisionBank` the pre-computed decision-point contexts (bank.py).
`REWARD_MODES` is `his_env.reward_modes.REWARD_MODES`, re-exported: its names are the allowed
values of `HISVecEnv(reward_mode=...)`. Importing this package needs torch, tensordict and torchrl.
"""
from his_env.reward_modes import REWARD_MODES
from his_env.vector.bank import DEFAULT_BANK_SIZE, DecisionBank, decision_context
from his_env.vector.core import Contexts, VectorCore
from his_env.vector.env import ACTION_MODES, HISVecEnv, action_mask

__all__ = ["ACTION_MODES", "Contexts", "DEFAULT_BANK_SIZE", "DecisionBank", "HISVecEnv", "REWARD_MODES",
           "VectorCore", "action_mask", "decision_context"]
