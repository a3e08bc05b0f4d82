"""One slot of the HIS Markov game: the order in which the dynamics run, shared by both envs.

`SlotDynamics` is orchestration only: every formula is a process module's (`channel_memory`,
`mobility`, `background_load`, `queues`, `work`, `battery`, `intent`) or the system model's
(`his_env.system_model`, `his_env.channel`). It runs on numpy arrays (the PettingZoo env: UE arrays
(N,), env-wide values of shape ()) and on torch tensors with a batch axis (the vectorised env:
(B, N) and (B,)), from the same standard draws in the same order, so the two envs agree number for
number when they share the draws (`draws.GeneratorBatch`, `HISVecEnv.mirror`).

A slot t is one decision point. Its text side (intent -> prompts -> clustering -> public prompts ->
phi) is the env's (the PettingZoo env runs it, with intent groups kept by `intent`; the vectorised
env reads it from its bank). Its physical side is here, in this order:

1. mobility: positions one slot on (t >= 1; t = 0: the initial ones), distance to the ES;
   without mobility, distances drawn afresh over the annulus area;
2. channel: the fading one slot on (Gauss-Markov, Jakes' rho from each UE's speed), times the path
   gain: the downlink rate r_n (Eq. 15); without memory, a fresh Exp(1) power gain;
3. background load: v_max^ES available (the ES's SMs less the other tenants'); without it, drawn
   uniformly from es.sm_range; less the SMs running ES phases still hold (work): the budget left
   for new phases;
4. the UEs' SMs v_n (uniform over ue.sm_range, every slot);
5. which UEs are free to start a request: not busy with the last one (work), with a battery that
   pays the downlink and the fewest UE steps the ES can leave it (battery), and only if the ES can
   start phases at all: a budget left of at least one SM per cluster and as many free rows in the
   job table (otherwise no request starts this slot; requests wait in their queues);
6. queue_step: arrivals (with bursts on, at the rate of the cell's calm or burst spell, the burst
   chain one slot on first), deadline drops, overflow; each free UE starts its head-of-line request
   (requests off: each free UE brings one new request). The UEs that start one are *active*.

Then the agents act (all of them; an inactive UE's action has no effect, `system_model.active_only`):

7. the action rules (`system_model.apply_action_rules`), then the battery rule: UE steps the
   battery cannot pay move to the ES (`battery.move_unaffordable_steps`); Eqs. (8)-(23), (33);
8. `settle`: active UEs become busy for T_n (Eq. 19), each cluster's phases hold its v_m SMs for
   T^C_m + T^P-E_m (Eqs. 8, 12), batteries pay E_n (Eq. 20) and take the trickle charge; the
   clocks advance one slot.

The reward with requests on charges, besides Eq. (33): w_T T_slot for every request that waited
through the last slot (so each request is charged w_T times its wait, served or dropped) and
`requests.drop_penalty` per dropped request (deadline or overflow), to the UE that owns it
(`penalty`). Draws per slot, in order: mobility (or distance fractions), fading normals (or
uniforms for a fresh gain), the background-load normal (or a uniform for the budget), UE-SM
uniforms, the burst chain's uniform (bursts on), arrival uniforms; at reset first the initial
mobility, fading, load, battery and burst draws.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from his_common.arrays import namespace

from his_env import channel, system_model
from his_env.dynamics import background_load, battery, channel_memory, draws, mobility, queues, work
from his_env.dynamics._ops import stack

OBSERVATION_FEATURES = ("active", "queue_fraction", "head_slack_fraction", "battery_fraction", "relative_rate",
                        "last_delay_fraction", "es_busy_fraction")
# bounds of each feature (the rate and the delay have none above: Rayleigh gains and delays are unbounded)
OBSERVATION_LOW = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
OBSERVATION_HIGH = (1.0, 1.0, 1.0, 1.0, float("inf"), float("inf"), 1.0)
STATE_FEATURES = ("busy_slots", "es_available_fraction")  # after all UEs' observations: N + 1 values


@dataclass
class DynamicsState:
    """What carries from one slot to the next (None: the process is off)."""

    busy_slots: Any  # float (..., N): service time left, in slots (0 without work)
    last_delay_s: Any  # float (..., N): T_n of the UE's last request (0 before any)
    held_sms: Any = None  # float (..., N): the ES SMs each UE's running phases hold (work.ue_held_sms)
    held_slots: Any = None  # float (..., N): the time they still hold them, in slots
    mobility: Any = None  # the mobility model's state
    fading: Any = None  # float (..., N, 2)
    latent_load: Any = None  # float (...)
    queues: queues.QueueState | None = None
    burst: Any = None  # bool (...): the cell's arrivals in a burst spell (requests.bursts)
    jobs: work.EsJobs | None = None
    battery_j: Any = None  # float (..., N)
    battery_initial_j: Any = None  # the books, cumulative from reset (..., N)
    battery_drained_j: Any = None
    battery_recharged_j: Any = None
    battery_shortfall_j: Any = None
    battery_spilled_j: Any = None


@dataclass
class Slot:
    """The physical side of one decision point."""

    distance_m: Any  # (..., N)
    downlink_rate: Any  # r_n, bit/s (..., N), Eq. (15)
    ue_sms: Any  # v_n, int (..., N)
    es_available: Any  # v_max^ES the ES offers HIS, int (...)
    es_held: Any  # SMs running ES phases hold, int (...)
    es_budget: Any  # SMs left for new phases, max(available - held, 0), int (...)
    can_start: Any  # bool (...): budget and job table allow one phase per cluster
    allocation_budget: Any  # the budget Theorem 1 splits: es_budget, or one SM per cluster when nothing starts
    free: Any  # bool (..., N): could start a request
    active: Any  # bool (..., N): starts one
    ue_step_limit: Any  # int (..., N): UE steps the battery pays (T_max without batteries)
    arrived: Any  # int (..., N): requests that arrived this slot (0 without requests)
    dropped: Any  # int (..., N): requests dropped this slot (deadline + overflow)
    waited: Any  # int (..., N): requests charged one slot of waiting
    absent_budget: Any  # int (..., N): the budget of the counterfactual without UE n (work.budget_without_ue;
    # None without work: nothing outlasts the slot, and every counterfactual has the slot's budget)


def _where(mask, new, old):
    """Field by field: `new` where mask (env axis) is True, `old` elsewhere (dataclasses, arrays, None)."""
    if new is None:
        return None
    if hasattr(new, "__dataclass_fields__"):
        return type(new)(**{f.name: _where(mask, getattr(new, f.name), getattr(old, f.name)) for f in fields(new)})
    m = mask.reshape(mask.shape + (1,) * (new.dim() - mask.dim())) if hasattr(new, "dim") else \
        np.reshape(mask, np.shape(mask) + (1,) * (np.ndim(new) - np.ndim(mask)))
    return namespace(new, old).where(m, new, old)


def merge(mask, new, old):
    """`new` (a DynamicsState or Slot) in the envs where mask (B,) is True, `old` elsewhere: partial resets."""
    return _where(mask, new, old)


class SlotDynamics:
    """The processes of one configuration, run in the order of the module docstring."""

    def __init__(self, config, max_clusters: int, common_phase: bool):
        self.config = config
        d = self.dynamics = config.dynamics
        self.on = bool(d.enabled_processes)
        self.num_ues = config.num_ues
        self.max_clusters = int(max_clusters)
        self.common_phase = bool(common_phase)
        steps = config.steps
        self.total_steps = steps.total
        self.min_ue_steps = battery.minimum_ue_steps(steps.total, steps.min_ue, steps.max_common,
                                                     steps.max_es_personal, common_phase)
        cell = tuple(config.channel.distance_range_m)
        self.cell = cell
        if d.mobility.enabled:
            self.mobility_model = mobility.MOBILITY_MODELS[d.mobility.model]
            self.mobility_params = d.mobility.params(cell, d.slot_s)
        if d.channel.enabled and not d.mobility.enabled:
            self.rho = d.channel.correlation if d.channel.correlation is not None else float(
                channel_memory.fading_correlation(d.channel.speed_mps, d.channel.carrier_hz, d.slot_s))
        self.load_moments = d.background_load.moments(config.es.sm_range)
        self.burst_rates = d.requests.bursts.rates(d.requests.rate_per_slot) if d.requests.bursts.enabled else None
        # the rate a UE at the inner radius has with a unit fading gain: the scale of the observed rate
        self.reference_rate = float(channel.downlink_rate(channel.path_gain(np.float64(cell[0]), config.channel),
                                                          config.channel))

    # ------------------------------------------------------------------ reset
    def initial(self, source, env_shape: tuple[int, ...] = (), like=None, dtype=None) -> DynamicsState:
        """The state at reset: initial positions, fading, load and batteries from `source`'s draws,
        empty queues, idle UEs and ES. `like`: a tensor of the vectorised env's dtype and device."""
        d, env_shape = self.dynamics, tuple(env_shape)
        shape = env_shape + (self.num_ues,)
        xp = namespace(like) if like is not None else namespace()
        zeros = xp.zeros(shape, "float")
        state = DynamicsState(busy_slots=zeros, last_delay_s=zeros)
        if d.mobility.enabled:
            model = self.mobility_model
            state.mobility = model.initial(self.mobility_params, *model.draw_initial(source, shape, dtype))
        if d.channel.enabled:
            state.fading = channel_memory.initial_fading(channel_memory.draw_fading(source, shape, dtype))
        if d.background_load.enabled:
            mean, std = self.load_moments
            state.latent_load = background_load.initial_background_load(
                background_load.draw_background_load(source, env_shape, dtype), mean, std)
        if d.battery.enabled:
            b = d.battery
            level = battery.initial_battery(battery.draw_battery(source, shape, dtype), b.capacity_j, b.initial_fraction)
            state.battery_j = state.battery_initial_j = level
            state.battery_drained_j = state.battery_recharged_j = zeros
            state.battery_shortfall_j = state.battery_spilled_j = zeros
        if d.requests.enabled:
            state.queues = queues.empty_queues(shape, d.requests.queue_capacity, like=like)
            if d.requests.bursts.enabled:
                state.burst = queues.initial_burst(queues.draw_burst(source, env_shape, dtype), self.burst_rates)
        if d.work.enabled:
            state.jobs = work.no_es_jobs(env_shape, d.work.max_es_jobs, like=like)
            state.held_sms = state.held_slots = zeros
        return state

    # ------------------------------------------------------------------ steps 1-6
    def draws(self, source, env_shape: tuple[int, ...], first: bool, dtype=None) -> dict[str, Any]:
        """The standard draws of one slot from `source`, in the order every env takes them: mobility
        (or fresh distances), fading (or independent Rayleigh), background load (or a fresh budget),
        the UEs' SMs, the arrivals. `first`: the slot right after `initial` (no process moves yet)."""
        d, env_shape = self.dynamics, tuple(env_shape)
        shape = env_shape + (self.num_ues,)
        out: dict[str, Any] = {}
        if d.mobility.enabled:
            if not first:
                out["mobility"] = self.mobility_model.draw_step(source, shape, dtype)
        else:
            out["distance"] = draws.uniform(source, shape, dtype)
        if d.channel.enabled:
            if not first:
                out["fading"] = channel_memory.draw_fading(source, shape, dtype)
        elif self.config.channel.rayleigh_fading:
            out["rayleigh"] = draws.uniform(source, shape, dtype)
        if d.background_load.enabled:
            if not first:
                out["load"] = background_load.draw_background_load(source, env_shape, dtype)
        else:
            out["available"] = draws.uniform(source, env_shape, dtype)
        out["ue_sms"] = draws.uniform(source, shape, dtype)
        if d.requests.enabled:
            if d.requests.bursts.enabled and not first:
                out["burst"] = queues.draw_burst(source, env_shape, dtype)
            out["arrivals"] = queues.draw_arrivals(source, shape, dtype)
        return out

    def advance(self, state: DynamicsState, source, first: bool, dtype=None) -> tuple[DynamicsState, Slot]:
        """The decision point of the next slot (the first one after `initial` with first=True): the
        new state and the slot's physical side."""
        return self.evolve(state, self.draws(source, tuple(state.busy_slots.shape)[:-1], first, dtype), first)

    def evolve(self, state: DynamicsState, drawn: dict[str, Any], first: bool) -> tuple[DynamicsState, Slot]:
        """`advance` from the slot's draws (`draws`): no random stream is touched, so a vector env can
        capture it (his_env.vector.capture)."""
        cfg, d = self.config, self.dynamics
        shape = tuple(state.busy_slots.shape)
        xp = namespace(state.busy_slots)
        state = replace(state)

        # 1. mobility -> distances
        if d.mobility.enabled:
            if not first:
                model = self.mobility_model
                state.mobility = model.step(state.mobility, self.mobility_params, *drawn["mobility"])
            distance = mobility.distance_m(state.mobility)
        else:
            distance = channel.distance_from_area_fraction(drawn["distance"], self.cell)

        # 2. channel -> downlink rate (Eq. 15)
        gain = channel.path_gain(distance, cfg.channel)
        if d.channel.enabled:
            if not first:
                if d.mobility.enabled and d.channel.correlation is None:
                    rho = channel_memory.fading_correlation(mobility.speed_mps(state.mobility), d.channel.carrier_hz,
                                                            d.slot_s)  # Jakes, each UE's own speed
                else:
                    rho = d.channel.correlation if d.channel.correlation is not None else self.rho
                state.fading = channel_memory.fading_step(state.fading, rho, drawn["fading"])
            gain = gain * channel_memory.power_gain(state.fading)
        elif cfg.channel.rayleigh_fading:
            gain = gain * channel_memory.independent_power_gain(drawn["rayleigh"])
        rate = channel.downlink_rate(gain, cfg.channel)

        # 3. the ES: available, held, left for new phases
        es_lo, es_hi = cfg.es.sm_range
        if d.background_load.enabled:
            if not first:
                mean, std = self.load_moments
                state.latent_load = background_load.background_load_step(
                    state.latent_load, drawn["load"], mean, std, d.background_load.correlation)
            available = background_load.available_es_sms(state.latent_load, cfg.es.sm_range)
        else:
            available = draws.integers_from_uniform(drawn["available"], es_lo, es_hi)
        clusters = self.max_clusters
        if d.work.enabled:
            held, free_rows = work.held_es_sms_and_free_rows(state.jobs)
            budget = work.es_sm_budget(available, held)
            can_start = (budget >= clusters) & (free_rows >= clusters)
        else:
            held, budget = available * 0, available
            can_start = budget >= clusters  # always: es.sm_range's low bound is >= num_clusters
        allocation_budget = xp.where(can_start, budget, clusters)
        absent_budget = work.budget_without_ue(allocation_budget, can_start, work.ue_held_sms(
            state.held_sms, state.held_slots)) if d.work.enabled else None

        # 4. the UEs' SMs
        ue_lo, ue_hi = cfg.ue.sm_range
        ue_sms = draws.integers_from_uniform(drawn["ue_sms"], ue_lo, ue_hi)

        # 5. which UEs can start a request
        free = work.is_free(state.busy_slots) if d.work.enabled else ~xp.zeros(shape, "bool")
        free = free & can_start[..., None]
        if d.battery.enabled:
            _, downlink_energy = system_model.transmission_costs(cfg, rate)  # Eq. (14)
            step_energy = system_model.energy_per_call(xp.float(ue_sms), cfg.ue)  # Eq. (18), one step
            free = free & ~battery.cannot_afford(state.battery_j, downlink_energy + self.min_ue_steps * step_energy)
            limit = xp.minimum(battery.affordable_ue_steps(state.battery_j, step_energy, downlink_energy),
                               self.total_steps)
        else:
            limit = xp.int(ue_sms * 0 + self.total_steps)

        # 6. the queues
        if d.requests.enabled:
            r = d.requests
            if r.bursts.enabled:
                if not first:
                    state.burst = queues.burst_step(state.burst, drawn["burst"], self.burst_rates)
                arrivals = queues.modulated_arrivals(r.arrivals, drawn["arrivals"], state.burst, self.burst_rates)
            else:
                arrivals = queues.ARRIVAL_PROCESSES[r.arrivals](drawn["arrivals"], r.rate_per_slot)
            waited = state.queues.length  # every request waiting now waits through the slot just ended
            state.queues, events = queues.queue_step(state.queues, arrivals, free, r.deadline_slots,
                                                     served_waits=False)
            active, arrived = events.served, events.arrived
            dropped = events.dropped_deadline + events.dropped_overflow
        else:
            none = xp.int(ue_sms * 0)
            active, arrived, dropped, waited = free, none, none, none
        return state, Slot(distance, rate, ue_sms, available, held, budget, can_start, allocation_budget, free,
                           active, limit, arrived, dropped, waited, absent_budget)

    # ------------------------------------------------------------------ steps 7-8
    def battery_rule(self, ue_step_limit, common_steps, es_personal_steps, ue_steps):
        """(x, y, z, moved): UE steps the battery cannot pay (beyond `Slot.ue_step_limit`, which must
        broadcast against the steps) moved to the ES; unchanged without batteries."""
        if not self.dynamics.battery.enabled:
            return common_steps, es_personal_steps, ue_steps, ue_steps * 0
        limit = ue_step_limit
        steps = self.config.steps
        return battery.move_unaffordable_steps(common_steps, es_personal_steps, ue_steps, limit, steps.max_common,
                                               steps.max_es_personal, self.common_phase)

    def penalty(self, slot: Slot):
        """What the reward charges each UE besides Eq. (33) (float (..., N)): w_T T_slot per request that
        waited through the last slot, and `requests.drop_penalty` per request dropped this slot."""
        xp = namespace(slot.downlink_rate)
        if not self.dynamics.requests.enabled:
            return slot.downlink_rate * 0.0
        wait_charge = self.config.reward.delay_weight * self.dynamics.slot_s
        return wait_charge * xp.float(slot.waited) + self.dynamics.requests.drop_penalty * xp.float(slot.dropped)

    def settle(self, state: DynamicsState, slot: Slot, result: dict) -> tuple[DynamicsState, Any]:
        """The state after the slot's requests start (`result`: `system_model.evaluate`'s, of the slot's
        decision point): busy clocks, ES jobs, batteries, then one slot on. Returns (state, the
        battery step or None)."""
        d = self.dynamics
        xp = namespace(state.busy_slots)
        state = replace(state)
        active, delay = slot.active, xp.float(result["delay"])
        state.last_delay_s = xp.where(active, delay, state.last_delay_s)
        if d.work.enabled:
            busy = work.start_work(state.busy_slots, active, delay, d.slot_s)
            duration = (xp.float(result["common_delay"]) + xp.float(result["personal_delay"])) / d.slot_s
            sms = xp.where(slot.can_start[..., None], xp.int(result["es_sms"]), 0)
            jobs = work.record_es_jobs(state.jobs, duration, sms)
            state.busy_slots, state.jobs = work.advance_work(busy), work.advance_es_jobs(jobs)
            # each UE's part of its cluster's job: its share of the SMs, as long as the job runs
            started = active & slot.can_start[..., None]
            held_sms = xp.where(started, xp.float(result["ue_es_sms"]), state.held_sms)
            held_slots = xp.where(started, xp.float(result["es_delay"]) / d.slot_s, state.held_slots)
            state.held_sms, state.held_slots = held_sms, work.advance_work(held_slots)
        step = None
        if d.battery.enabled:
            b = d.battery
            # E_n of the active UEs; evaluate gives an inactive UE no energy (system_model.active_only)
            used = xp.float(result["ue_energy"])
            step = battery.battery_step(state.battery_j, used, b.trickle_charge_w * d.slot_s, b.capacity_j)
            state.battery_j = step.level_j
            state.battery_drained_j = state.battery_drained_j + step.drained_j
            state.battery_recharged_j = state.battery_recharged_j + step.recharged_j
            state.battery_shortfall_j = state.battery_shortfall_j + step.shortfall_j
            state.battery_spilled_j = state.battery_spilled_j + step.spilled_j
        return state, step

    # ------------------------------------------------------------------ what the agents see
    def observation_features(self, state: DynamicsState, slot: Slot) -> tuple:
        """The 7 features of `observation`, in `OBSERVATION_FEATURES` order, each an array that
        broadcasts to (..., N) (a number where it is one for every UE): `active` bool, the others float."""
        d, xp = self.dynamics, namespace(state.busy_slots)
        if d.requests.enabled:
            q, deadline = state.queues, d.requests.deadline_slots
            head_age = xp.float(xp.take_along_axis(q.age, q.head[..., None], -1)[..., 0])
            queue_fraction = xp.float(q.length) / q.capacity
            slack = xp.where(q.length > 0, (deadline - 1.0 - head_age) / deadline, 1.0)
        else:
            queue_fraction, slack = 0.0, 1.0
        battery_fraction = state.battery_j / d.battery.capacity_j if d.battery.enabled else 1.0
        busy = xp.float(slot.es_held) / float(self.config.es.sm_range[1])
        return (slot.active, queue_fraction, slack, battery_fraction, slot.downlink_rate / self.reference_rate,
                state.last_delay_s / (d.slot_s * d.requests.deadline_slots), busy[..., None])

    def observation(self, state: DynamicsState, slot: Slot):
        """Each UE's own dynamics features (..., N, 7), `OBSERVATION_FEATURES`: whether it serves a
        request, its queue length / Q_max, its head-of-line request's slack (slots it may still wait,
        over the deadline; 1 with an empty queue), its battery fraction, its rate over the rate at
        the inner radius with unit fading, its last delay T_n over the deadline (requests.deadline_slots
        slots, whether or not requests are on), and the fraction of the ES's
        SMs (es.sm_range's high) that running HIS phases hold (what the ES tells every UE)."""
        xp, shape = namespace(state.busy_slots), tuple(slot.downlink_rate.shape)
        return stack([xp.broadcast_to(xp.float(f), shape) for f in self.observation_features(state, slot)], axis=-1)

    def state_features(self, state: DynamicsState, slot: Slot):
        """The global state beyond the observations (..., N + 1), `STATE_FEATURES`: each UE's service
        time left (slots) and v_max^ES available as a fraction of es.sm_range's high."""
        xp = namespace(state.busy_slots)
        available = xp.float(slot.es_available) / float(self.config.es.sm_range[1])
        return _concat_last(state.busy_slots, available[..., None])

    def books(self, state: DynamicsState) -> dict[str, Any]:
        """Cumulative books per UE (..., N): requests (arrived, served, dropped at the deadline, dropped
        as overflow, waiting) and batteries (initial, level, drained, recharged, shortfall, spilled)."""
        out = {}
        if state.queues is not None:
            q = state.queues
            out.update(requests_arrived=q.arrived, requests_served=q.served,
                       requests_dropped_deadline=q.dropped_deadline, requests_dropped_overflow=q.dropped_overflow,
                       requests_waiting=q.length)
        if state.battery_j is not None:
            out.update(battery_initial_j=state.battery_initial_j, battery_j=state.battery_j,
                       battery_drained_j=state.battery_drained_j, battery_recharged_j=state.battery_recharged_j,
                       battery_shortfall_j=state.battery_shortfall_j, battery_spilled_j=state.battery_spilled_j)
        return out


def _concat_last(a, b):
    if hasattr(a, "dim"):
        import torch

        return torch.cat([a, b.to(a.dtype)], dim=-1)
    return np.concatenate([a, np.asarray(b, dtype=a.dtype)], axis=-1)
