"""Requests and queues: per-UE arrivals, deadlines and a bounded FIFO queue in fixed-size arrays.

Each slot a UE receives a random number of image requests: Bernoulli(p) (at most one) or
Poisson(lambda), declared in `ARRIVAL_PROCESSES` (config key `requests.arrivals`); both are drawn
by inversion from one uniform per UE, so the count is a pure function of the draw. Requests wait
in a FIFO queue of at most Q_max per UE, stored as a ring buffer: `age` (..., N, Q_max) in slots,
with `head` and `length` (..., N). One slot of `queue_step` does, in order:

1. age every waiting request by one slot;
2. drop the requests that have waited `deadline_slots` slots or more (they can no longer start
   in time); with one deadline per UE the queue is ordered by age, so these are a prefix;
3. append this slot's arrivals (age 0); those beyond Q_max are dropped as overflow;
4. if the UE is free, start serving its head-of-line request (its wait, in slots, is its age).

A request that arrives in slot t can thus be served in slot t (wait 0) up to slot
t + deadline_slots - 1. The per-UE books are cumulative in the state, and

    arrived = served + dropped_deadline + dropped_overflow + waiting

holds after every slot (`waiting` is the queue length). Functions return a new state; nothing
is modified in place.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from his_common.arrays import is_tensor, namespace
from his_common.registry import Registry

from his_env.dynamics import draws

MAX_POISSON_RATE = 100.0  # per slot: above it the inversion table grows long (and queues overflow anyway)


# ---------------------------------------------------------------------- arrivals
@functools.lru_cache(maxsize=32)
def poisson_cdf_table(rate: float) -> tuple[float, ...]:
    """F(k) = P(X <= k) of Poisson(rate) for k = 0, 1, ... until 1 - F(k) < 1e-17."""
    rate = float(rate)
    if not 0.0 <= rate <= MAX_POISSON_RATE:
        raise ValueError(f"Poisson arrival rate {rate} per slot; allowed: [0, {MAX_POISSON_RATE:g}]")
    pmf, cdf, k = math.exp(-rate), [], 0
    total = 0.0
    while True:
        total += pmf
        cdf.append(min(total, 1.0))
        k += 1
        pmf *= rate / k
        if k > rate and (1.0 - total < 1e-17 or pmf < 1e-300):
            return tuple(cdf)


def poisson_arrivals(uniform, rate: float):
    """Poisson(rate) counts by inversion: X = #{k : F(k) <= u} (int, shape of `uniform`)."""
    xp = namespace(uniform)
    table = xp.float(list(poisson_cdf_table(rate)))
    return xp.sum(xp.int(uniform[..., None] >= table), -1)


def bernoulli_arrivals(uniform, rate: float):
    """Bernoulli(rate) counts: 1 if u < p (int, shape of `uniform`)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Bernoulli arrival probability {rate} per slot; allowed: [0, 1]")
    return namespace(uniform).int(uniform < rate)


ARRIVAL_PROCESSES: Registry[Callable[[Any, float], Any]] = Registry("arrival process")
ARRIVAL_PROCESSES.register("bernoulli", bernoulli_arrivals)
ARRIVAL_PROCESSES.register("poisson", poisson_arrivals)


@dataclass(frozen=True)
class BurstRates:
    """A two-state Markov-modulated arrival process (`burst_rates`): the rate in each state, the
    chain's transition probabilities per slot and the stationary share of burst slots."""

    calm_rate: float  # requests per UE per slot in a calm slot
    burst_rate: float  # in a burst slot
    enter_probability: float  # P(burst next slot | calm now) = 1 / mean calm spell
    leave_probability: float  # P(calm next slot | burst now) = 1 / mean burst spell
    burst_fraction: float  # stationary P(burst) = mean burst / (mean burst + mean calm)


def burst_fraction(mean_burst_slots: float, mean_calm_slots: float) -> float:
    """pi_b, the stationary share of burst slots: mean burst / (mean burst + mean calm spell)."""
    return mean_burst_slots / (mean_burst_slots + mean_calm_slots)


def burst_rates(mean_rate: float, peak_ratio: float, mean_burst_slots: float, mean_calm_slots: float) -> BurstRates:
    """Bursty arrivals with long-run rate `mean_rate`: the cell alternates between calm and burst
    spells of geometric lengths (means in slots, >= 1), a two-state Markov-modulated process (an
    MMPP; Fischer & Meier-Hellstern, "The Markov-modulated Poisson process (MMPP) cookbook",
    Performance Evaluation 18(2), 1993). In a burst the rate is peak_ratio x mean_rate; the calm rate
    is what keeps the long-run mean, (mean_rate - pi_b peak_ratio mean_rate) / (1 - pi_b), pi_b the
    burst fraction; so peak_ratio may be at most 1 / pi_b (then calm spells bring nothing)."""
    if not (mean_burst_slots >= 1 and mean_calm_slots >= 1):
        raise ValueError(f"mean burst and calm spells of {mean_burst_slots} and {mean_calm_slots} slots; allowed: "
                         f"numbers >= 1 (spells last whole slots)")
    fraction = burst_fraction(mean_burst_slots, mean_calm_slots)
    if not 1.0 <= peak_ratio <= 1.0 / fraction + 1e-12:
        raise ValueError(f"burst peak ratio {peak_ratio}; allowed: [1, {1.0 / fraction:g}] (1 / the burst fraction "
                         f"{fraction:g}: above it the calm rate would be negative)")
    burst = peak_ratio * mean_rate
    calm = max((mean_rate - fraction * burst) / (1.0 - fraction), 0.0)
    return BurstRates(calm, burst, 1.0 / mean_calm_slots, 1.0 / mean_burst_slots, fraction)


def initial_burst(uniform, rates: BurstRates):
    """The chain's state at reset, from its stationary distribution: burst if u < pi_b (bool, shape of `uniform`)."""
    return uniform < rates.burst_fraction


def burst_step(burst, uniform, rates: BurstRates):
    """The chain one slot on: a burst ends if u < P(leave), a calm spell ends if u < P(enter) (bool)."""
    xp = namespace(uniform)
    return xp.where(burst, uniform >= rates.leave_probability, uniform < rates.enter_probability)


def modulated_arrivals(process: str, uniform, burst, rates: BurstRates):
    """This slot's counts (int (..., N)) of arrival process `process` at the burst rate in the envs in
    a burst (`burst` bool (...)), at the calm rate elsewhere; from the same uniforms either way."""
    xp = namespace(uniform)
    draw = ARRIVAL_PROCESSES[process]
    return xp.where(burst[..., None], draw(uniform, rates.burst_rate), draw(uniform, rates.calm_rate))


def draw_burst(generator, env_shape: tuple[int, ...] = (), dtype=None):
    """The uniforms (...) the burst chain consumes at reset and each slot (shape () for one env)."""
    return draws.uniform(generator, tuple(env_shape), dtype)


def draw_arrivals(generator, num_ues_shape: tuple[int, ...], dtype=None):
    """The uniforms (..., N) one slot of arrivals consumes."""
    return draws.uniform(generator, tuple(num_ues_shape), dtype)


# ---------------------------------------------------------------------- queues
@dataclass
class QueueState:
    """Bounded FIFO queues of N UEs (ring buffers) and their cumulative books."""

    age: Any  # int32 (..., N, Q_max): slots waited by the request in each cell (0 in empty cells)
    # the rest int64 (..., N)
    head: Any  # (..., N): cell of the head-of-line request
    length: Any  # (..., N): requests waiting
    arrived: Any  # (..., N): cumulative counts from here on
    served: Any
    dropped_deadline: Any
    dropped_overflow: Any

    @property
    def capacity(self) -> int:
        return int(self.age.shape[-1])

    @property
    def waiting(self):
        return self.length


@dataclass
class QueueEvents:
    """What one slot did, per UE (..., N)."""

    arrived: Any  # requests that arrived
    dropped_deadline: Any  # requests dropped at their deadline
    dropped_overflow: Any  # arrivals that found the queue full
    served: Any  # bool: a request started service
    served_wait_slots: Any  # its wait in slots (-1 where none started; None unless asked for)
    waiting: Any  # queue length after the slot


def empty_queues(num_ues_shape: tuple[int, ...], capacity: int, like=None) -> QueueState:
    """Empty queues of `capacity` cells, numpy or on `like`'s torch device."""
    if int(capacity) < 1:
        raise ValueError(f"queue capacity {capacity}; allowed: an integer >= 1")
    xp = namespace(like) if like is not None else namespace()
    shape = tuple(num_ues_shape)
    zeros = [xp.zeros(shape, "int") for _ in range(6)]
    return QueueState(_cells(xp.zeros(shape + (int(capacity),), "int")), *zeros)


def _cells(x):
    """An int array as int32, the dtype of the (..., N, Q_max) cells (ages, ring masks): ages stay below
    the deadline, and on a CPU torch's int32 kernels run several times faster than its int64 ones here."""
    return x.int() if is_tensor(x) else np.asarray(x, dtype=np.int32)  # torch's Tensor.int() is int32


def _ring_table(capacity: int, xp):
    """The cells start, start + 1, ..., start + count - 1 (mod Q) of a ring buffer of Q cells, as 0/1
    int32, for every start in [0, Q) and count in [0, Q]: row start (Q + 1) + count of (Q (Q + 1), Q)."""
    cells = xp.arange(capacity)
    position = cells[None, :] - cells[:, None]  # (start, cell): the cell's place after start
    position = position + capacity * xp.int(position < 0)
    table = xp.int(position[:, None, :] < xp.arange(capacity + 1)[None, :, None])  # (start, count, cell)
    return _cells(table.reshape(capacity * (capacity + 1), capacity))


def _ring_cells(table, start, count, capacity: int, xp):
    """The cells start, ..., start + count - 1 (mod Q) of each ring buffer, as 0/1 ints (..., N, Q),
    for start in [0, Q) and count in [0, Q]: one row of `_ring_table` per UE, a lookup instead of
    integer arithmetic over the whole buffer."""
    return xp.rows(table, start * (capacity + 1) + count)


def _wrap(x, capacity: int, xp):
    """x mod capacity for x in [0, 2 capacity)."""
    return x - capacity * xp.int(x >= capacity)


def queue_step(state: QueueState, arrivals, free, deadline_slots,
               served_waits: bool = True) -> tuple[QueueState, QueueEvents]:
    """One slot of the queues (see the module docstring). `arrivals` int (..., N); `free` bool
    (..., N): the UE can start a request now; `deadline_slots`: int >= 1, one for all or (..., N),
    fixed over an episode; `served_waits`: also the waits of the requests served
    (`QueueEvents.served_wait_slots`, a look into every queue; None without).

    The drops, arrivals and service of the slot are ranges of the FIFO positions p relative to the
    slot's first head: old requests p < L (the queue length), of which the first d expire; the
    accepted arrivals take p in [L, L + a); the served request is the first one left. The cells
    still holding an old request after the slot are p in [d + s, L): the ring cells from the new
    head on, as many as the old requests kept and not served."""
    xp = namespace(state.age, arrivals)
    capacity = state.capacity
    arrivals = xp.int(arrivals)
    one_deadline = isinstance(deadline_slots, (int, np.integer))
    if one_deadline:  # the config's one deadline: checked in Python, no array op
        too_short = deadline_slots < 1
    else:
        too_short = not is_tensor(deadline_slots) and bool((np.asarray(deadline_slots) < 1).any())
    if too_short:
        raise ValueError(f"deadline_slots {deadline_slots}; allowed: integers >= 1")
    deadline = int(deadline_slots) if one_deadline else xp.int(deadline_slots)
    if not one_deadline and deadline.ndim:
        deadline = deadline[..., None]

    # 1-2: every waiting request ages by one slot; those that reach deadline_slots are dropped (a prefix).
    # Empty cells hold age 0, so with one deadline of 2 slots or more only waiting cells can expire
    table = _ring_table(capacity, xp)
    expired = state.age >= deadline - 1
    if not (one_deadline and deadline >= 2):
        expired = expired & (_ring_cells(table, state.head, state.length, capacity, xp) > 0)
    dropped_deadline = xp.count(expired, -1)
    kept_old = state.length - dropped_deadline
    head = _wrap(state.head + dropped_deadline, capacity, xp)  # head < Q, drops <= length <= Q

    # 3: arrivals into the free cells after the tail (age 0); the rest overflow
    accepted = xp.minimum(arrivals, capacity - kept_old)
    dropped_overflow = arrivals - accepted
    length = kept_old + accepted

    # 4: a free UE starts its head-of-line request: an old one (its age + 1) or, if none is left, a new one (0)
    served = free & (length > 0)
    served_count = xp.int(served)
    served_wait = None
    if served_waits:  # the head-of-line request's age + 1 if it is an old one
        old_head_age = xp.take_along_axis(state.age, head[..., None], -1)[..., 0] + 1
        served_wait = served_count * (1 + xp.int(kept_old > 0) * old_head_age) - 1  # -1 where none started
    head = _wrap(head + served_count, capacity, xp)
    length = length - served_count

    # the old requests still waiting, aged (still_old (age + 1) = still_old + still_old age); every other
    # cell 0 (empty or a new request)
    still_old = _ring_cells(table, head, xp.maximum(kept_old - served_count, 0), capacity, xp)
    age = xp.add_product(still_old, still_old, state.age)
    new_state = QueueState(age, head, length, state.arrived + arrivals, state.served + served_count,
                           state.dropped_deadline + dropped_deadline, state.dropped_overflow + dropped_overflow)
    return new_state, QueueEvents(arrivals, dropped_deadline, dropped_overflow, served, served_wait, length)
