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
problem). All functions take leading batch dimensions (..., M) and run on numpy arrays or torch
tensors (`his_common.arrays`). `valid` (..., M), where given, marks the clusters that exist: in a
batch of decision points with different cluster counts, the others get no SMs.

`ALLOCATION_RULES` names the rules a config may ask for (`scheme.allocation`): each takes
(KKT weights, cluster sizes, budget, valid) and returns the SMs per cluster.
"""
from __future__ import annotations

import numpy as np

from his_common.arrays import namespace
from his_common.registry import Registry

_INF = float("inf")


def kkt_weights(cluster_sizes, es_calls, delay_weight: float, energy_weight: float, flops_per_step: float,
                frequency_hz: float, flops_per_cycle_per_sm: float, efficiency: float, kappa: float, mu2: float):
    """alpha_m^(1) + alpha_m^(2) of Sec. VI-C (shape (..., M))."""
    per_sm_rate = frequency_hz * flops_per_cycle_per_sm * efficiency
    alpha_delay = cluster_sizes * es_calls * delay_weight * flops_per_step / per_sm_rate
    alpha_energy = es_calls * energy_weight * kappa * flops_per_step * frequency_hz**2 * mu2 / (
        flops_per_cycle_per_sm * efficiency)
    return alpha_delay + alpha_energy


def _all_valid(xp, weights, valid):
    return (xp.zeros(weights.shape, "int") == 0) if valid is None else valid


def kkt_relaxed(weights, budget, valid=None):
    """Eq. (39): v_m* = v_max sqrt(a_m) / sum sqrt(a_m); an all-zero row is split equally."""
    xp = namespace(weights, budget)
    weights = xp.float(weights)
    valid = _all_valid(xp, weights, valid)
    budget = xp.float(budget)[..., None]
    root = xp.where(valid, xp.sqrt(xp.maximum(weights, 0.0)), 0.0)
    total = xp.sum(root, -1, keepdims=True)
    equal = xp.float(valid) / xp.sum(xp.float(valid), -1, keepdims=True)
    share = xp.where(total > 0, root / xp.where(total > 0, total, 1.0), equal)
    return budget * share


def allocation_cost(weights, sms):
    """Objective of P_II^B: sum_m a_m / v_m."""
    return (np.asarray(weights) / np.asarray(sms)).sum(axis=-1)


def round_allocation(weights, relaxed, budget, valid=None):
    """Integer SMs, >= 1 per cluster, summing to the budget, minimising sum a_m / v_m."""
    xp = namespace(weights, relaxed, budget)
    if not xp.is_torch:
        weights, budget = np.asarray(weights, dtype=float), np.asarray(budget, dtype=np.int64)
        if valid is not None and np.all(valid):
            valid = None
        num_valid = weights.shape[-1] if valid is None else np.sum(valid, axis=-1)
        if np.any(budget < num_valid):
            raise ValueError(f"ES SM budget {budget.min()} is below the number of clusters {np.max(num_valid)}: "
                             "every cluster needs at least one SM")
        if weights.ndim == 1 and valid is None:
            return np.array(_round_one(weights.tolist(), np.asarray(relaxed).tolist(), int(budget)), dtype=np.int64)
    weights, budget = xp.float(weights), xp.int(budget)
    valid = _all_valid(xp, weights, valid)
    num_clusters = weights.shape[-1]
    sms = xp.where(valid, xp.maximum(xp.int(xp.floor(relaxed + 1e-9)), 1), 0)

    def gain_of_adding(v):  # objective decrease from one more SM (none for a cluster that does not exist)
        v = xp.float(xp.maximum(v, 1))
        return xp.where(valid, weights / v - weights / (v + 1), -_INF)

    def loss_of_removing(v):  # objective increase from one SM less (impossible at 1 SM)
        v1 = xp.float(xp.maximum(v - 1, 1))
        return xp.where(valid & (v > 1), weights / v1 - weights / xp.float(xp.maximum(v, 1)), _INF)

    for _ in range(num_clusters):  # the minimum of one SM may overshoot the budget: take back
        excess = xp.sum(sms, -1) - budget
        if not xp.may_any(excess > 0):
            break
        xp.add_at_last_axis(sms, xp.argmin(loss_of_removing(sms), -1), -xp.int(excess > 0))
    for _ in range(num_clusters + 1):  # rounding down leaves fewer than M SMs unassigned
        left = budget - xp.sum(sms, -1)
        if not xp.may_any(left > 0):
            break
        xp.add_at_last_axis(sms, xp.argmax(gain_of_adding(sms), -1), xp.int(left > 0))
    for _ in range(4 * num_clusters):  # exchange single SMs while that lowers the objective
        losses, gains = loss_of_removing(sms), gain_of_adding(sms)
        give, take = xp.argmin(losses, -1), xp.argmax(gains, -1)
        loss = xp.take_along_axis(losses, give[..., None], -1)[..., 0]
        gain = xp.take_along_axis(gains, take[..., None], -1)[..., 0]
        move = (gain > loss * (1 + 1e-12)) & (give != take)
        if not xp.may_any(move):
            break
        xp.add_at_last_axis(sms, give, -xp.int(move))
        xp.add_at_last_axis(sms, take, xp.int(move))
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


def kkt_allocation(weights, budget, valid=None):
    """Theorem 1 with integer rounding."""
    return round_allocation(weights, kkt_relaxed(weights, budget, valid), budget, valid)


def proportional_allocation(shares, budget, valid=None):
    """Split the budget in proportion to `shares` (largest remainders), at least one SM each."""
    xp = namespace(shares, budget)
    shares, budget = xp.float(shares), xp.int(budget)
    valid = _all_valid(xp, shares, valid)
    shares = xp.where(valid, shares, 0.0)
    total = xp.sum(shares, -1, keepdims=True)
    relaxed = xp.float(budget)[..., None] * shares / xp.where(total > 0, total, 1.0)
    # no shares at all (e.g. no UE serves a request this slot): the valid clusters split it equally
    relaxed = xp.where(total > 0, relaxed, xp.float(budget)[..., None] * xp.float(valid)
                       / xp.maximum(xp.sum(xp.float(valid), -1, keepdims=True), 1.0))
    sms = xp.where(valid, xp.maximum(xp.int(xp.floor(relaxed)), 1), 0)
    for _ in range(shares.shape[-1]):
        diff = budget - xp.sum(sms, -1)
        if not xp.may_any(diff != 0):
            break
        remainder = relaxed - sms
        add = xp.argmax(xp.where(valid, remainder, -_INF), -1)
        sub = xp.argmin(xp.where(valid & (sms > 1), remainder, _INF), -1)
        xp.add_at_last_axis(sms, xp.where(diff > 0, add, sub), xp.int(diff > 0) - xp.int(diff < 0))
    return sms


def user_equal_allocation(cluster_sizes, budget, valid=None):
    """Fig. 16 baseline: the budget split evenly across UEs, so cluster m gets |N_m| / N of it."""
    return proportional_allocation(cluster_sizes, budget, valid)


def cluster_equal_allocation(num_clusters: int, budget, valid=None):
    """Fig. 16 baseline: the same SMs for every cluster, whatever its size."""
    xp = namespace(budget, valid)
    budget = xp.int(budget)
    ones = xp.float(xp.zeros(budget.shape + (num_clusters,), "int") + 1)
    return proportional_allocation(ones, budget, valid)


ALLOCATION_RULES: Registry = Registry("SM allocation rule")


@ALLOCATION_RULES.register("kkt")
def _kkt_rule(weights, cluster_sizes, budget, valid):
    return kkt_allocation(weights, budget, valid)


@ALLOCATION_RULES.register("user_equal")
def _user_equal_rule(weights, cluster_sizes, budget, valid):
    return user_equal_allocation(cluster_sizes, budget, valid)


@ALLOCATION_RULES.register("cluster_equal")
def _cluster_equal_rule(weights, cluster_sizes, budget, valid):
    return cluster_equal_allocation(weights.shape[-1], budget, valid)
