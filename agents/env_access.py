"""The PettingZoo env as the learners and evaluators build and read it, without any learning
library: the env factory ("module:function", default `his_env:parallel_env`) and the metrics of
one decision point from its step infos. The RLlib adapter (agents.rllib.env_adapter), the evaluation and
the BenchMARL runs share these, and none of them needs Ray to import it."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

DEFAULT_ENV_FACTORY = "his_env:parallel_env"
# Per-UE info entries averaged over UEs and decision points (logged as ue_mean/<key>).
PER_UE_KEYS = ("similarity", "common_steps", "es_personal_steps", "ue_steps", "projected", "quality", "delay",
               "ue_energy", "es_energy_share")
# Network-wide info entries (the same for every UE) and the metric name each is logged under.
NETWORK_INFO_METRICS = {"network_utility": "utility", "network_quality": "quality", "network_delay": "delay",
                        "network_energy": "energy", "num_clusters": "num_clusters",
                        "intra_cluster_similarity": "intra_cluster_similarity",
                        "public_personal_similarity": "public_personal_similarity", "es_sm_budget": "es_sm_budget"}


def resolve_factory(spec: str | Callable[..., Any] | None) -> Callable[..., Any]:
    if spec is None:
        spec = DEFAULT_ENV_FACTORY
    if callable(spec):
        return spec
    module_name, _, attr = str(spec).partition(":")
    if not attr:
        raise ValueError(f"env_factory {spec!r} must look like 'module:function'")
    return getattr(importlib.import_module(module_name), attr)


def make_parallel_env(env_config: Mapping[str, Any] | None, env_factory: str | Callable | None = None):
    """The PettingZoo ParallelEnv for a (plain-dict) HIS config."""
    return resolve_factory(env_factory)(config=dict(env_config or {}))


def flatten_numeric(prefix: str, value: Any, out: Dict[str, float], depth: int = 0) -> None:
    """Numeric leaves of nested dicts/lists as flat `prefix/key` entries (per-cluster stats)."""
    if isinstance(value, (bool, np.bool_)):
        out[prefix] = float(value)
    elif isinstance(value, (int, float, np.integer, np.floating)):
        out[prefix] = float(value)
    elif isinstance(value, np.ndarray) and value.ndim == 0:
        out[prefix] = float(value)
    elif depth < 3 and isinstance(value, Mapping):
        for k, v in value.items():
            flatten_numeric(f"{prefix}/{k}" if prefix else str(k), v, out, depth + 1)
    elif depth < 3 and isinstance(value, (list, tuple, np.ndarray)) and len(value) <= 64:
        for i, v in enumerate(value):
            flatten_numeric(f"{prefix}/{i}", v, out, depth + 1)


def step_metrics(infos: Mapping[str, Mapping[str, Any]], agents: list[str],
                 network_summary: Optional[Mapping[str, Any]] = None) -> Dict[str, float]:
    """Network totals and per-UE means of one decision point, from the env's step infos; with
    `network_summary` (the env's `network_summary()` after that step) also its per-cluster lists,
    flattened as `cluster_sizes/0`, ...."""
    out: Dict[str, float] = {}
    first = infos.get(agents[0], {}) if agents else {}
    for info_key, metric in NETWORK_INFO_METRICS.items():
        if info_key in first:
            out[metric] = float(first[info_key])
    if network_summary is not None:
        flatten_numeric("", {k: v for k, v in network_summary.items() if k not in out}, out)
    for key in PER_UE_KEYS:
        vals = [infos[a][key] for a in agents if a in infos and key in infos[a]]
        if vals:
            out[f"ue_mean/{key}"] = float(np.mean(vals))
    return out
