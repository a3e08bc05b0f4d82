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


def test_approximated_prefix_counts_common_run_share():
    for length in range(0, 20):
        mask = ecdiff.real_call_mask(0, length, 7, 2, 2)
        for prefix in range(0, length + 1):
            assert ecdiff.approximated_prefix(prefix, length, 7, 2, 2) == (~mask[:prefix]).sum()


def test_quality_loss_calibration_hand_computed():
    # Image rows of EC-Diff Table 1: shortfall of EC-Diff's SSIM vs HybridSD(k=10), per approximated step.
    approximated = {  # s cloud steps minus real calls (p pre-inference, then k approximated + 1 real)
        "SD-small": 34 - 16, "SD-tiny": 37 - (7 + 10), "SDXL-1B": 30 - (6 + 4), "SDXL-vega": 36 - (6 + 5)}
    losses = [(1 - 0.919 / 0.923) / approximated["SD-small"], (1 - 0.912 / 0.919) / approximated["SD-tiny"],
              (1 - 0.905 / 0.909) / approximated["SDXL-1B"], (1 - 0.870 / 0.889) / approximated["SDXL-vega"]]
    assert calibrate_approximation_loss() == pytest.approx(np.median(losses), rel=1e-9)
