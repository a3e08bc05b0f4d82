"""The dynamics processes (his_env.dynamics) against numbers computed by hand, scipy or brute force.

Each process runs in numpy and in torch (float64, CPU) from the same standard draws, and the two
must agree; the statistics of long runs are checked against their closed forms, with tolerances
of a few standard errors derived from the sample size (seeded, so every run is the same).
"""
from __future__ import annotations

from pathlib import Path
import dataclasses
import math
from collections import deque

import numpy as np
import pytest
import scipy.special
import scipy.stats

from his_common.config import ConfigError, load_yaml
from his_env import dynamics
from his_env.dynamics import background_load, battery, channel_memory, draws, intent, mobility, queues, work
from his_env.dynamics.config import MOBILITY_PRESETS, DynamicsConfig

torch = pytest.importorskip("torch")

CELL = (50.0, 300.0)


# ---------------------------------------------------------------------- helpers
def as_torch(x):
    """A float64/int64/bool tensor from a numpy array (or a dataclass of them)."""
    if dataclasses.is_dataclass(x):
        return type(x)(**{f.name: as_torch(getattr(x, f.name)) for f in dataclasses.fields(x)})
    return torch.as_tensor(np.asarray(x))


def as_numpy(x):
    if dataclasses.is_dataclass(x):
        return {f.name: as_numpy(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {k: as_numpy(v) for k, v in x.items()}
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_same(numpy_result, torch_result, rtol=1e-12):
    """The numpy and torch runs agree (exactly for integers and booleans)."""
    a, b = as_numpy(numpy_result), as_numpy(torch_result)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key], rtol)
        return
    assert a.shape == b.shape
    if a.dtype.kind in "biu":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)


def lag_autocorrelation(series, lag):
    """Sample autocorrelation at `lag` of independent chains (T, chains), pooled."""
    centred = series - series.mean()
    return float((centred[lag:] * centred[:-lag]).mean() / (centred * centred).mean())


def bartlett_ar1_se(phi, lag, n):
    """Standard error of the lag-k sample autocorrelation of an AR(1) with coefficient phi (Bartlett 1946)."""
    variance = ((1 + phi**2) * (1 - phi ** (2 * lag)) / (1 - phi**2) - 2 * lag * phi ** (2 * lag)) / n
    return math.sqrt(variance)


# ---------------------------------------------------------------------- channel memory
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_bessel_j0_matches_scipy(lib):
    x = np.concatenate([np.linspace(0.0, 20.0, 20001), np.linspace(20.0, 3000.0, 30001)])
    j0 = as_numpy(channel_memory.bessel_j0(x if lib == "numpy" else torch.as_tensor(x)))
    assert np.abs(j0[:20001] - scipy.special.j0(x[:20001])).max() < 1e-7  # [0, 20]
    assert np.abs(j0 - scipy.special.j0(x)).max() < 1e-7  # and far beyond, as Doppler arguments reach
    assert float(channel_memory.bessel_j0(-2.5)) == pytest.approx(scipy.special.j0(2.5), abs=1e-12)  # even


def test_jakes_correlation_by_hand():
    f_d = 3.0 * 2e9 / 299_792_458.0  # f_D = v f_c / c: 3 m/s at 2 GHz
    rho = channel_memory.fading_correlation(3.0, 2e9, 0.01)
    assert float(rho) == pytest.approx(scipy.special.j0(2 * math.pi * f_d * 0.01), abs=1e-12)  # ~0.63
    speeds = np.array([0.0, 1.4, 13.9])
    per_ue = channel_memory.fading_correlation(as_torch(speeds), 3.5e9, 1e-3)
    np.testing.assert_allclose(per_ue.numpy(), scipy.special.j0(2 * math.pi * speeds * 3.5e9 / 299_792_458.0 * 1e-3),
                               atol=1e-12)
    assert per_ue[0] == 1.0  # a UE at rest keeps its channel


def test_fading_is_exp1_with_jakes_memory():
    rho = float(channel_memory.fading_correlation(3.0, 2e9, 0.01))
    chains, slots = 500, 2000
    rng = np.random.default_rng(1)
    normals = rng.standard_normal((slots, chains, 2))

    def run(convert):
        fading = channel_memory.initial_fading(convert(normals[0]))
        path = [fading]
        for t in range(1, slots):
            fading = channel_memory.fading_step(fading, rho, convert(normals[t]))
            path.append(fading)
        return path

    path_np = np.stack(run(np.asarray))
    path_torch = torch.stack(run(as_torch))
    assert_same(path_np, path_torch)

    gain = as_numpy(channel_memory.power_gain(path_torch))  # |h|^2, (T, chains)
    n = gain.size
    inflation = (1 + rho**2) / (1 - rho**2)  # the acf of any function of |h|^2 is at most rho^(2k)
    assert abs(gain.mean() - 1.0) < 5 * math.sqrt(1.0 * inflation / n)  # Exp(1): mean 1
    assert abs(gain.var() - 1.0) < 5 * math.sqrt(8.0 * inflation / n)  # variance 1; Var of (X-1)^2 is 8
    # lag one: E[h_t h*_{t-1}] = rho, corr(|h_t|^2, |h_{t-1}|^2) = rho^2
    cross = (path_np[1:] * path_np[:-1]).sum(-1).mean() / gain.mean()
    assert abs(cross - rho) < 5 * math.sqrt((1 - rho**2) / (2 * n))
    assert abs(lag_autocorrelation(gain, 1) - rho**2) < 6 * math.sqrt(2 * (1 + rho**4) / (1 - rho**4) / n)


# ---------------------------------------------------------------------- background load
def test_background_load_ar1_statistics_and_bounds():
    mean, std, phi = 300.0, 150.0, 0.8
    envs, slots = 200, 5000
    normals = np.random.default_rng(2).standard_normal((slots, envs))

    def run(convert):
        latent = background_load.initial_background_load(convert(normals[0]), mean, std)
        path = [latent]
        for t in range(1, slots):
            latent = background_load.background_load_step(latent, convert(normals[t]), mean, std, phi)
            path.append(latent)
        return path

    latent_np, latent_torch = np.stack(run(np.asarray)), torch.stack(run(as_torch))
    assert_same(latent_np, latent_torch)
    n = latent_np.size
    assert abs(latent_np.mean() - mean) < 5 * std * math.sqrt((1 + phi) / (1 - phi) / n)
    assert abs(latent_np.var() - std**2) < 5 * std**2 * math.sqrt(2 * (1 + phi**2) / (1 - phi**2) / n)
    for lag in (1, 2, 5):
        assert abs(lag_autocorrelation(latent_np, lag) - phi**lag) < 5 * bartlett_ar1_se(phi, lag, n)

    sm_range = (1026, 1674)
    available = background_load.available_es_sms(latent_torch, sm_range)
    assert available.dtype == torch.int64
    assert int(available.min()) == 1026 and int(available.max()) == 1674  # the load leaves the range; the budget not
    assert_same(background_load.available_es_sms(latent_np, sm_range), available)
    by_hand = background_load.available_es_sms(np.array([-40.0, 0.0, 10.5, 10.49, 647.6, 5000.0]), sm_range)
    np.testing.assert_array_equal(by_hand, [1674, 1674, 1674 - 11, 1674 - 10, 1026, 1026])


def test_background_load_refuses_a_non_stationary_correlation():
    with pytest.raises(ValueError, match=r"phi=1.0; allowed: \(-1, 1\)"):
        background_load.background_load_step(np.zeros(1), np.zeros(1), 0.0, 1.0, 1.0)


# ---------------------------------------------------------------------- mobility
def simulate_mobility(model_name, params, ues, slots, seed):
    """The states (T + 1) of a numpy run; the torch transition is checked against it slot by slot
    (trigonometry differs between the libraries in the last bit, which a long run would amplify)."""
    model = mobility.MOBILITY_MODELS[model_name]
    rng = np.random.default_rng(seed)
    first = model.draw_initial(rng, (ues,))
    state = model.initial(params, *first)
    assert_same(state, model.initial(params, *map(as_torch, first)))
    path = [state]
    for t in range(slots):
        step_draws = model.draw_step(rng, (ues,))
        state = model.step(path[-1], params, *step_draws)
        if t % 20 == 0:
            assert_same(state, model.step(as_torch(path[-1]), params, *map(as_torch, step_draws)))
        path.append(state)
    return path


@pytest.mark.parametrize("model_name", ["gauss_markov", "random_waypoint"])
@pytest.mark.parametrize("preset, slot_s", [("pedestrian", 1.0), ("vehicle", 10.0), ("vehicle", 120.0)])
def test_positions_never_leave_the_annulus(model_name, preset, slot_s):
    cfg = DynamicsConfig.from_dict({"mobility": {"enabled": True, "model": model_name, "preset": preset}})
    params = cfg.mobility.params(CELL, slot_s)  # vehicle steps of 139 m and 1.7 km fold several times
    path_np = simulate_mobility(model_name, params, ues=100, slots=400, seed=3)
    distance = np.stack([mobility.distance_m(s) for s in path_np])
    assert distance.min() >= CELL[0] * (1 - 1e-12) and distance.max() <= CELL[1] * (1 + 1e-12)
    assert distance.std(axis=0).min() > 0  # every UE moved
    assert np.stack([mobility.speed_mps(s) for s in path_np]).min() >= 0


def test_gauss_markov_speed_mean_and_memory():
    params = mobility.GaussMarkovParams(CELL, 1.0, mean_speed_mps=1.4, speed_std_mps=0.2, heading_std_rad=0.8,
                                        memory=0.75)
    path_np = simulate_mobility("gauss_markov", params, ues=200, slots=2500, seed=4)
    speed = np.stack([s.speed_mps for s in path_np])
    n, alpha, sigma = speed.size, 0.75, 0.2
    assert abs(speed.mean() - 1.4) < 5 * sigma * math.sqrt((1 + alpha) / (1 - alpha) / n)
    assert abs(speed.std() - sigma) < 5 * sigma * math.sqrt((1 + alpha**2) / (1 - alpha**2) / (2 * n))
    assert abs(lag_autocorrelation(speed, 1) - alpha) < 5 * bartlett_ar1_se(alpha, 1, n)


def test_gauss_markov_reflects_at_the_outer_border_by_hand():
    params = mobility.GaussMarkovParams(CELL, 1.0, mean_speed_mps=10.0, speed_std_mps=0.0, heading_std_rad=0.0,
                                        memory=1.0)
    one = np.ones(1)
    state = mobility.GaussMarkovState(295.0 * one, 0 * one, 10.0 * one, 0 * one, 0 * one)  # heading out, radially
    moved = mobility.gauss_markov_step(state, params, np.zeros((1, 2)))
    np.testing.assert_allclose([moved.x_m[0], moved.y_m[0]], [295.0, 0.0], atol=1e-12)  # 305 m folds back to 295
    assert math.cos(moved.heading_rad[0]) == pytest.approx(-1.0)  # turned back inwards
    assert math.cos(moved.mean_heading_rad[0]) == pytest.approx(-1.0)
    inner = mobility.GaussMarkovState(0 * one, 55.0 * one, 8.0 * one, -math.pi / 2 * one, -math.pi / 2 * one)
    moved = mobility.gauss_markov_step(inner, params, np.zeros((1, 2)))  # 47 m from the ES folds to 53
    np.testing.assert_allclose([moved.x_m[0], moved.y_m[0]], [0.0, 53.0], atol=1e-12)
    assert math.sin(moved.heading_rad[0]) == pytest.approx(1.0)  # now heading away from the ES
    x, y, odd = mobility.fold_into_annulus(np.array([0.0, 900.0]), np.array([610.0, 0.0]), CELL)
    np.testing.assert_allclose(np.hypot(x, y), [110.0, 200.0])  # 610 m folds at 300 and at 50 m; 900 m three times
    np.testing.assert_array_equal(odd, [False, True])


def test_random_waypoint_walks_to_its_waypoint_and_pauses():
    params = mobility.RandomWaypointParams(CELL, 1.0, speed_range_mps=(2.0, 2.0), pause_s=1.5)
    state = mobility.RandomWaypointState(*(np.array([v]) for v in (100.0, 0.0, 105.0, 0.0, 2.0, 0.0)))
    uniform = np.full((1, 2 * mobility.WAYPOINT_CANDIDATES + 1), 0.5)
    xs, speeds = [], []
    for _ in range(5):
        state = mobility.random_waypoint_step(state, params, uniform)
        xs.append(float(state.x_m[0]))
        speeds.append(float(mobility.speed_mps(state)[0]))
    assert xs[:3] == pytest.approx([102.0, 104.0, 105.0])  # 2 m per slot, stopping at the waypoint
    assert speeds[2:4] == [0.0, 0.0]  # pausing 1.5 s: the whole next slot and half of the one after
    assert xs[4] != pytest.approx(105.0)  # walking again, half a slot's worth
    assert math.hypot(float(state.x_m[0]) - 105.0, float(state.y_m[0])) == pytest.approx(1.0)


def test_random_waypoint_never_aims_through_the_inner_disc():
    # a UE at (60, 0); every candidate lies straight across the ES, at (-60, 0): none is visible
    k = mobility.WAYPOINT_CANDIDATES
    area = (60.0**2 - 50.0**2) / (300.0**2 - 50.0**2)  # radius 60
    uniform = np.concatenate([np.full(k, area), np.full(k, 0.5), [0.0]])[None]
    wx, wy, speed = mobility._next_leg(np.array([60.0]), np.array([0.0]), uniform,
                                       mobility.RandomWaypointParams(CELL, 1.0, (1.0, 3.0), 0.0))
    np.testing.assert_allclose([wx[0], wy[0], speed[0]], [60.0, 0.0, 1.0], atol=1e-9)  # radial fallback: own bearing


# ---------------------------------------------------------------------- arrivals and queues
def test_arrivals_by_inversion_match_scipy():
    u = np.random.default_rng(5).random(40_000)
    for rate in (0.0, 0.3, 4.0, 60.0):
        counts = queues.poisson_arrivals(u, rate)
        np.testing.assert_array_equal(counts, scipy.stats.poisson.ppf(u, rate).astype(np.int64) if rate else 0)
        assert_same(counts, queues.poisson_arrivals(as_torch(u), rate))
    np.testing.assert_array_equal(queues.bernoulli_arrivals(np.array([0.0, 0.29, 0.3, 0.99]), 0.3), [1, 1, 0, 0])
    with pytest.raises(ValueError, match=r"probability 1.5 per slot; allowed: \[0, 1\]"):
        queues.bernoulli_arrivals(u, 1.5)


def test_burst_rates_by_hand():
    rates = queues.burst_rates(0.2, 2.5, 10, 30)  # burst fraction 10 / 40 = 1/4
    assert rates.burst_fraction == pytest.approx(0.25)
    assert rates.burst_rate == pytest.approx(0.5)  # 2.5 x 0.2
    assert rates.calm_rate == pytest.approx(0.1)  # (0.2 - 0.25 x 0.5) / 0.75
    assert (rates.enter_probability, rates.leave_probability) == pytest.approx((1 / 30, 1 / 10))
    assert queues.burst_rates(0.2, 4.0, 10, 30).calm_rate == 0.0  # peak ratio 1 / fraction: calm spells bring none
    with pytest.raises(ValueError, match=r"burst peak ratio 4.5; allowed: \[1, 4\]"):
        queues.burst_rates(0.2, 4.5, 10, 30)
    with pytest.raises(ValueError, match=r"spells of 0.5 and 30 slots; allowed: numbers >= 1"):
        queues.burst_rates(0.2, 2.0, 0.5, 30)
    # the chain by hand: a burst ends where u < 1/10, a calm spell where u < 1/30
    burst = np.array([True, True, False, False])
    np.testing.assert_array_equal(queues.burst_step(burst, np.array([0.05, 0.5, 0.02, 0.5]), rates),
                                  [False, True, True, False])
    np.testing.assert_array_equal(queues.initial_burst(np.array([0.1, 0.3]), rates), [True, False])
    uniforms, in_burst = np.array([[0.3, 0.05], [0.3, 0.05]]), np.array([True, False])
    counts = queues.modulated_arrivals("bernoulli", uniforms, in_burst, rates)
    np.testing.assert_array_equal(counts, [[1, 1], [0, 1]])  # u < 0.5 in the burst, u < 0.1 in the calm


def test_bursty_arrivals_statistics():
    """The burst chain's stationary share, spell lengths and autocorrelation, and the arrivals' long-run
    and conditional rates, against their closed forms (numpy and torch on the same draws)."""
    mean_rate, rates = 0.2, queues.burst_rates(0.2, 2.5, 10, 30)
    envs, slots, ues = 400, 4000, 10
    rng = np.random.default_rng(11)
    chain_u, arrival_u = rng.random((slots, envs)), rng.random((slots, envs, ues))

    def run(convert):
        burst = queues.initial_burst(convert(chain_u[0]), rates)
        path, counts = [], []
        for t in range(slots):
            if t:
                burst = queues.burst_step(burst, convert(chain_u[t]), rates)
            path.append(burst)
            counts.append(queues.modulated_arrivals("bernoulli", convert(arrival_u[t]), burst, rates))
        return path, counts

    path_np, counts_np = (np.stack(x) for x in run(np.asarray))
    path_torch, counts_torch = (torch.stack(x) for x in run(as_torch))
    assert_same(path_np, path_torch)
    assert_same(counts_np, counts_torch)
    pi, lam = 0.25, 1 - 1 / 30 - 1 / 10  # a two-state chain's lag-k autocorrelation is lam^k
    n = path_np.size
    se = math.sqrt(pi * (1 - pi) * (1 + lam) / (1 - lam) / n)
    assert abs(path_np.mean() - pi) < 5 * se
    for lag in (1, 3):
        assert abs(lag_autocorrelation(path_np.astype(float), lag) - lam**lag) < 0.01
    starts = path_np[1:] & ~path_np[:-1]  # bursts that begin inside the run: their mean length is 10 slots
    spells = path_np[1:].sum() / max(int(starts.sum()), 1)
    assert abs(spells - 10) < 0.5
    rate_var = pi * (1 - pi) * (rates.burst_rate - rates.calm_rate) ** 2
    se_rate = math.sqrt(rate_var * (1 + lam) / (1 - lam) / n + mean_rate * (1 - mean_rate) / counts_np.size)
    assert abs(counts_np.mean() - mean_rate) < 5 * se_rate  # the long-run rate is the scenario's
    in_burst = np.broadcast_to(path_np[..., None], counts_np.shape)
    assert abs(counts_np[in_burst].mean() - 0.5) < 0.005 and abs(counts_np[~in_burst].mean() - 0.1) < 0.005


def reference_queues(arrivals, free, capacity, deadline):
    """The same queues with Python deques, one UE at a time: per-slot events (T, N)."""
    slots, ues = arrivals.shape
    waiting = [deque() for _ in range(ues)]  # ages, head first
    out = {k: np.zeros((slots, ues), np.int64)
           for k in ("dropped_deadline", "dropped_overflow", "served_wait_slots", "waiting")}
    for t in range(slots):
        for n in range(ues):
            q = deque(age + 1 for age in waiting[n])
            while q and q[0] >= deadline:
                q.popleft()
                out["dropped_deadline"][t, n] += 1
            assert all(age < deadline for age in q)  # expired requests are always at the head
            for _ in range(arrivals[t, n]):
                if len(q) < capacity:
                    q.append(0)
                else:
                    out["dropped_overflow"][t, n] += 1
            out["served_wait_slots"][t, n] = q.popleft() if free[t, n] and q else -1
            out["waiting"][t, n] = len(q)
            waiting[n] = q
    return out


def test_queues_match_a_deque_reference_and_their_books_balance():
    slots, ues, capacity, deadline = 1500, 24, 4, 5
    rng = np.random.default_rng(6)
    arrivals = queues.poisson_arrivals(rng.random((slots, ues)), 0.6)
    free = rng.random((slots, ues)) < 0.35
    expected = reference_queues(arrivals, free, capacity, deadline)

    def run(convert):
        state = queues.empty_queues((ues,), capacity, like=convert(np.zeros(1)))
        events = []
        for t in range(slots):
            state, e = queues.queue_step(state, convert(arrivals[t]), convert(free[t]), deadline)
            events.append(e)
            assert (as_numpy(state.arrived) == as_numpy(state.served) + as_numpy(state.dropped_deadline)
                    + as_numpy(state.dropped_overflow) + as_numpy(state.waiting)).all()
        return state, events

    state_np, events_np = run(np.asarray)
    state_torch, events_torch = run(as_torch)
    assert_same(state_np, state_torch)
    for key, reference in expected.items():
        ours = np.stack([as_numpy(getattr(e, key)) for e in events_torch])
        np.testing.assert_array_equal(ours, reference, err_msg=key)
        np.testing.assert_array_equal(np.stack([getattr(e, key) for e in events_np]), reference, err_msg=key)
    assert min(expected["dropped_deadline"].sum(), expected["dropped_overflow"].sum()) > 100  # both paths taken
    np.testing.assert_array_equal(state_np.arrived, arrivals.sum(0))
    np.testing.assert_array_equal(state_np.served, (expected["served_wait_slots"] >= 0).sum(0))


def test_fifo_order_and_a_deadline_drop_at_the_expected_slot():
    #           slot:     0  1  2  3  4  5  6
    arrivals = np.array([[1, 1, 1, 0, 0, 0, 0]]).T  # one UE
    free = np.array([[0, 0, 1, 1, 0, 0, 0]]).T.astype(bool)
    state = queues.empty_queues((1,), capacity=4)
    waits, drops = [], []
    for t in range(7):
        state, e = queues.queue_step(state, arrivals[t], free[t], deadline_slots=4)
        waits.append(int(e.served_wait_slots[0]))
        drops.append(int(e.dropped_deadline[0]))
    # slot 2 serves the request of slot 0 (wait 2), slot 3 the one of slot 1 (wait 2); the one of slot 2
    # has waited 4 slots at slot 6 and is dropped there
    assert waits == [-1, -1, 2, 2, -1, -1, -1]
    assert drops == [0, 0, 0, 0, 0, 0, 1]
    assert (int(state.arrived[0]), int(state.served[0]), int(state.dropped_deadline[0]), int(state.waiting[0])) == (
        3, 2, 1, 0)

    state = queues.empty_queues((2,), capacity=2)  # per-UE deadlines; five arrivals into a queue of two
    state, e = queues.queue_step(state, np.array([5, 1]), np.array([False, False]), np.array([3, 1]))
    assert e.dropped_overflow.tolist() == [3, 0] and e.waiting.tolist() == [2, 1]
    state, e = queues.queue_step(state, np.array([0, 0]), np.array([False, False]), np.array([3, 1]))
    assert e.dropped_deadline.tolist() == [0, 1]  # deadline 1: only its own slot
    with pytest.raises(ValueError, match=r"deadline_slots 0; allowed: integers >= 1"):
        queues.queue_step(state, np.array([0, 0]), np.array([False, False]), 0)


# ---------------------------------------------------------------------- work that outlasts a slot
def test_busy_clock_frees_the_ue_at_the_first_boundary_after_its_delay():
    busy = np.zeros(3)
    busy = work.start_work(busy, np.array([True, True, False]), np.array([2.3, 0.3, 9.0]), slot_s=1.0)
    free_at = []
    for _ in range(4):
        busy = work.advance_work(busy)
        free_at.append(work.is_free(busy).tolist())
    assert free_at == [[False, True, True], [False, True, True], [True, True, True], [True, True, True]]
    busy = work.start_work(np.zeros(1), np.array([True]), np.array([2.1]), slot_s=0.7)  # 3.0000000000000004 slots
    for _ in range(3):
        assert not work.is_free(busy)[0]
        busy = work.advance_work(busy)
    assert work.is_free(busy)[0]


def test_sms_held_by_two_jobs_by_hand():
    # job A: slot 0, 2.5 slots, 100 SMs; job B: slot 1, 1 slot, 50 SMs
    start, duration, sms = np.array([0.0, 1.0]), np.array([2.5, 1.0]), np.array([100, 50])
    held = [int(work.sms_held_at(start, duration, sms, t)) for t in range(4)]
    assert held == [100, 150, 100, 0]
    jobs = work.no_es_jobs((), max_jobs=4)
    budgets = []
    for t, new in enumerate([([2.5], [100]), ([1.0], [50]), ([], []), ([], [])]):
        budgets.append(int(work.es_sm_budget(400, work.held_es_sms(jobs))))
        jobs = work.advance_es_jobs(work.record_es_jobs(jobs, np.array(new[0]), np.array(new[1], dtype=np.int64)))
    assert budgets == [400, 300, 300, 400]  # held before each slot's new jobs: 0, A, A, none
    assert int(work.es_sm_budget(100, 250)) == 0


@pytest.mark.parametrize("varying_capacity", [False, True])
def test_es_sms_never_negative_nor_over_allocated(varying_capacity):
    slots, clusters, envs = 600, 3, 8
    rng = np.random.default_rng(7)
    capacity = rng.integers(200, 401, (slots, envs)) if varying_capacity else np.full((slots, envs), 400)
    share = rng.random((slots, envs, clusters)) / clusters  # each cluster takes < budget / M
    duration = 0.05 + 3.95 * rng.random((slots, envs, clusters))

    def run(convert):
        jobs = work.no_es_jobs((envs,), max_jobs=16, like=convert(np.zeros(1)))
        held_path, new_path = [], []
        for t in range(slots):
            held = work.held_es_sms(jobs)
            budget = work.es_sm_budget(convert(capacity[t]), held)
            assert (as_numpy(budget) >= 0).all()
            new_sms = namespace_floor(convert(share[t]) * budget[..., None])
            held_path.append(held)
            new_path.append(new_sms)
            jobs = work.advance_es_jobs(work.record_es_jobs(jobs, convert(duration[t]), new_sms))
        return np.stack([as_numpy(h) for h in held_path]), np.stack([as_numpy(s) for s in new_path])

    held_np, new_np = run(np.asarray)
    held_torch, new_torch = run(as_torch)
    np.testing.assert_array_equal(held_np, held_torch)
    np.testing.assert_array_equal(new_np, new_torch)
    # brute force: SMs of every earlier job still running at each slot
    brute = np.zeros((slots, envs), np.int64)
    for t0 in range(slots):
        for t in range(t0 + 1, min(slots, t0 + 5)):
            brute[t] += np.where(t < t0 + duration[t0] - 1e-9, new_np[t0], 0).sum(-1)
    np.testing.assert_array_equal(held_np, brute)
    flat_start = np.broadcast_to(np.arange(slots)[:, None, None], new_np.shape).transpose(1, 0, 2).reshape(envs, -1)
    flat = lambda a: a.transpose(1, 0, 2).reshape(envs, -1)  # noqa: E731
    for t in (5, 77, 599):
        past = flat_start <= t - 1
        np.testing.assert_array_equal(work.sms_held_at(np.where(past, flat_start, 1e9), flat(duration),
                                                       flat(new_np), t), held_np[t])
    assert (held_np >= 0).all() and held_np.max() > 0
    budget = np.maximum(capacity - held_np, 0)
    assert (new_np.sum(-1) <= budget).all()  # new phases get only what running ones leave
    if varying_capacity:
        assert (held_np > capacity).any()  # the ES shrank below what is held: the budget is 0, not negative
    else:
        assert (held_np + new_np.sum(-1) <= capacity).all()
        assert (held_np + new_np.sum(-1)).max() > 0.9 * 400  # the budget is actually used up


def namespace_floor(x):
    """Integer SMs from a float share, in x's library."""
    return x.floor().to(torch.int64) if isinstance(x, torch.Tensor) else np.floor(x).astype(np.int64)


def test_a_full_job_table_is_refused():
    jobs = work.record_es_jobs(work.no_es_jobs((), max_jobs=2), np.array([3.0, 3.0]), np.array([10, 10]))
    with pytest.raises(ValueError, match=r"1 ES jobs more than the free rows of the job table \(2 rows\)"):
        work.record_es_jobs(jobs, np.array([1.0]), np.array([5]))


# ---------------------------------------------------------------------- batteries
def test_battery_books_balance_over_an_episode():
    slots, ues, capacity, recharge = 2000, 50, 1000.0, 50.0
    rng = np.random.default_rng(8)
    start = battery.initial_battery(rng.random(ues), capacity, (0.5, 1.0))
    used = rng.random((slots, ues)) * 120.0

    def run(convert):
        level, books = convert(start), []
        for t in range(slots):
            step = battery.battery_step(level, convert(used[t]), recharge, capacity)
            level = step.level_j
            books.append(as_numpy(step))
        return books

    books_np, books_torch = run(np.asarray), run(as_torch)
    for a, b in zip(books_np[::100], books_torch[::100]):
        assert_same(a, b)
    stacked = {k: np.stack([b[k] for b in books_np]) for k in books_np[0]}
    assert stacked["level_j"].min() >= 0.0 and stacked["level_j"].max() <= capacity
    for n in range(ues):
        balance = math.fsum([start[n], *stacked["recharged_j"][:, n], *(-stacked["drained_j"][:, n])])
        assert balance == pytest.approx(stacked["level_j"][-1, n], abs=1e-9)
    np.testing.assert_allclose(stacked["drained_j"] + stacked["shortfall_j"], used, atol=1e-12)
    np.testing.assert_allclose(stacked["recharged_j"] + stacked["spilled_j"], recharge, atol=1e-12)
    assert stacked["shortfall_j"].max() > 0 and stacked["spilled_j"].max() > 0  # both limits reached


def test_cannot_afford_and_affordable_steps_by_hand():
    level = np.array([100.0, 50.0, 0.0, 10.0])
    assert battery.cannot_afford(level, np.array([100.0, 50.0001, 0.0, 20.0])).tolist() == [False, True, False, True]
    assert battery.cannot_afford(as_torch(level), as_torch(np.array([100.0, 50.0001, 0.0, 20.0]))).tolist() == [
        False, True, False, True]
    # (level - 50 J of downlink) // 300 J per step
    steps = battery.affordable_ue_steps(np.array([1000.0, 950.0, 10.0]), 300.0, 50.0)
    assert steps.tolist() == [3, 3, 0]
    step = battery.battery_step(np.array([30.0]), np.array([50.0]), 5.0, 100.0)
    assert (step.level_j[0], step.drained_j[0], step.recharged_j[0], step.shortfall_j[0]) == (5.0, 30.0, 5.0, 20.0)


# ---------------------------------------------------------------------- intent persistence
def test_intent_persistence_statistics():
    ues, slots, keep, groups = 500, 1000, 0.6, 3
    rng = np.random.default_rng(9)
    first, steps = rng.random(ues), rng.random((slots, ues, 2))

    def run(convert):
        group = intent.initial_intent(convert(first), groups)
        path = [group]
        for t in range(slots):
            group = intent.intent_step(group, convert(steps[t]), keep, groups)
            path.append(group)
        return np.stack([as_numpy(g) for g in path])

    path = run(np.asarray)
    np.testing.assert_array_equal(path, run(as_torch))
    same = (path[1:] == path[:-1]).mean()  # iid Bernoulli(p + (1 - p) / G) indicators
    expected = keep + (1 - keep) / groups
    assert abs(same - expected) < 5 * math.sqrt(expected * (1 - expected) / (slots * ues))
    frequency = np.bincount(path.ravel(), minlength=groups) / path.size
    se = math.sqrt((1 / groups) * (1 - 1 / groups) * (1 + keep) / (1 - keep) / path.size)
    assert np.abs(frequency - 1 / groups).max() < 5 * se
    np.testing.assert_array_equal(intent.initial_intent(np.array([0.0, 0.34, 0.999999]), 3), [0, 1, 2])


# ---------------------------------------------------------------------- draws and config
def test_draw_helpers_use_each_librarys_generator():
    a = draws.uniform(np.random.default_rng(0), (3, 2))
    b = draws.standard_normal(np.random.default_rng(0), (3,))
    assert isinstance(a, np.ndarray) and a.shape == (3, 2) and isinstance(b, np.ndarray)
    gen = torch.Generator().manual_seed(0)
    t = draws.uniform(gen, (4,), dtype=torch.float64)
    assert t.dtype == torch.float64 and t.device.type == "cpu"
    assert torch.equal(t, draws.uniform(torch.Generator().manual_seed(0), (4,), dtype=torch.float64))
    assert channel_memory.draw_fading(gen, (5, 3), torch.float64).shape == (5, 3, 2)
    with pytest.raises(TypeError, match="numpy.random.Generator, a torch.Generator or a GeneratorBatch, got int"):
        draws.uniform(0, (2,))


def test_config_is_off_by_default_and_the_default_yaml_documents_the_defaults():
    cfg = DynamicsConfig()
    assert cfg.enabled_processes == ()
    default_yaml = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
    reference = load_yaml(default_yaml)["dynamics"]  # the one home of the keys' documentation
    assert DynamicsConfig.from_dict(reference) == cfg  # it states the defaults
    assert not Path(dynamics.__file__).with_name("reference.yaml").exists()  # and no second copy drifts
    # every key of every section appears there (a missing key would silently take its default)
    for f in dataclasses.fields(DynamicsConfig):
        if f.name == "slot_s":
            continue
        section = getattr(cfg, f.name)
        assert sorted(reference[f.name]) == sorted(g.name for g in dataclasses.fields(section)), f.name
    sections = [f.name for f in dataclasses.fields(DynamicsConfig) if f.name != "slot_s"]
    assert list(dynamics.PROCESSES.names) == sections  # one registry entry per config section
    on = DynamicsConfig.from_dict({"requests": {"enabled": True}, "battery": {"enabled": True}})
    assert on.enabled_processes == ("requests", "battery")


def test_mobility_presets_and_overrides():
    cfg = DynamicsConfig().with_overrides({"mobility.preset": "vehicle", "mobility.memory": 0.5})
    values = cfg.mobility.resolved()
    assert values["mean_speed_mps"] == 13.9 and values["memory"] == 0.5
    assert MOBILITY_PRESETS["pedestrian"]["mean_speed_mps"] == 1.4
    params = cfg.with_overrides({"mobility.model": "random_waypoint"}).mobility.params(CELL, 2.0)
    assert params == mobility.RandomWaypointParams(CELL, 2.0, (8.3, 16.7), 10.0)
    with pytest.raises(ValueError, match=r"0 < r_min < r_max \(channel.distance_range_m\), got \[50.0, 50.0\]"):
        cfg.mobility.params((50.0, 50.0), 1.0)
    with pytest.raises(ConfigError, match="'channel.distance_range_m'"):
        cfg.with_overrides({"mobility.enabled": True}).check_cell((50.0, 50.0))


@pytest.mark.parametrize("override, message", [
    ({"requests.rate_per_slot": 1.5}, r"'requests.rate_per_slot' has value 1.5; allowed: a number in \[0, 1\] "
                                      r"for requests.arrivals='bernoulli'"),
    ({"requests.arrivals": "hawkes"},
     r"'requests.arrivals' has value 'hawkes'; allowed: one of 'bernoulli', 'poisson'"),
    ({"mobility.preset": "cyclist"}, r"'mobility.preset' has value 'cyclist'; allowed: one of 'pedestrian', 'vehicle'"),
    ({"mobility.memory": 1.2}, r"'mobility.memory' has value 1.2; allowed: null or a number in \[0, 1\]"),
    ({"mobility.speed_range_mps": [3.0, 1.0]}, r"'mobility.speed_range_mps' has value \[3.0, 1.0\]"),
    ({"background_load.correlation": 1.0},
     r"'background_load.correlation' has value 1.0; allowed: a number in \[0, 1\)"),
    ({"channel.correlation": float("nan")}, r"'channel.correlation' has value nan"),
    ({"battery.initial_fraction": [0.9, 0.2]}, r"'battery.initial_fraction' has value \[0.9, 0.2\]"),
    ({"work.max_es_jobs": 0}, r"'work.max_es_jobs' has value 0; allowed: an integer >= 1"),
    ({"requests.bursts.enabled": True, "requests.bursts.peak_ratio": 5.0},
     r"'requests.bursts.peak_ratio' has value 5.0; allowed: a number in \[1, 4\]"),
    ({"requests.bursts.enabled": True, "requests.rate_per_slot": 0.5},
     r"'requests.bursts.peak_ratio' has value 2.5; allowed: a ratio whose burst rate peak_ratio x rate_per_slot "
     r"\(0.5\) is at most 1 for requests.arrivals='bernoulli'"),
    ({"requests.bursts.mean_calm_slots": 0.5},
     r"'requests.bursts.mean_calm_slots' has value 0.5; allowed: a number >= 1"),
    ({"intent.keep": 0.5}, r"unknown config key 'intent.keep'; allowed keys here: \['enabled', 'keep_probability'\]"),
])
def test_config_errors_name_the_key_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        DynamicsConfig().with_overrides(override)
