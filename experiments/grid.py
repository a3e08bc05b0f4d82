"""The evaluation grid: every policy on every variant of a figure for the same seeded episodes.

`checkpoint_policies` and `baseline_policies` turn the user's choices into `PolicySpec`s and
check them (checkpoint files, baseline arguments against the env's step ranges, the env
factory) before anything runs; `check_grid` checks every variant's env config and that each
trained policy meets envs with the number of UEs it was trained for; `run_grid` plays the
episodes and returns one row per policy x variant x episode, each row naming the reward mode
a trained policy learned with.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from agents.baselines import Policy, StepRanges, make_baseline
from agents.checkpoints import find_checkpoint
from agents.evaluation import (BASELINE_REWARD_MODE, CHECKPOINT_POLICIES, check_env_factory, checkpoint_reward_mode,
                               evaluate_policy)
from experiments.figures import Variant
from his_env.config import HISConfig

BASELINE_NAMES = {"random": "random", "iis-fixed": "fixed IIS-like split", "search": "search reference"}
ALGO_NAMES = {"ippo": "IPPO", "ppo-shared": "shared PPO", "mappo": "MAPPO"}


class ExperimentError(ValueError):
    """A request the experiments cannot run (the message names the value and what is allowed)."""


@dataclass
class PolicySpec:
    """A policy to evaluate: `label` is its id in the CSV files, `name` what plots and tables show."""

    label: str
    name: str
    make: Callable[[], Policy]
    variant: Optional[str] = None  # only this variant (a checkpoint given as VARIANT=PATH)
    env_config: Optional[Dict[str, Any]] = None  # the env a checkpoint was trained on
    env_factory: Optional[str] = None
    reward_mode: str = BASELINE_REWARD_MODE  # the reward a checkpoint was trained with; `none` for baselines
    checkpoint: Optional[Path] = None
    baseline: Optional[tuple] = None  # make_baseline's (spec, seed, steps): rebuilt in a worker process


def baseline_name(spec: str) -> str:
    name, _, arg = spec.partition(":")
    if name == "fixed":
        x, _, y = arg.partition(",")
        return f"fixed x={x.strip()}, y={y.strip()}"
    if name == "search" and arg:
        return f"search reference ({arg} sweep{'' if arg.strip() == '1' else 's'})"
    return BASELINE_NAMES.get(name, spec)


def _run_factory(info: Mapping[str, Any]) -> Optional[str]:
    """The env factory a checkpoint's run used (its experiment config), or None for the default."""
    experiment = info.get("experiment_config")
    return str(experiment["env_factory"]) if isinstance(experiment, Mapping) and experiment.get("env_factory") else None


def checkpoint_policies(items: Sequence[str]) -> List[PolicySpec]:
    """`[VARIANT=]PATH` items (train.py checkpoints or run folders, of either backend) as greedy policies.

    Checkpoints of one algorithm and backend given per variant form one policy across the figure's
    variants; a second checkpoint acting on a variant already taken gets its own label (`#2`, ...).
    A BenchMARL run's policy is labelled `trained:benchmarl-<algo>` and named `BenchMARL <algo>`."""
    specs: List[PolicySpec] = []
    for item in items:
        variant, sep, path = item.partition("=")
        if not sep:
            variant, path = None, item
        kind, ckpt = find_checkpoint(path)
        info = kind.read(ckpt)
        mode = checkpoint_reward_mode(info)
        algo = str(info["algo"])
        benchmarl = kind.backend == "benchmarl"

        def clashes(name: str) -> bool:
            return any(s.label == name and (s.variant is None or variant is None or s.variant == variant)
                       for s in specs)

        base = f"trained:benchmarl-{algo}" if benchmarl else f"trained:{algo}"
        label, k = base, 2
        while clashes(label):
            label, k = f"{base}#{k}", k + 1
        suffix = label.partition("#")[2]
        name = (f"{'BenchMARL ' if benchmarl else ''}{ALGO_NAMES.get(algo, algo)}{' #' + suffix if suffix else ''} "
                f"({mode} reward)")
        factory = None if benchmarl else _run_factory(info)  # BenchMARL trains on the vector env, never a factory's
        policy_class = CHECKPOINT_POLICIES[kind.backend]
        specs.append(PolicySpec(label, name, lambda c=ckpt, cls=policy_class: cls(c), variant=variant,
                                env_config=dict(info["env_config"]), env_factory=factory, reward_mode=mode,
                                checkpoint=ckpt))
    return specs


def baseline_policies(names: Sequence[str], steps: StepRanges, seed: int,
                      env_factory: Optional[str] = None) -> List[PolicySpec]:
    """Baselines by name (see agents.baselines.make_baseline), each checked against `steps` now."""
    specs = []
    for spec in names:
        make_baseline(spec, seed=seed, steps=steps)  # raises on a bad name or argument
        specs.append(PolicySpec(spec, baseline_name(spec), lambda s=spec: make_baseline(s, seed=seed, steps=steps),
                                env_factory=env_factory, baseline=(spec, seed, steps)))
    return specs


def variant_env_config(base: Mapping[str, Any], variant: Variant) -> Dict[str, Any]:
    return HISConfig.from_dict(dict(base)).with_overrides(dict(variant.overrides)).to_dict()


def check_grid(policies: Sequence[PolicySpec], variants: Sequence[Variant], base: Mapping[str, Any]) -> None:
    """Everything `run_grid` will meet, checked before any episode: each policy's env factory,
    every variant's env config, per-variant checkpoints naming existing variants, each
    trained policy's number of UEs against the envs it acts on, and what each baseline needs of
    them (`Policy.check_config`: the queue rules need request queues)."""
    labels = [v.label for v in variants]
    for spec in policies:
        check_env_factory(spec.env_factory, "--env-factory" if spec.checkpoint is None else
                          f"the env_factory of checkpoint {str(spec.checkpoint)!r}")
        if spec.variant is not None and spec.variant not in labels:
            raise ExperimentError(f"--checkpoint {spec.variant}=...: no variant {spec.variant!r} here; "
                                  f"variants: {', '.join(labels)}")
    for variant in variants:
        env_cfg = variant_env_config(base, variant)
        for spec in policies:
            if spec.variant not in (None, variant.label) or spec.env_config is None:
                continue
            trained_n = int(spec.env_config.get("num_ues", 0))
            if trained_n != int(env_cfg["num_ues"]):
                raise ExperimentError(f"{spec.name} ({spec.checkpoint}) was trained with num_ues={trained_n}, but "
                                      f"variant {variant.label!r} has num_ues={env_cfg['num_ues']}; a trained "
                                      f"policy acts on envs with the number of UEs it was trained for")
        config = HISConfig.from_dict(env_cfg)
        for spec in policies:  # a baseline that cannot act on this env (e.g. queue rules without queues)
            if spec.checkpoint is None and spec.variant in (None, variant.label):
                try:
                    spec.make().check_config(config)
                except ValueError as exc:
                    raise ExperimentError(f"variant {variant.label!r}: {exc}") from None
        if any(s.label.startswith("fixed") for s in policies):
            steps = StepRanges.from_env_config(env_cfg)
            for spec in policies:
                if spec.label.startswith("fixed"):
                    try:
                        make_baseline(spec.label, steps=steps)
                    except ValueError as exc:
                        raise ExperimentError(f"variant {variant.label!r}: {exc}") from None


def baseline_episode(baseline: tuple, env_cfg: Dict[str, Any], seed: int,
                     env_factory: Optional[str]) -> Dict[str, float]:
    """One episode of a baseline (rebuilt from make_baseline's arguments) on one seed: a worker's unit.
    Every baseline is reset per seed, so an episode does not depend on the ones before it."""
    spec, policy_seed, steps = baseline
    return evaluate_policy(make_baseline(spec, seed=policy_seed, steps=steps), env_cfg, [seed],
                           env_factory=env_factory)[0]


def run_grid(policies: Sequence[PolicySpec], variants: Sequence[Variant], base: Mapping[str, Any],
             seeds: Sequence[int], log: Callable[[str], None] = print, jobs: int = 1) -> List[Dict[str, Any]]:
    """One row per policy x variant x episode (seed): the episode means of the env's metrics,
    tagged with the policy (`policy`, `name`, `reward_mode`) and the variant (`variant`,
    `variant_name`, `group`, `x`). `jobs` > 1: the baselines' episodes run side by side in that many
    worker processes (the same rows: each episode is seeded on its own); trained policies here."""
    cells = [(spec, variant) for spec in policies for variant in variants
             if spec.variant is None or spec.variant == variant.label]
    pool, pending = None, {}
    if jobs > 1 and any(spec.baseline is not None for spec, _ in cells):
        from experiments.workers import worker_pool

        pool = worker_pool(jobs)
        for spec, variant in cells:
            if spec.baseline is not None:
                env_cfg = variant_env_config(base, variant)
                pending[(spec.label, variant.label)] = [pool.submit(baseline_episode, spec.baseline, env_cfg, seed,
                                                                    spec.env_factory) for seed in seeds]
    rows: List[Dict[str, Any]] = []
    try:
        policy, policy_of = None, None
        for spec, variant in cells:
            t0 = time.perf_counter()
            handles = pending.get((spec.label, variant.label))
            if handles is not None:
                episodes = [handle.result() for handle in handles]
                took = f"{sum(e['wall_s'] for e in episodes):.1f} s of episodes in {jobs} workers"
            else:
                if policy_of is not spec:
                    policy, policy_of = spec.make(), spec
                episodes = evaluate_policy(policy, variant_env_config(base, variant), seeds,
                                           env_factory=spec.env_factory)
                took = f"{time.perf_counter() - t0:.1f} s"
            rows += [{"policy": spec.label, "name": spec.name, "reward_mode": spec.reward_mode,
                      "variant": variant.label, "variant_name": variant.display, "group": variant.group,
                      "x": variant.x, **ep} for ep in episodes]
            u = float(np.mean([e.get("utility", np.nan) for e in episodes]))
            log(f"  {spec.name:>32} | {variant.display:<22} U {u:10.4f}  ({len(episodes)} episodes, {took})")
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    return rows
