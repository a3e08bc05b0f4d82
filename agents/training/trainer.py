"""The training run: checks, run folder, Ray, the RLlib loop, checkpoints, final evaluation.

    from agents.config import load_run_config
    from agents.training import TrainingRequest, StopRules, run_training
    run = load_run_config(["train_small"], ["algorithm.lr=0.001"], seed=3)
    result = run_training(TrainingRequest(run_config=run, output_dir="runs/a", stop=StopRules(iterations=20)))

Order of events:

1. Everything that can be checked without Ray is checked (agents.training.preflight); a
   resumed run's folder, checkpoint and modules are checked against its run record. Nothing is
   written before these checks pass.
2. The run folder is created (or, on resume, interrupted saves are cleaned up and history
   beyond the restored iteration is set aside: agents.training.run_folder).
3. Ray starts, the algorithm is built and, on resume, restored; the restored weights are
   compared with the checkpoint's.
4. Each iteration: `algo.train()`, a metrics row; a non-finite loss stops the run at once
   (no checkpoint is written from that state; the last one stays the last good one); at the
   checkpoint cadence a checkpoint is saved (weights checked finite first) carrying the row;
   then the row goes to the metrics files and to W&B, in that order, so that W&B never holds
   an iteration the metrics files lack, and the metrics files never lack a checkpointed one.
5. On a stop rule, Ctrl-C or SIGTERM: a final checkpoint, the greedy evaluation, the summary.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml

from agents.checkpoints import (CHECKPOINTS_DIR, CheckpointError, clean_interrupted_saves, record_config,
                                run_config_from_record, save_checkpoint)
from agents.config import ConfigError, RunConfig
from agents.training import preflight
from agents.training.metrics_files import MetricsFiles, flat_metrics, fmt_duration, nonfinite_losses, progress_line
from agents.training.run_folder import (CONFIG_FILE, ResumePlan, check_new_run_folder, continue_history,
                                        default_run_name, plan_resume)
from agents.training.stop_rules import StopRules
from agents.training.wandb_logger import DEFAULT_PROJECT, check_wandb, open_wandb_run
from his_common.storage import atomic_write_text

DEFAULT_CHECKPOINT_EVERY = 10
DEFAULT_KEEP_CHECKPOINTS = 2
DEFAULT_BASELINES = ("random", "iis-fixed")
# experiment.* settings that may change when resuming (they do not change what is learned).
RUNTIME_KEYS = ("num_env_runners", "num_envs_per_env_runner", "num_learners", "torch_threads",
                "evaluation_episodes")
EXIT_OK = 0
EXIT_NONFINITE = 1


class TrainingError(RuntimeError):
    """The run cannot start or continue as asked; the message says why."""


@dataclass
class TrainingRequest:
    """What to train and how. For a new run give `run_config` (agents.config.RunConfig); to
    continue one give `resume` (a run folder or one of its checkpoints) and, optionally,
    `resume_overrides` ({experiment key: value}, keys from RUNTIME_KEYS). `checkpoint_every` and
    `keep_checkpoints` of None mean the run's own values when resuming, else 10 and 2."""

    run_config: Optional[RunConfig] = None
    output_dir: Optional[str | Path] = None
    resume: Optional[str | Path] = None
    resume_overrides: Mapping[str, Any] = field(default_factory=dict)
    stop: StopRules = field(default_factory=StopRules)
    checkpoint_every: Optional[int] = None
    keep_checkpoints: Optional[int] = None
    eval_baselines: Sequence[str] = DEFAULT_BASELINES
    wandb_mode: str = "offline"
    wandb_project: str = DEFAULT_PROJECT
    wandb_name: Optional[str] = None
    ray_address: Optional[str] = None
    verbose: bool = False
    runs_root: str | Path = "runs"


@dataclass
class TrainingResult:
    exit_code: int
    run_dir: Path
    stop_reason: str
    iterations: int
    checkpoint: Optional[Path]
    rows: List[Dict[str, Any]]
    eval_table: List[Dict[str, Any]]
    summary: Dict[str, Any]
    wandb_run_id: Optional[str]


@dataclass
class _Prepared:
    run_config: RunConfig
    run_dir: Path
    plan: Optional[ResumePlan]
    checkpoint_every: int
    keep_checkpoints: int
    probe: preflight.EnvProbe


def _prepare(req: TrainingRequest) -> _Prepared:
    """Step 1: resolve what the run is and check everything that can be checked without writing."""
    from agents.rllib.ippo import module_ids

    plan = None
    if req.resume is not None:
        plan = plan_resume(req.resume, req.output_dir)
        if req.run_config is not None:
            raise TrainingError("a resumed run keeps the config in its run record; a new config means a new run")
        bad = sorted(set(req.resume_overrides) - set(RUNTIME_KEYS))
        if bad:
            raise TrainingError(f"experiment.{bad[0]} cannot change when resuming; allowed: "
                                f"{', '.join('experiment.' + k for k in RUNTIME_KEYS)} (they do not change what "
                                f"is learned)")
        try:
            run = run_config_from_record(plan.info)
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {str(plan.checkpoint)!r}: its run record no longer validates: "
                                  f"{exc}") from exc
        if req.resume_overrides:
            run = run.with_overrides({f"experiment.{k}": v for k, v in req.resume_overrides.items()})
        run_dir = plan.run_dir
        every = req.checkpoint_every if req.checkpoint_every is not None else int(
            plan.info.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY))
        keep = req.keep_checkpoints if req.keep_checkpoints is not None else int(
            plan.info.get("keep_checkpoints", DEFAULT_KEEP_CHECKPOINTS))
    else:
        if req.run_config is None:
            raise TrainingError("a new run needs a run_config (agents.config.load_run_config)")
        run = req.run_config
        if req.output_dir is not None:
            run_dir = Path(req.output_dir).expanduser().resolve()
        else:
            run_dir = (Path(req.runs_root) / default_run_name(run.algorithm.algo, run.env.scheme.name,
                                                              run.env.num_ues, run.experiment.seed)).resolve()
        check_new_run_folder(run_dir)
        every = DEFAULT_CHECKPOINT_EVERY if req.checkpoint_every is None else req.checkpoint_every
        keep = DEFAULT_KEEP_CHECKPOINTS if req.keep_checkpoints is None else req.keep_checkpoints
    if every < 0 or keep < 1:
        raise TrainingError(f"checkpoint_every={every} (allowed: >= 0) or keep_checkpoints={keep} (allowed: >= 1)")
    algorithm, experiment = run.algorithm, run.experiment
    preflight.check_cache_folder()
    preflight.check_env_factory(experiment.env_factory, "experiment.env_factory")
    check_wandb(req.wandb_mode)
    preflight.check_baselines(req.eval_baselines, experiment.seed, run.env)
    probe = preflight.probe_env(run.env.to_dict(), algorithm.learner.global_critic, algorithm.reward_mode,
                                experiment.env_factory, experiment.seed,
                                lambda agents: module_ids(algorithm.algo, agents))
    if plan is not None:
        preflight.check_resumed_modules(probe.module_shapes, plan.checkpoint, probe.agents)
    return _Prepared(run, run_dir, plan, every, keep, probe)


def _restore(algo, plan: ResumePlan) -> None:
    """Restore `plan.checkpoint` into `algo` and check that the learner now holds its weights."""
    from agents.checkpoints import alias_moved_modules

    alias_moved_modules()  # checkpoints written before agents/rllib/ name agents.learner etc.
    try:
        algo.restore_from_path(str(plan.checkpoint))
    except Exception as exc:  # noqa: BLE001 - any unpickling failure
        raise CheckpointError(f"cannot restore checkpoint {str(plan.checkpoint)!r}: "
                              f"{type(exc).__name__}: {exc}") from exc
    if algo.iteration != plan.iteration:
        raise CheckpointError(f"checkpoint {str(plan.checkpoint)!r} restored iteration {algo.iteration}, "
                              f"but {plan.iteration} was recorded")
    mismatch = restored_weight_mismatch(algo.learner_group.get_weights(), plan.checkpoint)
    if mismatch:
        raise CheckpointError(f"checkpoint {str(plan.checkpoint)!r} did not restore: {mismatch}")


def restored_weight_mismatch(restored: Mapping[str, Mapping[str, Any]], checkpoint: Path) -> Optional[str]:
    """None when the learner's weights are those stored in the checkpoint, else what differs."""
    import pickle

    import numpy as np

    from agents.checkpoints import MODULES_DIR

    stored_ids = sorted(p.name for p in (checkpoint / MODULES_DIR).iterdir() if p.is_dir())
    if sorted(restored) != stored_ids:
        return f"the learner holds modules {sorted(restored)}, the checkpoint {stored_ids}"
    for mid in stored_ids:
        with open(checkpoint / MODULES_DIR / mid / "module_state.pkl", "rb") as fh:
            stored = pickle.load(fh)
        for name, value in stored.items():
            have = restored[mid].get(name)
            if have is None or np.shape(have) != np.shape(value) or not np.array_equal(have, value):
                return f"module {mid!r} parameter {name!r} differs from the checkpoint's"
    return None


def first_nonfinite_weight(weights: Mapping[str, Mapping[str, Any]]) -> Optional[str]:
    import numpy as np

    for mid, params in weights.items():
        for name, value in params.items():
            if not np.all(np.isfinite(np.asarray(value))):
                return f"{mid}/{name}"
    return None


def peak_memory_mb() -> Dict[str, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"driver_peak_rss_mb": self_kb / 1024.0, "largest_child_peak_rss_mb": child_kb / 1024.0}


def wandb_group_and_tags(run: RunConfig) -> tuple[str, List[str]]:
    """W&B group `<algo>-<scheme>` and tags: algo, scheme, N and reward mode."""
    algo, scheme = run.algorithm.algo, run.env.scheme.name
    return f"{algo}-{scheme}", [algo, scheme, f"N{run.env.num_ues}", f"reward-{run.algorithm.reward_mode}"]


def run_training(req: TrainingRequest, log: Callable[[str], None] = print) -> TrainingResult:
    """Run (or continue) one training run; see the module docstring. Raises TrainingError,
    CheckpointError, RunFolderError, PreflightError or WandbSetupError with a message when it
    cannot start."""
    from agents.training.ray_session import hash_seed_fixed, init_ray, quiet_libraries
    from agents.training.signals import StopSignals

    quiet_libraries(req.verbose)
    prep = _prepare(req)
    run, run_dir, plan = prep.run_config, prep.run_dir, prep.plan
    num_agents = len(prep.probe.agents)

    # 2. the run folder
    run_dir.mkdir(parents=True, exist_ok=True)
    removed = clean_interrupted_saves(run_dir / CHECKPOINTS_DIR)
    if removed:
        log(f"removed {len(removed)} unfinished checkpoint save(s) left by an interrupted run: "
            f"{', '.join(p.name for p in removed)}")
    metrics = MetricsFiles(run_dir)
    if plan is None:
        metrics.rewrite([])
    resolved = run.to_file_dict()
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))
    if not hash_seed_fixed():
        log("note: PYTHONHASHSEED is not set in this process, so RLlib's agent order and with it the run "
            "are not repeatable (train.py sets it)")

    # 3. Ray and the algorithm
    from agents.rllib.ippo import build_algo_config, set_torch_threads

    set_torch_threads(run.experiment.torch_threads)
    init_ray(req.ray_address, run.experiment.torch_threads, run.experiment.num_env_runners, req.verbose)
    try:
        return _train(req, prep, metrics, resolved, num_agents, build_algo_config, log, StopSignals)
    finally:
        import ray

        ray.shutdown()


def _train(req, prep, metrics, resolved, num_agents, build_algo_config, log, StopSignals):
    run, run_dir, plan = prep.run_config, prep.run_dir, prep.plan
    algorithm, experiment, env_config = run.algorithm, run.experiment, run.env.to_dict()
    log(f"train: {algorithm.algo} on {num_agents} UEs, scheme {run.env.scheme.name}, reward {algorithm.reward_mode} "
        f"(not Eq. (33) unless 'individual'), seed {experiment.seed}; "
        f"run folder {run_dir}")
    t_build = time.perf_counter()
    algo = build_algo_config(run).build_algo()
    info: Mapping[str, Any] = {}
    if plan is not None:
        try:
            _restore(algo, plan)
        except BaseException:
            algo.stop()
            raise
        continue_history(plan, metrics, log)
        info = plan.info
        log(f"resumed {plan.checkpoint.relative_to(run_dir)} at iteration {algo.iteration}, "
            f"{int(info.get('env_steps', 0)):,} env steps")
    log(f"built in {time.perf_counter() - t_build:.1f} s")

    group, tags = wandb_group_and_tags(run)
    name = req.wandb_name or info.get("wandb_name") or run_dir.name
    wb = open_wandb_run(req.wandb_mode, req.wandb_project, name, resolved, run_dir, group, tags, plan, metrics.rows,
                        log)

    def record(iteration: int, env_steps: float, elapsed: float, row: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        return {"algo": algorithm.algo, **record_config(run), "iteration": iteration,
                "env_steps": env_steps, "agent_steps": env_steps * num_agents, "elapsed_s": elapsed,
                "wandb_run_id": wb.run_id, "wandb_project": req.wandb_project, "wandb_name": name,
                "num_agents": num_agents, "checkpoint_every": prep.checkpoint_every,
                "keep_checkpoints": prep.keep_checkpoints, "metrics_row": dict(row) if row else None,
                "saved_at": datetime.now().isoformat()}

    def save(row: Optional[Mapping[str, Any]], elapsed: float) -> Path:
        bad = first_nonfinite_weight(algo.learner_group.get_weights())
        if bad is not None:
            raise _NonFinite(f"weight {bad} is not finite")
        return save_checkpoint(algo, run_dir / CHECKPOINTS_DIR, record(algo.iteration, env_steps, elapsed, row),
                               keep=prep.keep_checkpoints)

    stop = req.stop.with_default()
    rows = metrics.rows
    prev_elapsed = float(info.get("elapsed_s", 0.0))
    env_steps = float(info.get("env_steps", 0.0))
    last_ckpt: Optional[Path] = plan.checkpoint if plan is not None else None
    saved_iteration = plan.iteration if plan is not None else None
    stop_reason, nonfinite, this_run = None, None, 0
    t_start = time.perf_counter()
    try:
        with StopSignals(log) as signals:
            while True:
                stop_reason = (f"interrupted ({signals.requested})" if signals.requested else
                               stop.reason(algo.iteration, env_steps, time.perf_counter() - t_start))
                if stop_reason:
                    break
                t0 = time.perf_counter()
                result = algo.train()
                iter_s = time.perf_counter() - t0
                this_run += 1
                row = {"iteration": int(result["training_iteration"]),
                       "elapsed_s": prev_elapsed + time.perf_counter() - t_start,
                       **flat_metrics(result, num_agents, iter_s)}
                env_steps = row["perf/env_steps_total"]
                bad = nonfinite_losses(row)
                if bad:
                    raise _NonFinite(", ".join(f"{k} = {v}" for k, v in bad.items()), row)
                if prep.checkpoint_every and row["iteration"] % prep.checkpoint_every == 0:
                    last_ckpt = save(row, row["elapsed_s"])
                    saved_iteration = algo.iteration
                metrics.append(row)
                wb.log(row, step=row["iteration"])
                log(progress_line(row))
            elapsed_total = prev_elapsed + time.perf_counter() - t_start
            if saved_iteration != algo.iteration or last_ckpt is None:
                last_ckpt = save(rows[-1] if rows and rows[-1]["iteration"] == algo.iteration else None,
                                 elapsed_total)
    except _NonFinite as exc:
        nonfinite = exc
        if exc.row is not None:
            metrics.append(exc.row)
            wb.log(exc.row, step=exc.row["iteration"])
        stop_reason = "non-finite training state"
    except BaseException:
        wb.finish()
        raise
    finally:
        algo.stop()
    elapsed_total = prev_elapsed + time.perf_counter() - t_start

    if nonfinite is not None:
        kept = f"the last good checkpoint is {last_ckpt.relative_to(run_dir)}" if last_ckpt else "no checkpoint was saved"
        log(f"train: error: training stopped at iteration {algo.iteration}: {nonfinite} (usually a learning rate, "
            f"entropy or loss coefficient too large for this problem); no checkpoint was written from this state, "
            f"{kept}")
        wb.finish()
        return TrainingResult(EXIT_NONFINITE, run_dir, stop_reason, algo.iteration, last_ckpt, list(rows), [], {},
                              wb.run_id)

    from agents.evaluation import CheckpointPolicy
    from agents.training.final_evaluation import evaluate_final_policy, plot_learning_curve, write_tables

    table = evaluate_final_policy(CheckpointPolicy(last_ckpt), f"trained ({algorithm.algo}, greedy)",
                                  algorithm.reward_mode, env_config, req.eval_baselines, experiment.seed,
                                  experiment.evaluation_episodes, experiment.env_factory)
    write_tables(table, run_dir)
    plots = [p for p in [plot_learning_curve(rows, run_dir / "plots" / "learning_curve.png",
                                             f"{algorithm.algo}, N={num_agents}, reward {algorithm.reward_mode}")]
             if p]
    mem = peak_memory_mb()
    session = rows[-this_run:] if this_run else []
    session_agent_steps = sum(r["perf/agent_steps_this_iter"] for r in session)
    session_train_s = sum(r["perf/iteration_s"] for r in session)
    summary = {"iterations": algo.iteration, "env_steps": env_steps, "agent_steps": env_steps * num_agents,
               "elapsed_s": elapsed_total, "reward_mode": algorithm.reward_mode,
               "agent_steps_per_s": session_agent_steps / session_train_s if session_train_s else float("nan"),
               "final_train_utility": rows[-1].get("his/utility", float("nan")) if rows else float("nan"),
               "checkpoint": str(last_ckpt), **mem}
    for row in table:
        summary[f"eval/{row['policy']}/utility"] = row["utility"]
    wb.log_final(table, plots, summary, step=max(algo.iteration, 1))
    wb.finish()
    _print_summary(log, stop_reason, summary, last_ckpt, run_dir, req.wandb_mode, wb.run_id)
    return TrainingResult(EXIT_OK, run_dir, stop_reason or "done", algo.iteration, last_ckpt, list(rows), table,
                          summary, wb.run_id)


class _NonFinite(Exception):
    def __init__(self, what: str, row: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(what)
        self.row = row


def _print_summary(log, stop_reason, summary, checkpoint, run_dir, wandb_mode, wandb_id) -> None:
    log("=" * 78)
    log(f"stopped: {stop_reason or 'done'}")
    log(f"iterations {summary['iterations']} | env steps {int(summary['env_steps']):,} | agent steps "
        f"{int(summary['agent_steps']):,} | wall {fmt_duration(summary['elapsed_s'])} | "
        f"{summary['agent_steps_per_s']:,.0f} agent-steps/s (training iterations of this run)")
    log(f"peak memory: driver {summary['driver_peak_rss_mb']:,.0f} MB, "
        f"largest child {summary['largest_child_peak_rss_mb']:,.0f} MB")
    log(f"checkpoint: {checkpoint}")
    if (run_dir / "eval.md").is_file():
        log((run_dir / "eval.md").read_text().rstrip())
    log(f"metrics: {run_dir / 'metrics.csv'}  W&B: {wandb_mode}" + (f" (run {wandb_id})" if wandb_id else ""))
