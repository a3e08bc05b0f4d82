"""Work that outlasts a slot: each UE's busy clock, and the ES SMs held by running ES phases.

A request's service takes T_n (Eq. 19: the cluster's common and personalised ES phases, the
downlink, the UE's own steps), often several slots. Time is kept in slots as real numbers, never
rounded: a UE that starts a request of T_n = 2.3 slots is busy at the next two slot boundaries and
free at the third (the first boundary at or after its end).

UE clock: `busy_slots` float (..., N), the service time left. Per slot: `is_free` -> the queue
serves the free UEs -> `start_work` with the served requests' T_n -> `advance_work` at the end.

ES SMs: the SMs v_m of cluster m are held from the slot its phases start until T^C_m + T^P-E_m
(Eqs. 8, 12) has elapsed. `sms_held_at` states the rule for any list of jobs; `EsJobs` keeps the
running ones in a fixed-size table (..., J), filled by `record_es_jobs` and aged by
`advance_es_jobs`. The next slot's ES budget is `es_sm_budget(available, held_es_sms(jobs))`: the
SMs the ES has minus those still held, never negative, so new phases are never given SMs that
running ones hold.

Each UE's part of a job: v_m(n) times its share of the cluster's ES calls, for the job's time
(`SlotDynamics.settle` keeps it per UE); `ue_held_sms` what it holds now, and `budget_without_ue`
the slot's budget with it returned (the difference reward's counterfactual).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from his_common.arrays import namespace

FREE_TOLERANCE_SLOTS = 1e-9  # a job ending within this of a boundary counts as ended there (float error)


# ---------------------------------------------------------------------- UE busy clock
def is_free(busy_slots):
    """UEs that can start a request at this slot boundary (bool (..., N))."""
    return busy_slots <= FREE_TOLERANCE_SLOTS


def start_work(busy_slots, started, delay_s, slot_s: float):
    """The clock after the UEs in `started` (bool (..., N)) begin requests taking `delay_s` (T_n, Eq. 19) seconds."""
    xp = namespace(busy_slots, delay_s)
    return xp.where(started, xp.maximum(busy_slots, 0.0) + xp.float(delay_s) / slot_s, busy_slots)


def advance_work(busy_slots):
    """The clock one slot later: max(busy - 1, 0)."""
    return namespace(busy_slots).maximum(busy_slots - 1.0, 0.0)


# ---------------------------------------------------------------------- ES SMs held
def sms_held_at(job_start_slot, job_duration_slots, job_sms, at_slot):
    """SMs held at slot boundary `at_slot` by jobs (..., J) holding `job_sms` over
    [start, start + duration): sum of the SMs of the jobs with start <= at < start + duration."""
    xp = namespace(job_start_slot, job_duration_slots, job_sms)
    running = (job_start_slot <= at_slot) & (at_slot < job_start_slot + job_duration_slots - FREE_TOLERANCE_SLOTS)
    return xp.sum(xp.where(running, xp.int(job_sms), 0), -1)


@dataclass
class EsJobs:
    """Running ES phases of each env: a table of J rows (a row with no time left is free)."""

    remaining_slots: Any  # float (..., J): time the job still holds its SMs
    sms: Any  # int (..., J)

    @property
    def max_jobs(self) -> int:
        return int(self.sms.shape[-1])


def no_es_jobs(env_shape: tuple[int, ...], max_jobs: int, like=None) -> EsJobs:
    """An empty job table of `max_jobs` rows, numpy or on `like`'s torch device (and float dtype)."""
    if int(max_jobs) < 1:
        raise ValueError(f"ES job table of {max_jobs} rows; allowed: an integer >= 1")
    xp = namespace(like) if like is not None else namespace()
    shape = tuple(env_shape) + (int(max_jobs),)
    return EsJobs(xp.zeros(shape, "float"), xp.zeros(shape, "int"))


def _running(jobs: EsJobs):
    return (jobs.remaining_slots > FREE_TOLERANCE_SLOTS) & (jobs.sms > 0)


def held_es_sms_and_free_rows(jobs: EsJobs):
    """The SMs the running jobs hold now and the rows of the table free for new jobs (int (...) each),
    from one look at which rows run."""
    xp = namespace(jobs.remaining_slots, jobs.sms)
    running = xp.int(_running(jobs))
    return xp.sum(jobs.sms * running, -1), jobs.max_jobs - xp.sum(running, -1)


def held_es_sms(jobs: EsJobs):
    """SMs the running jobs hold now (int (...))."""
    return held_es_sms_and_free_rows(jobs)[0]


def es_sm_budget(available_sms, held_sms):
    """SMs free for new phases this slot: max(available - held, 0) (int)."""
    xp = namespace(available_sms, held_sms)
    return xp.maximum(xp.int(available_sms) - xp.int(held_sms), 0)


def record_es_jobs(jobs: EsJobs, duration_slots, sms) -> EsJobs:
    """The table with new jobs starting this slot: one per cluster (..., M) holding `sms` for
    `duration_slots` (T^C_m + T^P-E_m in slots). Jobs with no SMs or no time are skipped; a
    ValueError names the shortfall when the table has too few free rows."""
    xp = namespace(jobs.remaining_slots, duration_slots, sms)
    duration_slots, sms = xp.float(duration_slots), xp.int(sms)
    new = (sms > 0) & (duration_slots > FREE_TOLERANCE_SLOTS)  # (..., M)
    clusters = new.shape[-1]
    if clusters == 0:
        return jobs
    free_row = ~_running(jobs)  # (..., J)
    free_rank = xp.cumsum(xp.int(free_row), -1) - 1  # k-th free row, from 0
    new_rank = xp.cumsum(xp.int(new), -1) - 1  # k-th new job, from 0
    needed, room = new_rank[..., -1] + 1, free_rank[..., -1] + 1  # the counts: the last ranks + 1
    xp.check(needed <= room, lambda: f"{int((needed - room).max())} ES jobs more than the free rows of the job "
                                     f"table ({jobs.max_jobs} rows); allowed: at most the free rows (raise "
                                     f"work.max_es_jobs)")
    # row j takes the new job whose rank is row j's free rank: the cluster of each rank (..., M), gathered per row
    ranks = xp.arange(clusters)
    job_of_rank = xp.sum(xp.where(new[..., None, :] & (new_rank[..., None, :] == ranks[:, None]), ranks, 0), -1)
    taken = free_row & (free_rank < needed[..., None])
    job = xp.take_along_axis(job_of_rank, xp.clip(free_rank, 0, clusters - 1), -1)  # (..., J)
    remaining = xp.where(taken, xp.take_along_axis(duration_slots, job, -1), jobs.remaining_slots)
    held = xp.where(taken, xp.take_along_axis(sms, job, -1), xp.where(free_row, 0, jobs.sms))
    return EsJobs(remaining, held)


def ue_held_sms(held_sms, held_slots):
    """The SMs each UE's running ES phases hold now (float (..., N)): its share `held_sms` of its
    cluster's job (v_m(n) times its share of the cluster's ES calls) while the job runs, else 0."""
    xp = namespace(held_sms, held_slots)
    return xp.where(held_slots > FREE_TOLERANCE_SLOTS, held_sms, 0.0)


def budget_without_ue(allocation_budget, can_start, ue_held):
    """The ES budget of the slot without UE n, for each n (int (..., N)): the budget that Theorem 1
    splits (`allocation_budget` (...)) plus the SMs UE n's running phases hold (`ue_held` (..., N),
    rounded to whole SMs), where phases start this slot (`can_start` (...)); the counterfactual of
    the difference reward (his_env.reward_modes) returns them, so a UE is charged for what its
    phases keep from later slots."""
    xp = namespace(allocation_budget, ue_held)
    returned = xp.where(can_start[..., None], xp.int(xp.floor(ue_held + 0.5)), 0)
    return xp.int(allocation_budget)[..., None] + returned


def advance_es_jobs(jobs: EsJobs) -> EsJobs:
    """The table one slot later: every job's time left shrinks by a slot."""
    return EsJobs(namespace(jobs.remaining_slots).maximum(jobs.remaining_slots - 1.0, 0.0), jobs.sms)
