"""The MIRA learner: RLlib's PPO Learner with the paper's loss and switches (Sec. VI-B).

What differs from RLlib's stock `PPOTorchLearner`:

- **Advantages** come from `HISAdvantageEstimation`, a drop-in for RLlib's
  `GeneralAdvantageEstimation` connector. It computes the same GAE (bootstrapping with
  V(s_T) at time-limit truncation, zero at termination) but (a) standardises advantages
  only when `advantage_normalization` is on, and only over the real timesteps (RLlib
  always standardises, and includes the artificial bootstrap rows in the mean and std);
  (b) keeps the value predictions made before the update (`Columns.VF_PREDS`) that the
  clipped value loss needs.
- **Value loss** is Eq. (37): `max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)`.
  RLlib's `vf_clip_param` instead clamps the squared error itself at `vf_clip_param`, which
  silences the critic's gradient whenever the error exceeds sqrt(0.2); that is not the
  paper's (nor PPO2's) value clipping.
- **Policy loss** is Eq. (34) with the clip `epsilon` (`clip_param`), or the unclipped
  importance-weighted surrogate when `policy_clip` is off ("vanilla" ablation), plus the
  entropy bonus of Eqs. (35)-(36) with coefficient eta (`entropy_coeff`).
- **Reward normalisation** (`agents.rllib.normalization.RewardNormalizer`) is the first piece of
  the Learner connector pipeline; its running statistics are part of the Learner state and
  therefore of every checkpoint.

Switches are read from `config.learner_config_dict` (`agents.config.LEARNER_SWITCHES`):
`reward_normalization`, `advantage_normalization`, `policy_clip` (bool), `value_clip`
(float or None), `reward_norm_clip` (float or None); a switch left out takes the
`AlgorithmConfig` default.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch

from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
)
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.common.numpy_to_tensor import NumpyToTensor
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets
from ray.rllib.utils.torch_utils import explained_variance

from agents.config import AlgorithmConfig
from agents.rllib.normalization import RewardNormalizer

REWARD_NORMALIZER_STATE_KEY = "his_reward_normalizer"
CLIP_FRACTION_KEY = "clip_fraction"

# The algorithm config's defaults, for a learner_config_dict that leaves a switch out.
DEFAULT_SWITCHES = AlgorithmConfig().learner_switches()


def standardize(advantages: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-8) -> np.ndarray:
    """(A - mean) / std over the rows where `mask` is True; masked rows are set to 0."""
    adv = np.asarray(advantages, dtype=np.float64)
    valid = adv if mask is None else adv[mask]
    if valid.size == 0:
        return adv.astype(np.float32)
    out = (adv - valid.mean()) / max(valid.std(), eps)
    if mask is not None:
        out = np.where(mask, out, 0.0)
    return out.astype(np.float32)


class HISAdvantageEstimation(ConnectorV2):
    """GAE with an advantage-normalisation switch; keeps old value predictions.

    Replaces `GeneralAdvantageEstimation` as the last piece of the PPO Learner pipeline.
    Adds `Postprocessing.ADVANTAGES`, `Postprocessing.VALUE_TARGETS` and `Columns.VF_PREDS`
    to every module's batch.
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *,
                 gamma: float, lambda_: float, standardize_advantages: bool = True, **kwargs) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma = float(gamma)
        self.lambda_ = float(lambda_)
        self.standardize_advantages = bool(standardize_advantages)
        self._numpy_to_tensor = None

    def __call__(self, *, rl_module, episodes, batch: Dict[str, Any], **kwargs):
        sa_episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        vf_preds = rl_module.foreach_module(
            func=lambda mid, module: (
                module.compute_values(batch[mid]) if mid in batch and isinstance(module, ValueFunctionAPI) else None
            ),
            return_dict=True,
        )
        device = None
        results: Dict[str, Dict[str, np.ndarray]] = {}
        for mid, values in vf_preds.items():
            if values is None:
                continue
            if rl_module[mid].is_stateful():
                raise ValueError(f"module {mid!r} is stateful (recurrent); HISAdvantageEstimation computes GAE for "
                                 "stateless modules only, such as the MLP modules agents.rllib builds")
            device = values.device
            values = convert_to_numpy(values).astype(np.float64)
            module_batch = batch[mid]
            rewards = convert_to_numpy(module_batch[Columns.REWARDS]).astype(np.float64)
            targets = compute_value_targets(
                values=values,
                rewards=rewards,
                terminateds=convert_to_numpy(module_batch[Columns.TERMINATEDS]).astype(np.float64),
                truncateds=convert_to_numpy(module_batch[Columns.TRUNCATEDS]).astype(np.float64),
                gamma=self.gamma,
                lambda_=self.lambda_,
            )
            # Episodes already carry the artificial bootstrap timestep (AddOneTsToEpisodesAndTruncate).
            n_rows = sum(len(e) for e in sa_episodes if e.module_id in (None, mid))
            assert targets.shape[0] == n_rows == values.shape[0], (targets.shape, n_rows, values.shape)
            advantages = targets - values
            mask = module_batch.get(Columns.LOSS_MASK)
            mask = None if mask is None else convert_to_numpy(mask).astype(bool)
            if self.standardize_advantages:
                advantages = standardize(advantages, mask)
            results[mid] = {
                Postprocessing.ADVANTAGES: advantages.astype(np.float32),
                Postprocessing.VALUE_TARGETS: targets.astype(np.float32),
                Columns.VF_PREDS: values.astype(np.float32),
            }
        if not results:
            return batch
        if self._numpy_to_tensor is None:
            self._numpy_to_tensor = NumpyToTensor(as_learner_connector=True, device=device)
        tensors = self._numpy_to_tensor(rl_module=rl_module, batch=results, episodes=episodes)
        for mid, cols in tensors.items():
            batch[mid].update(cols)
        return batch


class HISPPOTorchLearner(PPOTorchLearner):
    """PPO Learner with the paper's losses, normalisation switches and saved reward statistics."""

    def build(self) -> None:
        super().build()
        sw = self.switches
        self._reward_normalizer = None
        if self._learner_connector is not None and self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.remove(GeneralAdvantageEstimation)
            self._learner_connector.append(HISAdvantageEstimation(
                gamma=self.config.gamma, lambda_=self.config.lambda_,
                standardize_advantages=sw["advantage_normalization"]))
            if sw["reward_normalization"]:
                # First of all pieces: before the artificial bootstrap timestep is appended.
                self._reward_normalizer = RewardNormalizer(clip=sw["reward_norm_clip"])
                self._learner_connector.prepend(self._reward_normalizer)

    @property
    def switches(self) -> Dict[str, Any]:
        out = dict(DEFAULT_SWITCHES)
        out.update({k: v for k, v in (self.config.learner_config_dict or {}).items() if k in DEFAULT_SWITCHES})
        return out

    @property
    def reward_normalizer(self) -> RewardNormalizer | None:
        return self._reward_normalizer

    # ------------------------------------------------------------------ loss
    def compute_loss_for_module(self, *, module_id, config, batch: Dict[str, Any], fwd_out: Dict[str, Any]):
        module = self.module[module_id].unwrapped()
        sw = self.switches
        if Columns.LOSS_MASK in batch:
            # The mask drops the artificial bootstrap rows; weights avoid boolean-index copies.
            weights = batch[Columns.LOSS_MASK].to(torch.float32)
            num_valid = torch.clamp(weights.sum(), min=1.0)

            def masked_mean(x):
                return torch.sum(x * weights) / num_valid
        else:
            masked_mean = torch.mean

        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(batch[Columns.ACTIONS])
        log_ratio = logp - batch[Columns.ACTION_LOGP]
        ratio = torch.exp(log_ratio)
        adv = batch[Postprocessing.ADVANTAGES]

        # Eq. (34): clipped surrogate ("trun" = clip to [1 - eps, 1 + eps]).
        if sw["policy_clip"]:
            surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param))
        else:
            surrogate = adv * ratio
        # Eq. (35): entropy bonus.
        entropy = dist.entropy()

        # Eq. (37): clipped value loss around the pre-update prediction V_old.
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        targets = batch[Postprocessing.VALUE_TARGETS]
        vf_unclipped = torch.pow(values - targets, 2.0)
        if sw["value_clip"] is not None:
            old_values = batch[Columns.VF_PREDS]
            clipped_values = old_values + torch.clamp(values - old_values, -sw["value_clip"], sw["value_clip"])
            vf_loss = torch.max(vf_unclipped, torch.pow(clipped_values - targets, 2.0))
        else:
            vf_loss = vf_unclipped

        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        # Eq. (36) for the actor plus Eq. (37) for the critic; actor and critic have disjoint
        # parameters, so one optimiser over the sum updates each by its own loss.
        total_loss = masked_mean(-surrogate + config.vf_loss_coeff * vf_loss - entropy_coeff * entropy)

        with torch.no_grad():
            clip_fraction = masked_mean((torch.abs(ratio - 1.0) > config.clip_param).float())
            approx_kl = masked_mean((ratio - 1.0) - log_ratio)
            valid = batch[Columns.LOSS_MASK] if Columns.LOSS_MASK in batch else slice(None)
            expl_var = explained_variance(targets[valid], values[valid])
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: -masked_mean(surrogate),
                VF_LOSS_KEY: masked_mean(vf_loss),
                LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: masked_mean(vf_unclipped),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: expl_var,
                ENTROPY_KEY: masked_mean(entropy),
                LEARNER_RESULTS_KL_KEY: approx_kl,
                CLIP_FRACTION_KEY: clip_fraction,
            },
            key=module_id,
            window=1,
        )
        return total_loss

    # ------------------------------------------------------------------ speed
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        # Table II: Adam. `foreach=True` steps all of a module's tensors in one call (the
        # per-tensor default costs ~1 ms per module per step on CPU).
        params = self.get_parameters(self._module[module_id])
        self.register_optimizer(module_id=module_id, optimizer=torch.optim.Adam(params, foreach=True),
                                params=params, lr_or_lr_schedule=config.lr)

    def postprocess_gradients(self, gradients_dict):
        gradients_dict = super().postprocess_gradients(gradients_dict)
        # One fused finiteness check instead of RLlib's per-tensor `isfinite(g).all()`
        # (1,600 tensors for 50 modules; disabled through `torch_skip_nan_gradients`).
        grads = [g for g in gradients_dict.values() if g is not None]
        if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            gradients_dict = {k: (None if g is None else torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
                              for k, g in gradients_dict.items()}
            self.metrics.log_value(("his", "nonfinite_gradient_steps"), 1, reduce="sum")
        return gradients_dict

    # ------------------------------------------------------------------ state
    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._reward_normalizer is not None:
            state[REWARD_NORMALIZER_STATE_KEY] = self._reward_normalizer.get_state()
        return state

    def set_state(self, state) -> None:
        super().set_state(state)
        if self._reward_normalizer is not None and REWARD_NORMALIZER_STATE_KEY in state:
            self._reward_normalizer.set_state(state[REWARD_NORMALIZER_STATE_KEY])

    def after_gradient_based_update(self, *, timesteps: Dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        if self._reward_normalizer is not None:
            for key, value in self._reward_normalizer.summary().items():
                self.metrics.log_value(("his", key), value, window=1)
