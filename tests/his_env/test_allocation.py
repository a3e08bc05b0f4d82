"""Theorem 1 (Eq. 39) against a numerical optimiser, and its integer rounding against brute force."""
import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from his_common.arrays import namespace
from his_env import allocation


def test_relaxed_allocation_hand_computed():
    # sqrt weights 1, 2, 3 share a budget of 12 as 2, 4, 6
    np.testing.assert_allclose(allocation.kkt_relaxed(np.array([1.0, 4.0, 9.0]), 12), [2.0, 4.0, 6.0])


@pytest.mark.parametrize("seed", range(8))
def test_relaxed_allocation_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 7))
    weights = rng.uniform(0.1, 50.0, size=m)
    budget = float(rng.integers(100, 2000))
    result = minimize(lambda v: np.sum(weights / v), x0=np.full(m, budget / m), method="SLSQP",
                      bounds=[(1e-6, budget)] * m,
                      constraints=[{"type": "ineq", "fun": lambda v: budget - v.sum()}],
                      options={"ftol": 1e-14, "maxiter": 500})
    ours = allocation.kkt_relaxed(weights, budget)
    assert ours.sum() == pytest.approx(budget)
    np.testing.assert_allclose(ours, result.x, rtol=2e-3)
    assert np.sum(weights / ours) <= result.fun * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_integer_allocation_is_brute_force_optimal(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 4))
    budget = int(rng.integers(m, 25))
    weights = rng.uniform(0.0, 10.0, size=m) * (rng.uniform(size=m) > 0.2)  # some clusters idle
    best = min(np.sum(weights / np.array(v)) for v in itertools.product(range(1, budget + 1), repeat=m)
               if sum(v) == budget)
    sms = allocation.kkt_allocation(weights, budget)
    assert sms.sum() == budget and sms.min() >= 1
    assert np.sum(weights / sms) == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_integer_allocation_batched_equals_rows():
    rng = np.random.default_rng(3)
    weights = rng.uniform(0, 5, size=(4, 6, 3))
    budget = rng.integers(3, 40, size=(4, 6))
    batched = allocation.kkt_allocation(weights, budget)
    for i in range(4):
        for j in range(6):
            np.testing.assert_array_equal(batched[i, j], allocation.kkt_allocation(weights[i, j], budget[i, j]))


@pytest.mark.parametrize("weights, budget, expected", [
    ([1.0, 1.0], 3, [2, 1]),            # the third SM gains 1/2 in either cluster: the first takes it
    ([1.0, 1.0, 0.0], 4, [1, 2, 1]),    # rounded down (2, 2, 0) -> (2, 2, 1): one SM too many, the first gives it back
    ([1.0, 3.0], 4, [2, 2]),            # gains 1 - 1/2 and 3/2 - 3/3 tie at 1/2 for the last SM: the first cluster
    ([0.0, 0.0, 0.0], 7, [3, 2, 2]),    # no ES work anywhere: the equal split, the rest to the first
])
def test_ties_settle_as_single_moves_from_the_rounded_down_start(weights, budget, expected):
    """Several optima: the allocation is the one that adding SMs to, and taking them back from, the
    relaxed optimum rounded down gives when the first of equal clusters moves first, whichever route
    computes it (each listed result costs the brute-force minimum)."""
    weights = np.array(weights)
    best = min(np.sum(weights / np.array(v)) for v in itertools.product(range(1, budget + 1), repeat=len(weights))
               if sum(v) == budget)
    assert np.sum(weights / np.array(expected)) == pytest.approx(best)
    np.testing.assert_array_equal(allocation.kkt_allocation(weights, budget), expected)
    relaxed = allocation.kkt_relaxed(weights, budget)
    np.testing.assert_array_equal(allocation.round_allocation(weights[None], relaxed[None], np.array([budget])),
                                  [expected])
    threshold = allocation._threshold_allocation(namespace(weights), weights[None], relaxed[None],
                                                 np.array([budget]), np.ones((1, len(weights)), bool))
    np.testing.assert_array_equal(threshold, [expected])


def _hard_weights(rng, rows, m):
    """Weights with exact ties (equal clusters, ratios k(k+1) / l(l+1) between gains), idle clusters,
    and magnitudes over six decades, and a valid mask with gaps."""
    kind = rng.integers(4)
    if kind == 0:
        weights = rng.exponential(1.0, (rows, m))
    elif kind == 1:
        weights = (rng.integers(0, 4, (rows, m)) * rng.integers(0, 4, (rows, m))).astype(float)
    elif kind == 2:
        weights = rng.integers(1, 3, (rows, m)) * np.resize([1.0, 3.0, 6.0, 10.0, 15.0], m)
    else:
        weights = np.where(rng.random((rows, m)) < 0.3, 0.0,
                           rng.exponential(1.0, (rows, m)) * 10 ** rng.uniform(-3, 3, (rows, m)))
    valid = rng.random((rows, m)) < 0.85
    valid[:, 0] = True
    budget = np.maximum(rng.integers(m, m + 60, rows), valid.sum(-1))
    return weights, budget, valid


@pytest.mark.parametrize("seed", range(6))
def test_the_threshold_route_equals_the_rounding_route(seed):
    """`_threshold_allocation` (the route a compiled step takes at large M) gives `round_allocation`'s
    SMs row for row, in numpy and torch, float64 and float32, ties and idle clusters included."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    for _ in range(20):
        weights, budget, valid = _hard_weights(rng, 64, int(rng.integers(1, 14)))
        relaxed = allocation.kkt_relaxed(weights, budget, valid)
        rounded = allocation.round_allocation(weights, relaxed, budget, valid)
        assert (rounded.sum(-1) == budget).all() and (rounded[valid] >= 1).all() and (rounded[~valid] == 0).all()
        np.testing.assert_array_equal(allocation._threshold_allocation(namespace(weights), weights, relaxed, budget,
                                                                       valid), rounded)
        for dtype in (torch.float64, torch.float32):
            w, b, v = torch.tensor(weights, dtype=dtype), torch.tensor(budget), torch.tensor(valid)
            r = allocation.kkt_relaxed(w, b, v)
            expected = allocation.round_allocation(w, r, b, v)
            torch.testing.assert_close(allocation._threshold_allocation(namespace(w), w, r, b, v), expected)
            if dtype == torch.float64:
                np.testing.assert_array_equal(expected.numpy(), rounded)


def test_a_compiled_allocation_takes_the_threshold_route_and_agrees(monkeypatch):
    """Compiled (inductor, CPU) at M = 12, the allocation runs the fixed-pass threshold route, whose
    graph does not grow with M, and returns the eager rounding's SMs."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    weights, budget, valid = _hard_weights(rng, 256, 12)
    w, b, v = torch.tensor(weights), torch.tensor(budget), torch.tensor(valid)
    traced = []
    real = allocation._threshold_allocation

    def spy(*args):
        traced.append(True)
        return real(*args)

    monkeypatch.setattr(allocation, "_threshold_allocation", spy)
    torch._dynamo.reset()
    result = torch.compile(allocation.kkt_allocation, fullgraph=True, dynamic=False)(w, b, v)
    torch._dynamo.reset()
    monkeypatch.undo()
    assert traced
    torch.testing.assert_close(result, allocation.kkt_allocation(w, b, v))


def test_budget_below_cluster_count_is_rejected():
    with pytest.raises(ValueError, match="every cluster needs at least one SM"):
        allocation.kkt_allocation(np.ones(3), 2)


def test_kkt_weights_hand_computed():
    # alpha1 = |N_m| c w_T xi / (F D rho); alpha2 = c w_E kappa xi F^2 mu2 / (D rho)
    a = allocation.kkt_weights(np.array([2.0]), np.array([10.0]), delay_weight=0.5, energy_weight=0.1,
                               flops_per_step=8.0, frequency_hz=2.0, flops_per_cycle_per_sm=4.0, efficiency=0.5,
                               kappa=3.0, mu2=7.0)
    alpha1 = 2 * 10 * 0.5 * 8 / (2 * 4 * 0.5)
    alpha2 = 10 * 0.1 * 3 * 8 * 2**2 * 7 / (4 * 0.5)
    assert a[0] == pytest.approx(alpha1 + alpha2)


def test_equal_allocations():
    np.testing.assert_array_equal(allocation.user_equal_allocation(np.array([30, 15, 5]), 100), [60, 30, 10])
    sms = allocation.user_equal_allocation(np.array([1, 1, 1]), 100)
    assert sorted(sms.tolist()) == [33, 33, 34]
    np.testing.assert_array_equal(allocation.cluster_equal_allocation(4, 1026), [257, 257, 256, 256])
