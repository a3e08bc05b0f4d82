"""HIS-MARL: the Hybrid Inference Scheme of diffusion AIGC at the network edge as a PettingZoo env.

    import his_env
    env = his_env.parallel_env()            # ParallelEnv, the paper's Table II
    env = his_env.parallel_env("configs/default.yaml", num_ues=4, max_cycles=5)
    aec = his_env.env()                     # the same as an AEC env
    cfg = his_env.HISConfig.from_yaml("small")   # a YAML path, or a shipped config's name

The environment class is imported on first use, so `import his_env.allocation` (say) stays light.
"""
from __future__ import annotations

from typing import Any

from his_env.config import ConfigError, HISConfig

__all__ = ["ConfigError", "HISConfig", "HISParallelEnv", "INFO_KEYS", "env", "load_config", "parallel_env",
           "raw_env"]


def parallel_env(config=None, render_mode: str | None = None, max_cycles: int | None = None,
                 scenario: str | None = None, **overrides: Any):
    """The HIS environment as a PettingZoo ParallelEnv (see `his_env.environment` for spaces and infos).

    `config`: an HISConfig, a dict, a YAML path or None (Table II); `scenario`: a named scenario
    (`his_env.scenarios.scenario_names()`, e.g. "seq-medium-heavy"), under `config`; `max_cycles`:
    decision points per episode (overrides `episode_length`); `overrides`: config keys, e.g.
    `num_ues=4`, `scheme__name="cfis"`.
    """
    from his_env.environment import HISParallelEnv

    return HISParallelEnv(config, render_mode=render_mode, max_cycles=max_cycles, scenario=scenario, **overrides)


def env(config=None, render_mode: str | None = None, max_cycles: int | None = None, scenario: str | None = None,
        **overrides: Any):
    """The HIS environment as a PettingZoo AEC env (agents act one after another, stepped together)."""
    from pettingzoo.utils.conversions import parallel_to_aec

    return parallel_to_aec(parallel_env(config, render_mode=render_mode, max_cycles=max_cycles, scenario=scenario,
                                        **overrides))


raw_env = env


def __getattr__(name: str):
    if name in ("HISParallelEnv", "INFO_KEYS", "load_config"):
        from his_env import environment as env_module

        return getattr(env_module, name)
    raise AttributeError(f"module 'his_env' has no attribute {name!r}")
