"""Delay, energy and reward equations (Eqs. 8-23, 33) against hand computation."""
import numpy as np
import pytest

from his_env import allocation, channel, system_model
from his_env.config import HISConfig

CONFIG = HISConfig.from_dict({
    "steps": {"total": 10, "max_common": 5, "max_es_personal": 4, "min_ue": 1},
    "es": {"flops_per_step": 1e12, "sm_range": [30, 30], "frequency_hz": 1e9, "flops_per_cycle_per_sm": 1000,
           "efficiency": 0.5, "kappa": 1e-27, "mu1": 2, "mu2": 100},
    "ue": {"flops_per_step": 2e12, "sm_range": [10, 40], "frequency_hz": 2e9, "flops_per_cycle_per_sm": 500,
           "efficiency": 0.5, "kappa": 1e-27, "mu1": 3, "mu2": 50},
    "channel": {"latent_shape": [4, 4, 4], "bits_per_value": 8, "compression_ratio": 2, "transmit_power_w": 1.0},
    "reward": {"quality_weight": 2.0, "delay_weight": 0.5, "energy_weight": 0.01},
    "num_ues": 3, "num_clusters": 2,
})
POINT = system_model.DecisionPoint(cluster=np.array([0, 0, 1]), num_clusters=2, es_sm_budget=30,
                                   ue_sms=np.array([10, 20, 40]), downlink_rate=np.array([1e3, 1e3, 2e3]))
X, Y, Z = np.array([2, 4, 3]), np.array([1, 0, 2]), np.array([7, 6, 5])
Q = np.array([0.30, 0.25, 0.28])


def run(rule="cluster_equal"):
    work = system_model.es_work(CONFIG, POINT, X, Y, ecdiff_enabled=False)
    return system_model.evaluate(CONFIG, POINT, X, Y, Z, work, Q, rule)


def test_delays_and_energies_by_hand():
    r = run()
    np.testing.assert_array_equal(r["es_sms"], [15, 15])
    f_es = 15 * 1e9 * 1000 * 0.5  # Eq. (9)
    t_common = np.array([4, 3]) * 1e12 / f_es  # Eq. (8): x_m^max = 4 and 3
    t_personal = np.array([1 + 0, 2]) * 1e12 / f_es  # Eq. (12): sum of y over the cluster
    np.testing.assert_allclose(r["common_delay"], t_common)
    np.testing.assert_allclose(r["personal_delay"], t_personal)
    joule_per_es_step = 1e-27 * 1e12 * 1e9**2 / (1000 * 0.5) * (2 + 100 / 15)  # Eqs. (10)-(11)
    np.testing.assert_allclose(r["es_energy"], (np.array([4, 3]) + np.array([1, 2])) * joule_per_es_step)

    bits = 4 * 4 * 4 * 8 / 2  # Eq. (14)
    t_tx = bits / np.array([1e3, 1e3, 2e3])
    ue_flops = np.array([10, 20, 40]) * 2e9 * 500 * 0.5  # Eq. (17)
    t_ue = Z * 2e12 / ue_flops  # Eq. (16)
    e_ue = Z * 1e-27 * 2e12 * 2e9**2 / (500 * 0.5) * (3 + 50 / np.array([10, 20, 40]))  # Eq. (18)
    delay = np.array([t_common[0] + t_personal[0], t_common[0] + t_personal[0], t_common[1] + t_personal[1]]) \
        + t_tx + t_ue  # Eq. (19)
    np.testing.assert_allclose(r["delay"], delay)
    np.testing.assert_allclose(r["ue_energy"], 1.0 * t_tx + e_ue)  # Eq. (20)

    # Eq. (33): ES energy shared by x_n / sum x and y_n / sum y within the cluster
    e_c = np.array([4, 3]) * joule_per_es_step
    e_p = np.array([1, 2]) * joule_per_es_step
    share = np.array([2 / 6 * e_c[0] + 1 / 1 * e_p[0], 4 / 6 * e_c[0] + 0, 1.0 * e_c[1] + 1.0 * e_p[1]])
    np.testing.assert_allclose(r["energy"], 1.0 * t_tx + e_ue + share)
    np.testing.assert_allclose(r["reward"], 2.0 * Q - 0.5 * delay - 0.01 * (t_tx + e_ue + share))

    total_energy = e_c.sum() + e_p.sum() + (t_tx + e_ue).sum()  # Eq. (22)
    assert r["total_quality"] == pytest.approx(Q.sum())
    assert r["total_delay"] == pytest.approx(delay.sum())
    assert r["total_energy"] == pytest.approx(total_energy)
    assert r["utility"] == pytest.approx(2.0 * Q.sum() - 0.5 * delay.sum() - 0.01 * total_energy)  # Eq. (23)
    assert r["reward"].sum() == pytest.approx(r["utility"])  # sum_n r_n = U


def test_kkt_allocation_used_and_optimal_among_integer_splits():
    r = run("kkt")
    calls = np.array([4 + 1, 3 + 2])
    weights = allocation.kkt_weights(np.array([2, 1]), calls, 0.5, 0.01, 1e12, 1e9, 1000, 0.5, 1e-27, 100)
    np.testing.assert_array_equal(r["es_sms"], allocation.kkt_allocation(weights, 30))
    # the KKT split gives the best utility of all integer splits of the 30 SMs
    utilities = []
    for v0 in range(1, 30):
        sms = np.array([v0, 30 - v0])
        f = sms * 1e9 * 1000 * 0.5
        t_m = calls * 1e12 / f
        e_m = calls * 1e-27 * 1e12 * 1e18 / 500 * (2 + 100 / sms)
        es_cost = 0.5 * np.array([2, 1]) @ t_m + 0.01 * e_m.sum()
        utilities.append(-es_cost)
    others = r["utility"] + (0.5 * np.array([2, 1]) @ (calls * 1e12 / (r["es_sms"] * 5e11))
                             + 0.01 * (calls * 1e-27 * 1e12 * 1e18 / 500 * (2 + 100 / r["es_sms"])).sum())
    assert r["utility"] == pytest.approx(others + max(utilities))


def test_batched_evaluation_equals_single():
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 6, size=(5, 3))
    ys = rng.integers(0, 5, size=(5, 3))
    zs = 10 - xs - ys
    qs = rng.uniform(0.1, 0.3, size=(5, 3))
    work = system_model.es_work(CONFIG, POINT, xs, ys, ecdiff_enabled=True)
    batch = system_model.evaluate(CONFIG, POINT, xs, ys, zs, work, qs, "kkt")
    for b in range(5):
        single_work = system_model.es_work(CONFIG, POINT, xs[b], ys[b], ecdiff_enabled=True)
        single = system_model.evaluate(CONFIG, POINT, xs[b], ys[b], zs[b], single_work, qs[b], "kkt")
        for key in ("reward", "utility", "es_sms", "delay", "energy", "approximated_steps"):
            np.testing.assert_allclose(batch[key][b], single[key])


def test_ecdiff_counts_calls_not_steps():
    cfg = CONFIG.with_overrides({"ecdiff.enabled": True, "ecdiff.pre_inference_calls": 2, "ecdiff.approx_steps": 1})
    x, y = np.array([5, 0, 0]), np.array([4, 0, 4])
    work = system_model.es_work(cfg, POINT, x, y, ecdiff_enabled=True)
    # common run of cluster 0 (5 steps): R R A R R -> 4 calls; cluster 1 has no common run
    np.testing.assert_array_equal(work.common_calls, [4, 0])
    # UE 0 personalised after 5 common steps: R R A R -> 3 calls; UE 2 from scratch (p = 2): R R A R -> 3
    np.testing.assert_array_equal(work.personal_calls, [3, 0, 3])
    np.testing.assert_array_equal(work.approximated_steps, [1 + 1, 0, 1])


def test_channel_rate_and_path_loss_by_hand():
    cfg = CONFIG.channel
    g = channel.channel_gain(np.random.default_rng(0), np.array([100.0]),
                             HISConfig.from_dict({"channel": {"rayleigh_fading": False}}).channel)
    assert g[0] == pytest.approx(10 ** (-(128.1 + 37.6 * np.log10(0.1)) / 10))
    rate = channel.downlink_rate(np.array([1e-10]), cfg)
    noise = 10 ** ((-174 - 30) / 10) * cfg.bandwidth_hz
    assert rate[0] == pytest.approx(cfg.bandwidth_hz * np.log2(1 + 1.0 * 1e-10 / noise))  # Eq. (15)
    d = channel.sample_distances(np.random.default_rng(1), 200000, (50.0, 300.0))
    assert d.min() >= 50 and d.max() <= 300
    # uniform over the annulus: P(d < r) = (r^2 - 50^2) / (300^2 - 50^2)
    assert np.mean(d < 200) == pytest.approx((200**2 - 50**2) / (300**2 - 50**2), abs=0.005)


def test_counterfactual_utilities_by_hand():
    """U with each UE's decision replaced by the default (x, y, z) = (0, 0, 10): UE 0 leaves cluster 0's
    common run at UE 1's 4 steps, UE 1 was its unique max (the run drops to UE 0's 2), UE 2 is alone
    in cluster 1 (its run drops to 0). cluster_equal keeps 15 SMs per cluster."""
    q_default = np.array([0.10, 0.12, 0.15])
    no_ecdiff = CONFIG.with_overrides({"ecdiff.enabled": False})
    got = system_model.counterfactual_utilities(no_ecdiff, POINT, X, Y, Z, Q, 0, 0, 10, q_default, "cluster_equal")

    call_delay = 1e12 / (15 * 1e9 * 1000 * 0.5)  # Eqs. (8)-(9), (12) per ES call
    call_energy = 1e-27 * 1e12 * 1e9**2 / (1000 * 0.5) * (2 + 100 / 15)  # Eqs. (10)-(11), (13)
    ue_sms, rate = np.array([10, 20, 40]), np.array([1e3, 1e3, 2e3])
    t_tx = 4 * 4 * 4 * 8 / 2 / rate  # Eq. (14)

    def t_ue(z):
        return z * 2e12 / (ue_sms * 2e9 * 500 * 0.5)  # Eqs. (16)-(17)

    def e_ue(z):
        return z * 1e-27 * 2e12 * 2e9**2 / (500 * 0.5) * (3 + 50 / ue_sms)  # Eq. (18)

    expected = []
    # per counterfactual: (x_m^max, sum y) of clusters 0 and 1, and the UEs' z and Q
    for calls, z, q in ((((4, 0), (3, 2)), [10, 6, 5], [0.10, 0.25, 0.28]),
                        (((2, 1), (3, 2)), [7, 10, 5], [0.30, 0.12, 0.28]),
                        (((4, 1), (0, 0)), [7, 6, 10], [0.30, 0.25, 0.15])):
        (c0, p0), (c1, p1) = calls
        z = np.array(z, dtype=float)
        es_delay = np.array([c0 + p0, c0 + p0, c1 + p1]) * call_delay
        total_delay = (es_delay + t_tx + t_ue(z)).sum()  # Eqs. (19), (21)
        total_energy = (c0 + p0 + c1 + p1) * call_energy + (1.0 * t_tx + e_ue(z)).sum()  # Eqs. (20), (22)
        expected.append(2.0 * sum(q) - 0.5 * total_delay - 0.01 * total_energy)  # Eq. (23)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("rule", sorted(allocation.ALLOCATION_RULES.names))
def test_counterfactual_utilities_equal_evaluating_each_joint_action(rule):
    """numpy: against N joint actions through es_work and evaluate, at a point with a unique
    cluster max, a tied one, a singleton cluster and an absent cluster (num_clusters 3 of 4)."""
    cfg = CONFIG.with_overrides({"num_ues": 7, "ecdiff.enabled": False})
    point = system_model.DecisionPoint(np.array([0, 0, 0, 1, 1, 2, 1]), 3, 30, np.array([10, 20, 40, 15, 25, 30, 12]),
                                       np.array([1e3, 2e3, 3e3, 1e3, 5e2, 2e3, 4e3]), max_clusters=4)
    x, y = np.array([5, 2, 1, 3, 3, 2, 0]), np.array([1, 4, 0, 2, 1, 3, 2])  # cluster 0: unique max, 1: tie
    z = cfg.steps.total - x - y
    q, q_default = np.linspace(0.2, 0.3, 7), np.linspace(0.05, 0.11, 7)
    default = (1, 2, cfg.steps.total - 3)
    got = system_model.counterfactual_utilities(cfg, point, x, y, z, q, *default, q_default, rule)
    for n in range(7):
        xn, yn, zn, qn = x.copy(), y.copy(), z.copy(), q.copy()
        xn[n], yn[n], zn[n], qn[n] = *default, q_default[n]
        work = system_model.es_work(cfg, point, xn, yn, ecdiff_enabled=False)
        want = system_model.evaluate(cfg, point, xn, yn, zn, work, qn, rule)["utility"]
        assert got[n] == pytest.approx(want, rel=1e-12)


def test_counterfactual_utilities_refuse_ecdiff():
    with pytest.raises(ValueError, match="ecdiff.enabled"):
        system_model.counterfactual_utilities(CONFIG.with_overrides({"ecdiff.enabled": True}), POINT, X, Y, Z, Q,
                                              0, 0, 10, Q, "kkt")
