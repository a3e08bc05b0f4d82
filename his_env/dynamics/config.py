"""Typed configuration of the dynamics: the `dynamics:` section of `HISConfig`.

`configs/default.yaml` documents every key (meaning, unit, source); it is the one home of those
comments. Every process is off by default, so a config without this section is the paper's env of
independent decision points; each is switched on by its own `enabled` key (`dynamics.channel.enabled=true`).
Both envs run the processes switched on (`his_env.dynamics.slot` states the order). The mechanism is the project's one
(`his_common.config`): unknown keys, wrong types, non-finite numbers and out-of-range values are
refused with a `ConfigError` naming the dotted key and what is allowed.

Mobility presets: `mobility.preset` names a set of literature-based values (`MOBILITY_PRESETS`);
each of `mean_speed_mps`, `speed_std_mps`, `heading_std_rad`, `memory`, `speed_range_mps` and
`pause_s` left null takes the preset's value, one given overrides it (`MobilityConfig.resolved`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from his_common.config import Config, ConfigError, check, setting

from his_env.dynamics.mobility import MOBILITY_MODELS
from his_env.dynamics.queues import ARRIVAL_PROCESSES, MAX_POISSON_RATE, BurstRates, burst_fraction, burst_rates

__all__ = ["BackgroundLoadConfig", "BatteryConfig", "BurstsConfig", "ChannelMemoryConfig", "ConfigError",
           "DynamicsConfig", "IntentConfig", "MOBILITY_PRESETS", "MobilityConfig", "RequestsConfig", "WorkConfig"]

MOBILITY_PRESETS: dict[str, dict[str, float | tuple[float, float]]] = {
    "pedestrian": {
        # 1.4 m/s: comfortable walking speed of adults aged 20-59, 1.3-1.5 m/s (Bohannon, Age Ageing 26(1), 1997)
        "mean_speed_mps": 1.4,
        "speed_std_mps": 0.2,  # chosen: ~15% of the mean, the spread of walking speeds in the same study
        "heading_std_rad": math.pi / 4,  # chosen: a walker's heading wanders by tens of degrees
        "memory": 0.75,  # alpha of the Gauss-Markov example of Camp, Boleng & Davies (2002)
        "speed_range_mps": (0.5, 2.0),  # chosen around the walking speed; v_min > 0 (Yoon, Liu & Noble 2003)
        "pause_s": 30.0,  # chosen: a short stop at each waypoint
    },
    "vehicle": {
        # 13.9 m/s = 50 km/h: the urban speed limit in most of Europe (e.g. German StVO Sec. 3(3))
        "mean_speed_mps": 13.9,
        "speed_std_mps": 2.8,  # chosen: 20% of the mean (10 km/h)
        "heading_std_rad": 0.2,  # chosen: vehicles follow roads
        "memory": 0.9,  # chosen: speed and heading persist longer than a walker's
        "speed_range_mps": (8.3, 16.7),  # 30-60 km/h, chosen around the limit
        "pause_s": 10.0,  # chosen: a stop at a traffic light
    },
}
_PRESET_KEYS = ("mean_speed_mps", "speed_std_mps", "heading_std_rad", "memory", "speed_range_mps", "pause_s")


@dataclass
class ChannelMemoryConfig(Config):
    """Fading correlated between slots (`channel_memory`)."""

    enabled: bool = False
    carrier_hz: float = setting(3.5e9, gt=0)  # f_c of the Doppler shift
    speed_mps: float = setting(1.4, ge=0)  # v when mobility is off (with mobility on: each UE's own)
    correlation: float | None = setting(None, ge=-1, le=1)  # rho; None: Jakes, J0(2 pi f_D T_slot)


@dataclass
class MobilityConfig(Config):
    """UE movement in the cell annulus (`mobility`); null values take the preset's."""

    enabled: bool = False
    model: str = setting("gauss_markov", choices=lambda: MOBILITY_MODELS.names)
    preset: str = setting("pedestrian", choices=tuple(MOBILITY_PRESETS))
    mean_speed_mps: float | None = setting(None, ge=0)  # Gauss-Markov s_mean
    speed_std_mps: float | None = setting(None, ge=0)  # Gauss-Markov sigma_s
    heading_std_rad: float | None = setting(None, ge=0)  # Gauss-Markov sigma_d
    memory: float | None = setting(None, ge=0, le=1)  # Gauss-Markov alpha per slot
    speed_range_mps: tuple[float, float] | None = setting(None, gt=0)  # random waypoint [v_min, v_max]
    pause_s: float | None = setting(None, ge=0)  # random waypoint pause

    def validate(self, prefix: str = "") -> None:
        if self.speed_range_mps is not None:
            lo, hi = self.speed_range_mps
            check(lo <= hi, prefix + "speed_range_mps", self.speed_range_mps,
                  "[v_min, v_max] m/s with 0 < v_min <= v_max")

    def resolved(self) -> dict:
        """The model's values: each given one, else the preset's."""
        preset = MOBILITY_PRESETS[self.preset]
        return {k: preset[k] if getattr(self, k) is None else getattr(self, k) for k in _PRESET_KEYS}

    def params(self, radius_range_m: tuple[float, float], slot_s: float):
        """The parameters `MOBILITY_MODELS[model]` takes, for the cell annulus and slot length."""
        values = self.resolved()
        cell = tuple(float(r) for r in radius_range_m)
        if self.model == "random_waypoint":
            return MOBILITY_MODELS[self.model].params(cell, slot_s, tuple(values["speed_range_mps"]), values["pause_s"])
        return MOBILITY_MODELS[self.model].params(cell, slot_s, values["mean_speed_mps"], values["speed_std_mps"],
                                                  values["heading_std_rad"], values["memory"])


@dataclass
class BackgroundLoadConfig(Config):
    """SMs other tenants take from the ES (`background_load`), as fractions of es.sm_range's width."""

    enabled: bool = False
    mean_fraction: float = setting(0.5, ge=0, le=1)  # mu / (v_hi - v_lo)
    std_fraction: float = setting(0.2887, ge=0)  # sigma / (v_hi - v_lo)
    correlation: float = setting(0.9, ge=0, lt=1)  # phi, per slot

    def moments(self, sm_range: tuple[int, int]) -> tuple[float, float]:
        """(mu, sigma) in SMs for the ES's range [v_lo, v_hi]."""
        width = float(sm_range[1] - sm_range[0])
        return self.mean_fraction * width, self.std_fraction * width


@dataclass
class BurstsConfig(Config):
    """Bursty arrivals (`requests.bursts`): calm and burst spells of the whole cell, the long-run rate kept."""

    enabled: bool = False
    peak_ratio: float = setting(2.5, ge=1)  # the rate in a burst over requests.rate_per_slot
    mean_burst_slots: float = setting(10.0, ge=1)  # mean length of a burst, slots (geometric)
    mean_calm_slots: float = setting(30.0, ge=1)  # mean length of a calm spell, slots (geometric)

    def rates(self, mean_rate: float) -> BurstRates:
        """The calm and burst rates and the chain's probabilities for the long-run rate `mean_rate`."""
        return burst_rates(mean_rate, self.peak_ratio, self.mean_burst_slots, self.mean_calm_slots)


@dataclass
class RequestsConfig(Config):
    """Request arrivals, deadlines and queues (`requests`)."""

    enabled: bool = False
    arrivals: str = setting("bernoulli", choices=lambda: ARRIVAL_PROCESSES.names)
    rate_per_slot: float = setting(0.1, ge=0)  # p (bernoulli) or lambda (poisson); the long-run rate with bursts
    deadline_slots: int = setting(30, ge=1)  # waiting allowed before a request is dropped
    queue_capacity: int = setting(8, ge=1)  # Q_max per UE
    drop_penalty: float = setting(1.5, ge=0)  # utility charged to a UE per request it drops
    bursts: BurstsConfig = field(default_factory=BurstsConfig)

    def validate(self, prefix: str = "") -> None:
        limit = 1.0 if self.arrivals == "bernoulli" else MAX_POISSON_RATE
        check(self.rate_per_slot <= limit, prefix + "rate_per_slot", self.rate_per_slot,
              f"a number in [0, {limit:g}] for {prefix}arrivals={self.arrivals!r}")
        if self.bursts.enabled:
            b, key = self.bursts, prefix + "bursts."
            fraction = burst_fraction(b.mean_burst_slots, b.mean_calm_slots)
            check(b.peak_ratio <= 1.0 / fraction + 1e-12, key + "peak_ratio", b.peak_ratio,
                  f"a number in [1, {1.0 / fraction:g}] (1 / the burst fraction mean_burst_slots / (mean_burst_slots + "
                  f"mean_calm_slots) = {fraction:g}: above it the calm rate would be negative)")
            check(b.peak_ratio * self.rate_per_slot <= limit, key + "peak_ratio", b.peak_ratio,
                  f"a ratio whose burst rate peak_ratio x rate_per_slot ({self.rate_per_slot:g}) is at most {limit:g} "
                  f"for {prefix}arrivals={self.arrivals!r}")


@dataclass
class WorkConfig(Config):
    """Work that outlasts a slot: UE busy clocks and ES SMs held by running phases (`work`)."""

    enabled: bool = False
    max_es_jobs: int = setting(64, ge=1)  # rows of the table of running ES phases per env


@dataclass
class IntentConfig(Config):
    """Intent persistence (`intent`)."""

    enabled: bool = False
    keep_probability: float = setting(0.9, ge=0, le=1)  # p_keep per slot


@dataclass
class BatteryConfig(Config):
    """UE batteries (`battery`)."""

    enabled: bool = False
    capacity_j: float = setting(360e3, gt=0)
    initial_fraction: tuple[float, float] = setting((0.5, 1.0), ge=0, le=1)  # initial level ~ U[lo, hi] x capacity
    trickle_charge_w: float = setting(15.0, ge=0)

    def validate(self, prefix: str = "") -> None:
        lo, hi = self.initial_fraction
        check(lo <= hi, prefix + "initial_fraction", self.initial_fraction, "[low, high] with 0 <= low <= high <= 1")


@dataclass
class DynamicsConfig(Config):
    """The Markov-game dynamics: one section per process, each off by default."""

    slot_s: float = setting(1.0, gt=0)  # T_slot: time between decision points
    channel: ChannelMemoryConfig = field(default_factory=ChannelMemoryConfig)
    mobility: MobilityConfig = field(default_factory=MobilityConfig)
    background_load: BackgroundLoadConfig = field(default_factory=BackgroundLoadConfig)
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    work: WorkConfig = field(default_factory=WorkConfig)
    intent: IntentConfig = field(default_factory=IntentConfig)
    battery: BatteryConfig = field(default_factory=BatteryConfig)

    @property
    def enabled_processes(self) -> tuple[str, ...]:
        """The sections switched on, in declaration order (empty: today's independent decision points)."""
        return tuple(f.name for f in fields(self) if f.name != "slot_s" and getattr(self, f.name).enabled)

    def check_cell(self, distance_range_m: tuple[float, float], key: str = "channel.distance_range_m") -> None:
        """Cross-section rule for the env config: mobility needs an annulus with r_min < r_max."""
        lo, hi = distance_range_m
        check(not self.mobility.enabled or lo < hi, key, distance_range_m,
              "[low, high] metres with low < high when dynamics.mobility is enabled (UEs move between them)")
