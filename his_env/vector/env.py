"""`HISVecEnv`: B copies of the HIS environment stepping as one TorchRL `EnvBase`, on CPU or CUDA.

    from his_env.vector import HISVecEnv
    env = HISVecEnv(num_envs=256, device="cpu", seed=0)           # the paper's Table II, N = 50
    env = HISVecEnv("configs/default.yaml", num_envs=64, num_ues=8, scheme__name="cfis",
                    reward_mode="individual", action_mode="categorical")
    td = env.reset()
    td["agents", "action"] = env.full_action_spec["agents", "action"].rand()
    td = env.step(td)

One agent group, "agents", of the N UEs; every step is one decision point of every env:

| key | shape, dtype | meaning |
|---|---|---|
| ("agents", "observation") | (B, N, 3) float32 | Eq. (31) normalised as the PettingZoo env does: phi, ES SM budget, UE SMs |
| "state" | (B, 3N) float32 | all UEs' observations, for centralised critics |
| ("agents", "action") | (B, N, 2) int64 | `multi_categorical` (default): (x, y - y_min) in {0..x_max} x {0..y_max - y_min} |
| | (B, N) int64 | `categorical`: one index over the (x_max + 1)(y_max - y_min + 1) pairs, x major |
| | (B, N, 2) float32 | `continuous`: two values in [0, 1], rounded to the nearest step |
| ("agents", "action_mask") | (B, N, K) bool | with dynamics on and discrete actions (`action_mask=True`, the default): the actions that have an effect, `action_mask` below; K = (x_max + 1)(y_max - y_min + 1) for `categorical`, x_max + 1 + y_max - y_min + 1 for `multi_categorical` (TorchRL's layouts) |
| ("agents", "reward") | (B, N, 1) float32 | the per-UE reward of `reward_mode`, a name of `his_env.reward_modes.REWARD_MODES` (default `DEFAULT_REWARD_MODE` there) |
| "done", "terminated", "truncated" | (B, 1) bool | episodes end by truncation after `episode_length` decision points |
| ("agents", "done"/"terminated"/"truncated") | (B, N, 1) bool | the same per agent |
| ("agents", "info", ...) | (B, N) `dtype` | `individual_reward` r_n (Eq. 33, whatever the reward mode), `quality` Q_n, `delay` T_n (s), `ue_energy` E_n (J, Eq. 20), `es_energy_share` (J, the UE's share of its cluster's ES energy, Eq. 33): the PettingZoo env's info names and units |
| ("info", ...) | (B,) `dtype` | `utility` U, `quality`, `delay`, `energy` (Eqs. 21-23), as in the PettingZoo env's `network_summary()` |

Actions are checked before anything is computed, as the PettingZoo env checks them: a
`ValueError` names the first offending env and agent (`env 3, ue_2`), the value and what is
allowed. The dtype (integers for `multi_categorical` and `categorical`, floating point for
`continuous`, booleans never) and the exact shape are always checked (they cost no pass over the
values); the values (in range; for `continuous`, finite and in [0, 1], never clipped) are checked
unless `validate_actions=False` (attribute `validate_actions`), which saves one min/max pass and
one host sync per step: turn it off only for trusted learners that sample from the action spec,
as out-of-range values then give meaningless results.

Actions go through the PettingZoo env's rules (IIS, projection of z >= z_min) and the same
formula code (`his_env.vector.core`). Decision-point contexts (prompts, clusters, phi) come from
a `DecisionBank` of `bank_size` contexts built by the PettingZoo env's own pipeline and cached on
disk; SMs, distances and fading are drawn afresh in torch at every step. Floats are computed in
`dtype` (float64 by default, as the PettingZoo env); observations and rewards are float32, infos
keep `dtype` (so do their specs and the BenchMARL task's info spec). Reward modes that need
counterfactual utilities (`difference`) get them from `VectorCore.evaluate_with_counterfactuals`:
O(N M) per env with EC-Diff off, N + 1 joint actions with it on.

Action masks: with dynamics on, only the UEs that start a request in the slot (its *active* UEs,
observation feature `active`) have actions with an effect; an inactive UE's action is ignored
(`system_model.active_only`). The mask marks every action of an active UE and only action 0 of
an inactive one, so that masked learners (BenchMARL's `MaskedCategorical`, Q-learning's masked
argmax) neither sample nor learn from actions that change nothing (Huang and Ontanon, "A Closer
Look at Invalid Action Masking in Policy Gradient Algorithms", 2020; SMAC's no-op for dead
agents). The env does not enforce it: any valid action of an inactive UE is accepted and ignored.
The paper's setting (dynamics off), where every action counts, has no mask. The BenchMARL task
passes it on to its algorithms only with `task.action_mask=true` (docs/dynamics.md says why).

Seeding: `set_seed(s)` (or `seed=` at construction) seeds the env's own torch generator, and
`reset(seed=s)` reseeds it before resetting, as PettingZoo's `reset(seed=s)` does; after either,
the same actions give the same rollout on one device. Seeds are None (a random one) or integers
in 0..2**64 - 1 (negative ones are refused, as TorchRL's seed chain refuses them); anything else
is a `ValueError`. `step()` before the first `reset()` (or `load_decision_context()`) is a
`RuntimeError`.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, MultiCategorical, Unbounded
from torchrl.envs import EnvBase

from his_env.config import HISConfig
from his_env.dynamics.draws import GeneratorBatch
from his_env.dynamics.slot import OBSERVATION_HIGH, OBSERVATION_LOW, SlotDynamics, merge
from his_env.environment import dynamics_generator, load_config
from his_env.reward_modes import COUNTERFACTUAL_ACTION, DEFAULT_REWARD_MODE, REWARD_MODES
from his_env.vector.bank import DEFAULT_BANK_SIZE, DecisionBank
from his_env.vector.capture import captured, copied, resolve_capture
from his_env.vector.core import Contexts, VectorCore

ACTION_MODES = ("multi_categorical", "categorical", "continuous")
_AGENT_INFO = ("individual_reward", "quality", "delay", "ue_energy", "es_energy_share")
_NETWORK_INFO = {"utility": "utility", "quality": "total_quality", "delay": "total_delay", "energy": "total_energy"}
# with dynamics on, also (of the decision point the step executed; 0 at reset)
_DYNAMICS_AGENT_INFO = ("active", "queue_length", "requests_dropped", "dynamics_penalty", "battery_j")
_DYNAMICS_NETWORK_INFO = ("es_available_sms", "es_held_sms")
# the evaluation's results a step reports (the agent and network infos), of the many it computes
_REPORTED = ("reward",) + _AGENT_INFO[1:] + tuple(_NETWORK_INFO.values())
_TEXT_FIELDS = ("cluster", "num_clusters", "similarity")


def checked_device(device) -> torch.device:
    """`device` as a torch device, refused with the devices allowed here if it is not one or is not there."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device; allowed: 'cpu', 'cuda', 'cuda:<i>'") from exc
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={device!r} is not available here (CUDA available: {torch.cuda.is_available()}, "
                         f"{torch.cuda.device_count()} GPUs); allowed: 'cpu'"
                         + (" or cuda:0..cuda:%d" % (torch.cuda.device_count() - 1) if torch.cuda.is_available() else ""))
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}; allowed: 'cpu' or a CUDA device")
    return dev


def _charged(result: dict, penalty: torch.Tensor) -> dict:
    """`result` with the dynamics' charges `penalty` (..., N) taken from each UE's reward and the utility."""
    return {**result, "reward": result["reward"] - penalty, "utility": result["utility"] - penalty.sum(-1)}


@functools.lru_cache(maxsize=None)
def _action_zero_flags(action_mode: str, nx: int, ny: int, device: torch.device) -> torch.Tensor:
    """The mask row (K,) bool of action 0 alone in the action mode's layout (TorchRL's): one flag per
    index for `categorical` (nx * ny), the flags of x then of y for `multi_categorical` (nx + ny)."""
    if action_mode == "categorical":
        return torch.arange(nx * ny, device=device) == 0
    if action_mode == "multi_categorical":
        flags = torch.zeros(nx + ny, dtype=torch.bool, device=device)
        flags[0] = flags[nx] = True
        return flags
    raise ValueError(f"action_mode={action_mode!r} has no action mask; allowed: categorical, multi_categorical")


def action_mask(active: torch.Tensor, action_mode: str, action_nvec) -> torch.Tensor:
    """The actions with an effect (..., N, K) bool of UEs that start a request (`active` (..., N) bool):
    all of an active UE's, only action 0 (x = 0, y = y_min) of an inactive one, in the layout of
    `_action_zero_flags`."""
    nx, ny = (int(v) for v in action_nvec)
    flags = _action_zero_flags(action_mode, nx, ny, active.device)
    # as bytes: torch's broadcast `|` of bool tensors runs several times slower on a CPU
    return (active.to(torch.bool)[..., None].view(torch.uint8) | flags.view(torch.uint8)).view(torch.bool)


class HISVecEnv(EnvBase):
    """The HIS environment, B copies batched in torch (see the module docstring)."""

    batch_locked = True

    def __init__(self, config: HISConfig | dict | str | Path | None = None, num_envs: int = 1, device="cpu",
                 seed: int | None = 0, reward_mode: str = DEFAULT_REWARD_MODE, action_mode: str = "multi_categorical",
                 bank_size: int | None = None, dtype: torch.dtype = torch.float64,
                 bank: DecisionBank | None = None, validate_actions: bool = True, scenario: str | None = None,
                 capture: bool | None = None, action_mask: bool = True, **config_overrides: Any):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}; allowed: an integer >= 1")
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode={reward_mode!r}; allowed: {', '.join(REWARD_MODES.names)}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode={action_mode!r}; allowed: {', '.join(ACTION_MODES)}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype={dtype!r}; allowed: torch.float32, torch.float64")
        if bank_size is not None and (isinstance(bank_size, bool) or not isinstance(bank_size, (int, np.integer))
                                      or bank_size < 1):
            raise ValueError(f"bank_size={bank_size!r}; allowed: None (default {DEFAULT_BANK_SIZE}) or an integer >= 1")
        if not isinstance(validate_actions, bool):
            raise ValueError(f"validate_actions={validate_actions!r}; allowed: True or False")
        if not isinstance(action_mask, bool):
            raise ValueError(f"action_mask={action_mask!r}; allowed: True (a mask where dynamics are on and actions "
                             f"are discrete) or False (none)")
        dev = checked_device(device)
        self.capture = resolve_capture(capture, dev)
        cfg = load_config(config, scenario, **config_overrides)
        if cfg.oracle.kind != "fitted":
            raise ValueError(f"config key 'oracle.kind' has value {cfg.oracle.kind!r}; the vectorised env allows: "
                             f"fitted (live diffusion cannot run inside a tensor step)")
        if bank is not None:
            problem = bank.problem(cfg.num_ues) if isinstance(bank, DecisionBank) else f"a {type(bank).__name__}"
            if problem is not None:
                raise ValueError(f"bank= does not fit this configuration (num_ues = {cfg.num_ues}): {problem}. "
                                 f"Pass None or a DecisionBank built for it, e.g. DecisionBank.build(config)")
        if bank is not None and cfg.dynamics.intent.enabled and bank.trajectory_length != cfg.episode_length + 1:
            raise ValueError(f"bank= holds episodes of {bank.trajectory_length} contexts; config key "
                             f"'dynamics.intent.enabled' is true, which needs episodes of episode_length + 1 = "
                             f"{cfg.episode_length + 1} contexts (intent persistence is replayed from whole "
                             f"PettingZoo episodes; DecisionBank.build(config) makes them)")
        super().__init__(device=dev, batch_size=torch.Size([int(num_envs)]))
        self.config = cfg
        self.reward_mode, self.action_mode = reward_mode, action_mode
        self.validate_actions = validate_actions
        self.bank = bank if bank is not None else DecisionBank.build(cfg, bank_size or DEFAULT_BANK_SIZE)
        self.core = VectorCore(cfg, self.bank, int(num_envs), dev, dtype)
        self.num_envs, self.num_ues = int(num_envs), cfg.num_ues
        self._generator = torch.Generator(device=dev)
        self._contexts: Contexts | None = None
        # the Markov-game dynamics (his_env.dynamics.slot); None: independent decision points
        effective_clusters = 1 if self.core.scheme.clustering == "single" else cfg.num_clusters
        self.dynamics = (SlotDynamics(cfg, effective_clusters, self.core.scheme.common_phase)
                         if cfg.dynamics.enabled_processes else None)
        self.core.dynamics = self.dynamics
        # ("agents", "action_mask") is observed: dynamics on (inactive UEs exist) and discrete actions
        self.masks_actions = action_mask and self.dynamics is not None and action_mode != "continuous"
        self._advance = captured(self._advancement, dev) if self.capture else self._advancement
        self._advance_slot = captured(self._slot_advancement, dev) if self.capture else self._slot_advancement
        self._like = torch.zeros((), dtype=dtype, device=dev)
        self._dynamics_state = self._slot = None
        self._draws = self._generator  # a GeneratorBatch while mirroring PettingZoo episodes
        self._replay: dict[str, torch.Tensor] | None = None
        self._rows = torch.zeros(self.num_envs, dtype=torch.int64, device=dev)
        self._steps = torch.zeros(self.num_envs, dtype=torch.int64, device=dev)
        self._make_specs()
        self.set_seed(seed)

    # ------------------------------------------------------------------ specs
    @property
    def capture_failed(self) -> bool:
        """Whether a part of the step set to be captured runs uncaptured because the compiler failed
        (its warning said why): same results, eager speed."""
        parts = (self._advance, self._advance_slot) if self.capture else ()
        return any(part.is_captured() is False for part in parts)

    def _make_specs(self) -> None:
        b, n, dev, cfg = self.num_envs, self.num_ues, self.device, self.config
        nx, ny = self.core.action_nvec
        es_ref, ue_ref = cfg.observation.es_sm_reference, cfg.observation.ue_sm_reference
        raw_low = np.array([-1.0, cfg.es.sm_range[0], cfg.ue.sm_range[0]])
        raw_high = np.array([1.0, cfg.es.sm_range[1], cfg.ue.sm_range[1]])
        offset, scale = np.array([0.0, es_ref[0], ue_ref[0]]), np.array([1.0, es_ref[1] - es_ref[0], ue_ref[1] - ue_ref[0]])
        if cfg.dynamics.work.enabled:  # the budget left for new phases may fall to 0
            raw_low[1] = 0.0
        low, high = (raw_low - offset) / scale, (raw_high - offset) / scale
        state_low, state_high = np.tile(low, n), np.tile(high, n)
        if self.dynamics is not None:  # the UEs' dynamics features; the state's service times and ES fraction
            low, high = np.concatenate([low, OBSERVATION_LOW]), np.concatenate([high, OBSERVATION_HIGH])
            state_low = np.concatenate([np.tile(low, n), np.zeros(n), [cfg.es.sm_range[0] / cfg.es.sm_range[1]]])
            state_high = np.concatenate([np.tile(high, n), np.full(n, np.inf), [1.0]])
        features, width = len(low), len(state_low)
        low, high = (torch.as_tensor(a.astype(np.float32), device=dev) for a in (low, high))
        state_low, state_high = (torch.as_tensor(a.astype(np.float32), device=dev) for a in (state_low, state_high))
        info_dtype = self.core.dtype
        agent_info = _AGENT_INFO + (_DYNAMICS_AGENT_INFO if self.dynamics is not None else ())
        network_info = tuple(_NETWORK_INFO) + (_DYNAMICS_NETWORK_INFO if self.dynamics is not None else ())
        mask = {}
        if self.masks_actions:
            flags = _action_zero_flags(self.action_mode, nx, ny, dev).numel()
            mask["action_mask"] = Categorical(2, shape=(b, n, flags), dtype=torch.bool, device=dev)
        self.observation_spec = Composite(
            agents=Composite(
                observation=Bounded(low.expand(b, n, features), high.expand(b, n, features), shape=(b, n, features),
                                    dtype=torch.float32, device=dev),
                **mask,
                info=Composite({k: Unbounded(shape=(b, n), dtype=info_dtype, device=dev) for k in agent_info},
                               shape=(b, n), device=dev),
                shape=(b, n), device=dev),
            state=Bounded(state_low.expand(b, width), state_high.expand(b, width), shape=(b, width),
                          dtype=torch.float32, device=dev),
            info=Composite({k: Unbounded(shape=(b,), dtype=info_dtype, device=dev) for k in network_info},
                           shape=(b,), device=dev),
            shape=(b,), device=dev)
        if self.action_mode == "multi_categorical":
            action = MultiCategorical(nvec=torch.tensor([nx, ny]), shape=(b, n, 2), dtype=torch.int64, device=dev)
            top = (nx - 1, ny - 1) if nx != ny else nx - 1
        elif self.action_mode == "categorical":
            action = Categorical(n=nx * ny, shape=(b, n), dtype=torch.int64, device=dev)
            top = nx * ny - 1
        else:
            action = Bounded(0.0, 1.0, shape=(b, n, 2), dtype=torch.float32, device=dev)
            top = 1.0
        # the largest valid value: one number for every component, or a tuple of one per component
        self._action_shape, self._action_top = tuple(action.shape), top
        self.action_spec = Composite(agents=Composite(action=action, shape=(b, n), device=dev), shape=(b,), device=dev)
        self.reward_spec = Composite(
            agents=Composite(reward=Unbounded(shape=(b, n, 1), dtype=torch.float32, device=dev), shape=(b, n),
                             device=dev), shape=(b,), device=dev)
        flag = lambda *shape: Categorical(2, shape=shape, dtype=torch.bool, device=dev)  # noqa: E731
        self.done_spec = Composite(
            done=flag(b, 1), terminated=flag(b, 1), truncated=flag(b, 1),
            agents=Composite(done=flag(b, n, 1), terminated=flag(b, n, 1), truncated=flag(b, n, 1), shape=(b, n),
                             device=dev),
            shape=(b,), device=dev)

    # ------------------------------------------------------------------ TorchRL API
    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
            # negative seeds are refused as TorchRL's seed chain (numpy's default_rng in set_seed) refuses them
            raise ValueError(f"seed={seed!r} ({type(seed).__name__}); allowed: None (a random seed) or an integer "
                             f"in 0..2**64 - 1")
        self._generator.manual_seed(int(seed))

    def _reset(self, tensordict: TensorDict | None = None, seed: int | None = None, **kwargs) -> TensorDict:
        if kwargs:
            raise TypeError(f"reset() got unexpected keyword arguments {sorted(kwargs)}; allowed: tensordict, seed")
        if seed is not None:  # EnvBase.reset passes its keyword arguments on to _reset
            self._set_seed(seed)
        self._draws, self._replay = self._generator, None  # a reset ends a mirror
        mask = None
        if tensordict is not None:
            for key in ("_reset", ("agents", "_reset")):
                value = tensordict.get(key, None)
                if value is not None:
                    value = value.reshape(self.num_envs, -1).any(-1)
                    mask = value if mask is None else mask | value
        if self.dynamics is not None:
            return self._reset_dynamics(mask)
        fresh = self.core.sample(self._generator)
        if mask is None or self._contexts is None:
            self._contexts = fresh
            self._steps.zero_()
        else:
            self._contexts = self._contexts.where(mask, fresh)
            self._steps = torch.where(mask, torch.zeros_like(self._steps), self._steps)
        return self._output(None, None, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device))

    def _step(self, tensordict: TensorDict) -> TensorDict:
        if self._contexts is None:
            raise RuntimeError("there is no decision point to step from: call reset() (or "
                               "load_decision_context()) before step()")
        action = tensordict.get(("agents", "action"))
        self._check_actions(action)
        actions = self.decode_actions(action)
        self._steps += 1
        truncated = self._steps >= self.config.episode_length
        if self.dynamics is None:  # the next decision point is independent, observed at truncation too
            drawn = self.core.sample_draws(self._generator)
            result, reward, self._contexts, observation = self._advance(self._contexts, actions, drawn)
            return self._output(result, reward, truncated, observation=observation)
        executed = self._slot, self._dynamics_state
        self._next_rows()  # the draws in the order of every env: the bank's rows, then the slot's
        drawn = self.dynamics.draws(self._draws, (self.num_envs,), False, self.core.dtype)
        text, rows = self._text_and_rows()
        result, reward, self._dynamics_state, self._slot, self._contexts, observation = self._advance_slot(
            self._contexts, actions, self._dynamics_state, self._slot, drawn, rows, text)
        return self._output(result, reward, truncated, executed, observation)

    def _output(self, result, reward, truncated, executed=None, observation=None) -> TensorDict:
        """The step's (or reset's, `result` None) TensorDict; `observation`: the current decision
        points' observation where the step computed it already."""
        b, n, dev = self.num_envs, self.num_ues, self.device
        obs = self.core.observation(self._contexts) if observation is None else observation
        false = torch.zeros((b, 1), dtype=torch.bool, device=dev)
        trunc = truncated[:, None]
        dynamic = self.dynamics is not None
        if result is None:
            agent_keys = _AGENT_INFO + (_DYNAMICS_AGENT_INFO if dynamic else ())
            network_keys = tuple(_NETWORK_INFO) + (_DYNAMICS_NETWORK_INFO if dynamic else ())
            agent_info = {k: torch.zeros((b, n), dtype=self.core.dtype, device=dev) for k in agent_keys}
            network_info = {k: torch.zeros((b,), dtype=self.core.dtype, device=dev) for k in network_keys}
        else:
            agent_info = {"individual_reward": result["reward"], **{k: result[k] for k in _AGENT_INFO[1:]}}
            network_info = {k: result[v] for k, v in _NETWORK_INFO.items()}
            if executed is not None:
                slot, state = executed
                agent_info.update(self._dynamics_agent_info(slot, state, result["dynamics_penalty"]))
                network_info.update(es_available_sms=slot.es_available.to(self.core.dtype),
                                    es_held_sms=slot.es_held.to(self.core.dtype))
        agents = {"observation": obs, "info": TensorDict(agent_info, batch_size=(b, n), device=dev),
                  "done": trunc[:, :, None].expand(b, n, 1), "terminated": false[:, :, None].expand(b, n, 1),
                  "truncated": trunc[:, :, None].expand(b, n, 1)}
        if reward is not None:
            agents["reward"] = reward.to(torch.float32)[..., None]
        if self.masks_actions:
            agents["action_mask"] = action_mask(self._slot.active, self.action_mode, self.core.action_nvec)
        state = obs.reshape(b, -1)
        if dynamic:
            extra = self.dynamics.state_features(self._dynamics_state, self._slot)
            state = torch.cat([state, extra.to(torch.float32)], dim=-1)
        return TensorDict({
            "agents": TensorDict(agents, batch_size=(b, n), device=dev),
            "state": state,
            "info": TensorDict(network_info, batch_size=(b,), device=dev),
            "done": trunc, "terminated": false, "truncated": trunc,
        }, batch_size=(b,), device=dev)

    def _advancement(self, ctx: Contexts, actions: torch.Tensor, drawn: tuple):
        """Dynamics off: the results of integer actions (B, N, 2) at decision points `ctx` that the
        step reports (`_REPORTED`), the reward mode's rewards in float32, the next decision points from
        their draws `drawn` (`VectorCore.sample_draws`) and their observation. Tensors in and out, no
        random draws: the part of a dynamics-off step that `capture` compiles, as one graph."""
        result, reward = self._evaluation(ctx, actions, None)
        following = self.core.contexts_of(drawn)
        return ({key: result[key] for key in _REPORTED}, reward.to(torch.float32), following,
                self.core.observation(following))

    def _slot_advancement(self, ctx: Contexts, actions: torch.Tensor, state, slot, drawn: dict, rows: torch.Tensor,
                          text: tuple | None):
        """Dynamics on: the results of integer actions (B, N, 2) in the current slot (`ctx`, `state`,
        `slot`) that the step reports, with the charges of its waiting and dropped requests, the reward
        mode's rewards in float32, the state after the slot, the next slot from its draws `drawn`
        (`SlotDynamics.draws`), its decision points (the text side of bank `rows`, or `text` where
        given) and their observation. Tensors in and out, no random draws: the part of a dynamics
        step that `capture` compiles, as one graph."""
        penalty = self.dynamics.penalty(slot)  # the requests' waiting and drops (not the actions')
        result, reward = self._evaluation(ctx, actions, penalty)
        state, slot, features = self._transition(state, slot, result, drawn)
        following = self.core.dynamics_contexts(text, rows, slot, features)
        return ({key: result[key] for key in _REPORTED + ("dynamics_penalty",)}, reward.to(torch.float32), state,
                slot, following, self.core.observation(following))

    def _evaluation(self, ctx: Contexts, actions: torch.Tensor, penalty: torch.Tensor | None):
        """The results of integer actions (B, N, 2) at decision points `ctx`, the dynamics' charges
        `penalty` (B, N) subtracted (None: dynamics off), and the reward mode's rewards (B, N). Tensors
        in and out, no random draws (captured within `_advancement` and `_slot_advancement`)."""
        mode = REWARD_MODES[self.reward_mode]
        if mode.needs_counterfactuals:
            result, without = self.core.evaluate_with_counterfactuals(ctx, actions, COUNTERFACTUAL_ACTION)
        else:
            result, without = self.core.evaluate(ctx, actions), None
        if penalty is not None:
            result = _charged(result, penalty)
            result["dynamics_penalty"] = penalty
            if without is not None:
                without = without - penalty.sum(-1)[:, None]
        return result, mode.rewards(result["reward"], result["utility"], without, penalty)

    def rand_action(self, tensordict: TensorDict | None = None) -> TensorDict:
        """Uniformly random actions from the action spec, written into `tensordict` (as TorchRL's
        `EnvBase.rand_action`; `rollout` without a policy uses it). `multi_categorical` actions are
        drawn here, one `randint` per component from the global torch generator as the spec draws
        them: TorchRL's `MultiCategorical.rand` samples element by element in Python (~250 ms at
        B = 1,024, N = 50, ten times the step)."""
        if self.action_mode != "multi_categorical":
            return super().rand_action(tensordict)
        b, n, dev = self.num_envs, self.num_ues, self.device
        action = torch.stack([torch.randint(0, int(top), (b, n), device=dev) for top in self.core.action_nvec], -1)
        drawn = TensorDict({"agents": TensorDict({"action": action}, batch_size=(b, n), device=dev)},
                           batch_size=(b,), device=dev)
        if tensordict is None:
            return drawn
        return tensordict.update(drawn)

    # ------------------------------------------------------------------ action checks
    def _allowed_actions(self) -> str:
        nx, ny = self.core.action_nvec
        if self.action_mode == "categorical":
            return f"an index in 0..{nx * ny - 1} over the (x, y - y_min) pairs, x major ({nx} x {ny})"
        if self.action_mode == "continuous":
            return (f"a[0], a[1] finite and in [0, 1] (scaled to 0..{nx - 1} common steps, "
                    f"0..{ny - 1} ES personalised steps - y_min)")
        return f"a[0] (common steps) in 0..{nx - 1}, a[1] (ES personalised steps - y_min) in 0..{ny - 1}"

    def _check_actions(self, action: Any) -> None:
        """Refuse actions of the wrong type, dtype or shape and, with `validate_actions`, values out of range.

        The happy path costs one min/max reduction and one host sync; the offender is looked up
        only on failure."""
        shape, continuous = self._action_shape, self.action_mode == "continuous"
        if not isinstance(action, torch.Tensor):
            raise ValueError(f"actions ('agents', 'action') are a {type(action).__name__}; allowed: a tensor of "
                             f"shape {shape}, {self._allowed_actions()}")
        if tuple(action.shape[:2]) != shape[:2]:
            raise ValueError(f"actions ('agents', 'action') have shape {tuple(action.shape)}; allowed: shape {shape} "
                             f"(num_envs = {shape[0]} x num_ues = {shape[1]}), {self._allowed_actions()}")
        if tuple(action.shape) != shape:
            raise ValueError(f"action of {self._agent(0)} is {action[0, 0].tolist()} of shape "
                             f"{tuple(action.shape[2:])} (actions of shape {tuple(action.shape)}); allowed: shape "
                             f"{shape[2:]} per agent, {self._allowed_actions()}")
        dtype = action.dtype
        if dtype == torch.bool:
            raise ValueError(f"action of {self._agent(0)} is {action[0, 0].tolist()!r}, which holds booleans; "
                             f"allowed: {'floating point' if continuous else 'integers (not booleans)'}, "
                             f"{self._allowed_actions()}")
        if dtype.is_complex or dtype.is_floating_point != continuous:
            raise ValueError(f"action of {self._agent(0)} is {action[0, 0].tolist()!r} with dtype {dtype}; allowed: "
                             f"{'floating point' if continuous else 'integers'}, {self._allowed_actions()}")
        if not self.validate_actions:
            return
        top = self._action_top
        flat = action.reshape(shape[0] * shape[1], -1)  # a row per agent
        if dtype in (torch.uint16, torch.uint32, torch.uint64):  # no min/max kernels for these
            flat = flat.to(torch.int64)
        # one global min/max where every component has the same bound (several times faster than per column)
        tops = top if isinstance(top, tuple) else (top,)
        low, high = torch.aminmax(flat, dim=0) if isinstance(top, tuple) else torch.aminmax(flat)
        lows, highs = torch.stack((low, high)).reshape(2, -1).tolist()
        if not all(lo >= 0 and hi <= t for lo, hi, t in zip(lows, highs, tops)):  # written so that NaN fails
            top = torch.tensor(tops, device=flat.device)
            bad = ~((flat >= 0) & (flat <= top)).all(dim=-1)
            first = int(bad.nonzero()[0, 0])
            value = action.reshape(-1, *shape[2:])[first].tolist()
            raise ValueError(f"action of {self._agent(first)} is {value}; allowed: {self._allowed_actions()}")

    def _agent(self, flat_index: int) -> str:
        """'env b, ue_n' of the agent at `flat_index` of the (B x N) agents, env major."""
        env, ue = divmod(flat_index, self.num_ues)
        return f"env {env}, ue_{ue}"

    # ------------------------------------------------------------------ helpers
    def decode_actions(self, action: torch.Tensor) -> torch.Tensor:
        """Integer (x, y - y_min) actions (B, N, 2) from the action mode's encoding."""
        nx, ny = self.core.action_nvec
        if self.action_mode == "multi_categorical":
            return action.to(torch.int64)
        if self.action_mode == "categorical":
            action = action.to(torch.int64)
            return torch.stack([action // ny, action % ny], dim=-1)
        top = torch.tensor([nx - 1, ny - 1], dtype=action.dtype, device=action.device)
        return torch.round(action.clamp(0.0, 1.0) * top).to(torch.int64)

    def load_decision_context(self, context: dict[str, Any]) -> TensorDict:
        """Make `context` (the layout of `his_env.vector.bank.decision_context`, resources included;
        one context for all envs or (B, ...) each) the current decision point; returns its observation.
        Dynamics off only: with dynamics the decision point follows from the state (see `mirror`)."""
        if self.dynamics is not None:
            raise ValueError(f"load_decision_context sets an independent decision point, but dynamics processes "
                             f"{list(self.config.dynamics.enabled_processes)} are on (their state decides the next "
                             f"point); allowed: dynamics off, or mirror(episodes, seeds) to replay PettingZoo episodes")
        self._contexts = self.core.contexts_from(context)
        return self._output(None, None, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device))

    # ------------------------------------------------------------------ dynamics
    def _reset_dynamics(self, mask) -> TensorDict:
        fresh_state = self.dynamics.initial(self._draws, (self.num_envs,), like=self._like, dtype=self.core.dtype)
        fresh_state, fresh_slot = self.dynamics.advance(fresh_state, self._draws, True, self.core.dtype)
        fresh_rows = self._start_rows()
        if mask is None or self._dynamics_state is None:
            self._dynamics_state, self._slot, self._rows = fresh_state, fresh_slot, fresh_rows
            self._steps.zero_()
        else:
            self._dynamics_state = merge(mask, fresh_state, self._dynamics_state)
            self._slot = merge(mask, fresh_slot, self._slot)
            self._rows = torch.where(mask, fresh_rows, self._rows)
            self._steps = torch.where(mask, torch.zeros_like(self._steps), self._steps)
        self._enter_slot()
        return self._output(None, None, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device))

    def _start_rows(self) -> torch.Tensor:
        """Bank rows of fresh decision points: any row, or an episode's first one (trajectory banks)."""
        length = self.bank.trajectory_length
        episode = torch.randint(len(self.bank) // length, (self.num_envs,), generator=self._generator,
                                device=self.device)
        return episode * length

    def _next_rows(self) -> None:
        """The bank rows of the next decision points: the episode's next (or any row, for banks of
        independent rows); past an episode's end (stepping on without a reset), a new episode."""
        length = self.bank.trajectory_length
        if length == 1:
            self._rows = torch.randint(len(self.bank), (self.num_envs,), generator=self._generator, device=self.device)
        else:
            following = self._rows + 1
            self._rows = torch.where(following % length == 0, self._start_rows(), following)

    def _transition(self, state, slot, result: dict, drawn: dict):
        """From the slot just executed (its `result`) and the next slot's draws: the state after it
        (busy clocks, ES jobs, batteries), the next slot and the UEs' dynamics features. No random
        draws (captured within `_slot_advancement`)."""
        state, _ = self.dynamics.settle(state, slot, result)
        state, slot = self.dynamics.evolve(state, drawn, False)
        return state, slot, self.dynamics.observation_features(state, slot)

    def _enter_slot(self) -> None:
        """The decision points of the slot that a reset or mirror starts. With capture, the state's,
        slot's and contexts' tensors are then copied each to its own memory: fields that share a tensor
        here (the contexts' and the slot's) are separate after a captured step, so the compiled step
        serves both without compiling again."""
        text, rows = self._text_and_rows()
        observation = self.dynamics.observation_features(self._dynamics_state, self._slot)
        self._contexts = self.core.dynamics_contexts(text, rows, self._slot, observation)
        if self.capture:
            self._dynamics_state, self._slot, self._contexts = copied((self._dynamics_state, self._slot,
                                                                       self._contexts))

    def _text_and_rows(self) -> tuple:
        """The text side of the current slot's decision points and the bank rows it comes from:
        (None, rows) from the bank (`VectorCore.dynamics_contexts` gathers it), or the mirrored
        PettingZoo episodes' (cluster, num_clusters, similarity) and rows -1."""
        if self._replay is None:
            return None, self._rows
        t = int(self._steps.max())
        available = self._replay["cluster"].shape[1]
        if t >= available:
            raise RuntimeError(f"the mirrored episodes hold {available} decision points; step {t} needs more "
                               f"(call reset() to leave the mirror)")
        text = tuple(self._replay[k][:, t] for k in _TEXT_FIELDS)
        return text, torch.full((self.num_envs,), -1, dtype=torch.int64, device=self.device)

    def _dynamics_agent_info(self, slot, state, penalty) -> dict[str, torch.Tensor]:
        dtype = self.core.dtype

        def zeros():  # a process that is off
            return torch.zeros((self.num_envs, self.num_ues), dtype=dtype, device=self.device)

        return {"active": slot.active.to(dtype),
                "queue_length": zeros() if state.queues is None else state.queues.length.to(dtype),
                "requests_dropped": slot.dropped.to(dtype), "dynamics_penalty": penalty.to(dtype),
                "battery_j": zeros() if state.battery_j is None else state.battery_j.to(dtype)}

    def mirror(self, episodes: dict[str, Any], seeds) -> TensorDict:
        """Replay B PettingZoo episodes number for number: env b takes the text side of each slot from
        `episodes` (`cluster` (B, T, N), `num_clusters` (B, T), `similarity` (B, T, N), as
        `HISParallelEnv.decision_context()` gives them at reset and after each step) and draws its
        dynamics from the generator `HISParallelEnv.reset(seed=seeds[b])` starts
        (`his_env.environment.dynamics_generator`), in the same order. With the same actions, the
        observations, rewards, states and books equal the PettingZoo env's (float64). Returns the
        reset's output; `reset()` ends the mirror. Dynamics on only (with them off, the resources
        are drawn by torch: use `load_decision_context`)."""
        if self.dynamics is None:
            raise ValueError("mirror() replays the dynamics' draws, and every dynamics process is off; allowed: a "
                             "config with a dynamics process on (for independent decision points use "
                             "load_decision_context)")
        seeds = [int(s) for s in seeds]
        if len(seeds) != self.num_envs:
            raise ValueError(f"mirror() got {len(seeds)} seeds; allowed: one per env ({self.num_envs})")
        replay = {}
        for key in _TEXT_FIELDS:
            value = torch.as_tensor(np.asarray(episodes[key]), device=self.device)
            want = (self.num_envs, None, self.num_ues) if key != "num_clusters" else (self.num_envs, None)
            if value.dim() != len(want) or value.shape[0] != self.num_envs or (
                    len(want) == 3 and value.shape[2] != self.num_ues):
                raise ValueError(f"episodes[{key!r}] of shape {tuple(value.shape)}; allowed: "
                                 f"({self.num_envs}, T{', ' + str(self.num_ues) if len(want) == 3 else ''})")
            replay[key] = value.to(self.core.dtype if key == "similarity" else torch.int64)
        if int(replay["num_clusters"].max()) > self.core.max_clusters:
            raise ValueError(f"episodes with {int(replay['num_clusters'].max())} clusters; allowed: at most "
                             f"{self.core.max_clusters}")
        self._replay = replay
        self._draws = GeneratorBatch([dynamics_generator(seed) for seed in seeds], device=self.device)
        self._dynamics_state = None
        self._steps.zero_()
        self._dynamics_state = self.dynamics.initial(self._draws, (self.num_envs,), like=self._like,
                                                     dtype=self.core.dtype)
        self._dynamics_state, self._slot = self.dynamics.advance(self._dynamics_state, self._draws, True,
                                                                 self.core.dtype)
        self._enter_slot()
        return self._output(None, None, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device))

    def dynamics_books(self) -> dict[str, torch.Tensor]:
        """Cumulative books per env and UE (B, N) since reset, as `HISParallelEnv.dynamics_books()`."""
        if self.dynamics is None:
            return {}
        if self._dynamics_state is None:
            raise RuntimeError("call reset() before dynamics_books()")
        return {key: value.clone() for key, value in self.dynamics.books(self._dynamics_state).items()}

    def evaluate(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Results of integer actions (B, N, 2) (or candidates (B, K, N, 2)) at the current decision
        points, without stepping: per-UE "reward" (Eq. 33), "quality", "delay", "energy", ...,
        network "utility", "total_quality", "total_delay", "total_energy"."""
        if self._contexts is None:
            raise RuntimeError("call reset() or load_decision_context() before evaluate()")
        result = self.core.evaluate(self._contexts, actions.to(self.device))
        if self.dynamics is not None:  # the same charges as `step` (they do not depend on the actions)
            penalty = self.dynamics.penalty(self._slot)
            result = _charged(result, penalty[:, None] if actions.dim() == 4 else penalty)
        return result
