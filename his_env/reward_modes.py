"""Reward modes: what each UE learns from, declared once for every path.

A reward mode turns what the env computes at a decision point into one reward per UE. Every path
reads this registry: the PettingZoo adapter for RLlib (`agents.rllib.env_adapter`, numpy, shape (N,)),
the vectorised env (`his_env.vector.HISVecEnv`, torch, shape (B, N)), the run configuration
(`algorithm.reward_mode`), the BenchMARL task (`task.reward_mode`), and the CLIs' help
(`help_text()`) and the docs (`markdown_table()`). The built-in modes are declared at the end of
this file: `individual` (r_n of Eq. 33), `team` (U / N) and `difference` (the default: D_n, the
utility UE n adds, Wolpert & Tumer's difference reward).

A mode is one `@reward_mode(...)` declaration here: a name, a one-line description, whether it
needs the counterfactual utilities, and one function of the per-UE Eq. (33) rewards r_n (..., N),
the network utility U (...), the counterfactual utilities (..., N) (U without UE n: its action replaced
by `COUNTERFACTUAL_ACTION` and, with `dynamics.work` on, the ES SMs its running phases hold returned to
the slot's budget; None unless the mode asks for them), each UE's dynamics charges (..., N)
(None with dynamics off) and N. It receives float arrays of
one library, numpy or torch, and uses operators or `his_common.arrays.namespace(...)` for anything
else, so the same code serves both envs.
With dynamics on (a sequential scenario) r_n, U and every counterfactual utility already carry the
slot's charges: w_t T_slot per request waiting in a UE's queue and the drop penalty per dropped
request, each charged to the UE that owns the request (`his_env.dynamics`). They follow from the
state the slot starts in, not from the slot's actions, so they cancel in U(a) - U(a with UE n at
(0, 0)): the difference reward charges each UE its own (as r_n does), or no UE's return would ever
see the backlog that its earlier choices built (the waits and drops are most of U on
`seq-medium-heavy`). `individual` and `team` already contain them.
With `dynamics.work` on, a request's ES phases hold their SMs into later slots and shrink the budget
that the UEs starting requests there share (Theorem 1). A counterfactual that only changes UE n's
action in the slot never sees that, and the ES becomes a commons. On `seq-medium-heavy`, U is
about -24 per slot with every UE at (16, 10) and -4.6 with every UE at (16, 0), yet there one UE
moving from (16, 10) to (16, 0) did not raise its difference reward (-0.46 and -0.48 per slot, 256
envs x 100 slots): nothing pulled the UEs out of the congestion. So the counterfactual also returns the SMs
UE n's running phases hold (its share of its cluster's, by its share of the cluster's ES calls,
`his_env.dynamics.work.budget_without_ue`): a UE is charged what its phases keep from the others
for as long as they run, and the same move gains it 0.77 per slot (-2.37 to -1.60).
The envs compute the counterfactuals only for modes that need them (the vectorised env in O(N M)
with EC-Diff off, by N + 1 joint actions with it on; the adapter by N joint actions).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from his_common.arrays import namespace
from his_common.registry import Registry

# The action a UE is replaced by in the counterfactuals, as action indices: x = 0 common steps,
# y = y_min ES personalised steps (the UE leaves the shared phases to the others).
COUNTERFACTUAL_ACTION = (0, 0)


@dataclass(frozen=True)
class RewardMode:
    """One way of rewarding the UEs (see the module docstring)."""

    name: str
    description: str  # one line, for CLI help and the docs' tables
    needs_counterfactuals: bool
    function: Callable[..., Any]  # (individual, utility, counterfactual, charges, num_ues) -> (..., N)

    def rewards(self, individual, utility, counterfactual=None, charges=None):
        """Per-UE rewards (..., N) from the Eq. (33) rewards `individual` (..., N), the utility U
        (...), for modes that need them the counterfactual utilities (..., N), and with dynamics on
        each UE's charges (..., N), already taken from `individual`, `utility` and `counterfactual`."""
        if self.needs_counterfactuals and counterfactual is None:
            raise ValueError(f"reward mode {self.name!r} needs the counterfactual utilities "
                             f"(U with UE n at {COUNTERFACTUAL_ACTION}); none were given")
        xp = namespace(individual, utility, counterfactual, charges)
        individual = xp.float(individual)
        out = self.function(individual=individual, utility=xp.float(utility),
                            counterfactual=None if counterfactual is None else xp.float(counterfactual),
                            charges=None if charges is None else xp.float(charges), num_ues=individual.shape[-1])
        return xp.broadcast_to(xp.float(out), individual.shape)


REWARD_MODES: Registry[RewardMode] = Registry("reward mode")
DEFAULT_REWARD_MODE = "difference"


MODE_ARGUMENTS = ("individual", "utility", "counterfactual", "charges", "num_ues")  # what a mode's function takes


def reward_mode(name: str, description: str, needs_counterfactuals: bool = False):
    """Decorator: register the function as reward mode `name`. Its function takes the keyword
    arguments `MODE_ARGUMENTS` (see the module docstring); one without them is refused here."""
    def decorator(function: Callable[..., Any]) -> Callable[..., Any]:
        parameters = inspect.signature(function).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        missing = [arg for arg in MODE_ARGUMENTS if arg not in parameters and not takes_any]
        if missing:
            raise TypeError(f"reward mode {name!r}: its function takes ({', '.join(parameters)}), without "
                            f"{', '.join(missing)}; allowed: a function of ({', '.join(MODE_ARGUMENTS)}), where "
                            f"charges (..., N) are each UE's dynamics charges, None with dynamics off")
        REWARD_MODES.register(name, RewardMode(name, description, needs_counterfactuals, function))
        return function
    return decorator


@reward_mode("individual", "r_n of Eq. (33), as the env returns it")
def individual_reward(individual, utility, counterfactual, charges, num_ues):
    return individual  # r_n of Eq. (33), less UE n's charges with dynamics on


@reward_mode("team", "U / N to every UE: the network utility shared")
def team_reward(individual, utility, counterfactual, charges, num_ues):
    return utility[..., None] / num_ues  # U = sum_n r_n, Eq. (23), every UE's charges in it


@reward_mode("difference", "D_n = U(a) - U(a without UE n: its action at (0, 0), with dynamics the ES SMs its "
             "running phases hold returned): the network utility the UE adds (less its own queue's charges with "
             "dynamics on)", needs_counterfactuals=True)
def difference_reward(individual, utility, counterfactual, charges, num_ues):
    added = utility[..., None] - counterfactual
    return added if charges is None else added - charges  # the charges cancel in the difference: each UE's own


def _label(name: str) -> str:
    return f"{name} (default)" if name.strip("`") == DEFAULT_REWARD_MODE else name


def help_text() -> str:
    """The modes as `name: description` items, the default marked (for CLI help)."""
    return "; ".join(f"{_label(name)}: {REWARD_MODES[name].description}" for name in REWARD_MODES)


def markdown_table() -> str:
    """The modes as a Markdown table (for the docs)."""
    rows = [f"| {_label(f'`{name}`')} | {REWARD_MODES[name].description} | "
            f"{'yes' if REWARD_MODES[name].needs_counterfactuals else 'no'} |" for name in REWARD_MODES]
    return "\n".join(["| reward mode | reward of UE n | needs counterfactuals |", "|---|---|---|", *rows])


__all__ = ["COUNTERFACTUAL_ACTION", "DEFAULT_REWARD_MODE", "MODE_ARGUMENTS", "REWARD_MODES", "RewardMode", "help_text",
           "markdown_table", "reward_mode"]
