"""EC-Diff step accounting on the ES: which ES denoising steps need a real model call.

EC-Diff (Alg. 1) runs the ES model for `p` pre-inference calls, then alternates `k` steps whose
noise prediction is extrapolated from a noise gradient with one real, correcting call; the
gradient is refreshed with smoothing `alpha` (EC-Diff Eq. 6). Only real calls cost GPU time, so
ES delay and energy (Eqs. 8-13) count model calls, not steps.

The HIS pipeline has two ES phases per user, with different conditioning: the cluster's common
phase (public prompt) and the user's personalised phase I (personal + NPI prompt). At the prompt
switch the predicted noise jumps, so the gradient carried over from the common phase is wrong;
the personalised phase re-initialises it from `reinit_calls` real calls (two is the least that
defines a gradient). The schedule of one phase segment of `length` steps that starts after
`start` already-denoised steps is, position by position:

* real while the segment is warming up: the first ``w = max(reinit_calls, p - start)`` positions
  (``p - start`` keeps the rule of EC-Diff that approximation waits until the noise differences
  have settled after `p` steps of the trajectory);
* then cycles of ``k`` approximated positions followed by one real, correcting position;
* the last position of a segment is always real: EC-Diff hands over to the edge model only
  after a correcting call (Alg. 1 breaks after line 15), and the prompt switch needs a clean
  latent too.

This module is the single definition of EC-Diff's settings and schedule: the env's delay/energy
accounting (`his_env.system_model`) and the live sampler (`quality_oracle.live`) both use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ECDiffSchedule:
    """EC-Diff settings the ES applies (EC-Diff Alg. 1); None where a schedule is expected means "off"."""

    pre_inference_calls: int  # p
    approx_steps: int  # k
    smoothing: float  # alpha, EC-Diff Eq. (6)
    reinit_calls: int  # real calls after the public-to-personal prompt switch


def real_call_mask(start: int, length: int, pre_inference_calls: int, approx_steps: int,
                   reinit_calls: int) -> np.ndarray:
    """Boolean mask over the `length` positions of one segment: True where the model is called."""
    if length < 0 or start < 0:
        raise ValueError(f"start and length must be >= 0, got start={start}, length={length}")
    positions = np.arange(length)
    warmup = max(reinit_calls, pre_inference_calls - start)
    after = positions - warmup
    mask = (after < 0) | (after % (approx_steps + 1) == approx_steps)
    if length:
        mask[-1] = True
    return mask


def real_calls(start: np.ndarray | int, length: np.ndarray | int, pre_inference_calls: int,
               approx_steps: int, reinit_calls: int) -> np.ndarray:
    """Number of real model calls in segments, vectorised over users (closed form of the mask).

    With warm-up ``w`` and ``R = length - min(length, w)`` positions after it, the count is
    ``min(length, w) + ceil(R / (k + 1))``.
    """
    start = np.asarray(start, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    warmup = np.maximum(reinit_calls, pre_inference_calls - start)
    warm = np.minimum(length, warmup)
    rest = length - warm
    return warm + -(-rest // (approx_steps + 1))


def approximated_prefix(prefix: np.ndarray, length: np.ndarray, pre_inference_calls: int,
                        approx_steps: int, reinit_calls: int) -> np.ndarray:
    """Approximated positions among the first `prefix` positions of a segment that starts the
    trajectory (start = 0) and has `length` positions — a user's share of its cluster's common run.
    """
    prefix = np.asarray(prefix, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    warmup = max(reinit_calls, pre_inference_calls)
    after = np.maximum(prefix - warmup, 0)
    approximated = after - after // (approx_steps + 1)
    last = length - 1 - warmup  # the segment's last position, counted after the warm-up
    last_was_approximated = (prefix == length) & (last >= 0) & (last % (approx_steps + 1) != approx_steps)
    return approximated - last_was_approximated
