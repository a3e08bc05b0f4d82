"""UE batteries: drained by the UE's energy use, recharged by a trickle, capped at capacity.

Each slot, in order: the UE's energy E_n (Eq. 20: downlink E^T_n, Eq. 14, plus its own steps
E^P-U_n, Eq. 18) is drawn from the battery, never below empty; then the trickle charge P_trickle
T_slot is added, never above capacity. The books are exact:

    level_0 + sum recharged - sum drained = level_final

with `shortfall` (energy asked for but not in the battery: zero when the env keeps UEs from
steps they cannot afford, see `cannot_afford`) and `spilled` (charge that found the battery full)
reported apart. Energies in joules, arrays (..., N).

The env keeps batteries from running dry in two places (`his_env.dynamics.slot`): a UE starts a
request only if its battery pays the downlink (Eq. 14) and `minimum_ue_steps` of its own steps
(Eq. 18), the fewest that the ES can leave it; and `move_unaffordable_steps` hands the UE steps
its battery cannot pay to the ES (personalised steps first, up to y_max, then common steps, up to
x_max), keeping x + y + z = T_max (Eq. 28f) and every bound of Eqs. (28b-d).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from his_common.arrays import namespace

from his_env.dynamics import draws


@dataclass
class BatteryStep:
    level_j: Any  # after the slot
    drained_j: Any  # taken from the battery
    recharged_j: Any  # put into the battery
    shortfall_j: Any  # energy used beyond what the battery held
    spilled_j: Any  # trickle charge lost to a full battery


def initial_battery(uniform, capacity_j: float, fraction_range: tuple[float, float]):
    """Initial levels uniform over `fraction_range` of the capacity, from uniforms (..., N)."""
    lo, hi = fraction_range
    return capacity_j * (lo + (hi - lo) * uniform)


def battery_step(level_j, energy_used_j, recharge_j, capacity_j: float) -> BatteryStep:
    """One slot: drain `energy_used_j` (not below 0), then add `recharge_j` (trickle W x slot s, not above capacity)."""
    xp = namespace(level_j, energy_used_j)
    energy_used_j = xp.float(energy_used_j)
    drained_to = xp.maximum(level_j - energy_used_j, 0.0)
    drained = level_j - drained_to
    level = xp.minimum(drained_to + recharge_j, capacity_j)
    recharged = level - drained_to
    return BatteryStep(level, drained, recharged, energy_used_j - drained, recharge_j - recharged)


def cannot_afford(level_j, energy_needed_j):
    """UEs whose battery holds less than the energy their chosen UE steps need (bool (..., N)):
    the env moves those steps to the ES."""
    return namespace(level_j, energy_needed_j).float(energy_needed_j) > level_j


def affordable_ue_steps(level_j, energy_per_step_j, fixed_energy_j=0.0):
    """The most UE denoising steps the battery pays for after `fixed_energy_j` (e.g. the downlink,
    Eq. 14), at `energy_per_step_j` each (Eq. 18 for one step): floor((level - fixed) / per step), >= 0 (int)."""
    xp = namespace(level_j, energy_per_step_j)
    spare = xp.maximum(level_j - fixed_energy_j, 0.0)
    return xp.int(xp.floor(spare / xp.float(energy_per_step_j)))


def draw_battery(generator, num_ues_shape: tuple[int, ...], dtype=None):
    """The uniforms (..., N) `initial_battery` consumes."""
    return draws.uniform(generator, tuple(num_ues_shape), dtype)


def minimum_ue_steps(total: int, min_ue: int, max_common: int, max_es_personal: int, common_phase: bool) -> int:
    """The fewest UE steps any action can end with once the ES takes all it may: max(z_min, T_max - y_max - x_max)
    (x_max = 0 without a common phase, IIS)."""
    return max(int(min_ue), int(total) - int(max_es_personal) - (int(max_common) if common_phase else 0))


def move_unaffordable_steps(common_steps, es_personal_steps, ue_steps, ue_step_limit, max_common: int,
                            max_es_personal: int, common_phase: bool):
    """(x, y, z, moved): the UE steps beyond `ue_step_limit` (what the battery pays, `affordable_ue_steps`)
    moved to the ES, to the personalised phase up to y_max, the rest to the common phase up to x_max
    (none without a common phase); `moved` (int) counts them. With a limit >= `minimum_ue_steps` every
    step beyond it finds room, so z ends at min(z, limit); x + y + z is unchanged."""
    xp = namespace(ue_steps, ue_step_limit)
    excess = xp.maximum(xp.int(ue_steps) - xp.int(ue_step_limit), 0)
    if not xp.may_any(excess > 0):  # every battery pays its UE steps: nothing moves
        return xp.int(common_steps), xp.int(es_personal_steps), xp.int(ue_steps), excess
    to_personal = xp.minimum(excess, max_es_personal - xp.int(es_personal_steps))
    to_common = xp.minimum(excess - to_personal, max_common - xp.int(common_steps)) if common_phase else excess * 0
    moved = to_personal + to_common
    return common_steps + to_common, es_personal_steps + to_personal, ue_steps - moved, moved
