"""Delay, energy and utility of one decision point (Eqs. 8-23, 33), vectorised over UEs.

Everything here is a pure function of numpy arrays. Step decisions may carry leading batch
dimensions (..., N) — several candidate joint actions evaluated at once, as the model-based
search baseline does — while the decision point's state (clusters, SMs, channel) is shared.

ES work is counted in model calls: with EC-Diff off a call is a step; with it on, approximated
steps cost nothing (quality_oracle.ecdiff).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from his_env import allocation
from quality_oracle import ecdiff
from his_env.channel import latent_bits
from his_env.config import DeviceConfig, HISConfig


@dataclass
class DecisionPoint:
    """The state of one decision point that the costs depend on (not the actions)."""

    cluster: np.ndarray  # m(n), int (N,)
    num_clusters: int  # M (effective: one for a clustering-free scheme)
    es_sm_budget: int  # v_max^ES
    ue_sms: np.ndarray  # v_n^UE, int (N,)
    downlink_rate: np.ndarray  # r_n, bit/s (N,)

    def __post_init__(self) -> None:
        self.membership = np.eye(self.num_clusters, dtype=float)[self.cluster]  # gamma_{n,m} (N, M)
        self.cluster_sizes = self.membership.sum(axis=0)  # |N_m|


def flops_rate(sms, dev: DeviceConfig):
    """Eqs. (9), (17): f = v F D rho."""
    return sms * dev.frequency_hz * dev.flops_per_cycle_per_sm * dev.efficiency


def energy_per_call(sms, dev: DeviceConfig):
    """Energy of one model call on `sms` SMs: P T = kappa xi F^2 / (D rho) (mu1 + mu2 / v) (Eqs. 10-11)."""
    return dev.kappa * dev.flops_per_step * dev.frequency_hz**2 / (dev.flops_per_cycle_per_sm * dev.efficiency) * (
        dev.mu1 + dev.mu2 / sms)


def cluster_max(values: np.ndarray, point: DecisionPoint) -> np.ndarray:
    """max_{n in N_m} values_n for each cluster (0 for an empty one): (..., N) -> (..., M)."""
    masked = np.where(point.membership.astype(bool), values[..., :, None], 0)
    return masked.max(axis=-2)


def cluster_sum(values: np.ndarray, point: DecisionPoint) -> np.ndarray:
    """sum_{n in N_m} values_n: (..., N) -> (..., M)."""
    return values @ point.membership


@dataclass
class ESWork:
    """Model calls the ES makes for given step decisions, and the steps EC-Diff approximates."""

    max_common: np.ndarray  # x_m^max (..., M)
    common_calls: np.ndarray  # calls of each cluster's common run (..., M)
    personal_calls: np.ndarray  # calls of each UE's personalised phase I (..., N)
    approximated_steps: np.ndarray  # ES steps of each UE served by approximation (..., N)


def es_work(config: HISConfig, point: DecisionPoint, common_steps: np.ndarray, es_personal_steps: np.ndarray,
            ecdiff_enabled: bool) -> ESWork:
    e = config.ecdiff
    max_common = cluster_max(common_steps, point)  # x_m^max (Sec. IV-B)
    if not ecdiff_enabled:
        return ESWork(max_common, max_common, es_personal_steps, np.zeros_like(common_steps))
    common_calls = ecdiff.real_calls(0, max_common, e.pre_inference_calls, e.approx_steps, e.reinit_calls)
    personal_calls = ecdiff.real_calls(common_steps, es_personal_steps, e.pre_inference_calls, e.approx_steps,
                                       e.reinit_calls)
    approximated = es_personal_steps - personal_calls + ecdiff.approximated_prefix(
        common_steps, max_common @ point.membership.T.astype(np.int64), e.pre_inference_calls, e.approx_steps,
        e.reinit_calls)
    return ESWork(max_common, common_calls, personal_calls, approximated)


def evaluate(config: HISConfig, point: DecisionPoint, common_steps: np.ndarray, es_personal_steps: np.ndarray,
             ue_steps: np.ndarray, work: ESWork, quality: np.ndarray, allocation_rule: str) -> dict[str, np.ndarray]:
    """Costs, rewards and utility of step decisions (x, y, z) with qualities Q_n.

    Returns arrays with the decisions' batch shape: per UE (..., N), per cluster (..., M),
    network totals (...).
    """
    es, ue, w = config.es, config.ue, config.reward
    common_calls, personal_calls = work.common_calls, work.personal_calls
    personal_calls_m = cluster_sum(personal_calls.astype(float), point)
    es_calls = common_calls + personal_calls_m  # x_m^max + sum y_n, in model calls

    # Tier 2 of MIRA: the ES SM split (Theorem 1 or a Fig. 16 baseline)
    batch = common_steps.shape[:-1]
    budget = np.broadcast_to(np.asarray(point.es_sm_budget, dtype=np.int64), batch)
    if allocation_rule == "kkt":
        weights = allocation.kkt_weights(point.cluster_sizes, es_calls, w.delay_weight, w.energy_weight,
                                         es.flops_per_step, es.frequency_hz, es.flops_per_cycle_per_sm,
                                         es.efficiency, es.kappa, es.mu2)
        es_sms = allocation.kkt_allocation(weights, budget)
    elif allocation_rule == "user_equal":
        es_sms = allocation.user_equal_allocation(np.broadcast_to(point.cluster_sizes, batch + (point.num_clusters,)),
                                                  budget)
    elif allocation_rule == "cluster_equal":
        es_sms = allocation.cluster_equal_allocation(point.num_clusters, budget)
    else:
        raise ValueError(f"allocation rule {allocation_rule!r}; allowed: kkt, user_equal, cluster_equal")

    es_rate = flops_rate(es_sms, es)
    common_delay_m = common_calls * es.flops_per_step / es_rate  # Eq. (8)
    personal_delay_m = personal_calls_m * es.flops_per_step / es_rate  # Eq. (12)
    es_call_energy = energy_per_call(es_sms, es)
    common_energy_m = common_calls * es_call_energy  # Eq. (11)
    personal_energy_m = personal_calls_m * es_call_energy  # Eq. (13)

    transmission_delay = latent_bits(config.channel) / point.downlink_rate  # Eq. (14)
    transmission_energy = config.channel.transmit_power_w * transmission_delay  # Eq. (14)
    ue_delay = ue_steps * ue.flops_per_step / flops_rate(point.ue_sms, ue)  # Eqs. (16)-(17)
    ue_energy = ue_steps * energy_per_call(point.ue_sms, ue)  # Eq. (18)

    es_delay_n = (common_delay_m + personal_delay_m) @ point.membership.T  # sum_m gamma (T^C + T^P-E)
    delay = es_delay_n + transmission_delay + ue_delay  # Eq. (19)
    ue_side_energy = transmission_energy + ue_energy  # E_n, Eq. (20)
    es_energy_m = common_energy_m + personal_energy_m  # E_m, Eq. (20)

    # Eq. (33): each UE carries its share of its cluster's ES energy, by common steps and ES calls
    common_total = cluster_sum(common_steps.astype(float), point) @ point.membership.T
    personal_total = personal_calls_m @ point.membership.T
    common_share = np.divide(common_steps, common_total, out=np.zeros(common_total.shape), where=common_total > 0)
    personal_share = np.divide(personal_calls, personal_total, out=np.zeros(personal_total.shape),
                               where=personal_total > 0)
    es_energy_share = common_share * (common_energy_m @ point.membership.T) + personal_share * (
        personal_energy_m @ point.membership.T)
    energy_n = ue_side_energy + es_energy_share
    reward = w.quality_weight * quality - w.delay_weight * delay - w.energy_weight * energy_n

    total_quality = quality.sum(axis=-1)  # Eq. (21)
    total_delay = delay.sum(axis=-1)  # Eq. (21)
    total_energy = es_energy_m.sum(axis=-1) + ue_side_energy.sum(axis=-1)  # Eq. (22)
    utility = w.quality_weight * total_quality - w.delay_weight * total_delay - w.energy_weight * total_energy  # (23)
    return {
        "reward": reward, "quality": quality, "delay": delay, "energy": energy_n, "ue_energy": ue_side_energy,
        "es_energy_share": es_energy_share,
        "transmission_delay": np.broadcast_to(transmission_delay, delay.shape), "ue_compute_delay": ue_delay,
        "es_delay": es_delay_n, "es_sms": es_sms, "es_energy": es_energy_m, "common_calls": common_calls,
        "personal_calls": personal_calls, "approximated_steps": work.approximated_steps, "common_delay": common_delay_m, "personal_delay": personal_delay_m,
        "total_quality": total_quality, "total_delay": total_delay, "total_energy": total_energy,
        "utility": utility,
    }
