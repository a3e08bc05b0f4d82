"""ES streaming-multiprocessor (SM) allocation across clusters: Theorem 1 and the baselines.

With the model-inferencing decisions fixed, sub-problem P_II^B minimises
sum_m (alpha_m^(1) + alpha_m^(2)) / v_m subject to sum_m v_m <= v_max (Sec. VI-C), where

    alpha_m^(1) = |N_m| c_m w_T xi / (F D rho)             (every UE of cluster m waits for it)
    alpha_m^(2) = c_m w_E kappa xi F^2 mu_2 / (D rho)       (the SM-dependent part of Eqs. 11, 13)

and c_m = x_m^max + sum_{n in N_m} y_n is the cluster's ES work in model calls (steps, or EC-Diff
calls). Theorem 1 (Eq. 39) gives v_m* = v_max sqrt(a_m) / sum_m' sqrt(a_m'), a_m = alpha^(1) +
alpha^(2). SMs are whole units, so the relaxed optimum is rounded: down, at least one SM per
cluster, then the SMs left over go one at a time where they lower the objective most, and single
SMs move between clusters while that lowers it (the exact integer optimum of this separable convex
problem). All functions take leading batch dimensions (..., M).
"""
from __future__ import annotations

import numpy as np

from his_common.registry import Registry


def kkt_weights(cluster_sizes: np.ndarray, es_calls: np.ndarray, delay_weight: float, energy_weight: float,
                flops_per_step: float, frequency_hz: float, flops_per_cycle_per_sm: float, efficiency: float,
                kappa: float, mu2: float) -> np.ndarray:
    """alpha_m^(1) + alpha_m^(2) of Sec. VI-C (shape (..., M))."""
    per_sm_rate = frequency_hz * flops_per_cycle_per_sm * efficiency
    alpha_delay = cluster_sizes * es_calls * delay_weight * flops_per_step / per_sm_rate
    alpha_energy = es_calls * energy_weight * kappa * flops_per_step * frequency_hz**2 * mu2 / (
        flops_per_cycle_per_sm * efficiency)
    return alpha_delay + alpha_energy


def kkt_relaxed(weights: np.ndarray, budget: np.ndarray | float) -> np.ndarray:
    """Eq. (39): v_m* = v_max sqrt(a_m) / sum sqrt(a_m); an all-zero row is split equally."""
    weights = np.asarray(weights, dtype=float)
    budget = np.asarray(budget, dtype=float)[..., None]
    root = np.sqrt(np.maximum(weights, 0.0))
    total = root.sum(axis=-1, keepdims=True)
    equal = np.broadcast_to(1.0 / weights.shape[-1], weights.shape)
    share = np.divide(root, total, out=np.array(equal, dtype=float), where=total > 0)
    return budget * share


def allocation_cost(weights: np.ndarray, sms: np.ndarray) -> np.ndarray:
    """Objective of P_II^B: sum_m a_m / v_m."""
    return (np.asarray(weights) / np.asarray(sms)).sum(axis=-1)


def round_allocation(weights: np.ndarray, relaxed: np.ndarray, budget: np.ndarray | int) -> np.ndarray:
    """Integer SMs, >= 1 per cluster, summing to the budget, minimising sum a_m / v_m."""
    weights = np.asarray(weights, dtype=float)
    budget = np.asarray(budget, dtype=np.int64)
    num_clusters = weights.shape[-1]
    if np.any(budget < num_clusters):
        raise ValueError(f"ES SM budget {budget.min()} is below the number of clusters {num_clusters}: "
                         "every cluster needs at least one SM")
    if weights.ndim == 1:
        return np.array(_round_one(weights.tolist(), np.asarray(relaxed).tolist(), int(budget)), dtype=np.int64)
    sms = np.maximum(np.floor(relaxed + 1e-9).astype(np.int64), 1)
    rows = np.arange(int(np.prod(weights.shape[:-1], dtype=np.int64))).reshape(weights.shape[:-1])

    def gain_of_adding(v):  # objective decrease from one more SM
        return weights / v - weights / (v + 1)

    def loss_of_removing(v):  # objective increase from one SM less (impossible at 1 SM)
        return np.where(v > 1, weights / np.maximum(v - 1, 1) - weights / v, np.inf)

    for _ in range(num_clusters):  # the minimum of one SM may overshoot the budget: take back
        excess = sms.sum(axis=-1) - budget
        if not np.any(excess > 0):
            break
        pick = np.argmin(loss_of_removing(sms), axis=-1)
        np.subtract.at(sms.reshape(-1, num_clusters), (rows.ravel(), pick.ravel()), (excess > 0).ravel())
    for _ in range(num_clusters + 1):  # rounding down leaves fewer than M SMs unassigned
        left = budget - sms.sum(axis=-1)
        if not np.any(left > 0):
            break
        pick = np.argmax(gain_of_adding(sms), axis=-1)
        np.add.at(sms.reshape(-1, num_clusters), (rows.ravel(), pick.ravel()), (left > 0).ravel())
    for _ in range(4 * num_clusters):  # exchange single SMs while that lowers the objective
        give = np.argmin(loss_of_removing(sms), axis=-1)
        take = np.argmax(gain_of_adding(sms), axis=-1)
        loss = np.take_along_axis(loss_of_removing(sms), give[..., None], -1)[..., 0]
        gain = np.take_along_axis(gain_of_adding(sms), take[..., None], -1)[..., 0]
        move = (gain > loss * (1 + 1e-12)) & (give != take)
        if not np.any(move):
            break
        flat = sms.reshape(-1, num_clusters)
        np.subtract.at(flat, (rows.ravel(), give.ravel()), move.ravel())
        np.add.at(flat, (rows.ravel(), take.ravel()), move.ravel())
    return sms


def _round_one(weights: list[float], relaxed: list[float], budget: int) -> list[int]:
    """`round_allocation` for one decision point, in plain Python (M is small; numpy overhead is not)."""
    sms = [max(int(v + 1e-9), 1) for v in relaxed]

    def gain(m):
        return weights[m] / sms[m] - weights[m] / (sms[m] + 1)

    def loss(m):
        return weights[m] / (sms[m] - 1) - weights[m] / sms[m] if sms[m] > 1 else float("inf")

    clusters = range(len(sms))
    while sum(sms) > budget:
        sms[min(clusters, key=loss)] -= 1
    while sum(sms) < budget:
        sms[max(clusters, key=gain)] += 1
    for _ in range(4 * len(sms)):
        give, take = min(clusters, key=loss), max(clusters, key=gain)
        if give == take or not gain(take) > loss(give) * (1 + 1e-12):
            break
        sms[give] -= 1
        sms[take] += 1
    return sms


def kkt_allocation(weights: np.ndarray, budget: np.ndarray | int) -> np.ndarray:
    """Theorem 1 with integer rounding."""
    return round_allocation(weights, kkt_relaxed(weights, budget), budget)


def proportional_allocation(shares: np.ndarray, budget: np.ndarray | int) -> np.ndarray:
    """Split the budget in proportion to `shares` (largest remainders), at least one SM each."""
    shares = np.asarray(shares, dtype=float)
    budget = np.asarray(budget, dtype=np.int64)
    relaxed = budget[..., None] * shares / shares.sum(axis=-1, keepdims=True)
    sms = np.maximum(np.floor(relaxed).astype(np.int64), 1)
    num_clusters = shares.shape[-1]
    for _ in range(num_clusters):
        diff = budget - sms.sum(axis=-1)
        if not np.any(diff != 0):
            break
        remainder = relaxed - sms
        add = np.argmax(remainder, axis=-1)
        sub = np.argmin(np.where(sms > 1, remainder, np.inf), axis=-1)
        idx = np.where(diff > 0, add, sub)
        delta = np.sign(diff)
        flat = sms.reshape(-1, num_clusters)
        np.add.at(flat, (np.arange(flat.shape[0]), idx.ravel()), delta.ravel())
    return sms


def user_equal_allocation(cluster_sizes: np.ndarray, budget: np.ndarray | int) -> np.ndarray:
    """Fig. 16 baseline: the budget split evenly across UEs, so cluster m gets |N_m| / N of it."""
    return proportional_allocation(cluster_sizes, budget)


def cluster_equal_allocation(num_clusters: int, budget: np.ndarray | int) -> np.ndarray:
    """Fig. 16 baseline: the same SMs for every cluster, whatever its size."""
    budget = np.asarray(budget, dtype=np.int64)
    return proportional_allocation(np.ones(budget.shape + (num_clusters,)), budget)


# The ES SM allocation rules by name: the allowed values of `scheme.allocation`.
ALLOCATION_RULES: Registry = Registry("allocation rule")
ALLOCATION_RULES.register("kkt", kkt_allocation)
ALLOCATION_RULES.register("user_equal", user_equal_allocation)
ALLOCATION_RULES.register("cluster_equal", cluster_equal_allocation)
