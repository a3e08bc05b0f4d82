"""EC-Diff call schedule against a literal simulation of Alg. 1 and hand-counted cases."""
import numpy as np
import pytest

from quality_oracle import ecdiff
from quality_oracle.hiqm import calibrate_approximation_loss


def simulate(start, length, p, k, reinit):
    """Walk the segment step by step as Alg. 1 does; record whether each step calls the model."""
    calls, since_switch, approx_run = [], 0, 0
    for position in range(length):
        step = start + position
        warming = since_switch < reinit or step < p
        if warming or approx_run == k or position == length - 1:
            calls.append(True)
            approx_run = 0
        else:
            calls.append(False)
            approx_run += 1
        since_switch += 1
    return np.array(calls, dtype=bool)


@pytest.mark.parametrize("p", [2, 3, 7, 10])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_mask_matches_simulation(p, k):
    for start in range(0, 14):
        for length in range(0, 20):
            expected = simulate(start, length, p, k, 2)
            np.testing.assert_array_equal(ecdiff.real_call_mask(start, length, p, k, 2), expected)
            assert ecdiff.real_calls(start, length, p, k, 2) == expected.sum()


def test_hand_counted_cases():
    # EC-Diff's SD-v1.4 setting: p = 7, k = 2 over 34 cloud steps: 7 + 27 / 3 = 16 calls
    assert ecdiff.real_calls(0, 34, 7, 2, 2) == 16
    # a personalised phase after 10 common steps: R R A A R A A R (the last is the handoff correction)
    np.testing.assert_array_equal(ecdiff.real_call_mask(10, 8, 7, 2, 2),
                                  [1, 1, 0, 0, 1, 0, 0, 1])
    # after 3 common steps the trajectory is still settling (p = 7): 4 more real calls before approximating
    np.testing.assert_array_equal(ecdiff.real_call_mask(3, 8, 7, 2, 2), [1, 1, 1, 1, 0, 0, 1, 1])


def simulate_common_run(exits, p, k, reinit):
    """Walk a cluster's common run step by step: a member leaving after x steps needs the step
    x - 1 to be a real call, and every real call closes a round of k approximations."""
    length = max(exits, default=0)
    calls, approx_run = [], 0
    for position in range(length):
        handoff = position + 1 in exits
        if position < max(reinit, p) or approx_run == k or handoff:
            calls.append(True)
            approx_run = 0
        else:
            calls.append(False)
            approx_run += 1
    return np.array(calls, dtype=bool)


def test_member_leaving_early_gets_a_corrected_latent():
    # x = 8 and 16 in one cluster, p = 7, k = 2: position 7 (the 8th step) would be approximated
    # by the plain cycle (R x7, A A R A A R ...); the member leaving there forces a real call, and
    # the next round counts from it: R x7 | R | A A R | A A R | A R -> 11 calls, not 10.
    mask = ecdiff.real_call_mask(0, 16, 7, 2, 2, exits=[8, 16])
    np.testing.assert_array_equal(mask, [1] * 8 + [0, 0, 1, 0, 0, 1, 0, 1])
    calls, approximated = ecdiff.common_run_schedule(np.array([8, 16]), np.array([0, 0]), 1, 16, 7, 2, 2)
    assert calls.tolist() == [11]
    assert approximated.tolist() == [0, 5]  # the member at 8 receives a latent from a real call


@pytest.mark.parametrize("p,k", [(2, 1), (3, 2), (7, 2), (4, 3)])
def test_common_run_schedule_matches_simulation(p, k):
    rng = np.random.default_rng(p * 10 + k)
    for _ in range(200):
        n, m = int(rng.integers(1, 9)), int(rng.integers(1, 4))
        x = rng.integers(0, 17, size=n)
        cluster = rng.integers(0, m, size=n)
        calls, approximated = ecdiff.common_run_schedule(x, cluster, m, 16, p, k, 2)
        for c in range(m):
            exits = {int(v) for v in x[cluster == c] if v > 0}
            mask = simulate_common_run(exits, p, k, 2)
            assert calls[c] == mask.sum()
            np.testing.assert_array_equal(ecdiff.real_call_mask(0, len(mask), p, k, 2, exits=sorted(exits)), mask)
            for member in np.flatnonzero(cluster == c):
                assert approximated[member] == (~mask[: x[member]]).sum()


def test_common_run_schedule_batched_equals_rows():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 17, size=(4, 5, 9))
    cluster = rng.integers(0, 3, size=(4, 1, 9))  # one clustering per row, five decisions each
    calls, approximated = ecdiff.common_run_schedule(x, cluster, 3, 16, 7, 2, 2)
    for i in range(4):
        for j in range(5):
            row_calls, row_approximated = ecdiff.common_run_schedule(x[i, j], cluster[i, 0], 3, 16, 7, 2, 2)
            np.testing.assert_array_equal(calls[i, j], row_calls)
            np.testing.assert_array_equal(approximated[i, j], row_approximated)


def test_quality_loss_calibration_hand_computed():
    # Image rows of EC-Diff Table 1: shortfall of EC-Diff's SSIM vs HybridSD(k=10), per approximated step.
    approximated = {  # s cloud steps minus real calls (p pre-inference, then k approximated + 1 real)
        "SD-small": 34 - 16, "SD-tiny": 37 - (7 + 10), "SDXL-1B": 30 - (6 + 4), "SDXL-vega": 36 - (6 + 5)}
    losses = [(1 - 0.919 / 0.923) / approximated["SD-small"], (1 - 0.912 / 0.919) / approximated["SD-tiny"],
              (1 - 0.905 / 0.909) / approximated["SDXL-1B"], (1 - 0.870 / 0.889) / approximated["SDXL-vega"]]
    assert calibrate_approximation_loss() == pytest.approx(np.median(losses), rel=1e-9)


def test_live_sampler_follows_the_same_common_run_schedule():
    """The live sampler's common run calls the model exactly where the simulation says: a member
    leaving for the UE (y = 0) after 5 steps, one switching prompt after 3, one running to 9."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from tests import live_fixtures as lf
    from quality_oracle.live.sampler import ClusterPlan, HISSampler, UserPlan

    torch.set_num_threads(1)
    users = (UserPlan("a grey cat", "", 5, 0, 5), UserPlan("a black cat", "", 3, 2, 5),
             UserPlan("a cat on a sofa", "", 9, 0, 1))
    sampler = HISSampler(lf.tiny_sd3_pipeline(), height=32, width=32, max_sequence_length=32)
    schedule = ecdiff.ECDiffSchedule(pre_inference_calls=2, approx_steps=2, smoothing=0.3, reinit_calls=2)
    out = sampler.run([ClusterPlan("a cat", users, seed=0)], ecdiff=schedule)
    mask = simulate_common_run({5, 3, 9}, 2, 2, 2)  # R R R(x=3) A R(x=5) A A R R(x=9): every exit real
    assert mask.tolist() == [True, True, True, False, True, False, False, True, True]
    assert out.stats.common_calls == [int(mask.sum())]
    calls, _ = ecdiff.common_run_schedule(np.array([5, 3, 9]), np.array([0, 0, 0]), 1, 9, 2, 2, 2)
    assert calls.tolist() == [int(mask.sum())]
