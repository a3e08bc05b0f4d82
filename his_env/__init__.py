"""HIS-MARL: the Hybrid Inference Scheme of diffusion AIGC at the network edge as a PettingZoo env.

    import his_env
    env = his_env.parallel_env()            # ParallelEnv, the paper's Table II
    aec = his_env.env()                     # the same as an AEC env
    cfg = his_env.HISConfig.from_yaml("configs/default.yaml")
"""
from __future__ import annotations

from typing import Any

from pettingzoo.utils.conversions import parallel_to_aec

from his_env.config import ConfigError, HISConfig
from his_env.env import HISParallelEnv, load_config

__all__ = ["ConfigError", "HISConfig", "HISParallelEnv", "env", "load_config", "parallel_env", "raw_env"]


def parallel_env(config=None, render_mode: str | None = None, **overrides: Any) -> HISParallelEnv:
    """The HIS environment as a PettingZoo ParallelEnv (see `his_env.env` for spaces and infos)."""
    return HISParallelEnv(config, render_mode=render_mode, **overrides)


def env(config=None, render_mode: str | None = None, **overrides: Any):
    """The HIS environment as a PettingZoo AEC env (agents act one after another, stepped together)."""
    return parallel_to_aec(parallel_env(config, render_mode=render_mode, **overrides))


raw_env = env
