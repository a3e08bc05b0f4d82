"""Theorem 1 (Eq. 39) against a numerical optimiser, and its integer rounding against brute force."""
import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

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
