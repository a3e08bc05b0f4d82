"""The search reference's sweeps on a torch device: `SearchPolicy(device=...)` (agents.baselines).

`SearchPolicy` scores UE n's |A| candidate actions (the others' fixed) in one call of the
PettingZoo env's `evaluate_joint_actions`: O(|A| N M) numpy work per UE and N calls per sweep,
74-139 s per decision point at N = 1,000, M = 30 on one core (benchmarks/bench_search.py). `DeviceSearch` runs the same sweeps with
the candidates evaluated by the vector env's torch code (`his_env.vector.core.VectorCore.evaluate`:
the same formulas as the PettingZoo env) on a CPU or CUDA device. One UE's turn (build the |A|
joint actions, evaluate them, keep the best if it raises U) is one call, captured
(`his_env.vector.capture`: compiled and CUDA-graphed) on a GPU, and a sweep reads nothing back
until its end. Same start, same UE orders (the policy's generator), same acceptance rule: the same
joint action as the numpy search, up to float rounding (where two candidates' U differ by
rounding only, either may be kept).

Decision points with the Markov-game dynamics are refused (their active UEs, battery limits and
charges are not part of an explicit vector context): use the numpy search there.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from his_env.vector.bank import DecisionBank
from his_env.vector.capture import captured, resolve_capture
from his_env.vector.core import VectorCore
from his_env.vector.env import checked_device


class DeviceSearch:
    """The search's start and sweeps for the decision points of one env configuration on `device`."""

    def __init__(self, env, device) -> None:
        config = env.config
        if config.dynamics.enabled_processes:
            raise ValueError(f"SearchPolicy(device={str(device)!r}) evaluates explicit decision points, but dynamics "
                             f"processes {list(config.dynamics.enabled_processes)} are on; allowed: device=None (the "
                             f"numpy search) with dynamics")
        self.device = checked_device(device)
        self.config = config
        context = env.decision_context()
        one_row = DecisionBank(np.asarray(context["prompt_index"])[None], np.asarray(context["cluster"])[None],
                               np.asarray([context["num_clusters"]]), np.asarray(context["similarity"])[None])
        self.core = VectorCore(config, one_row, 1, self.device, torch.float64)
        self.num_ues = config.num_ues
        turn = self._turn
        self._turn_call = captured(turn, self.device) if resolve_capture(None, self.device) else turn

    def _utilities(self, ctx, batch: torch.Tensor) -> torch.Tensor:
        """U of K joint actions (K, N, 2) at the decision point `ctx` (one env)."""
        return self.core.evaluate(ctx, batch[None])["utility"][0]

    def _turn(self, ctx, grid: torch.Tensor, current: torch.Tensor, ue: torch.Tensor, best: torch.Tensor):
        """UE `ue`'s turn: each of its candidates `grid` (K, 2) with the others at `current` (N, 2);
        the best is kept if its U beats `best`. Returns (current, best)."""
        mine = torch.arange(self.num_ues, device=current.device) == ue
        batch = torch.where(mine[None, :, None], grid[:, None, :], current[None])
        utility = self._utilities(ctx, batch)
        k = torch.argmax(utility)
        better = utility[k] > best
        return torch.where(mine[:, None] & better, grid[k][None], current), torch.where(better, utility[k], best)

    def start(self, env, grid: np.ndarray) -> tuple[Any, float]:
        """The best joint action with every UE at the same candidate, and its U."""
        self._ctx = self.core.contexts_from(env.decision_context())
        self._grid = torch.as_tensor(grid, dtype=torch.int64, device=self.device)
        uniform = self._grid[:, None, :].expand(len(grid), self.num_ues, 2)
        utility = self._utilities(self._ctx, uniform)
        best = torch.argmax(utility)
        return uniform[best].clone(), float(utility[best])

    def sweep(self, current, best_u: float, order: np.ndarray) -> tuple[Any, float]:
        """One pass over the UEs in `order`; returns (current, U)."""
        best = torch.tensor(best_u, dtype=torch.float64, device=self.device)
        order = torch.as_tensor(order, dtype=torch.int64, device=self.device)
        for i in range(len(order)):
            current, best = self._turn_call(self._ctx, self._grid, current, order[i], best)
        return current, float(best)

    @staticmethod
    def actions(current) -> np.ndarray:
        return current.cpu().numpy()
