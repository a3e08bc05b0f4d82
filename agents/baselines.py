"""Heuristic and search policies to measure the learners against.

Every policy has `reset(env, seed)` and `act(observations, env) -> {agent: action}` where
`env` is the HIS PettingZoo ParallelEnv and actions are MultiDiscrete index pairs
(common-steps index, ES-personalised-steps index), as the env's action space defines them.

- `RandomPolicy`: uniform over each UE's action space (the score's zero point).
- `FixedSplitPolicy`: every UE takes the same (x, y) at every decision point; the default
  (x = 0, y = the middle of [y_min, y_max]) is the IIS-like split "no common phase"; `es-only`
  (x_max, y_max: everything the ES can take) and `ue-only` (0, y_min: everything the UE can take)
  are the practitioner's two extremes.
- `SearchPolicy`: a model-based reference that knows the reward model. At each decision
  point it starts from the best joint action in which all UEs take the same (x, y), then
  runs coordinate descent over the UEs: for UE n it scores all of UE n's candidate actions
  with the other UEs' actions fixed, in one vectorised call of
  `env.unwrapped.evaluate_joint_actions` (B = |A| candidate joint actions), keeps the best,
  and moves on; sweeps stop when a sweep improves the network utility U by less than `tol`.
  U never decreases, so this ends at a joint action no single UE can improve on
  (a coordinate-wise optimum of the myopic utility, which in the paper's setting is also the
  episode's: the next decision point's state does not depend on the actions). With the
  Markov-game dynamics (`his_env.dynamics`) it is myopic: blind to what its choice leaves in the
  queues, the ES's held SMs and the batteries for later slots. `device=` (a torch device; dynamics
  off) scores the candidates with the vector env's torch code there (`agents.vector_search`): the
  same sweeps and actions, fast enough on a GPU for N = 1,000.
- `backlog-search:ALPHA` (`SearchPolicy(backlog_weight=ALPHA)`): the same coordinate descent on a
  one-step lookahead of the request queues. While an active UE serves its request (T_n, Eq. 19,
  with `work` on) the q_n requests behind it wait, each charged w_T per second of waiting, so it
  maximises U - ALPHA w_T sum_n q_n T_n over the active UEs (`decision_context()["queue_length"]`,
  `evaluate_joint_actions()["ue_delay"]`). ALPHA = 1 is the first-order waiting cost; larger
  values also stand for what that wait compounds into (later arrivals behind them, deadline
  drops). The default, 4, is the smallest of 1, 2, 4, 8, 16 within 0.04 of the best score on both
  seq-small-heavy (6 episodes) and seq-medium-heavy (4 episodes) on calibration seeds 70000.., which
  evaluation never uses (1.03 against 1.06 at 16; 1.36 against 1.40 at 8). It needs the dynamics'
  request queues. It shows what a policy that looks past the slot gains over the myopic search: a
  reference above 1.
- `OpenLoopPolicy` (`open-loop`): sees only the slot index t. Its schedule (one (x, y) per slot,
  the same for every UE) is fitted once on calibration episodes that evaluation never uses, as
  the better, by the mean utility on as many validation episodes (seeds 71000..), of two: slot by
  slot the shared action with the best mean utility of that slot (myopic), and the best constant
  action (every shared action held for whole episodes, `best_constant_action`). With the dynamics
  the second often wins: on `seq-medium-heavy` every UE at (x_max, y_min) keeps the ES
  uncongested and beats the myopic search. It measures what a policy gains without observing the
  state.
- `QueueAwarePolicy` (`queue-aware:F`): a practitioner's threshold rule for the dynamics'
  request queues: a UE with a backlog (its queue holds at least a fraction F of its capacity,
  default 0.25, or its head-of-line request has used half its deadline) hands the ES all it can
  (x_max, y_max) to finish sooner, if the ES reports less than half its SMs held by running
  phases; otherwise it takes the middle split (`iis-fixed`'s: no common steps, the middle y).
  Of the variants tried on seq-small-heavy and seq-medium-heavy (offload on a backlog whatever
  the ES's load; move steps to the UE on a backlog; common steps only), this one scored best.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from his_common.registry import Registry


def action_grid(action_space) -> np.ndarray:
    """All MultiDiscrete actions as an (|A|, 2) int array of indices."""
    nvec = np.asarray(action_space.nvec)
    start = np.asarray(getattr(action_space, "start", np.zeros_like(nvec)))
    grids = np.meshgrid(*[np.arange(s, s + n) for s, n in zip(start, nvec)], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=-1).astype(np.int64)


class Policy(ABC):
    name = "policy"

    def check_config(self, config) -> None:
        """ValueError (naming the key and what is allowed) if this policy cannot act on envs of this
        `HISConfig`; callers check before any episode runs."""

    def reset(self, env, seed: Optional[int] = None) -> None:  # noqa: D401 - protocol
        pass

    @abstractmethod
    def act(self, observations: Mapping[str, np.ndarray], env) -> Dict[str, np.ndarray]:
        """Actions of the live agents at the env's current decision point."""


def _needs_requests(policy: str, verb: str, config) -> None:
    if not config.dynamics.requests.enabled:
        raise ValueError(f"policy {policy!r} {verb} the request queues, and config key 'dynamics.requests.enabled' "
                         "is false; allowed: a config or scenario with requests on (e.g. --scenario seq-medium-heavy)")


class RandomPolicy(Policy):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self, env, seed: Optional[int] = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed + 7919)

    def act(self, observations, env):
        out = {}
        for agent in observations:
            space = env.action_space(agent)
            start = np.asarray(getattr(space, "start", 0))
            out[agent] = (self.rng.integers(0, space.nvec) + start).astype(np.int64)
        return out


class FixedSplitPolicy(Policy):
    """Everyone takes (common_steps, es_personal_steps); None = the IIS-like default.

    A split outside the env's action space is an error naming the allowed range (never clamped).
    """

    name = "fixed"

    def __init__(self, common_steps: int = 0, es_personal_steps: Optional[int] = None,
                 es_personal_min: int = 0) -> None:
        self.common_steps = int(common_steps)
        self.es_personal_steps = es_personal_steps
        self.es_personal_min = int(es_personal_min)

    def act(self, observations, env):
        out = {}
        for agent in observations:
            space = env.action_space(agent)
            nvec = np.asarray(space.nvec)
            x = self.common_steps
            if self.es_personal_steps is None:
                y_idx = (nvec[1] - 1) // 2
            else:
                y_idx = int(self.es_personal_steps) - self.es_personal_min
            if not (0 <= x < nvec[0] and 0 <= y_idx < nvec[1]):
                raise ValueError(
                    f"fixed split (x={x}, y={self.es_personal_min + y_idx}) is outside the env's actions: "
                    f"common steps x in 0..{nvec[0] - 1}, ES personalised steps y in "
                    f"{self.es_personal_min}..{self.es_personal_min + nvec[1] - 1}")
            start = np.asarray(getattr(space, "start", np.zeros_like(nvec)))
            out[agent] = (np.array([x, y_idx]) + start).astype(np.int64)
        return out


class SearchPolicy(Policy):
    """Coordinate descent on the env's reward model (see module docstring). `device` None: the
    candidates are scored by the PettingZoo env's numpy code; a torch device ("cpu", "cuda"): by the
    vector env's torch code there (`agents.vector_search`, the same sweeps; dynamics off only)."""

    name = "search"

    def __init__(self, max_sweeps: int = 4, tol: float = 1e-9, seed: int = 0, device: Optional[str] = None,
                 backlog_weight: float = 0.0) -> None:
        if not float(backlog_weight) >= 0.0:
            raise ValueError(f"search backlog_weight={backlog_weight!r}; allowed: a number >= 0 (0: the myopic search)")
        self.backlog_weight = float(backlog_weight)
        if self.backlog_weight > 0:
            self.name = "backlog-search"
        self.max_sweeps = int(max_sweeps)
        self.tol = float(tol)
        self.rng = np.random.default_rng(seed)
        self.device = device
        self.last_sweeps = 0
        self.last_utility = float("nan")
        self._searcher = None

    def check_config(self, config) -> None:
        if self.backlog_weight > 0:
            _needs_requests("backlog-search", "weighs", config)

    def reset(self, env, seed: Optional[int] = None) -> None:
        self.check_config(env.unwrapped.config)
        if seed is not None:
            self.rng = np.random.default_rng(seed + 104729)

    def _backlog_charge(self, base) -> Optional[np.ndarray]:
        """(N,) what a second of each UE's delay T_n costs the requests waiting behind it: ALPHA w_T q_n
        for the active UEs, 0 for the others (None for the myopic search)."""
        if self.backlog_weight == 0:
            return None
        context = base.decision_context()
        waiting = np.where(context["active"], context["queue_length"], 0).astype(np.float64)
        return self.backlog_weight * base.config.reward.delay_weight * waiting

    def _searcher_for(self, base):
        if self.device is None:
            return _NumpySearch(base, self._backlog_charge(base))
        if self.backlog_weight > 0:
            raise ValueError(f"policy 'backlog-search' on device {self.device!r}: it runs on the PettingZoo env's "
                             "numpy code only (the device search refuses the dynamics); allowed: device None")
        if self._searcher is None or self._searcher.config is not base.config:
            from agents.vector_search import DeviceSearch

            self._searcher = DeviceSearch(base, self.device)
        return self._searcher

    def act(self, observations, env):
        agents = [a for a in env.agents if a in observations]
        base = env.unwrapped
        grid = action_grid(env.action_space(agents[0]))
        searcher = self._searcher_for(base)
        # Start: the best joint action with all UEs on the same (x, y).
        current, best_u = searcher.start(base, grid)
        sweeps = 0
        for sweeps in range(1, self.max_sweeps + 1):
            start_u = best_u
            current, best_u = searcher.sweep(current, best_u, self.rng.permutation(len(agents)))
            if best_u - start_u <= self.tol * max(1.0, abs(start_u)):
                break
        self.last_sweeps = sweeps
        self.last_utility = best_u
        current = searcher.actions(current)
        return {a: current[i].copy() for i, a in enumerate(agents)}


class _NumpySearch:
    """`SearchPolicy`'s start and sweeps with the PettingZoo env's `evaluate_joint_actions`; with a
    backlog charge (N,), the objective is U less the charge times each UE's delay T_n."""

    def __init__(self, base, backlog_charge: Optional[np.ndarray] = None) -> None:
        self.base = base
        self.backlog_charge = backlog_charge

    def _utilities(self, batch: np.ndarray) -> np.ndarray:
        scored = self.base.evaluate_joint_actions(batch)
        utility = np.asarray(scored["utility"], dtype=np.float64)
        if self.backlog_charge is None:
            return utility
        return utility - np.asarray(scored["ue_delay"], dtype=np.float64) @ self.backlog_charge

    def start(self, base, grid: np.ndarray):
        self.grid = grid
        uniform = np.broadcast_to(grid[:, None, :], (grid.shape[0], base.num_ues, 2)).copy()
        utility = self._utilities(uniform)
        best = int(np.argmax(utility))
        return uniform[best].copy(), float(utility[best])

    def sweep(self, current: np.ndarray, best_u: float, order: np.ndarray):
        for n in order:
            batch = np.repeat(current[None], self.grid.shape[0], axis=0)
            batch[:, n, :] = self.grid
            u = self._utilities(batch)
            k = int(np.argmax(u))
            if u[k] > best_u:
                best_u = float(u[k])
                current[n] = self.grid[k]
        return current, best_u

    @staticmethod
    def actions(current: np.ndarray) -> np.ndarray:
        return current


class OpenLoopPolicy(Policy):
    """One shared action per slot index, fitted on calibration episodes (see the module docstring)."""

    name = "open-loop"
    CALIBRATION_SEED = 70_000  # calibration episodes' seeds: CALIBRATION_SEED + k, apart from evaluation's
    VALIDATION_SEED = 71_000  # the episodes that pick between the myopic and the constant schedule

    def __init__(self, calibration_episodes: int = 4) -> None:
        if isinstance(calibration_episodes, bool) or int(calibration_episodes) < 1:
            raise ValueError(f"open-loop calibration_episodes={calibration_episodes!r}; allowed: an integer >= 1")
        self.calibration_episodes = int(calibration_episodes)
        self.schedule: Optional[np.ndarray] = None  # (T, 2) action indices, one row per slot
        self._fitted_for: Optional[str] = None
        self._slot = 0

    def reset(self, env, seed: Optional[int] = None) -> None:
        key = repr(env.unwrapped.config.to_dict())
        if self._fitted_for != key:
            self.schedule, self._fitted_for = self.fit(env.unwrapped.config), key
        self._slot = 0

    def fit(self, config) -> np.ndarray:
        """The schedule: the myopic one (slot by slot, the shared action with the best mean U over
        the calibration episodes, stepped in lockstep with it, so each slot's state is the one the
        schedule leads to) or the best constant action held every slot, whichever has the higher
        mean U over the validation episodes (`_mean_utility`)."""
        from his_env.environment import HISParallelEnv

        envs = [HISParallelEnv(config) for _ in range(self.calibration_episodes)]
        for k, env in enumerate(envs):
            env.reset(seed=self.CALIBRATION_SEED + k)
        grid = action_grid(envs[0].action_space(envs[0].possible_agents[0]))
        n = envs[0].num_ues
        uniform = np.broadcast_to(grid[:, None, :], (len(grid), n, 2)).copy()
        schedule = []
        while envs[0].agents:
            mean_u = np.mean([env.evaluate_joint_actions(uniform)["utility"] for env in envs], axis=0)
            best = grid[int(np.argmax(mean_u))]
            schedule.append(best)
            for env in envs:
                env.step({agent: best for agent in env.possible_agents})
        myopic = np.stack(schedule).astype(np.int64)
        constant = np.broadcast_to(best_constant_action(config, self.calibration_episodes, self.CALIBRATION_SEED),
                                   myopic.shape).copy()
        # compared on episodes neither was fitted on (the myopic schedule fits its episodes' noise)
        return constant if self._mean_utility(config, constant) > self._mean_utility(config, myopic) else myopic

    def _mean_utility(self, config, schedule: np.ndarray) -> float:
        """Mean U per slot of `schedule` over validation episodes (seeds VALIDATION_SEED + k, as many
        as the calibration episodes)."""
        from his_env.environment import HISParallelEnv

        env, utilities = HISParallelEnv(config), []
        for k in range(self.calibration_episodes):
            env.reset(seed=self.VALIDATION_SEED + k)
            for action in schedule[:config.episode_length]:
                utilities.append(_network_utility(env.step({agent: action for agent in env.possible_agents})))
        return float(np.mean(utilities))

    def act(self, observations, env):
        action = self.schedule[min(self._slot, len(self.schedule) - 1)]
        self._slot += 1
        return {agent: action.copy() for agent in observations}


def _network_utility(step_result) -> float:
    """U of a PettingZoo step's result (obs, rewards, ...): the sum of the UEs' rewards (Eq. 23, with
    the dynamics' charges)."""
    return float(sum(step_result[1].values()))


def best_constant_action(config, episodes: int, seed: int) -> np.ndarray:
    """The shared action (2,) (indices) with the highest mean U per slot when every UE takes it in
    every slot of `episodes` episodes of its own (the vectorised env seeded with `seed`, one batch
    of |A| x episodes envs on the CPU: 204 x 4 envs of N = 50 over 100 slots take seconds). Needs
    the fitted oracle, as every baseline that evaluates actions."""
    import gymnasium as gym
    import torch

    from his_env.vector import HISVecEnv

    probe = HISVecEnv(config, num_envs=1, seed=seed, action_mask=False, reward_mode="individual")
    grid = action_grid(gym.spaces.MultiDiscrete(probe.core.action_nvec))
    env = HISVecEnv(config, num_envs=len(grid) * episodes, seed=seed, action_mask=False, reward_mode="individual",
                    bank=probe.bank)
    actions = torch.as_tensor(np.repeat(grid, episodes, axis=0))[:, None, :].expand(env.num_envs, env.num_ues, 2)
    td, total = env.reset(), torch.zeros(env.num_envs, dtype=torch.float64)
    for _ in range(config.episode_length):
        td["agents", "action"] = actions
        td = env.step(td)["next"]
        total += td["agents", "reward"][..., 0].to(torch.float64).sum(-1)  # U: sum of r_n with the charges
    mean_u = total.reshape(len(grid), episodes).mean(-1)
    return grid[int(torch.argmax(mean_u))].astype(np.int64)


class QueueAwarePolicy(Policy):
    """The queue threshold rule of the module docstring; needs the dynamics' request queues."""

    name = "queue-aware"

    def __init__(self, queue_fraction: float = 0.25) -> None:
        if not 0.0 < float(queue_fraction) <= 1.0:
            raise ValueError(f"queue-aware threshold {queue_fraction!r}; allowed: a fraction in (0, 1]")
        self.queue_fraction = float(queue_fraction)

    def check_config(self, config) -> None:
        _needs_requests("queue-aware", "reads", config)

    def reset(self, env, seed: Optional[int] = None) -> None:
        self.check_config(env.unwrapped.config)

    def act(self, observations, env):
        from his_env.dynamics.slot import OBSERVATION_FEATURES

        eq31 = 3  # the dynamics features follow Eq. (31)'s three values
        queue = eq31 + OBSERVATION_FEATURES.index("queue_fraction")
        slack = eq31 + OBSERVATION_FEATURES.index("head_slack_fraction")
        es_busy = eq31 + OBSERVATION_FEATURES.index("es_busy_fraction")
        out = {}
        for agent, obs in observations.items():
            nvec = np.asarray(env.action_space(agent).nvec)
            backlog = obs[queue] >= self.queue_fraction - 1e-9 or obs[slack] <= 0.5
            offload = backlog and obs[es_busy] < 0.5
            out[agent] = (np.array([nvec[0] - 1, nvec[1] - 1]) if offload
                          else np.array([0, (nvec[1] - 1) // 2])).astype(np.int64)
        return out


@dataclass(frozen=True)
class StepRanges:
    """The allowed step counts (the env config's `steps` section): x in 0..max_common (Eq. 28b),
    y in min_es_personal..max_es_personal (Eq. 28c)."""

    max_common: int = 16
    min_es_personal: int = 0
    max_es_personal: int = 11

    @classmethod
    def from_env_config(cls, env_config: Mapping[str, Any]) -> "StepRanges":
        steps = dict(env_config.get("steps", {}) or {})
        default = cls()
        return cls(int(steps.get("max_common", default.max_common)),
                   int(steps.get("min_es_personal", default.min_es_personal)),
                   int(steps.get("max_es_personal", default.max_es_personal)))


BASELINE_USAGE = ("random | iis-fixed | es-only | ue-only | fixed:X,Y | search | search:SWEEPS | backlog-search | "
                  "backlog-search:ALPHA | open-loop | open-loop:EPISODES | queue-aware | queue-aware:F")
BACKLOG_WEIGHT = 4.0  # backlog-search's default ALPHA (chosen on calibration seeds: module docstring)
# name -> builder(spec, argument after ':', seed, steps); the keys are the allowed names.
BASELINES: Registry[Callable[[str, str, int, Optional[StepRanges]], Policy]] = Registry("baseline")


def _no_argument(spec: str, arg: str) -> None:
    if arg:
        raise ValueError(f"policy {spec!r}: {spec.partition(':')[0]!r} takes no argument; allowed: {BASELINE_USAGE}")


def _argument(spec: str, arg: str, kind: type, default, name: str, valid: Callable[[Any], bool], allowed: str):
    """The number after ':' in `spec` (`default` without one), checked by `valid`; else a ValueError
    naming it and `allowed`."""
    try:
        value = kind(arg) if arg else default
    except ValueError:
        raise ValueError(f"policy {spec!r}: expected {allowed}") from None
    if not valid(value):
        raise ValueError(f"policy {spec!r}: {name}={value} is out of range; allowed: {allowed}")
    return value


@BASELINES.register("random")
def _random(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    _no_argument(spec, arg)
    return RandomPolicy(seed)


@BASELINES.register("iis-fixed")
def _iis_fixed(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    _no_argument(spec, arg)
    return FixedSplitPolicy(0, None, steps.min_es_personal if steps else 0)


@BASELINES.register("es-only")
def _es_only(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    """Everything the ES can take: the most common and ES-personalised steps (the UE does the rest, z_min)."""
    _no_argument(spec, arg)
    steps = steps or StepRanges()
    return FixedSplitPolicy(steps.max_common, steps.max_es_personal, steps.min_es_personal)


@BASELINES.register("ue-only")
def _ue_only(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    """Everything the UE can take: no common phase, the fewest ES-personalised steps."""
    _no_argument(spec, arg)
    steps = steps or StepRanges()
    return FixedSplitPolicy(0, steps.min_es_personal, steps.min_es_personal)


@BASELINES.register("fixed")
def _fixed(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    steps = steps or StepRanges()
    ranges = (f"common steps X in 0..{steps.max_common}, ES personalised steps Y in "
              f"{steps.min_es_personal}..{steps.max_es_personal}")
    try:
        x, y = (int(v) for v in arg.split(","))
    except ValueError:
        raise ValueError(f"policy {spec!r}: expected 'fixed:X,Y' with integers, {ranges}, e.g. 'fixed:8,4'") from None
    if not 0 <= x <= steps.max_common:
        raise ValueError(f"policy {spec!r}: common steps X={x} is out of range; allowed: {ranges}")
    if not steps.min_es_personal <= y <= steps.max_es_personal:
        raise ValueError(f"policy {spec!r}: ES personalised steps Y={y} is out of range; allowed: {ranges}")
    return FixedSplitPolicy(x, y, steps.min_es_personal)


@BASELINES.register("search")
def _search(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    sweeps = _argument(spec, arg, int, 4, "SWEEPS", lambda v: v >= 0,
                       "'search' or 'search:SWEEPS' with SWEEPS an integer >= 0 (0: the best action shared by all "
                       "UEs, no coordinate descent; default 4)")
    return SearchPolicy(max_sweeps=sweeps, seed=seed)


@BASELINES.register("backlog-search")
def _backlog_search(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    alpha = _argument(spec, arg, float, BACKLOG_WEIGHT, "ALPHA", lambda v: 0.0 <= v < float("inf"),
                      "'backlog-search' or 'backlog-search:ALPHA' with ALPHA a number >= 0, the weight of the "
                      f"waiting behind each UE's delay (0: the myopic search; default {BACKLOG_WEIGHT:g})")
    return SearchPolicy(seed=seed, backlog_weight=alpha)


@BASELINES.register("open-loop")
def _open_loop(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    return OpenLoopPolicy(_argument(spec, arg, int, 4, "EPISODES", lambda v: v >= 1,
                                    "'open-loop' or 'open-loop:EPISODES' with EPISODES an integer >= 1 (calibration "
                                    "episodes; default 4)"))


@BASELINES.register("queue-aware")
def _queue_aware(spec: str, arg: str, seed: int, steps: Optional[StepRanges]) -> Policy:
    return QueueAwarePolicy(_argument(spec, arg, float, 0.25, "F", lambda v: 0.0 < v <= 1.0,
                                      "'queue-aware' or 'queue-aware:F' with F a queue fraction in (0, 1] "
                                      "(default 0.25)"))


def make_baseline(spec: str, seed: int = 0, es_personal_min: Optional[int] = None,
                  steps: Optional[StepRanges] = None, search_device: Optional[str] = None) -> Policy:
    """`random` | `iis-fixed` | `es-only` | `ue-only` | `fixed:X,Y` | `search` | `search:SWEEPS` |
    `backlog-search` | `backlog-search:ALPHA` | `open-loop` | `open-loop:EPISODES` | `queue-aware` |
    `queue-aware:F`.

    `steps` (the env's step ranges) checks `fixed:X,Y` against them; without it the defaults
    of Table II are assumed, with `es_personal_min` as y_min where given. `search_device` (a torch
    device) makes `search` score its candidates there (`SearchPolicy(device=...)`); others ignore it.
    """
    if steps is None and es_personal_min is not None:
        steps = StepRanges(min_es_personal=int(es_personal_min),
                           max_es_personal=max(int(es_personal_min), StepRanges().max_es_personal))
    name, _, arg = str(spec).strip().partition(":")
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {spec!r}; allowed: {BASELINE_USAGE}")
    policy = BASELINES[name](spec, arg.strip(), seed, steps)
    if isinstance(policy, SearchPolicy) and policy.backlog_weight == 0:
        policy.device = search_device
    return policy
