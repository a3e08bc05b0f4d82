"""Run policies (trained checkpoints or baselines) on the HIS env with fixed seeds.

`evaluate_policy(policy, env_config, seeds)` plays one episode per seed on the PettingZoo env
directly (no Ray), and returns one row per episode: the episode means of the network totals
(U, Q, T, E, similarities, per-cluster stats) and per-UE means of the decision variables,
plus `return` = sum over decision points of U.

`CheckpointPolicy` loads the RLModules of a `train.py` checkpoint and acts greedily (argmax
of each action component), batching all UEs that share a module into one forward pass.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from agents.baselines import Policy
from agents.checkpoints import CheckpointError, read_run_info, resolve_checkpoint
from agents.env_adapter import make_parallel_env, step_metrics

class ModulePolicy(Policy):
    """Greedy actions from HISActorCriticModules: `{module_id: module}` (one per UE, or "shared")."""

    name = "modules"

    def __init__(self, modules: Mapping[str, Any], algo: str = "ippo") -> None:
        import torch

        from agents.ippo import SHARED_MODULE_ID

        self.modules = dict(modules)
        self.algo = algo
        self.global_obs = algo == "mappo"
        self.shared = SHARED_MODULE_ID in self.modules
        self._torch = torch

    def act(self, observations, env):
        torch = self._torch
        agents = [a for a in env.possible_agents if a in observations]
        obs = np.stack([np.asarray(observations[a], dtype=np.float32) for a in agents])
        if self.global_obs:
            joint = obs.reshape(-1)
            obs = np.concatenate([obs, np.broadcast_to(joint, (len(agents), joint.size))], axis=1)
        obs_t = torch.from_numpy(np.ascontiguousarray(obs))
        if self.shared:
            acts = next(iter(self.modules.values())).greedy_actions(obs_t).numpy()
            return {a: acts[i].astype(np.int64) for i, a in enumerate(agents)}
        out: Dict[str, np.ndarray] = {}
        for i, agent in enumerate(agents):
            module = self.modules.get(agent)
            if module is None:
                raise CheckpointError(f"no policy module for agent {agent!r} (the policy has "
                                      f"{len(self.modules)} modules: it was trained with another number of UEs)")
            out[agent] = module.greedy_actions(obs_t[i:i + 1])[0].numpy().astype(np.int64)
        return out


class CheckpointPolicy(ModulePolicy):
    """Greedy policy from the RLModules of a train.py checkpoint (or a run folder's latest one)."""

    def __init__(self, checkpoint: str | Path) -> None:
        from ray.rllib.core.rl_module.rl_module import RLModule

        self.path = resolve_checkpoint(checkpoint)  # a run folder works too; absolute, as RLlib needs
        self.info = read_run_info(self.path)
        module_dir = self.path / "learner_group" / "learner" / "rl_module"
        if not module_dir.is_dir():
            raise CheckpointError(f"checkpoint {str(self.path)!r} has no RLModule folder {str(module_dir)!r}")
        modules: Dict[str, Any] = {}
        sub = module_dir
        try:
            for sub in sorted(p for p in module_dir.iterdir() if p.is_dir()):
                module = RLModule.from_checkpoint(sub)
                module.eval()
                modules[sub.name] = module
        except Exception as exc:  # noqa: BLE001 - any unpickling/loading failure
            raise CheckpointError(f"checkpoint {str(self.path)!r}: cannot load RLModule from {str(sub)!r} "
                                  f"({type(exc).__name__}: {exc})") from exc
        if not modules:
            raise CheckpointError(f"checkpoint {str(self.path)!r} holds no RLModules")
        super().__init__(modules, self.info["algo"])
        self.name = f"checkpoint:{self.algo}"


def evaluate_policy(policy: Policy, env_config: Mapping[str, Any], seeds: Sequence[int],
                    env_factory: Optional[str] = None, env=None) -> List[Dict[str, float]]:
    """One row per seed: episode means of the env's network metrics (see module docstring)."""
    if env is None:
        env = make_parallel_env(env_config, env_factory)
    rows: List[Dict[str, float]] = []
    for seed in seeds:
        observations, _ = env.reset(seed=int(seed))
        policy.reset(env, int(seed))
        sums: Dict[str, float] = {}
        steps = 0
        ret = 0.0
        t0 = time.perf_counter()
        while env.agents:
            actions = policy.act(observations, env)
            observations, rewards, _, _, infos = env.step(actions)
            for key, value in step_metrics(infos, list(env.possible_agents)).items():
                sums[key] = sums.get(key, 0.0) + value
            ret += float(sum(rewards.values()))
            steps += 1
        row = {k: v / max(steps, 1) for k, v in sums.items()}
        row.update({"seed": float(seed), "return": ret, "decision_points": float(steps),
                    "wall_s": time.perf_counter() - t0})
        rows.append(row)
    return rows


def mean_metric(rows: Iterable[Mapping[str, float]], key: str = "utility") -> float:
    vals = [r[key] for r in rows if key in r and not math.isnan(r[key])]
    return float(np.mean(vals)) if vals else float("nan")


def normalized_score(u_policy: float, u_random: float, u_search: float) -> float:
    """(U_policy - U_random) / (U_search - U_random): 0 = random, 1 = the search reference."""
    denom = u_search - u_random
    if not np.isfinite(denom) or abs(denom) < 1e-12:
        return float("nan")
    return (u_policy - u_random) / denom
