"""Checks a training run makes before it creates its run folder or starts Ray.

Everything a user can get wrong in the config or on the command line is caught here with a
message (the env factory, one env built and reset in this process, the baselines of the final
evaluation, W&B credentials, the cache folder), instead of a traceback after Ray has started.
The env built here also gives the agents and the spaces that the learner's modules will have,
which a resumed run checks against the modules in its checkpoint.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence

from agents.checkpoints import ModuleShapes, space_shape
from his_env.reward_modes import REWARD_MODES


class PreflightError(RuntimeError):
    """A setting that would make the run fail once started."""


@dataclass
class EnvProbe:
    """What one env built from the run's config says about the learners' modules."""

    agents: List[str]
    module_shapes: ModuleShapes


def check_env_factory(spec: Optional[str], key: str = "env_factory") -> None:
    """`module:function` must name an importable callable."""
    if spec is None:
        return
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise PreflightError(f"config key {key!r} has value {spec!r}; allowed: 'module:function' naming a "
                             f"ParallelEnv factory (default his_env:parallel_env)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure of the user's module
        raise PreflightError(f"config key {key!r} has value {spec!r}: cannot import module {module_name!r} "
                             f"({type(exc).__name__}: {exc})") from exc
    if not callable(getattr(module, attr, None)):
        raise PreflightError(f"config key {key!r} has value {spec!r}: module {module_name!r} has no callable "
                             f"{attr!r}")


def check_cache_folder() -> None:
    """HIS_MARL_CACHE (or ~/.cache/his_marl) must be a folder, or creatable as one."""
    from his_common.storage import CacheLocationError, cache_root

    try:
        cache_root()  # refuses a cache folder that is, or lies under, a file
    except CacheLocationError as err:
        raise PreflightError(f"{err} (the cache holds the prompt embeddings and fitted quality models)") from None


def probe_env(env_config: Mapping[str, Any], global_obs: bool, reward_mode: str, env_factory: Optional[str],
              seed: int, module_ids_for: Callable[[List[str]], List[str]]) -> EnvProbe:
    """Build the env the learners will see (RLlib adapter included) and reset it once;
    `module_ids_for(agents)` gives the learner's module ids."""
    from agents.rllib.env_adapter import HISMultiAgentEnv

    adapter_config = {"env": dict(env_config), "global_obs": global_obs, "env_factory": env_factory,
                      "reward_mode": reward_mode}
    try:
        env = HISMultiAgentEnv(adapter_config)
        env.reset(seed=int(seed))
    except Exception as exc:  # noqa: BLE001 - whatever the env's parts raise (bad files, models, pools)
        raise PreflightError(f"the environment cannot be built from this configuration: "
                             f"{type(exc).__name__}: {exc}") from exc
    try:
        if REWARD_MODES[reward_mode].needs_counterfactuals and not hasattr(env.par_env.unwrapped,
                                                                            "evaluate_joint_actions"):
            plain = [name for name in REWARD_MODES.names if not REWARD_MODES[name].needs_counterfactuals]
            raise PreflightError(f"algorithm.reward_mode {reward_mode!r} needs env.unwrapped.evaluate_joint_actions "
                                 f"(counterfactual utilities), which this env lacks; allowed with it: "
                                 f"{', '.join(plain)}")
        agents = list(env.possible_agents)
        first = agents[0]
        shapes = {mid: (space_shape(env.observation_spaces[mid if mid in agents else first]),
                        space_shape(env.action_spaces[mid if mid in agents else first]))
                  for mid in module_ids_for(agents)}
    finally:
        env.close()
    return EnvProbe(agents, shapes)


def check_baselines(specs: Sequence[str], seed: int, env_config=None) -> None:
    """Each of the final evaluation's baselines parses and, given the run's `HISConfig`, can act on its
    env (e.g. `backlog-search` needs request queues), before any training (PreflightError otherwise)."""
    from agents.baselines import make_baseline

    for spec in specs:
        try:
            policy = make_baseline(spec, seed=seed)
            if env_config is not None:
                policy.check_config(env_config)
        except ValueError as exc:
            raise PreflightError(f"--eval-baselines: {exc}") from exc


def parse_baselines(text: str) -> List[str]:
    """`random,iis-fixed` -> ["random", "iis-fixed"]; "" or "none" -> []. A comma before a number
    belongs to the spec before it (`fixed:3,2,search` -> ["fixed:3,2", "search"]): no baseline's name
    starts with a digit."""
    if text.strip().lower() in ("", "none"):
        return []
    return [b.strip() for b in re.split(r",(?!\s*[-+.]?[0-9])", text) if b.strip()]


def check_resumed_modules(expected: ModuleShapes, checkpoint: Path, agents: Sequence[str]) -> None:
    """The checkpoint's modules (ids, observation and action sizes) and its reward-normalisation
    statistics (per agent) must be those the run record's config builds."""
    import pickle

    from agents.checkpoints import CheckpointError, checkpoint_module_shapes, describe_module_mismatch

    found = checkpoint_module_shapes(checkpoint)
    mismatch = describe_module_mismatch(expected, found)
    if mismatch:
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} does not match its run record ({checkpoint.name}/"
                              f"his_run.json): its weights hold {mismatch}; the record was edited or mixed up "
                              f"with another run's")
    state_file = checkpoint / "learner_group" / "learner" / "state.pkl"
    try:
        with open(state_file, "rb") as fh:
            state = pickle.load(fh)
    except Exception as exc:  # noqa: BLE001 - a damaged learner state
        raise CheckpointError(f"checkpoint {str(checkpoint)!r}: cannot read the learner state "
                              f"({type(exc).__name__}: {exc})") from exc
    from agents.rllib.learner import REWARD_NORMALIZER_STATE_KEY

    stats = (state.get(REWARD_NORMALIZER_STATE_KEY) or {}).get("stats") if isinstance(state, dict) else None
    if stats and set(stats) != set(agents):
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} does not match its run record: its reward "
                              f"statistics are for {len(stats)} agents, the record's env has {len(agents)}")
