"""Intent persistence: whether a UE keeps its intent group from one slot to the next.

Each UE belongs to one of G intent groups (the `workload.num_intent_groups` subjects of a decision
point, Sec. VII-A). Each slot it keeps its group with probability p_keep and otherwise redraws one
uniformly (possibly the same): a Markov chain with uniform stationary law in which the group is
unchanged after a slot with probability p_keep + (1 - p_keep) / G. p_keep = 0 is today's
independent draw.

State: `group` int (..., N) in [0, G).
"""
from __future__ import annotations

from his_common.arrays import namespace

from his_env.dynamics import draws


def group_from_uniform(uniform, num_groups: int):
    """A group uniform over [0, G) from a uniform draw: floor(u G)."""
    xp = namespace(uniform)
    return xp.minimum(xp.int(xp.floor(uniform * num_groups)), int(num_groups) - 1)


def initial_intent(uniform, num_groups: int):
    """Each UE's first group from uniforms (..., N)."""
    return group_from_uniform(uniform, num_groups)


def intent_step(group, uniform, keep_probability: float, num_groups: int):
    """Keep the group if u_0 < p_keep, else redraw it from u_1; `uniform` (..., N, 2)."""
    xp = namespace(group, uniform)
    keep = uniform[..., 0] < keep_probability
    return xp.where(keep, xp.int(group), group_from_uniform(uniform[..., 1], num_groups))


def draw_intent(generator, num_ues_shape: tuple[int, ...], dtype=None):
    """The uniforms (..., N, 2) one slot of `intent_step` consumes."""
    return draws.uniform(generator, tuple(num_ues_shape) + (2,), dtype)
