"""Mobility: UEs moving inside the cell annulus, giving each slot's distance to the ES.

Two models, declared in `MOBILITY_MODELS` (config key `mobility.model`):

* ``gauss_markov`` (Liang & Haas, IEEE INFOCOM 1999; the form of Camp, Boleng & Davies, Wireless
  Commun. Mob. Comput. 2(5), 2002): speed and heading are AR(1) around their means,

      s_t = alpha s_{t-1} + (1 - alpha) s_mean + sqrt(1 - alpha^2) sigma_s w_s
      d_t = alpha d_{t-1} + (1 - alpha) d_mean + sqrt(1 - alpha^2) sigma_d w_d

  and the UE moves by s_{t-1} (cos d_{t-1}, sin d_{t-1}) T_slot. The stationary speed is
  N(s_mean, sigma_s^2) with lag-one autocorrelation alpha. A negative speed moves the UE against
  its heading; `speed` reports |s|. Each UE has its own mean heading, drawn uniformly.
* ``random_waypoint`` (Johnson & Maltz 1996; Bettstetter et al., IEEE Trans. Mobile Comput. 3(3),
  2004): the UE walks in a straight line at a speed uniform in [v_min, v_max] to a waypoint uniform
  over the annulus, pauses, and picks the next. v_min > 0 (Yoon, Liu & Noble, INFOCOM 2003: with
  v_min = 0 the mean speed decays to zero). A waypoint whose straight path would cross the inner
  disc (r < r_min) is replaced by the next of `WAYPOINT_CANDIDATES` candidates, and if none is
  visible by the point at the first candidate's radius on the UE's own bearing (a radial path).

Borders: a Gauss-Markov step that leaves the annulus is folded back radially (reflected at
r_min or r_max, as often as needed), and its heading and mean heading are mirrored about the
border's tangent (d -> 2 theta - d + pi), so the UE turns away from the border instead of piling
up on it. Random-waypoint paths stay inside by construction.

States are dataclasses of arrays (..., N): positions in metres with the ES at the origin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from his_common.arrays import namespace
from his_common.registry import Registry

from his_env.channel import distance_from_area_fraction
from his_env.dynamics import draws
from his_env.dynamics._ops import absolute, atan2, cos, hypot, remainder, sin

WAYPOINT_CANDIDATES = 4  # waypoints drawn per new leg; the first visible one is taken
_TWO_PI = 2.0 * math.pi


def _check_annulus(radius_range_m: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(r) for r in radius_range_m)
    if not 0.0 < lo < hi:
        raise ValueError(f"mobility needs a cell annulus with 0 < r_min < r_max (channel.distance_range_m), "
                         f"got {[lo, hi]}")
    return lo, hi


@dataclass(frozen=True)
class GaussMarkovParams:
    radius_range_m: tuple[float, float]  # [r_min, r_max] of the cell annulus
    slot_s: float  # T_slot
    mean_speed_mps: float  # s_mean
    speed_std_mps: float  # sigma_s
    heading_std_rad: float  # sigma_d
    memory: float  # alpha in [0, 1]

    def __post_init__(self) -> None:
        _check_annulus(self.radius_range_m)
        if not 0.0 <= self.memory <= 1.0:
            raise ValueError(f"Gauss-Markov memory alpha={self.memory}; allowed: [0, 1]")


@dataclass(frozen=True)
class RandomWaypointParams:
    radius_range_m: tuple[float, float]
    slot_s: float
    speed_range_mps: tuple[float, float]  # [v_min, v_max], v_min > 0
    pause_s: float  # pause at each waypoint

    def __post_init__(self) -> None:
        _check_annulus(self.radius_range_m)
        lo, hi = self.speed_range_mps
        if not 0.0 < lo <= hi:
            raise ValueError(f"random-waypoint speed range {[lo, hi]} m/s; allowed: 0 < v_min <= v_max")


@dataclass
class GaussMarkovState:
    x_m: Any  # (..., N)
    y_m: Any
    speed_mps: Any  # s, signed (AR state)
    heading_rad: Any  # d
    mean_heading_rad: Any  # d_mean, per UE


@dataclass
class RandomWaypointState:
    x_m: Any
    y_m: Any
    waypoint_x_m: Any
    waypoint_y_m: Any
    leg_speed_mps: Any  # speed of the current leg
    pause_left_s: Any  # > 0 while pausing at a reached waypoint


def distance_m(state):
    """Distance of each UE to the ES (..., N), for the path loss `his_env.channel.path_gain`."""
    return hypot(state.x_m, state.y_m)


def speed_mps(state):
    """Each UE's current speed |v| (..., N), for the Doppler shift of `channel_memory`."""
    if isinstance(state, RandomWaypointState):
        return namespace(state.leg_speed_mps).where(state.pause_left_s > 0, 0.0, state.leg_speed_mps)
    return absolute(state.speed_mps)


def _point_in_annulus(area_fraction, angle_fraction, radius_range_m):
    r = distance_from_area_fraction(area_fraction, radius_range_m)  # uniform over the annulus area
    angle = _TWO_PI * angle_fraction
    return r * cos(angle), r * sin(angle)


def fold_into_annulus(x_m, y_m, radius_range_m):
    """Positions reflected radially into [r_min, r_max] (any number of times), and whether an odd
    number of reflections happened (the heading must then be mirrored)."""
    xp = namespace(x_m, y_m)
    lo, hi = _check_annulus(radius_range_m)
    width = hi - lo
    r = hypot(x_m, y_m)
    within = r - lo  # then in place (fresh arrays): (r - r_min) / width, its fractional part
    within /= width
    crossings = xp.floor(within)
    within -= crossings
    odd = remainder(crossings, 2.0) == 1.0
    scale = xp.where(odd, 1.0 - within, within)  # then in place: the folded radius over r
    scale *= width
    scale += lo
    scale /= xp.maximum(r, 1e-300)
    return x_m * scale, y_m * scale, odd


# ---------------------------------------------------------------------- Gauss-Markov
def gauss_markov_initial(params: GaussMarkovParams, uniform, normal) -> GaussMarkovState:
    """A start with position uniform over the annulus, mean heading uniform, and speed and heading
    drawn from their stationary laws. `uniform` (..., N, 3), `normal` (..., N, 2)."""
    x, y = _point_in_annulus(uniform[..., 0], uniform[..., 1], params.radius_range_m)
    mean_heading = _TWO_PI * uniform[..., 2]
    speed = params.mean_speed_mps + params.speed_std_mps * normal[..., 0]
    heading = mean_heading + params.heading_std_rad * normal[..., 1]
    return GaussMarkovState(x, y, speed, heading, mean_heading)


def gauss_markov_step(state: GaussMarkovState, params: GaussMarkovParams, normal) -> GaussMarkovState:
    """One slot from standard normals (..., N, 2): (speed noise, heading noise)."""
    xp = namespace(state.x_m, normal)
    # the sums are built in place on fresh arrays, in the order the formulas write them
    travel = state.speed_mps * params.slot_s  # the move uses s_{t-1}, d_{t-1} (Camp et al. 2002)
    x = cos(state.heading_rad)  # x + s T cos d
    x *= travel
    x += state.x_m
    y = sin(state.heading_rad)  # y + s T sin d
    y *= travel
    y += state.y_m
    alpha = params.memory
    innovation = math.sqrt(max(1.0 - alpha * alpha, 0.0))
    speed = state.speed_mps * alpha  # alpha s + (1 - alpha) s_mean + sqrt(1 - alpha^2) sigma_s w_s
    speed += (1.0 - alpha) * params.mean_speed_mps
    speed += normal[..., 0] * (innovation * params.speed_std_mps)
    heading = state.heading_rad * alpha  # alpha d + (1 - alpha) d_mean + sqrt(1 - alpha^2) sigma_d w_d
    heading += state.mean_heading_rad * (1.0 - alpha)
    heading += normal[..., 1] * (innovation * params.heading_std_rad)
    x, y, reflected = fold_into_annulus(x, y, params.radius_range_m)
    twice_bearing = 2.0 * atan2(y, x)  # the border's normal at the folded position
    heading = xp.where(reflected, twice_bearing - heading + math.pi, heading)
    mean_heading = xp.where(reflected, twice_bearing - state.mean_heading_rad + math.pi, state.mean_heading_rad)
    turns = mean_heading / _TWO_PI  # keep angles near (-pi, pi]: floor(d_mean / 2 pi + 1/2) 2 pi
    turns += 0.5
    turns = xp.floor(turns) * _TWO_PI
    return GaussMarkovState(x, y, speed, heading - turns, mean_heading - turns)


def draw_gauss_markov_initial(generator, num_ues_shape: tuple[int, ...], dtype=None):
    shape = tuple(num_ues_shape)
    return draws.uniform(generator, shape + (3,), dtype), draws.standard_normal(generator, shape + (2,), dtype)


def draw_gauss_markov_step(generator, num_ues_shape: tuple[int, ...], dtype=None):
    return (draws.standard_normal(generator, tuple(num_ues_shape) + (2,), dtype),)


# ---------------------------------------------------------------------- random waypoint
def _segment_clears_inner_disc(x0, y0, x1, y1, r_min: float):
    """Whether the segment (x0, y0) -> (x1, y1) keeps a distance >= r_min from the ES."""
    xp = namespace(x0, x1)
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    along = xp.clip(-(x0 * dx + y0 * dy) / xp.maximum(length2, 1e-300), 0.0, 1.0)
    return hypot(x0 + along * dx, y0 + along * dy) >= r_min * (1.0 - 1e-12)


def _next_leg(x, y, uniform, params: RandomWaypointParams):
    """Waypoint and speed of a new leg from `uniform` (..., N, 2K + 1) (K = WAYPOINT_CANDIDATES)."""
    xp = namespace(x, uniform)
    k = WAYPOINT_CANDIDATES
    cx, cy = _point_in_annulus(uniform[..., :k], uniform[..., k:2 * k], params.radius_range_m)
    visible = _segment_clears_inner_disc(x[..., None], y[..., None], cx, cy, params.radius_range_m[0])
    first = xp.argmax(xp.int(visible), -1)[..., None]  # the first visible candidate
    wx = xp.take_along_axis(cx, first, -1)[..., 0]
    wy = xp.take_along_axis(cy, first, -1)[..., 0]
    none_visible = xp.amax(xp.int(visible), -1) == 0
    radial = hypot(cx[..., 0], cy[..., 0]) / xp.maximum(hypot(x, y), 1e-300)  # candidate 0's radius, own bearing
    wx = xp.where(none_visible, x * radial, wx)
    wy = xp.where(none_visible, y * radial, wy)
    v_min, v_max = params.speed_range_mps
    speed = v_min + (v_max - v_min) * uniform[..., 2 * k]
    return wx, wy, speed


def random_waypoint_initial(params: RandomWaypointParams, uniform) -> RandomWaypointState:
    """Position uniform over the annulus and a first leg, from `uniform` (..., N, 2K + 3)."""
    x, y = _point_in_annulus(uniform[..., 0], uniform[..., 1], params.radius_range_m)
    wx, wy, speed = _next_leg(x, y, uniform[..., 2:], params)
    return RandomWaypointState(x, y, wx, wy, speed, speed * 0.0)


def random_waypoint_step(state: RandomWaypointState, params: RandomWaypointParams, uniform) -> RandomWaypointState:
    """One slot; `uniform` (..., N, 2K + 1) draws the next leg of the UEs that reach their waypoint."""
    xp = namespace(state.x_m, uniform)
    moving_s = xp.maximum(params.slot_s - state.pause_left_s, 0.0)
    pause_left = xp.maximum(state.pause_left_s - params.slot_s, 0.0)
    dx, dy = state.waypoint_x_m - state.x_m, state.waypoint_y_m - state.y_m
    remaining = hypot(dx, dy)
    travel = state.leg_speed_mps * moving_s
    arrived = travel >= remaining
    fraction = xp.where(arrived, 1.0, travel / xp.maximum(remaining, 1e-300))
    x = xp.where(arrived, state.waypoint_x_m, state.x_m + fraction * dx)
    y = xp.where(arrived, state.waypoint_y_m, state.y_m + fraction * dy)
    wx, wy, speed = _next_leg(x, y, uniform, params)
    return RandomWaypointState(
        x, y, xp.where(arrived, wx, state.waypoint_x_m), xp.where(arrived, wy, state.waypoint_y_m),
        xp.where(arrived, speed, state.leg_speed_mps), xp.where(arrived, params.pause_s, pause_left))


def draw_random_waypoint_initial(generator, num_ues_shape: tuple[int, ...], dtype=None):
    return (draws.uniform(generator, tuple(num_ues_shape) + (2 * WAYPOINT_CANDIDATES + 3,), dtype),)


def draw_random_waypoint_step(generator, num_ues_shape: tuple[int, ...], dtype=None):
    return (draws.uniform(generator, tuple(num_ues_shape) + (2 * WAYPOINT_CANDIDATES + 1,), dtype),)


# ---------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class MobilityModel:
    """A mobility model: `initial(params, *draw_initial(gen, shape))`, `step(state, params, *draw_step(gen, shape))`."""

    params: type
    initial: Callable[..., Any]
    step: Callable[..., Any]
    draw_initial: Callable[..., tuple]
    draw_step: Callable[..., tuple]


MOBILITY_MODELS: Registry[MobilityModel] = Registry("mobility model")
MOBILITY_MODELS.register("gauss_markov", MobilityModel(GaussMarkovParams, gauss_markov_initial, gauss_markov_step,
                                                      draw_gauss_markov_initial, draw_gauss_markov_step))
MOBILITY_MODELS.register("random_waypoint", MobilityModel(RandomWaypointParams, random_waypoint_initial,
                                                         random_waypoint_step, draw_random_waypoint_initial,
                                                         draw_random_waypoint_step))
