"""Delay, energy and utility of one decision point (Eqs. 8-23, 33), vectorised over UEs.

Everything here is a pure function of arrays, written once for numpy (the PettingZoo env) and
torch (the vectorised env, B envs on CPU or CUDA) through `his_common.arrays`. Step decisions
may carry leading batch dimensions (..., N) — several candidate joint actions evaluated at once,
as the model-based search baseline and the difference reward do — and the decision point's state
(clusters, SMs, channel) may carry leading dimensions that broadcast against them.

ES work is counted in model calls: with EC-Diff off a call is a step; with it on, approximated
steps cost nothing (quality_oracle.ecdiff).

With the Markov-game dynamics (`his_env.dynamics.slot`) some UEs have no request to start at a
decision point: `DecisionPoint.active` marks the ones that do. An inactive UE's action has no
effect: its steps, quality, delay and energies are 0, it is not counted in its cluster's size
|N_m| (Theorem 1's alpha^(1)), and its reward is 0. Without the mask (None) every UE is active
and nothing here changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from his_common.arrays import namespace
from his_env import allocation
from quality_oracle import ecdiff
from his_env.channel import latent_bits
from his_env.config import DeviceConfig, HISConfig


@dataclass
class DecisionPoint:
    """The state of one decision point that the costs depend on (not the actions).

    numpy arrays of one decision point, or torch tensors with leading batch dimensions. Clusters
    are numbered 0..M-1 with M = `max_clusters` (default `num_clusters`); in a batch of decision
    points with different cluster counts, the clusters m >= num_clusters of a point do not exist
    (no members, no SMs).
    """

    cluster: Any  # m(n), int (..., N)
    num_clusters: Any  # M of this point (effective: one for a clustering-free scheme), int or int (...)
    es_sm_budget: Any  # v_max^ES, int or int (...)
    ue_sms: Any  # v_n^UE, int (..., N)
    downlink_rate: Any  # r_n, bit/s (..., N)
    max_clusters: int | None = None  # M: the cluster axis of per-cluster arrays
    active: Any = None  # bool (..., N): the UEs that serve a request (None: all, the paper's setting)

    def __post_init__(self) -> None:
        self.xp = xp = namespace(self.downlink_rate, self.cluster)  # its float dtype is the point's
        if self.max_clusters is None:
            self.max_clusters = int(self.num_clusters)
        ones = xp.float(xp.broadcast_to(xp.float(1.0), self.cluster.shape))
        if self.active is not None:
            # 1 for an active UE, 0 for another: the masks of `active_only`
            ones = self.active_float = xp.float(xp.broadcast_to(self.active, self.cluster.shape))
            self.active_int = xp.int(self.active_float)
        self.cluster_sizes = xp.segment_sum(ones, self.cluster, self.max_clusters)  # |N_m| (..., M)
        self.cluster_valid = xp.arange(self.max_clusters) < xp.int(self.num_clusters)[..., None]  # (..., M)

    @cached_property
    def membership(self):
        """gamma_{n,m} (..., N, M)."""
        return self.xp.one_hot(self.cluster, self.max_clusters)


def flops_rate(sms, dev: DeviceConfig):
    """Eqs. (9), (17): f = v F D rho."""
    return sms * dev.frequency_hz * dev.flops_per_cycle_per_sm * dev.efficiency


def energy_per_call(sms, dev: DeviceConfig):
    """Energy of one model call on `sms` SMs: P T = kappa xi F^2 / (D rho) (mu1 + mu2 / v) (Eqs. 10-11)."""
    return dev.kappa * dev.flops_per_step * dev.frequency_hz**2 / (dev.flops_per_cycle_per_sm * dev.efficiency) * (
        dev.mu1 + dev.mu2 / sms)


def cluster_max(values, point: DecisionPoint):
    """max_{n in N_m} values_n for each cluster (0 for an empty one): (..., N) -> (..., M), values >= 0."""
    return point.xp.segment_max(values, point.cluster, point.max_clusters)


def cluster_sum(values, point: DecisionPoint):
    """sum_{n in N_m} values_n: (..., N) -> (..., M)."""
    return point.xp.segment_sum(point.xp.float(values), point.cluster, point.max_clusters)


def of_own_cluster(values, point: DecisionPoint):
    """values_{m(n)} for each UE: (..., M) -> (..., N)."""
    return point.xp.take_along_axis(values, point.cluster, -1)


def active_only(values, point: DecisionPoint):
    """values (..., N) of the active UEs, 0 for the others (unchanged when every UE is active).

    The values (finite) are multiplied by the 0/1 mask (a select is several times slower on a
    CPU), so an inactive UE's negative float becomes -0.0, which equals 0."""
    if point.active is None:
        return values
    return values * (point.active_float if point.xp.is_floating(values) else point.active_int)


@dataclass
class ESWork:
    """Model calls the ES makes for given step decisions, and the steps EC-Diff approximates."""

    max_common: Any  # x_m^max (..., M)
    common_calls: Any  # calls of each cluster's common run (..., M)
    personal_calls: Any  # calls of each UE's personalised phase I (..., N)
    approximated_steps: Any  # ES steps of each UE served by approximation (..., N)


def es_work(config: HISConfig, point: DecisionPoint, common_steps, es_personal_steps, ecdiff_enabled: bool) -> ESWork:
    xp = point.xp
    common_steps = active_only(xp.int(common_steps), point)
    es_personal_steps = active_only(xp.int(es_personal_steps), point)
    max_common = cluster_max(common_steps, point)  # x_m^max (Sec. IV-B)
    if not ecdiff_enabled:
        return ESWork(max_common, max_common, es_personal_steps, common_steps * 0)
    e = config.ecdiff
    common_calls, approximated_common = ecdiff.common_run_schedule(
        common_steps, point.cluster, point.max_clusters, config.steps.max_common, e.pre_inference_calls,
        e.approx_steps, e.reinit_calls)
    personal_calls = ecdiff.real_calls(common_steps, es_personal_steps, e.pre_inference_calls, e.approx_steps,
                                       e.reinit_calls)
    approximated = es_personal_steps - personal_calls + approximated_common
    return ESWork(max_common, common_calls, personal_calls, approximated)


def apply_action_rules(actions, steps, common_phase: bool):
    """(x, y, z, projected) from actions (..., N, 2) = (x, y - y_min): the IIS rule (no common phase:
    x = 0) and the projection that keeps z >= z_min (y lowered first, not below y_min, then x)."""
    xp = namespace(actions)
    actions = xp.int(actions)
    common = actions[..., 0] if common_phase else actions[..., 0] * 0
    personal = steps.min_es_personal + actions[..., 1]
    overflow = xp.maximum(common + personal - (steps.total - steps.min_ue), 0)
    cut_personal = xp.minimum(overflow, personal - steps.min_es_personal)
    personal = personal - cut_personal
    common = common - (overflow - cut_personal)
    ue = steps.total - common - personal
    return common, personal, ue, overflow > 0


@dataclass
class ClusterCosts:
    """The ES side of each cluster: its SMs (Tier 2 of MIRA) and its delays and energies (..., M)."""

    es_sms: Any  # v_m
    common_delay: Any  # T^C_m, Eq. (8)
    personal_delay: Any  # T^P-E_m, Eq. (12)
    common_energy: Any  # E^C_m, Eq. (11)
    personal_energy: Any  # E^P-E_m, Eq. (13)


def cluster_costs(config: HISConfig, cluster_sizes, cluster_valid, es_sm_budget, common_calls, personal_calls,
                  allocation_rule: str) -> ClusterCosts:
    """SMs, delays and energies of each cluster from its ES work: the calls of its common run and
    the sum of its members' personalised calls (float (..., M)). `cluster_sizes` |N_m| and
    `cluster_valid` (..., M) and `es_sm_budget` (...) broadcast against the calls' batch shape."""
    xp = namespace(common_calls, personal_calls)
    es, w = config.es, config.reward
    es_calls = common_calls + personal_calls  # x_m^max + sum y_n, in model calls

    # Tier 2 of MIRA: the ES SM split (Theorem 1 or a Fig. 16 baseline)
    batch = es_calls.shape[:-1]
    cluster_shape = batch + (es_calls.shape[-1],)
    sizes = xp.broadcast_to(cluster_sizes, cluster_shape)
    valid = xp.broadcast_to(cluster_valid, cluster_shape)
    budget = xp.broadcast_to(xp.int(es_sm_budget), batch)
    weights = allocation.kkt_weights(sizes, es_calls, w.delay_weight, w.energy_weight, es.flops_per_step,
                                     es.frequency_hz, es.flops_per_cycle_per_sm, es.efficiency, es.kappa, es.mu2)
    es_sms = allocation.ALLOCATION_RULES[allocation_rule](weights, sizes, budget, valid)

    active_sms = xp.float(xp.maximum(es_sms, 1))  # clusters that do not exist get no SMs and do no work
    es_rate = flops_rate(active_sms, es)
    es_call_energy = energy_per_call(active_sms, es)
    return ClusterCosts(
        es_sms=es_sms,
        common_delay=common_calls * es.flops_per_step / es_rate,  # Eq. (8)
        personal_delay=personal_calls * es.flops_per_step / es_rate,  # Eq. (12)
        common_energy=common_calls * es_call_energy,  # Eq. (11)
        personal_energy=personal_calls * es_call_energy,  # Eq. (13)
    )


@dataclass
class UECosts:
    """The UE side of each UE: downlink of the latent and its own denoising steps (..., N)."""

    transmission_delay: Any  # Eq. (14)
    transmission_energy: Any  # Eq. (14)
    compute_delay: Any  # Eqs. (16)-(17)
    compute_energy: Any  # Eq. (18)


def transmission_costs(config: HISConfig, downlink_rate):
    """Delay and energy of the intermediate latent's downlink at rate r_n (Eq. 14)."""
    transmission_delay = latent_bits(config.channel) / downlink_rate  # Eq. (14)
    return transmission_delay, config.channel.transmit_power_w * transmission_delay  # Eq. (14)


def ue_costs(config: HISConfig, point: DecisionPoint, ue_steps) -> UECosts:
    """Transmission and UE compute delay and energy of z_n steps on the UE (float (..., N));
    inactive UEs (`DecisionPoint.active`) receive no latent."""
    xp, ue = point.xp, config.ue
    transmission_delay, transmission_energy = transmission_costs(config, point.downlink_rate)
    if point.active is not None:
        transmission_delay = active_only(transmission_delay, point)
        transmission_energy = active_only(transmission_energy, point)
    ue_sms = xp.float(point.ue_sms)
    return UECosts(
        transmission_delay=transmission_delay,
        transmission_energy=transmission_energy,
        compute_delay=ue_steps * ue.flops_per_step / flops_rate(ue_sms, ue),  # Eqs. (16)-(17)
        compute_energy=ue_steps * energy_per_call(ue_sms, ue),  # Eq. (18)
    )


def network_utility(config: HISConfig, total_quality, total_delay, total_energy):
    """Eq. (23): U = w_Q Q - w_T T - w_E E."""
    w = config.reward
    return w.quality_weight * total_quality - w.delay_weight * total_delay - w.energy_weight * total_energy


def evaluate(config: HISConfig, point: DecisionPoint, common_steps, es_personal_steps, ue_steps, work: ESWork,
             quality, allocation_rule: str) -> dict[str, Any]:
    """Costs, rewards and utility of step decisions (x, y, z) with qualities Q_n.

    Returns arrays with the decisions' batch shape: per UE (..., N), per cluster (..., M),
    network totals (...).
    """
    xp = point.xp
    w = config.reward
    common_calls, personal_calls = xp.float(work.common_calls), xp.float(work.personal_calls)
    ue_steps, quality = xp.float(ue_steps), xp.float(quality)
    if point.active is not None:  # an inactive UE's action has no effect (see the module docstring)
        common_steps, ue_steps, quality = (active_only(v, point) for v in (common_steps, ue_steps, quality))
    personal_calls_m = cluster_sum(personal_calls, point)
    c = cluster_costs(config, point.cluster_sizes, point.cluster_valid, point.es_sm_budget, common_calls,
                      personal_calls_m, allocation_rule)
    u = ue_costs(config, point, ue_steps)

    es_delay_n = active_only(of_own_cluster(c.common_delay + c.personal_delay, point), point)  # sum_m gamma (T^C + T^P-E)
    delay = es_delay_n + u.transmission_delay + u.compute_delay  # Eq. (19)
    ue_side_energy = u.transmission_energy + u.compute_energy  # E_n, Eq. (20)
    es_energy_m = c.common_energy + c.personal_energy  # E_m, Eq. (20)

    # Eq. (33): each UE carries its share of its cluster's ES energy, by common steps and ES calls
    common_total = of_own_cluster(cluster_sum(common_steps, point), point)
    personal_total = of_own_cluster(personal_calls_m, point)
    common_share = xp.where(common_total > 0, xp.float(common_steps) / xp.where(common_total > 0, common_total, 1.0), 0.0)
    personal_share = xp.where(personal_total > 0, personal_calls / xp.where(personal_total > 0, personal_total, 1.0),
                              0.0)
    es_energy_share = common_share * of_own_cluster(c.common_energy, point) + personal_share * of_own_cluster(
        c.personal_energy, point)
    energy_n = ue_side_energy + es_energy_share
    reward = w.quality_weight * quality - w.delay_weight * delay - w.energy_weight * energy_n

    total_quality = xp.sum(quality, -1)  # Eq. (21)
    total_delay = xp.sum(delay, -1)  # Eq. (21)
    total_energy = xp.sum(es_energy_m, -1) + xp.sum(ue_side_energy, -1)  # Eq. (22)
    utility = network_utility(config, total_quality, total_delay, total_energy)  # Eq. (23)
    out = {
        "reward": reward, "quality": quality, "delay": delay, "energy": energy_n, "ue_energy": ue_side_energy,
        "es_energy_share": es_energy_share,
        "transmission_delay": xp.broadcast_to(u.transmission_delay, delay.shape), "ue_compute_delay": u.compute_delay,
        "es_delay": es_delay_n, "es_sms": c.es_sms, "es_energy": es_energy_m, "common_calls": common_calls,
        "personal_calls": personal_calls, "approximated_steps": work.approximated_steps,
        "common_delay": c.common_delay, "personal_delay": c.personal_delay,
        "total_quality": total_quality, "total_delay": total_delay, "total_energy": total_energy,
        "utility": utility,
    }
    if config.dynamics.work.enabled:  # phases that outlast the slot: the SMs each UE holds (dynamics.work)
        # v_m(n) times its share of the cluster's ES calls, the share of E_m that Eq. (33) gives it (every
        # call of a cluster costs the same energy)
        own_es_energy = of_own_cluster(es_energy_m, point)
        share = xp.where(own_es_energy > 0, es_energy_share / xp.where(own_es_energy > 0, own_es_energy, 1.0), 0.0)
        out["ue_es_sms"] = share * xp.float(of_own_cluster(c.es_sms, point))
    return out


def counterfactual_utilities(config: HISConfig, point: DecisionPoint, common_steps, es_personal_steps, ue_steps,
                             quality, default_common, default_personal, default_ue, default_quality,
                             allocation_rule: str, counterfactual_budget=None):
    """U (Eq. 23) of the step decisions with UE n's (x, y, z) and Q_n replaced by a default's
    (x_d, y_d, z_d, Q_d,n), for every n at once: (..., N). `counterfactual_budget` (..., N): the ES
    SM budget of UE n's counterfactual (None: the decision point's, `point.es_sm_budget`, for all).

    Only UE n's own terms and its cluster m(n)'s ES work change: m(n)'s common run becomes
    max(max of the other members' x, x_d) (from each cluster's largest x, how many members reach
    it and its second largest), its personal calls sum y - y_n + y_d. Each UE's counterfactual
    cluster work (..., N, M) goes through the same `cluster_costs` (allocation rule included) as
    `evaluate`, and sum_n T_n = sum_m |N_m| (T^C_m + T^P-E_m) + sum_n (transmission + UE compute):
    O(N M) per decision point instead of N + 1 calls of `evaluate`.

    EC-Diff off only (a call is a step): with EC-Diff on, the common-run schedule and the
    approximation loss of every member depend on the others' x, so the counterfactuals are N + 1
    joint actions through `es_work` and `evaluate` instead.
    """
    if config.ecdiff.enabled:
        raise ValueError("counterfactual_utilities models EC-Diff off (config key 'ecdiff.enabled' is True); "
                         "with EC-Diff on, evaluate the N + 1 joint actions with es_work and evaluate")
    xp = point.xp
    if point.active is not None:  # an inactive UE's action, and its default, have no effect
        common_steps, es_personal_steps, ue_steps, quality, default_common, default_personal, default_ue, \
            default_quality = (active_only(v, point) for v in (common_steps, es_personal_steps, ue_steps, quality,
                                                               default_common, default_personal, default_ue,
                                                               default_quality))
    common, personal = xp.int(common_steps), xp.float(es_personal_steps)

    # cluster m(n)'s common run without UE n: x_m^max unless n is its only member reaching it
    top = cluster_max(common, point)  # x_m^max (..., M)
    own_top = of_own_cluster(top, point)
    at_top = common == own_top
    unique_top = at_top & (of_own_cluster(cluster_sum(at_top, point), point) == 1)
    second = of_own_cluster(cluster_max(xp.where(at_top, 0, common), point), point)
    others_top = xp.where(unique_top, second, own_top)
    own_common = xp.float(xp.maximum(others_top, xp.int(default_common)))  # (..., N)
    personal_m = cluster_sum(personal, point)
    own_personal = of_own_cluster(personal_m, point) - personal + xp.float(default_personal)

    # each UE's counterfactual cluster work (..., N, M): its own cluster's column replaced
    own_cluster = xp.arange(point.max_clusters) == point.cluster[..., None]
    common_calls = xp.where(own_cluster, own_common[..., None], xp.float(top)[..., None, :])
    personal_calls = xp.where(own_cluster, own_personal[..., None], personal_m[..., None, :])
    sizes = point.cluster_sizes[..., None, :]
    budget = xp.int(point.es_sm_budget)[..., None] if counterfactual_budget is None else xp.int(counterfactual_budget)
    c = cluster_costs(config, sizes, point.cluster_valid[..., None, :], budget, common_calls, personal_calls,
                      allocation_rule)
    es_delay = xp.sum(sizes * (c.common_delay + c.personal_delay), -1)  # sum_n of T^C + T^P-E, Eq. (19)
    es_energy = xp.sum(c.common_energy + c.personal_energy, -1)  # sum_m E_m, Eq. (22)

    u, d = ue_costs(config, point, xp.float(ue_steps)), ue_costs(config, point, xp.float(default_ue))
    ue_delay = u.transmission_delay + u.compute_delay
    ue_energy = u.transmission_energy + u.compute_energy  # E_n, Eq. (20)
    quality = xp.float(quality)
    total_quality = xp.sum(quality, -1)[..., None] - quality + xp.float(default_quality)  # Eq. (21)
    total_delay = es_delay + xp.sum(ue_delay, -1)[..., None] - u.compute_delay + d.compute_delay  # Eq. (21)
    total_energy = es_energy + xp.sum(ue_energy, -1)[..., None] - u.compute_energy + d.compute_energy  # Eq. (22)
    return network_utility(config, total_quality, total_delay, total_energy)
