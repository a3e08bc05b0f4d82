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
* then rounds of ``k`` approximated positions, each closed by one real, correcting position;
* every position after which a latent leaves the segment is real: EC-Diff hands over only after a
  correcting call (Alg. 1 breaks after line 15). A personalised phase ends with its handoff to
  the UE; a cluster's common run is left by each member at its own x_n, for the UE (y_n = 0) or
  for the prompt switch (y_n > 0), so position x_n - 1 of the common run is real for every
  member, not only at x_m^max. Such a forced call is a correcting call like any other: the next
  round of k approximations starts after it.

`segment_mask` is the single definition of that schedule, vectorised over segments (numpy or
torch, `his_common.arrays`): the env's delay/energy accounting (`his_env.system_model`, through
`common_run_schedule` and `real_calls`) and the live sampler (`quality_oracle.live`, through
`real_call_mask`) all use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from his_common.arrays import namespace


@dataclass(frozen=True)
class ECDiffSchedule:
    """EC-Diff settings the ES applies (EC-Diff Alg. 1); None where a schedule is expected means "off"."""

    pre_inference_calls: int  # p
    approx_steps: int  # k
    smoothing: float  # alpha, EC-Diff Eq. (6)
    reinit_calls: int  # real calls after the public-to-personal prompt switch


def segment_mask(start, length, forced, pre_inference_calls: int, approx_steps: int, reinit_calls: int):
    """Where segments call the model: (..., P) bool over positions 0..P-1 (False from `length` on).

    `start` (...) steps already denoised before each segment, `length` (...) its positions,
    `forced` (..., P) the positions after which a latent leaves it (its last one is added here).
    A position is real in the warm-up, where forced, or k + 1 positions after the latest real
    position that closes a round (the end of the warm-up or a forced call).
    """
    xp = namespace(start, length, forced)
    positions = xp.arange(forced.shape[-1])
    start, length = xp.int(start), xp.int(length)
    warmup = xp.maximum(pre_inference_calls - start, reinit_calls)[..., None]
    forced = forced | (positions == length[..., None] - 1)
    round_start = xp.maximum(xp.cummax(xp.where(forced & (positions >= warmup), positions, -1), -1), warmup - 1)
    cycle = (positions - round_start) % (approx_steps + 1) == 0
    return (positions < length[..., None]) & ((positions < warmup) | forced | cycle)


def real_call_mask(start: int, length: int, pre_inference_calls: int, approx_steps: int,
                   reinit_calls: int, exits=()) -> np.ndarray:
    """`segment_mask` of one segment: True at the `length` positions where the model is called.

    `exits` are the step counts (relative to the segment's start, 1..length) after which some
    latent leaves the segment: a cluster's common run passes each member's x_n.
    """
    if length < 0 or start < 0:
        raise ValueError(f"start and length must be >= 0, got start={start}, length={length}")
    forced = np.zeros(length, dtype=bool)
    exits = np.asarray(exits, dtype=np.int64).reshape(-1)
    bad = exits[(exits < 0) | (exits > length)]
    if bad.size:
        raise ValueError(f"exit after {int(bad[0])} steps of a segment of {length}; allowed: 0..{length}")
    forced[exits[exits > 0] - 1] = True
    return segment_mask(np.int64(start), np.int64(length), forced, pre_inference_calls, approx_steps, reinit_calls)


def real_calls(start, length, pre_inference_calls: int, approx_steps: int, reinit_calls: int):
    """Real model calls of segments left only at their end (closed form of `segment_mask`, no exits
    inside): with warm-up ``w`` and ``R = length - min(length, w)`` positions after it, the count is
    ``min(length, w) + ceil(R / (k + 1))``. Vectorised over users (numpy or torch).
    """
    xp = namespace(start, length)
    start, length = xp.int(start), xp.int(length)
    warmup = xp.maximum(pre_inference_calls - start, reinit_calls)
    warm = xp.minimum(length, warmup)
    rest = length - warm
    return warm + (rest + approx_steps) // (approx_steps + 1)


def common_run_schedule(common_steps, cluster, num_clusters: int, positions: int, pre_inference_calls: int,
                        approx_steps: int, reinit_calls: int):
    """Each cluster's common run under EC-Diff, left by every member n after its x_n steps.

    `common_steps` x_n and `cluster` m(n) are (..., N) (broadcasting), `positions` a static bound on
    x (x_max). Returns (real calls of each common run (..., M), approximated positions among each
    member's first x_n (..., N)): the ES steps of member n that the common run served by approximation.
    """
    xp = namespace(common_steps, cluster)
    x, cluster = xp.int(common_steps), xp.int(cluster)
    lead = (x + cluster).shape[:-1]
    if positions == 0:
        return xp.zeros(lead + (num_clusters,), "int"), xp.zeros(lead + (x.shape[-1],), "int")
    leaves = x >= 1
    slot = cluster * positions + xp.maximum(x - 1, 0)  # (cluster, last common position) of each member
    exits = xp.segment_sum(xp.float(leaves), slot, num_clusters * positions) > 0
    forced = exits.reshape(lead + (num_clusters, positions))
    length = xp.segment_max(x, cluster, num_clusters)  # x_m^max
    real = segment_mask(xp.zeros(lead + (num_clusters,), "int"), length, forced, pre_inference_calls,
                        approx_steps, reinit_calls)
    calls_so_far = xp.cumsum(xp.int(real), -1)
    taken = xp.take_along_axis(calls_so_far.reshape(lead + (num_clusters * positions,)), slot, -1)
    return calls_so_far[..., -1], xp.where(leaves, x - taken, 0)
