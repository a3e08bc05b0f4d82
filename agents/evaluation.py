"""Run policies (trained checkpoints or baselines) on the HIS env with fixed seeds.

`evaluate_policy(policy, env_config, seeds)` plays one episode per seed on the PettingZoo env
directly (no Ray), and returns one row per episode: the episode means of the network totals
(U, Q, T, E, similarities, per-cluster stats) and per-UE means of the decision variables,
plus `return` = sum over decision points of U.

`CheckpointPolicy` loads the RLModules of a `train.py` checkpoint and acts greedily (argmax
of each action component), batching all UEs that share a module into one forward pass; its
`reward_mode` is the one the checkpoint was trained with. `BenchmarlCheckpointPolicy` does the
same for a checkpoint of `train.py --backend benchmarl`, acting through the code that the BenchMARL
runs' own greedy evaluations use (agents.benchmarl.experiment.BenchmarlGreedyPolicy).
`CHECKPOINT_POLICIES` maps a run's backend to its class (agents.checkpoints.find_checkpoint tells
a run's backend).

The evaluation table (policies x metrics, CSV + Markdown) is written by one function,
`write_evaluation_table`, for `evaluate.py` and for the end of a training run alike:
`summarize_episodes` turns episode rows into means and standard deviations per policy (and
variant), `add_normalized_scores` adds the score against random play and the search reference.
"""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agents.baselines import Policy
from agents.checkpoints import (BENCHMARL, CheckpointError, alias_moved_modules, find_checkpoint, read_run_info,
                                resolve_checkpoint)
from agents.env_access import make_parallel_env, resolve_factory, step_metrics
from his_common.storage import atomic_write_text

METRICS = ("utility", "quality", "delay", "energy")
BASELINE_REWARD_MODE = "none"  # the reward-mode entry of a baseline, which is not trained
METRIC_HEADERS = {"utility": "U", "quality": "Q", "delay": "T (s)", "energy": "E (J)",
                  "intra_cluster_similarity": "intra-cluster similarity",
                  "public_personal_similarity": "public-personal similarity", "score": "score"}


class EnvFactoryError(ValueError):
    """An env factory ("module:function") that cannot be imported or is not callable."""


def check_env_factory(spec: Optional[str], where: str = "env_factory") -> Callable[..., Any]:
    """The factory named by `spec` ("module:function"; None: his_env:parallel_env), or an
    EnvFactoryError naming `where`, the value and what is wrong, before any env is built."""
    if spec is not None and (not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":"))):
        raise EnvFactoryError(f"{where} has value {spec!r}; allowed: 'module:function', a function that takes "
                              f"config=<env config dict> and returns a PettingZoo ParallelEnv")
    try:
        factory = resolve_factory(spec)
    except ImportError as exc:
        raise EnvFactoryError(f"{where} has value {spec!r}: cannot import module {spec.partition(':')[0]!r} "
                              f"({type(exc).__name__}: {exc})") from None
    except AttributeError:
        module, _, attr = spec.partition(":")
        raise EnvFactoryError(f"{where} has value {spec!r}: module {module!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise EnvFactoryError(f"{where} has value {spec!r}: {type(factory).__name__} object is not callable")
    return factory


def checkpoint_reward_mode(run_info: Mapping[str, Any]) -> str:
    """The reward mode a checkpoint was trained with, from its run record (`algorithm_config`;
    agents.checkpoints.read_run_info converts older records)."""
    algorithm = run_info.get("algorithm_config")
    if isinstance(algorithm, Mapping) and algorithm.get("reward_mode"):
        return str(algorithm["reward_mode"])
    raise CheckpointError("the run record names no reward mode (algorithm_config.reward_mode)")


class ModulePolicy(Policy):
    """Greedy actions from HISActorCriticModules: `{module_id: module}` (one per UE, or "shared")."""

    name = "modules"

    def __init__(self, modules: Mapping[str, Any], algo: str = "ippo") -> None:
        import torch

        from agents.rllib.ippo import SHARED_MODULE_ID

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

        alias_moved_modules()  # checkpoints written before agents/rllib/ name agents.modules
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
        self.reward_mode = checkpoint_reward_mode(self.info)
        self.name = f"checkpoint:{self.algo}"


class BenchmarlCheckpointPolicy(Policy):
    """Greedy policy of a train.py --backend benchmarl checkpoint (or a run folder's newest one): the run's
    experiment restored from it (agents.benchmarl.training.restore_greedy_policy), acting through
    agents.benchmarl.experiment.BenchmarlGreedyPolicy, all UEs in one forward pass."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        from agents.benchmarl.training import restore_greedy_policy

        kind, self.path = find_checkpoint(checkpoint)
        if kind is not BENCHMARL:
            raise CheckpointError(f"{str(checkpoint)!r} is a checkpoint of --backend {kind.backend}, not benchmarl "
                                  f"(CheckpointPolicy reads it)")
        self.info = kind.read(self.path)
        self.algo = str(self.info["algo"])
        self.greedy = restore_greedy_policy(self.path, device)
        self.reward_mode = checkpoint_reward_mode(self.info)
        self.name = f"checkpoint:benchmarl-{self.algo}"

    def act(self, observations, env):
        return self.greedy.act(observations, env)


CHECKPOINT_POLICIES = {"rllib": CheckpointPolicy, "benchmarl": BenchmarlCheckpointPolicy}


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


def evaluate_policies(policies: Mapping[str, Policy], env_config: Mapping[str, Any], seeds: Sequence[int],
                      env_factory: Optional[str] = None) -> List[Dict[str, Any]]:
    """`evaluate_policy` for each labelled policy on one env (built once), every row tagged with
    `policy` (the label) and `reward_mode` (a trained policy's, `none` for baselines)."""
    env = make_parallel_env(env_config, env_factory)
    rows: List[Dict[str, Any]] = []
    for label, policy in policies.items():
        mode = getattr(policy, "reward_mode", None) or BASELINE_REWARD_MODE
        rows += [{"policy": label, "reward_mode": mode, **row}
                 for row in evaluate_policy(policy, env_config, seeds, env=env)]
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


def _std(values: Sequence[float]) -> float:
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    return float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0


def summarize_episodes(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS,
                       keys: Sequence[str] = ("policy", "variant")) -> List[Dict[str, Any]]:
    """One row per distinct `keys` (in order of appearance): the number of episodes, the
    reward mode (where the rows carry one) and, for every metric (at least U, Q, T, E), the mean
    and the sample standard deviation over the episodes (`<metric>` and `<metric>_std`)."""
    groups: Dict[Tuple[Any, ...], List[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k, "") for k in keys), []).append(row)
    out = []
    for key, members in groups.items():
        first = members[0]
        summary: Dict[str, Any] = dict(zip(keys, key))
        for extra in ("name", "variant_name", "group", "x", "reward_mode"):
            if extra in first:
                summary[extra] = first[extra]
        summary["episodes"] = len(members)
        for metric in dict.fromkeys(list(metrics) + list(METRICS)):
            vals = [float(r.get(metric, float("nan"))) for r in members]
            summary[metric] = mean_metric(members, metric)
            summary[f"{metric}_std"] = _std(vals)
        out.append(summary)
    return out


def add_normalized_scores(summary: Sequence[Dict[str, Any]], random_policy: str = "random",
                          search_policy: str = "search") -> bool:
    """Add `score` (see normalized_score) to every row whose variant has rows of both reference
    policies (the search reference may be `search:SWEEPS`; plain `search` is preferred); returns
    whether any score was added."""
    by_variant: Dict[Any, Dict[str, float]] = {}
    for row in summary:
        by_variant.setdefault(row.get("variant", ""), {})[row["policy"]] = row["utility"]
    added = False
    for row in summary:
        refs = by_variant[row.get("variant", "")]
        searches = [p for p in refs if p == search_policy or p.startswith(search_policy + ":")]
        if random_policy in refs and searches:
            u_search = refs.get(search_policy, refs[searches[0]])
            row["score"] = normalized_score(row["utility"], refs[random_policy], u_search)
            added = True
    return added


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as CSV text; the columns are the union of the rows' keys in order of appearance."""
    columns: List[str] = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _cell(row: Mapping[str, Any], metric: str) -> str:
    value = row.get(metric, float("nan"))
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    std = row.get(f"{metric}_std")
    return f"{value:.4g} ± {std:.2g}" if isinstance(std, (int, float)) and row.get("episodes", 0) > 1 else f"{value:.4g}"


def evaluation_markdown(summary: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> str:
    """The table as Markdown: policy, variant (where there is more than one), the reward mode a
    trained policy learned with (`none` for baselines), the metrics (mean ± std) and the score."""
    show_variant = len({r.get("variant", "") for r in summary}) > 1
    show_score = any("score" in r for r in summary)
    columns = ["policy"] + (["variant"] if show_variant else []) + ["reward mode"]
    columns += [METRIC_HEADERS.get(m, m) for m in metrics] + (["score"] if show_score else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in summary:
        cells = [str(row.get("name") or row["policy"])]
        if show_variant:
            cells.append(str(row.get("variant_name") or row.get("variant", "")))
        cells.append(str(row.get("reward_mode") or BASELINE_REWARD_MODE))
        cells += [_cell(row, m) for m in metrics]
        if show_score:
            score = row.get("score", float("nan"))
            cells.append(f"{score:.3f}" if math.isfinite(score) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_evaluation_table(summary: Sequence[Mapping[str, Any]], out_dir: str | Path, stem: str = "eval",
                           metrics: Sequence[str] = METRICS, heading: str = "",
                           notes: Sequence[str] = ()) -> Tuple[Path, Path]:
    """Write `<stem>.csv` (every column of `summary`) and `<stem>.md` (`heading`, the Markdown
    table of `metrics`, then `notes` as a bullet list) atomically into `out_dir`; returns both paths."""
    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    atomic_write_text(csv_path, csv_text(summary))
    md = (heading.rstrip() + "\n\n" if heading else "") + evaluation_markdown(summary, metrics)
    if notes:
        md += "\n" + "".join(f"- {line}\n" for line in notes)
    atomic_write_text(md_path, md)
    return csv_path, md_path
