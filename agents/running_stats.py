"""Exact running mean and variance of a scalar stream (no Ray, no torch): the reward statistics of
Sec. VI-B, shared by the RLlib learner (agents.rllib.normalization) and the BenchMARL backend
(agents.benchmarl.normalization).

Batches are merged with the parallel update of count, mean and sum of squared deviations (Chan,
Golub & LeVeque). The first batch gives the batch's own moments: no start from a single sample,
no prior of mean 0 / variance 1.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

import numpy as np


class RunningMeanStd:
    """Running mean and (population) variance of a scalar stream, merged batch by batch."""

    __slots__ = ("count", "mean", "m2")

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.count = int(count)
        self.mean = float(mean)
        self.m2 = float(m2)  # sum of squared deviations from the mean

    @property
    def var(self) -> float:
        return self.m2 / self.count if self.count > 0 else 1.0

    @property
    def std(self) -> float:
        return float(np.sqrt(self.var))

    def update(self, values: Iterable[float] | np.ndarray) -> None:
        """Merge a batch of values (Chan, Golub & LeVeque's parallel update)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        n_b = x.size
        if n_b == 0:
            return
        mean_b = float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        self.merge(RunningMeanStd(n_b, mean_b, m2_b))

    def merge(self, other: "RunningMeanStd") -> None:
        if other.count == 0:
            return
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        delta = other.mean - self.mean
        self.mean += delta * n_b / n
        self.m2 += other.m2 + delta * delta * n_a * n_b / n
        self.count = n

    def normalize(self, values: np.ndarray, eps: float = 1e-8) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / np.sqrt(self.var + eps)

    def get_state(self) -> Dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "RunningMeanStd":
        return cls(state["count"], state["mean"], state["m2"])

    def __repr__(self) -> str:
        return f"RunningMeanStd(count={self.count}, mean={self.mean:.6g}, std={self.std:.6g})"
