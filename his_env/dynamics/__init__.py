"""Dynamics of the HIS env as a Markov game: processes that carry state from one slot to the next.

Both envs run them: the PettingZoo env (`his_env.environment`) and `HISVecEnv`, in the order
`slot` states; the `dynamics:` section of `configs/default.yaml` documents every key (meaning,
unit, source). The guide is docs/dynamics.md.

Without dynamics every decision point is an independent draw. Each process here makes one part
of it persist; each is switched on alone (`DynamicsConfig`, the `dynamics:` config section, all
off by default) and declared in `PROCESSES`:

| process | module | state (numpy (N,) / torch (B, N)) |
|---|---|---|
| channel | `channel_memory` | complex fading `fading` (..., N, 2), Gauss-Markov with Jakes' rho |
| mobility | `mobility` | positions, speeds, headings (Gauss-Markov) or waypoints (random waypoint) |
| background_load | `background_load` | latent AR(1) load of other tenants on the ES (...) |
| requests | `queues` | FIFO ring buffers of request ages (..., N, Q_max) and their books |
| work | `work` | UE busy clocks (..., N) and the ES SMs held by running phases (..., J) |
| intent | `intent` | intent group per UE (..., N) |
| battery | `battery` | battery level per UE (..., N) |

Every transition is a pure array function over `his_common.arrays`, written once for numpy (the
PettingZoo env) and torch tensors with leading batch dimensions (the vectorised env), and takes
its randomness as standard draws (uniforms, normals) that a thin `draw_*` wrapper takes from a
`numpy.random.Generator` or a `torch.Generator` (`draws`): the same draws give the same result in
both libraries.
"""
from __future__ import annotations

from dataclasses import dataclass

from his_common.registry import Registry

from his_env.dynamics import background_load, battery, channel_memory, intent, mobility, queues, work
from his_env.dynamics.config import DynamicsConfig


@dataclass(frozen=True)
class Process:
    """A dynamics process: its config section (the registry key), module and one-line summary."""

    name: str
    module: object
    summary: str


PROCESSES: Registry[Process] = Registry("dynamics process")
for _process in (
    Process("channel", channel_memory, "Rayleigh fading correlated between slots (Gauss-Markov, Jakes' rho)"),
    Process("mobility", mobility, "UE movement in the cell annulus (Gauss-Markov or random waypoint)"),
    Process("background_load", background_load, "SMs other tenants hold on the ES (bounded AR(1))"),
    Process("requests", queues, "per-UE request arrivals, deadlines and bounded FIFO queues"),
    Process("work", work, "UE busy clocks and ES SMs held by phases that outlast a slot"),
    Process("intent", intent, "intent groups kept from slot to slot with a probability"),
    Process("battery", battery, "UE batteries drained by their energy use and trickle-charged"),
):
    PROCESSES.register(_process.name, _process)
del _process

__all__ = ["DynamicsConfig", "PROCESSES", "Process", "background_load", "battery", "channel_memory", "intent",
           "mobility", "queues", "work"]
