"""Named scenarios: config overlays on `configs/default.yaml`, one YAML file each in `configs/scenarios/`.

    from his_env.scenarios import SCENARIOS, scenario_config
    SCENARIOS.names                          # ('paper', 'seq-large-heavy', ..., 'seq-small-light')
    cfg = scenario_config("seq-medium-heavy")            # an HISConfig
    cfg = scenario_config("heldout-3", num_ues=40)       # a held-out test scenario, with an override

`paper` is the paper's setting (every dynamics process off: each decision point an independent
draw). The sequential ladder `seq-<size>-<load>` switches every process on, in three sizes
(N = 10 / 50 / 200, M = 2 / 3 / 6, the ES growing with N) under three loads (0.05, 0.1 and 0.2 requests
per UE per slot). Adding a scenario is adding one file `configs/scenarios/<name>.yaml`: the registry
is the folder.

Held-out test scenarios (`heldout-0` ... `heldout-<HELD_OUT_COUNT - 1>`) are drawn, not written: a
fixed generator (seed `HELD_OUT_SEED`) draws each one's N, M, arrival rate, ES capacity per UE and
UE speed from `HELD_OUT_RANGES`, with every dynamics process on, so that a policy trained on the
ladder can be scored on networks it never saw. `held_out_overlay(k)` is the same for every caller
and every run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from his_common.config import ConfigError, deep_merge, load_yaml, shipped_configs_dir
from his_common.registry import Registry

SCENARIO_DIR = "scenarios"  # under the shipped configs folder
HELD_OUT_PREFIX = "heldout-"
HELD_OUT_COUNT = 8
HELD_OUT_SEED = 20_261_204
# What the held-out generator draws from (uniform; integers inclusive). The ladder's values lie inside
# these ranges or at their ends; a drawn scenario equals none of them (a continuous draw).
HELD_OUT_RANGES: Dict[str, tuple[float, float]] = {
    "num_ues": (20, 120),              # N between the ladder's small and large cells
    "num_clusters": (2, 5),            # M, also the number of intent groups active at once
    "rate_per_slot": (0.03, 0.3),      # Bernoulli arrivals per UE per slot, light to beyond heavy
    "es_sms_per_ue": (12.0, 40.0),     # ES SMs per UE (Table II at N = 50: 20.5-33.5), drawn for the range's middle
    "mean_speed_mps": (0.5, 15.0),     # Gauss-Markov mean speed: a slow walker to a car at 54 km/h
}
TABLE_II_ES_SM_RANGE = (1026, 1674)  # v_max^ES at N = 50 (Table II): the held-out ES keeps its relative spread


@dataclass(frozen=True)
class Scenario:
    """A scenario file: its name, path and the first line of its header comment."""

    name: str
    path: Path
    summary: str


def _read_summary(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _scenario_registry() -> Registry[Scenario]:
    registry: Registry[Scenario] = Registry("scenario")
    folder = shipped_configs_dir()
    if folder is None or not (folder / SCENARIO_DIR).is_dir():
        return registry
    for path in sorted((folder / SCENARIO_DIR).glob("*.yaml")):
        registry.register(path.stem, Scenario(path.stem, path, _read_summary(path)))
    return registry


SCENARIOS: Registry[Scenario] = _scenario_registry()


def held_out_names() -> list[str]:
    return [f"{HELD_OUT_PREFIX}{k}" for k in range(HELD_OUT_COUNT)]


def scenario_names() -> list[str]:
    """Every name `scenario_config` takes: the files' and the held-out ones."""
    return [*SCENARIOS.names, *held_out_names()]


def held_out_overlay(index: int) -> Dict[str, Any]:
    """The overlay of held-out scenario `index` (0 <= index < HELD_OUT_COUNT): its draw from
    `HELD_OUT_RANGES` with every dynamics process on, 100 slots per episode."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < HELD_OUT_COUNT:
        raise ConfigError(f"held-out scenario index {index!r}; allowed: 0..{HELD_OUT_COUNT - 1}")
    rng = np.random.default_rng([HELD_OUT_SEED, int(index)])
    r = HELD_OUT_RANGES
    n = int(rng.integers(r["num_ues"][0], r["num_ues"][1] + 1))
    m = int(rng.integers(r["num_clusters"][0], r["num_clusters"][1] + 1))
    rate = float(rng.uniform(*r["rate_per_slot"]))
    per_ue = float(rng.uniform(*r["es_sms_per_ue"]))
    speed = float(rng.uniform(*r["mean_speed_mps"]))
    lo, hi = TABLE_II_ES_SM_RANGE
    middle = per_ue * n
    half = middle * (hi - lo) / (hi + lo)  # Table II's spread relative to its middle
    return {
        "num_ues": n, "num_clusters": m, "episode_length": 100,
        "workload": {"num_intent_groups": m},
        "es": {"sm_range": [int(math.floor(middle - half)), int(math.ceil(middle + half))]},
        "dynamics": {
            "channel": {"enabled": True}, "background_load": {"enabled": True},
            "mobility": {"enabled": True, "mean_speed_mps": round(speed, 3),
                         "speed_std_mps": round(0.2 * speed, 3)},  # the presets' 15-20 % spread
            "requests": {"enabled": True, "rate_per_slot": round(rate, 4)},
            "work": {"enabled": True}, "intent": {"enabled": True}, "battery": {"enabled": True},
        },
    }


def scenario_overlay(name: str) -> Dict[str, Any]:
    """The config overlay of scenario `name` (a file's contents, or a held-out draw)."""
    if name in SCENARIOS:
        data = load_yaml(SCENARIOS[name].path)
        return dict(data or {})
    if name.startswith(HELD_OUT_PREFIX) and name[len(HELD_OUT_PREFIX):].isdigit():
        index = int(name[len(HELD_OUT_PREFIX):])
        if index < HELD_OUT_COUNT:
            return held_out_overlay(index)
    raise ConfigError(f"scenario {name!r}; allowed: {', '.join(scenario_names())}")


def scenario_config(name: str, *layers: Mapping[str, Any], **overrides: Any):
    """The HISConfig of scenario `name`: configs/default.yaml's values, the scenario's overlay, then `layers`
    (config trees, e.g. a YAML file's contents) in order, then `overrides` (dotted keys, as
    `HISConfig.with_overrides` takes them)."""
    from his_env.config import HISConfig

    tree = scenario_overlay(name)
    for layer in layers:
        tree = deep_merge(tree, layer)
    config = HISConfig.from_dict(tree)
    return config.with_overrides(overrides) if overrides else config


__all__ = ["HELD_OUT_COUNT", "HELD_OUT_RANGES", "SCENARIOS", "Scenario", "held_out_names", "held_out_overlay",
           "scenario_config", "scenario_names", "scenario_overlay"]
