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

from his_common.arrays import namespace, torch_compiling
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
    """Integer SMs, >= 1 per cluster, summing to the budget, minimising sum a_m / v_m.

    The optimum takes, beyond each cluster's first SM, the `budget - M` largest marginal gains
    a_m / k - a_m / (k + 1) (k = 1, 2, ...: each cluster's decrease as it gets its (k + 1)-th SM);
    where several gains equal the smallest one taken, they go where single moves from the rounded-down
    relaxed optimum put them (`_settle_ties`), so the result is one allocation whatever the route to
    it. Two routes: from
    the relaxed optimum rounded down, single SMs added, taken back and exchanged while that lowers
    the objective (up to 6 M + 1 passes; eager code stops as soon as nothing moves); or, while torch
    compiles a step and that takes fewer passes (M above 10 in float64, above 5 in float32), a
    bisection on the threshold gain (`_threshold_allocation`: 63 passes in float64, 31 in float32,
    whatever M), so that the compiled graph does not grow with M.
    """
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
            sms = np.array(_round_one(weights.tolist(), np.asarray(relaxed).tolist(), int(budget)), dtype=np.int64)
            every = np.ones(sms.shape, dtype=bool)
            return _settle_ties(xp, weights, sms, every, _rounded_down(xp, np.asarray(relaxed), every))
    weights, budget = xp.float(weights), xp.int(budget)
    valid = _all_valid(xp, weights, valid)
    num_clusters = weights.shape[-1]
    if torch_compiling() and _bisection_passes(xp) < 6 * num_clusters + 1:
        return _threshold_allocation(xp, weights, relaxed, budget, valid)
    start = _rounded_down(xp, relaxed, valid)
    sms = xp.copy(start)
    for _ in range(num_clusters):  # the minimum of one SM may overshoot the budget: take back
        excess = xp.sum(sms, -1) - budget
        if not xp.may_any(excess > 0):
            break
        xp.add_at_last_axis(sms, xp.argmin(_loss_of_removing(xp, weights, sms, valid), -1), -xp.int(excess > 0))
    for _ in range(num_clusters + 1):  # rounding down leaves fewer than M SMs unassigned
        left = budget - xp.sum(sms, -1)
        if not xp.may_any(left > 0):
            break
        xp.add_at_last_axis(sms, xp.argmax(_gain_of_adding(xp, weights, sms, valid), -1), xp.int(left > 0))
    for _ in range(4 * num_clusters):  # exchange single SMs while that lowers the objective
        losses, gains = _loss_of_removing(xp, weights, sms, valid), _gain_of_adding(xp, weights, sms, valid)
        give, take = xp.argmin(losses, -1), xp.argmax(gains, -1)
        loss = xp.take_along_axis(losses, give[..., None], -1)[..., 0]
        gain = xp.take_along_axis(gains, take[..., None], -1)[..., 0]
        move = (gain > loss) & (give != take)
        if not xp.may_any(move):
            break
        xp.add_at_last_axis(sms, give, -xp.int(move))
        xp.add_at_last_axis(sms, take, xp.int(move))
    return _settle_ties(xp, weights, sms, valid, start)


def _marginal_gain(weights, sms):
    """a / v - a / (v + 1): the objective's decrease from the (v + 1)-th SM of a cluster at v SMs (float v >= 1)."""
    return weights / sms - weights / (sms + 1)


def _gain_of_adding(xp, weights, sms, valid):
    """The decrease from one more SM (-inf for a cluster that does not exist)."""
    return xp.where(valid, _marginal_gain(weights, xp.float(xp.maximum(sms, 1))), -_INF)


def _loss_of_removing(xp, weights, sms, valid):
    """The increase from one SM less: the gain of the cluster's last SM (inf at 1 SM: it cannot give one)."""
    return xp.where(valid & (sms > 1), _marginal_gain(weights, xp.float(xp.maximum(sms - 1, 1))), _INF)


def _rounded_down(xp, relaxed, valid):
    return xp.where(valid, xp.maximum(xp.int(xp.floor(relaxed + 1e-9)), 1), 0)


def _settle_ties(xp, weights, sms, valid, start):
    """An optimum `sms` made the canonical one. The gains equal to the threshold t (the smallest gain
    taken) can sit in any of the tied clusters; they sit where `start` (the relaxed optimum rounded
    down) has them, the clusters of highest index keeping theirs where `start` has more than fit,
    and the tied clusters of lowest index taking the rest where it has fewer: what taking single SMs
    back from, and adding them to, `start` gives, the argmin and argmax picking the first of equals."""
    losses, gains = _loss_of_removing(xp, weights, sms, valid), _gain_of_adding(xp, weights, sms, valid)
    threshold = xp.amin(losses, -1, keepdims=True)
    holds = (losses == threshold) & (losses < _INF)
    tied = holds | (gains == threshold)
    started = tied & (start >= xp.where(holds, sms, sms + 1))  # `start` holds the cluster's tied gain
    fit, first = xp.count(holds, -1)[..., None], xp.count(started, -1)[..., None]
    from_right = first - xp.cumsum(xp.int(started), -1) + xp.int(started)
    others = tied & ~started
    now = (started & (from_right <= fit)) | (others & (xp.cumsum(xp.int(others), -1) <= fit - first))
    return sms - xp.int(holds) + xp.int(now)


def _bisection_passes(xp) -> int:
    """Halvings that pin a float >= 0 of the working precision by its bit pattern."""
    return 63 if "float64" in str(xp.float_dtype) else 31


def _threshold_allocation(xp, weights, relaxed, budget, valid):
    """The canonical optimum of `round_allocation` in a fixed number of passes: the threshold t, the
    (budget - M)-th largest marginal gain, found by bisection on the bit patterns of floats (which
    order floats >= 0 as integers), exactly; each cluster then has 1 + (its gains above t) SMs, the
    SMs left go to tied clusters, one each, and `_settle_ties` places them as the rounding route does."""
    positive = valid & (weights > 0)
    safe = xp.where(positive, weights, 1.0)
    extra = budget - xp.count(valid, -1)  # the SMs beyond each cluster's first
    most = xp.float(budget)[..., None]

    def above(x):  # per cluster, how many of its gains g(1), g(2), ... exceed x >= 0 (at x = 0: `most` or more)
        ratio = xp.where(x > 0, safe / xp.where(x > 0, x, 1.0), _INF)
        k = xp.minimum(xp.floor(xp.sqrt(ratio + 0.25) - 0.5), most)  # the largest k with k (k + 1) <= a / x
        k = (k + xp.float(_marginal_gain(safe, k + 1) > x)  # the estimate corrected by one either way
             - xp.float((k >= 1) & (_marginal_gain(safe, xp.maximum(k, 1.0)) <= x)))
        return xp.where(positive, xp.int(k), 0)

    lo = xp.float_bits(xp.zeros(budget.shape, "float"))
    hi = xp.float_bits(xp.amax(xp.where(positive, _marginal_gain(safe, 1.0), 0.0), -1))  # the largest gain
    for _ in range(_bisection_passes(xp)):  # invariant: more than `extra` gains above lo, at most above hi
        mid = lo + (hi - lo) // 2
        fits = xp.sum(above(xp.bits_float(mid)[..., None]), -1) <= extra
        hi, lo = xp.where(fits, mid, hi), xp.where(fits, lo, mid)
    threshold = xp.bits_float(hi)[..., None]
    taken = above(threshold)
    left = extra - xp.sum(taken, -1)
    tied = positive & (_marginal_gain(safe, xp.float(taken + 1)) == threshold)
    sms = xp.where(valid, 1 + taken, 0) + xp.int(tied & (xp.cumsum(xp.int(tied), -1) <= left[..., None]))
    start = _rounded_down(xp, relaxed, valid)
    # no cluster with ES work: what the rounding route gives (the relaxed split is equal, the rest to the first)
    idle = xp.add_at_last_axis(xp.copy(start), xp.argmax(xp.int(valid), -1), budget - xp.sum(start, -1))
    sms = xp.where(xp.sum(xp.int(positive), -1)[..., None] > 0, sms, idle)
    return _settle_ties(xp, weights, sms, valid, start)


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
        if give == take or not gain(take) > loss(give):
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
