"""Metrics out of the HIS env into RLlib's results (and from there into W&B).

`HISMetricsCallback.on_episode_end` takes the per-episode summary that
`agents.rllib.env_adapter.HISMultiAgentEnv` leaves in the last step's info (network utility U,
quality Q, delay T, energy E averaged over the episode's decision points, the number of
clusters and the clustering metrics, per-cluster stats from `env.network_summary()`, per-UE
means of the decision variables and of the energies `ue_energy` and `es_energy_share`) and
logs each entry under `env_runners/his/<name>` with mean reduction: after `algo.train()`
these are the means over the episodes that finished in the iteration.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from ray.rllib.callbacks.callbacks import RLlibCallback

from agents.rllib.env_adapter import EPISODE_SUMMARY_KEY

METRICS_PREFIX = "his"


def episode_summary(episode) -> Dict[str, float] | None:
    """The adapter's summary from the last step of a (multi-agent) episode, if present."""
    try:
        last = episode.get_infos(-1)
    except Exception:  # noqa: BLE001 - an agent without infos at -1
        return None
    if isinstance(last, Mapping):
        if EPISODE_SUMMARY_KEY in last:
            return last[EPISODE_SUMMARY_KEY]
        for info in last.values():
            if isinstance(info, Mapping) and EPISODE_SUMMARY_KEY in info:
                return info[EPISODE_SUMMARY_KEY]
    return None


class HISMetricsCallback(RLlibCallback):
    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs: Any) -> None:
        summary = episode_summary(episode)
        if summary is None or metrics_logger is None:
            return
        for key, value in summary.items():
            metrics_logger.log_value((METRICS_PREFIX, key), float(value), reduce="mean")
        metrics_logger.log_value((METRICS_PREFIX, "episodes"), 1, reduce="sum")
