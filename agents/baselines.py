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
  (a coordinate-wise optimum of the myopic utility, which here is also the episode's:
  the next decision point's state does not depend on the actions).
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

    def reset(self, env, seed: Optional[int] = None) -> None:  # noqa: D401 - protocol
        pass

    @abstractmethod
    def act(self, observations: Mapping[str, np.ndarray], env) -> Dict[str, np.ndarray]:
        """Actions of the live agents at the env's current decision point."""


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
    """Coordinate descent on the env's reward model (see module docstring)."""

    name = "search"

    def __init__(self, max_sweeps: int = 4, tol: float = 1e-9, seed: int = 0) -> None:
        self.max_sweeps = int(max_sweeps)
        self.tol = float(tol)
        self.rng = np.random.default_rng(seed)
        self.last_sweeps = 0
        self.last_utility = float("nan")

    def reset(self, env, seed: Optional[int] = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed + 104729)

    def act(self, observations, env):
        agents = [a for a in env.agents if a in observations]
        base = env.unwrapped
        grid = action_grid(env.action_space(agents[0]))
        n_cand, n_agents = grid.shape[0], len(agents)
        # Start: the best joint action with all UEs on the same (x, y).
        uniform = np.broadcast_to(grid[:, None, :], (n_cand, n_agents, 2)).copy()
        utility = np.asarray(base.evaluate_joint_actions(uniform)["utility"], dtype=np.float64)
        best = int(np.argmax(utility))
        current = uniform[best].copy()
        best_u = float(utility[best])
        sweeps = 0
        for sweeps in range(1, self.max_sweeps + 1):
            start_u = best_u
            for n in self.rng.permutation(n_agents):
                batch = np.repeat(current[None], n_cand, axis=0)
                batch[:, n, :] = grid
                u = np.asarray(base.evaluate_joint_actions(batch)["utility"], dtype=np.float64)
                k = int(np.argmax(u))
                if u[k] > best_u:
                    best_u = float(u[k])
                    current[n] = grid[k]
            if best_u - start_u <= self.tol * max(1.0, abs(start_u)):
                break
        self.last_sweeps = sweeps
        self.last_utility = best_u
        return {a: current[i].copy() for i, a in enumerate(agents)}


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


BASELINE_USAGE = "random | iis-fixed | es-only | ue-only | fixed:X,Y | search | search:SWEEPS"
# name -> builder(spec, argument after ':', seed, steps); the keys are the allowed names.
BASELINES: Registry[Callable[[str, str, int, Optional[StepRanges]], Policy]] = Registry("baseline")


def _no_argument(spec: str, arg: str) -> None:
    if arg:
        raise ValueError(f"policy {spec!r}: {spec.partition(':')[0]!r} takes no argument; allowed: {BASELINE_USAGE}")


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
    allowed = ("'search' or 'search:SWEEPS' with SWEEPS an integer >= 0 (0: the best action shared by all UEs, "
               "no coordinate descent; default 4)")
    try:
        sweeps = int(arg) if arg else 4
    except ValueError:
        raise ValueError(f"policy {spec!r}: expected {allowed}") from None
    if sweeps < 0:
        raise ValueError(f"policy {spec!r}: SWEEPS={sweeps} is out of range; allowed: {allowed}")
    return SearchPolicy(max_sweeps=sweeps, seed=seed)


def make_baseline(spec: str, seed: int = 0, es_personal_min: Optional[int] = None,
                  steps: Optional[StepRanges] = None) -> Policy:
    """`random` | `iis-fixed` | `es-only` | `ue-only` | `fixed:X,Y` | `search` | `search:SWEEPS`.

    `steps` (the env's step ranges) checks `fixed:X,Y` against them; without it the defaults
    of Table II are assumed, with `es_personal_min` as y_min where given.
    """
    if steps is None and es_personal_min is not None:
        steps = StepRanges(min_es_personal=int(es_personal_min),
                           max_es_personal=max(int(es_personal_min), StepRanges().max_es_personal))
    name, _, arg = str(spec).strip().partition(":")
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {spec!r}; allowed: {BASELINE_USAGE}")
    return BASELINES[name](spec, arg.strip(), seed, steps)
