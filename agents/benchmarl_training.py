"""Training on the vectorised env with BenchMARL's IPPO or MAPPO, in train.py's run-folder layout.

    from agents.benchmarl_training import train_benchmarl
    summary = train_benchmarl(env_config, {"algo": "mappo", "lr": 0.005}, {"seed": 3}, "runs/my-run",
                              time_limit_s=300)

`env_config` is an `HISConfig` (or a dict or YAML path), `algorithm` and `experiment` the
`algorithm:` and `experiment:` settings of a run config as plain dicts (agents.config's field
names; missing keys take train.py's defaults). What they become in BenchMARL:

| run setting | BenchMARL |
|---|---|
| algorithm.algo | `ippo` or `mappo` (one network per UE: `share_policy_params: false`, critics not shared), or `ppo-shared` (`ippo` with one actor and one critic for all UEs) |
| algorithm.lr, hidden, activation, gamma | experiment lr, MLP `num_cells` and activation of actor and critic, gamma |
| algorithm.lambda_, clip, entropy, vf_loss_coeff | the algorithm's lmbda, clip_epsilon, entropy_coef, critic_coef |
| algorithm.grad_clip | clip_grad_val (global norm; none: no clipping) |
| algorithm.num_epochs, minibatch_size | on_policy_n_minibatch_iters, on_policy_minibatch_size in frames of all N UEs: each UE's network sees `minibatch_size` samples per step, as with RLlib (`ppo-shared`: `minibatch_size / N` frames, rounded up) |
| algorithm.episodes_per_iteration | B, the vector env's batch: one iteration is B episodes |
| algorithm.reward_mode | the task's reward mode |
| experiment.seed, evaluation_episodes, torch_threads | the BenchMARL seed (env, networks); episodes of the final greedy evaluation; torch threads of the run (unlike RLlib's learners, BenchMARL's gain from a second core) |
| algorithm.reward_normalization, reward_norm_clip, advantage_normalization, value_clip | the RLlib learner's switches, added to BenchMARL's PPO by agents.benchmarl_normalization |

`algorithm.policy_clip: false` (the unclipped surrogate) has no BenchMARL counterpart: BenchMARL's
PPO always clips; `config.yaml` lists it under `backend_unused`, so a reader sees it was not applied.

Run folder (as train.py's): `config.yaml`; `metrics.jsonl` and `metrics.csv`, one row per
iteration (`his/utility`, `his/quality`, `his/delay`, `his/energy` of the collected decision
points, `learner/*` BenchMARL's loss terms, `perf/*` frames, agent-steps and throughput);
`checkpoints/checkpoint_<frames>.pt` (BenchMARL's checkpoints, written atomically, the last one at
the run's last iteration; continue one with `benchmarl.experiment.Experiment.reload_from_file`);
`eval.csv` and `eval.md` (the greedy policy beside the baselines on fixed seeds of the PettingZoo
env, with the normalised score when both random and search are given); `plots/learning_curve.png`;
`wandb/` (offline by default).

SIGINT and SIGTERM stop the run as train.py's RLlib path does (agents.training.signals.StopSignals):
the iteration in progress finishes, then the final checkpoint, the evaluation and W&B follow as after
any other stop rule (`stopped: interrupted (SIGTERM)`); a second signal raises `TrainingInterrupted`
at once, with the checkpoints on disk left as they are.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml
from benchmarl.experiment.callback import Callback

from agents.benchmarl_experiment import (BenchmarlSettingsError, CurveTracker, RunSpec, WANDB_MODES,
                                         build_experiment, greedy_evaluator, peak_memory, reset_peak_memory,
                                         validate_spec)
from agents.training.final_evaluation import plot_learning_curve
from agents.training.preflight import check_cache_folder
from agents.training.signals import StopSignals
from his_common.storage import atomic_write_text

BACKEND_ALGOS = {"ippo": "ippo", "ppo-shared": "ippo", "mappo": "mappo"}  # train.py learner -> BenchMARL algorithm
EVAL_SEED_BASE = 10_000  # train.py's final-evaluation seeds: EVAL_SEED_BASE + 1000 * seed + i
SWITCH_KEYS = ("reward_normalization", "reward_norm_clip", "advantage_normalization", "value_clip")
UNUSED_KEYS = ("policy_clip",)  # BenchMARL's PPO always clips the policy ratio (Eq. (34))


def default_algorithm() -> Dict[str, Any]:
    """train.py's algorithm settings (agents.config.AlgorithmConfig's defaults) with BenchMARL's ippo."""
    from agents.config import AlgorithmConfig

    return {**AlgorithmConfig().to_dict(), "algo": "ippo"}


def learner_label(spec: RunSpec) -> str:
    """BenchMARL's algorithm name, marked "shared" when all UEs share one network (train.py's ppo-shared)."""
    return f"{spec.algorithm} shared" if spec.experiment.get("share_policy_params") else spec.algorithm


def run_spec_from_settings(env_config, algorithm: Mapping[str, Any], experiment: Mapping[str, Any],
                           device: str = "cpu") -> RunSpec:
    """The BenchMARL run that the run settings describe (see the module docstring's table)."""
    from his_env.environment import load_config

    nullable = ("grad_clip", "value_clip", "reward_norm_clip")
    algo = {**default_algorithm(), **{k: v for k, v in dict(algorithm).items() if v is not None or k in nullable}}
    if algo["algo"] not in BACKEND_ALGOS:
        raise BenchmarlSettingsError(f"algorithm.algo has value {algo['algo']!r} for the BenchMARL backend; allowed: "
                                     f"{', '.join(BACKEND_ALGOS)}")
    cfg = load_config(env_config)
    env_dict = cfg.to_dict()
    scheme = env_dict["scheme"]["name"]
    env_rest = {k: v for k, v in env_dict.items() if k != "num_ues"}
    env_rest["scheme"] = {k: v for k, v in env_dict["scheme"].items() if k != "name"}
    envs = int(algo["episodes_per_iteration"])
    frames = envs * int(cfg.episode_length)
    shared = algo["algo"] == "ppo-shared"
    # minibatch_size counts one module's samples per gradient step; a frame holds one sample of each UE's
    # network, or N samples of the one shared network
    minibatch_frames = -(-int(algo["minibatch_size"]) // cfg.num_ues) if shared else int(algo["minibatch_size"])
    exp = {"share_policy_params": shared, "prefer_continuous_actions": False, "lr": float(algo["lr"]),
           "gamma": float(algo["gamma"]), "clip_grad_norm": True,
           "clip_grad_val": None if algo["grad_clip"] is None else float(algo["grad_clip"]),
           "on_policy_collected_frames_per_batch": frames, "on_policy_n_envs_per_worker": envs,
           "on_policy_n_minibatch_iters": int(algo["num_epochs"]),
           "on_policy_minibatch_size": min(minibatch_frames, frames),
           "evaluation": False, "evaluation_interval": frames, "loggers": [], "create_json": False}
    settings = {"share_param_critic": shared, "lmbda": float(algo["lambda_"]), "clip_epsilon": float(algo["clip"]),
                "entropy_coef": float(algo["entropy"]), "critic_coef": float(algo["vf_loss_coeff"])}
    return RunSpec(algorithm=BACKEND_ALGOS[algo["algo"]], scheme=scheme, seed=int(experiment.get("seed", 0) or 0),
                   task={"num_ues": cfg.num_ues, "reward_mode": algo["reward_mode"], "env": env_rest},
                   experiment=exp, algorithm_settings=settings, hidden=list(algo["hidden"]),
                   activation=algo["activation"], device=device, wandb_mode="disabled",
                   learner_switches={k: algo[k] for k in SWITCH_KEYS},
                   eval_seeds=[EVAL_SEED_BASE + 1000 * int(experiment.get("seed", 0) or 0) + i
                               for i in range(max(1, int(experiment.get("evaluation_episodes", 4) or 4)))])


class MetricsRows(Callback):
    """One metrics row per iteration: the collected decision points' U, Q, T, E, the losses, throughput."""

    def __init__(self, metrics_path: Path, n_agents: int, write: Callable[[Dict[str, float]], None]) -> None:
        super().__init__()
        self.metrics_path = metrics_path
        self.n_agents = n_agents
        self.write = write
        self.rows: List[Dict[str, float]] = []
        self._collected: Dict[str, float] = {}
        self._t_iter = time.perf_counter()
        self.t0 = time.perf_counter()

    def on_batch_collected(self, batch) -> None:
        info = batch.get(("next", "info"), None)
        self._collected = {} if info is None else {
            f"his/{key}": float(value.float().mean()) for key, value in info.items()}
        self._collected["perf/frames_this_iter"] = float(batch.numel())

    def on_train_end(self, training_td, group: str) -> None:
        now = time.perf_counter()
        iter_s = now - self._t_iter
        self._t_iter = now
        frames = self._collected.get("perf/frames_this_iter", 0.0)
        row: Dict[str, float] = {"iteration": len(self.rows) + 1, "elapsed_s": now - self.t0,
                                 **self._collected}
        for key, value in training_td.items():
            row[f"learner/{key}"] = float(value.float().mean())
        for callback in self.experiment.callbacks:  # the reward statistics of LearnerSwitches, as RLlib's rows have
            if callable(getattr(callback, "summary", None)):
                row.update({f"learner/{k}": v for k, v in callback.summary().items()})
        total = float(self.experiment.total_frames)
        row.update({"perf/env_steps_total": total, "perf/agent_steps_total": total * self.n_agents,
                    "perf/agent_steps_this_iter": frames * self.n_agents, "perf/iteration_s": iter_s,
                    "perf/agent_steps_per_s": frames * self.n_agents / iter_s if iter_s > 0 else math.nan})
        self.rows.append(row)
        self.write(row)


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import csv
    import io

    keys: List[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def final_evaluation(experiment, spec: RunSpec, his_config, baselines: Sequence[str], out_dir: Path
                     ) -> List[Dict[str, Any]]:
    """The greedy policy and `baselines` on the run's evaluation seeds; eval.csv and eval.md."""
    from agents.baselines import make_baseline
    from agents.evaluation import evaluate_policy, mean_metric, normalized_score

    env_dict = his_config.to_dict()
    rows = [{"policy": f"trained ({learner_label(spec)}, BenchMARL, greedy)", "reward_mode": spec.task["reward_mode"],
             **greedy_evaluator(spec, his_config)(experiment)}]
    y_min = int(env_dict["steps"]["min_es_personal"])
    for name in baselines:
        result = evaluate_policy(make_baseline(name, seed=spec.seed, es_personal_min=y_min), env_dict, spec.eval_seeds)
        rows.append({"policy": name, "reward_mode": "none",
                     **{k: mean_metric(result, k) for k in ("utility", "quality", "delay", "energy")}})
    by = {r["policy"]: r["utility"] for r in rows}
    if "random" in by and "search" in by:
        for r in rows:
            r["score"] = normalized_score(r["utility"], by["random"], by["search"])
    scored = "score" in rows[0]
    lines = ["| policy | reward mode | U | Q | T | E |" + (" score |" if scored else ""),
             "|---|---|---|---|---|---|" + ("---|" if scored else "")]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['reward_mode']} | {r['utility']:.4f} | {r['quality']:.4f} | "
                     f"{r['delay']:.4f} | {r['energy']:.4f} |" + (f" {r['score']:.3f} |" if "score" in r else ""))
    seeds = spec.eval_seeds
    atomic_write_text(out_dir / "eval.md", f"Greedy evaluation on {len(seeds)} episodes, seeds {seeds[0]}..{seeds[-1]} "
                      f"(per-decision-point network utility U, quality Q, delay T, energy E; reward mode: the signal the "
                      f"policy was trained on, none for baselines).\n\n" + "\n".join(lines) + "\n")
    _write_csv(rows, out_dir / "eval.csv")
    return rows


def check_new_run_folder(out: Path) -> None:
    """A new run writes into a folder holding no other run (its files would be overwritten)."""
    held = [name for name in ("config.yaml", "metrics.jsonl", "checkpoints") if (out / name).exists()]
    if held:
        raise BenchmarlSettingsError(f"output folder {str(out)!r} already holds a run ({', '.join(held)}); "
                                     f"use another --output-dir (nothing was written)")


def check_run_limits(iterations: Any, timesteps: Any, time_limit_s: Any, checkpoint_every: Any,
                     keep_checkpoints: Any) -> None:
    """train_benchmarl's stop rules and checkpoint settings, each refused by name when it cannot work."""
    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    for name, value, least in (("iterations", iterations, 1), ("timesteps", timesteps, 1)):
        if value is not None and not (integer(value) and value >= least):
            raise BenchmarlSettingsError(f"{name} = {value!r}; allowed: an integer >= {least} or None")
    if time_limit_s is not None and not (isinstance(time_limit_s, (int, float)) and not isinstance(time_limit_s, bool)
                                         and math.isfinite(time_limit_s) and time_limit_s > 0):
        raise BenchmarlSettingsError(f"time_limit_s = {time_limit_s!r}; allowed: a finite number of seconds > 0 "
                                     f"or None")
    for name, value, least in (("checkpoint_every", checkpoint_every, 0), ("keep_checkpoints", keep_checkpoints, 1)):
        if not (integer(value) and value >= least):
            raise BenchmarlSettingsError(f"{name} = {value!r}; allowed: an integer >= {least}")


def train_benchmarl(env_config, algorithm: Mapping[str, Any], experiment: Mapping[str, Any], out_dir: str | Path, *,
                    iterations: Optional[int] = None, timesteps: Optional[int] = None,
                    time_limit_s: Optional[float] = None, checkpoint_every: int = 10, keep_checkpoints: int = 2,
                    eval_baselines: Sequence[str] = ("random", "iis-fixed"), device: str = "cpu",
                    wandb_mode: str = "offline", wandb_project: str = "his-marl", wandb_name: Optional[str] = None,
                    log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train BenchMARL IPPO/MAPPO on the vector env into `out_dir` (see the module docstring).

    Stop rules as train.py's: `iterations` (in total), `timesteps` (env steps = frames in total),
    `time_limit_s` (seconds of training), SIGINT/SIGTERM (see the module docstring); with no budget
    given, 300 s. A checkpoint every `checkpoint_every` iterations (0: only at the end) and always at
    the end. Returns the summary. Bad settings raise BenchmarlSettingsError, an unusable cache folder
    PreflightError, both before anything is built or written; a second stop signal raises
    TrainingInterrupted.
    """
    from his_env.vector.benchmarl_task import task_by_name

    check_run_limits(iterations, timesteps, time_limit_s, checkpoint_every, keep_checkpoints)
    check_cache_folder()
    if wandb_mode not in WANDB_MODES:
        raise BenchmarlSettingsError(f"wandb mode {wandb_mode!r}; allowed: {', '.join(WANDB_MODES)}")
    spec = run_spec_from_settings(env_config, algorithm, experiment, device)
    frames_per_iter = int(spec.experiment["on_policy_collected_frames_per_batch"])
    if iterations is None and timesteps is None and time_limit_s is None:
        time_limit_s = 300.0
    budgets = [b for b in (iterations and iterations * frames_per_iter, timesteps) if b is not None]
    if budgets:
        spec.frame_budget = max(frames_per_iter, -(-min(budgets) // frames_per_iter) * frames_per_iter)
    spec.time_budget_s = time_limit_s
    spec.experiment.update({"checkpoint_interval": checkpoint_every * frames_per_iter if checkpoint_every else 0,
                            "checkpoint_at_end": True, "keep_checkpoints_num": keep_checkpoints,
                            "exploration_anneal_frames": frames_per_iter})
    validate_spec(spec)
    out = Path(out_dir).resolve()
    check_new_run_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    his_config = task_by_name(spec.scheme).get_task(dict(spec.task)).his_config()
    resolved = {**his_config.to_dict(), "backend": "benchmarl",
                "algorithm": {**default_algorithm(), **dict(algorithm)}, "experiment": dict(experiment),
                "benchmarl": {"algorithm": spec.algorithm, "algorithm_settings": spec.algorithm_settings,
                              "experiment": spec.experiment, "learner_switches": spec.learner_switches,
                              "frame_budget": spec.frame_budget,
                              "time_budget_s": spec.time_budget_s},
                "backend_unused": {k: dict(algorithm)[k] for k in UNUSED_KEYS if dict(algorithm).get(k) is False}}
    atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))

    wb = None
    if wandb_mode != "disabled":
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        wb = wandb.init(project=wandb_project, name=wandb_name or out.name, mode=wandb_mode, dir=str(out),
                        config=resolved, group=f"{spec.algorithm}-{spec.scheme}", job_type="train-benchmarl",
                        settings=wandb.Settings(silent=True, console="off"))
    metrics_path = out / "metrics.jsonl"
    atomic_write_text(metrics_path, "")

    def write(row: Dict[str, float]) -> None:
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        _write_csv(metrics.rows, out / "metrics.csv")
        if wb is not None:
            wb.log(row, step=int(row["iteration"]))
        log(f"[iter {int(row['iteration']):4d}] env-steps {int(row['perf/env_steps_total']):>9,} | "
            f"U {row.get('his/utility', math.nan):.3f}  Q {row.get('his/quality', math.nan):.3f}  "
            f"T {row.get('his/delay', math.nan):.2f} s  E {row.get('his/energy', math.nan):,.0f} J | "
            f"{row['perf/agent_steps_per_s']:,.0f} agent-steps/s | elapsed {row['elapsed_s']:.0f} s")

    import torch

    torch.set_num_threads(int(experiment.get("torch_threads", 1) or 1))  # experiment.torch_threads, as train.py's
    reset_peak_memory()
    metrics = MetricsRows(metrics_path, his_config.num_ues, write)
    signals = StopSignals(log)
    # The tracker enforces the time budget and the stop signals, after the metrics row of the iteration is
    # written; its curve is the final evaluation only (no points along the run).
    tracker = CurveTracker(lambda exp: {}, frames_per_point=1 << 62, time_budget_s=spec.time_budget_s,
                           signals=signals)
    t0 = time.perf_counter()
    try:
        exp = build_experiment(spec, out, [metrics, tracker], fixed_folder=True)
        log(f"BenchMARL {learner_label(spec)} on {his_config.num_ues} UEs, scheme {spec.scheme}, seed {spec.seed}: "
            f"{spec.experiment['on_policy_n_envs_per_worker']} envs x {his_config.episode_length} decision points "
            f"per iteration; built in {time.perf_counter() - t0:.1f} s; output {out}")
        # as on the RLlib path, from the first iteration on; a first signal during the final evaluation lets it finish
        with signals:
            tracker.start_clock()
            metrics.t0 = metrics._t_iter = time.perf_counter()
            exp.run()  # after a stop signal or the time limit: ends with the iteration, checkpointed at its frames
            return _finish(exp, spec, his_config, metrics.rows, eval_baselines, out, wb, log)
    except BaseException:
        if wb is not None:
            wb.finish()
        raise


def _finish(exp, spec: RunSpec, his_config, rows: List[Dict[str, float]], eval_baselines: Sequence[str], out: Path,
            wb, log: Callable[[str], None]) -> Dict[str, Any]:
    """After training: the final evaluation, the plot, the summary (logged and to W&B), W&B finished."""
    stop = exp.stop_reason or f"reached {int(exp.total_frames):,} env steps"
    table = final_evaluation(exp, spec, his_config, eval_baselines, out)
    plot = plot_learning_curve(rows, out / "plots" / "learning_curve.png",
                               f"BenchMARL {learner_label(spec)}, N={his_config.num_ues}")
    train_s = sum(r["perf/iteration_s"] for r in rows)
    summary = {"backend": "benchmarl", "algo": learner_label(spec), "iterations": len(rows),
               "env_steps": float(exp.total_frames), "agent_steps": float(exp.total_frames) * his_config.num_ues,
               "train_s": train_s, "agent_steps_per_s": (float(exp.total_frames) * his_config.num_ues / train_s
                                                         if train_s else math.nan),
               "stopped": stop, "checkpoint": str(exp._checkpointed_files[-1]) if exp._checkpointed_files else None,
               **peak_memory(), **{f"eval/{r['policy']}/utility": r["utility"] for r in table}}
    if wb is not None:
        import wandb

        wb.log({"eval/table": wandb.Table(columns=list(table[0]), data=[list(r.values()) for r in table])},
               step=max(len(rows), 1))
        if plot is not None:
            wb.log({"plots/learning_curve": wandb.Image(str(plot))}, step=max(len(rows), 1))
        for key, value in summary.items():
            wb.summary[key] = value
        wb.finish()
    log(f"stopped: {stop} | iterations {len(rows)} | env steps {int(exp.total_frames):,} | "
        f"{summary['agent_steps_per_s']:,.0f} agent-steps/s | peak memory {summary['peak_rss_mb']:,.0f} MB")
    log((out / "eval.md").read_text().rstrip())
    return summary


def train_benchmarl_request(request, device: str = "cpu", log: Callable[[str], None] = print) -> Dict[str, Any]:
    """An `agents.training.TrainingRequest` (what train.py's flags describe) trained with BenchMARL
    IPPO/MAPPO on the vector env: the same stop rules, checkpoint cadence, baselines and W&B settings,
    into `request.output_dir` (default runs/benchmarl-<algo>-<scheme>-N<N>-seed<S>-<time>)."""
    from datetime import datetime

    if request.resume is not None or request.ray_address or request.run_config is None:
        raise BenchmarlSettingsError("the benchmarl backend trains a new run on this machine: it takes neither "
                                     "--resume nor --ray-address (benchmark.py runs its cells on Ray)")
    run, stop = request.run_config, request.stop
    output_dir = request.output_dir or (f"runs/benchmarl-{run.algorithm.algo}-{run.env.scheme.name}-N{run.env.num_ues}"
                                        f"-seed{run.experiment.seed}-{datetime.now():%Y%m%d-%H%M%S}")
    return train_benchmarl(run.env, run.algorithm.to_dict(), run.experiment.to_dict(), output_dir,
                           iterations=stop.iterations, timesteps=stop.timesteps, time_limit_s=stop.time_limit_s,
                           checkpoint_every=10 if request.checkpoint_every is None else request.checkpoint_every,
                           keep_checkpoints=request.keep_checkpoints or 2, eval_baselines=request.eval_baselines,
                           device=device, wandb_mode=request.wandb_mode, wandb_project=request.wandb_project,
                           wandb_name=request.wandb_name, log=log)
