r"""Training on the vectorised env with BenchMARL's IPPO or MAPPO, in train.py's run-folder layout.

    from agents.benchmarl.training import resume_benchmarl, train_benchmarl
    summary = train_benchmarl(env_config, {"algo": "mappo", "lr": 0.005}, {"seed": 3}, "runs/my-run",
                              time_limit_s=300)
    summary = resume_benchmarl("runs/my-run", iterations=200)   # continue it, up to 200 iterations in all

`env_config` is an `HISConfig` (or a dict or YAML path), `algorithm` and `experiment` the
`algorithm:` and `experiment:` settings of a run config as plain dicts (agents.config's field
names; missing keys take train.py's defaults, those of its RLlib backend). train.py --backend
benchmarl lays a preset under its --config and --set first (configs/presets/benchmarl_fast.yaml
by default: ppo-shared, 2 epochs, 8 episodes per iteration, minibatches of 6,400 samples;
benchmarl_markov.yaml where any dynamics process is on: lr 0.0005, 128 episodes per iteration,
minibatches of 32,000 samples, no value clip; `--preset like-for-like`: RLlib's settings). What the
settings become in BenchMARL:

| run setting | BenchMARL |
|---|---|
| algorithm.algo | `ippo` or `mappo` (one network per UE: `share_policy_params: false`, critics not shared), or `ppo-shared` (`ippo` with one actor and one critic for all UEs) |
| algorithm.lr, hidden, activation, gamma | experiment lr, MLP `num_cells` and activation of actor and critic, gamma |
| algorithm.lambda_, clip, entropy, vf_loss_coeff | the algorithm's lmbda, clip_epsilon, entropy_coef, critic_coef |
| algorithm.grad_clip | clip_grad_val (global norm; none: no clipping) |
| algorithm.num_epochs, minibatch_size | on_policy_n_minibatch_iters, on_policy_minibatch_size in frames of all N UEs: each UE's network sees `minibatch_size` samples per step, as with RLlib (`ppo-shared`: `minibatch_size / N` frames, rounded up) |
| algorithm.episodes_per_iteration | B, the vector env's batch: one iteration is B episodes |
| algorithm.reward_mode | the task's reward mode |
| experiment.seed, evaluation_episodes, torch_threads | the BenchMARL seed (env, networks); episodes of the final greedy evaluation (0: none), on train.py's seeds; torch threads of the run (unlike RLlib's learners, BenchMARL's gain from a second core) |
| algorithm.reward_normalization, reward_norm_clip, advantage_normalization, value_clip | the RLlib learner's switches, added to BenchMARL's PPO by agents.benchmarl.normalization |
| benchmarl.experiment.\*, benchmarl.algorithm.\*, benchmarl.task.\* | laid over the above: BenchMARL's ExperimentConfig, the algorithm's config, the task's (`bank_size`); kept in config.yaml as `benchmarl_overrides` for --resume |

`algorithm.policy_clip: false` (the unclipped surrogate) has no BenchMARL counterpart: BenchMARL's
PPO always clips; `config.yaml` lists it under `backend_unused`, so a reader sees it was not applied.

Run folder (as train.py's): `config.yaml` (with `backend: benchmarl`, which `train.py --resume` and
`evaluate.py --checkpoint` read); `metrics.jsonl` and `metrics.csv`, one row per iteration
(`his/utility`, `his/quality`, `his/delay`, `his/energy` of the collected decision points,
`learner/*` BenchMARL's loss terms, `perf/*` frames, agent-steps and throughput; printed one line
per iteration); `checkpoints/checkpoint_<env steps>.pt` (BenchMARL's checkpoints, written
atomically, the last one at the run's last iteration, each with the run record `his_run`:
BenchMARL's own `Experiment.reload_from_file` reads them too); `eval.csv` and `eval.md` (the
greedy policy beside the baselines, agents.training.final_evaluation's table as on the RLlib path);
`plots/learning_curve.png`; `wandb/` (offline by default); `superseded/` (see below).

`resume_benchmarl` continues a run as train.py --resume continues an RLlib run, with the same
run-folder rules (agents.training.run_folder): the run's saved settings, `iterations` and
`timesteps` counted over the whole run and `time_limit_s` over this invocation, rows and
checkpoints that continue the run's, history after the restored checkpoint moved to
`superseded/after_iter_N-<time>/`, temporary files of an interrupted save removed, W&B continued
(agents.training.wandb_logger.open_wandb_run).

SIGINT and SIGTERM stop the run as train.py's RLlib path does (agents.training.signals.StopSignals):
the iteration in progress finishes, then the final checkpoint, the evaluation and W&B follow as after
any other stop rule (`stopped: interrupted (SIGTERM)`); a second signal raises `TrainingInterrupted`
at once, with the checkpoints on disk left as they are.

Quiet unless `verbose`: TorchRL's deprecation warnings and log lines and BenchMARL's progress bar
are not shown (agents.training.ray_session.quiet_libraries; the bar, with `verbose`, only on a
terminal).
"""
from __future__ import annotations

import math
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml
from benchmarl.experiment.callback import Callback

from agents.benchmarl.experiment import (BenchmarlSettingsError, CurveTracker, RunSpec, WANDB_MODES,
                                         apply_benchmarl_settings, build_experiment, greedy_policy, peak_memory, reset_peak_memory,
                                         validate_spec)
from agents.config import LEARNERS, default_discount
from agents.checkpoints import (BENCHMARL, BENCHMARL_RECORD_KEY, CHECKPOINTS_DIR, CONFIG_FILE, CheckpointError,
                                clean_interrupted_saves, read_run_config_file)
from agents.training.final_evaluation import (evaluate_final_policy, evaluation_seeds, plot_learning_curve,
                                              write_tables)
from agents.training.metrics_files import MetricsFiles, progress_line
from agents.training.preflight import PreflightError, check_baselines, check_cache_folder
from agents.training.ray_session import quiet_libraries
from agents.training.run_folder import (ResumePlan, continue_history, plan_resume, restore_metrics_rows,
                                        resume_backend)
from agents.training.signals import StopSignals
from agents.training.stop_rules import StopRules
from agents.training.wandb_logger import WandbSetupError, check_wandb, open_wandb_run
from his_common.storage import atomic_write_text

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
                           device: str = "cpu", benchmarl: Optional[Mapping[str, Mapping[str, Any]]] = None) -> RunSpec:
    """The BenchMARL run that the run settings describe (see the module docstring's table), with the
    `benchmarl` namespace's settings laid over it (agents.benchmarl.experiment.apply_benchmarl_settings)."""
    from his_env.environment import load_config

    nullable = ("grad_clip", "value_clip", "reward_norm_clip")
    algo = {**default_algorithm(), **{k: v for k, v in dict(algorithm).items() if v is not None or k in nullable}}
    if algo["algo"] not in LEARNERS:
        raise BenchmarlSettingsError(f"algorithm.algo has value {algo['algo']!r} for the BenchMARL backend; allowed: "
                                     f"{', '.join(LEARNERS.names)}")
    learner = LEARNERS[algo["algo"]]
    cfg = load_config(env_config)
    env_dict = cfg.to_dict()
    scheme = env_dict["scheme"]["name"]
    env_rest = {k: v for k, v in env_dict.items() if k != "num_ues"}
    env_rest["scheme"] = {k: v for k, v in env_dict["scheme"].items() if k != "name"}
    envs = int(algo["episodes_per_iteration"])
    frames = envs * int(cfg.episode_length)
    shared = learner.shared_module
    # minibatch_size counts one module's samples per gradient step; a frame holds one sample of each UE's
    # network, or N samples of the one shared network
    minibatch_frames = -(-int(algo["minibatch_size"]) // cfg.num_ues) if shared else int(algo["minibatch_size"])
    exp = {"share_policy_params": shared, "prefer_continuous_actions": False, "lr": float(algo["lr"]),
           "gamma": default_discount(cfg) if algo["gamma"] is None else float(algo["gamma"]), "clip_grad_norm": True,
           "clip_grad_val": None if algo["grad_clip"] is None else float(algo["grad_clip"]),
           "on_policy_collected_frames_per_batch": frames, "on_policy_n_envs_per_worker": envs,
           "on_policy_n_minibatch_iters": int(algo["num_epochs"]),
           "on_policy_minibatch_size": min(minibatch_frames, frames),
           "evaluation": False, "evaluation_interval": frames, "loggers": [], "create_json": False}
    settings = {"share_param_critic": shared, "lmbda": float(algo["lambda_"]), "clip_epsilon": float(algo["clip"]),
                "entropy_coef": float(algo["entropy"]), "critic_coef": float(algo["vf_loss_coeff"])}
    spec = RunSpec(algorithm=learner.benchmarl_algorithm, scheme=scheme, seed=int(experiment.get("seed", 0) or 0),
                   task={"num_ues": cfg.num_ues, "reward_mode": algo["reward_mode"], "env": env_rest},
                   experiment=exp, algorithm_settings=settings, hidden=list(algo["hidden"]),
                   activation=algo["activation"], device=device, wandb_mode="disabled",
                   learner_switches={k: algo[k] for k in SWITCH_KEYS},
                   eval_seeds=evaluation_seeds(int(experiment.get("seed", 0) or 0),
                                               max(1, int(experiment.get("evaluation_episodes", 4) or 4))))
    return apply_benchmarl_settings(spec, benchmarl)


class MetricsRows(Callback):
    """One metrics row per iteration (the collected decision points' U, Q, T, E, the losses, throughput),
    numbered by the experiment's iteration counter, so that a resumed run's rows continue its history; and
    the run record (`his_run`: W&B run, checkpoint cadence, the checkpoint's metrics row) in every checkpoint."""

    def __init__(self, files: MetricsFiles, n_agents: int, write: Callable[[Dict[str, Any]], None],
                 elapsed_before: float = 0.0) -> None:
        super().__init__()
        self.files = files
        self.n_agents = n_agents
        self.write = write
        self.elapsed_before = elapsed_before  # training seconds of the run's earlier invocations
        self.record: Dict[str, Any] = {}
        self._collected: Dict[str, float] = {}
        self.t0 = self._t_iter = time.perf_counter()

    @property
    def rows(self) -> List[Dict[str, Any]]:
        return self.files.rows

    def start_clock(self) -> None:
        self.t0 = self._t_iter = time.perf_counter()

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
        row: Dict[str, Any] = {"iteration": int(self.experiment.n_iters_performed) + 1,
                               "elapsed_s": self.elapsed_before + now - self.t0, **self._collected}
        for key, value in training_td.items():
            row[f"learner/{key}"] = float(value.float().mean())
        for callback in self.experiment.callbacks:  # the reward statistics of LearnerSwitches, as RLlib's rows have
            if callable(getattr(callback, "summary", None)):
                row.update({f"learner/{k}": v for k, v in callback.summary().items()})
        total = float(self.experiment.total_frames)
        row.update({"perf/env_steps_total": total, "perf/agent_steps_total": total * self.n_agents,
                    "perf/agent_steps_this_iter": frames * self.n_agents, "perf/iteration_s": iter_s,
                    "perf/agent_steps_per_s": frames * self.n_agents / iter_s if iter_s > 0 else math.nan})
        self.files.append(row)
        self.write(row)

    def on_state_dict(self, state_dict: Dict[str, Any]) -> None:
        iteration = int(self.experiment.n_iters_performed)
        last = self.rows[-1] if self.rows and self.rows[-1]["iteration"] == iteration else None
        state_dict[BENCHMARL_RECORD_KEY] = {
            **self.record, "iteration": iteration, "metrics_row": last,
            "elapsed_s": last["elapsed_s"] if last else self.elapsed_before,
            "saved_at": datetime.now().isoformat()}


def check_new_run_folder(out: Path) -> None:
    """A new run writes into a folder holding no other run (its files would be overwritten)."""
    held = [name for name in ("config.yaml", "metrics.jsonl", "checkpoints") if (out / name).exists()]
    if held:
        raise BenchmarlSettingsError(f"output folder {str(out)!r} already holds a run ({', '.join(held)}); use "
                                     f"--resume {str(out)!r} to continue it, or another --output-dir (nothing was "
                                     f"written)")


def check_run_limits(iterations: Any, timesteps: Any, time_limit_s: Any, checkpoint_every: Any,
                     keep_checkpoints: Any, resumed: bool = False) -> None:
    """train_benchmarl's stop rules and checkpoint settings, each refused by name when it cannot work
    (when `resumed`, checkpoint_every and keep_checkpoints may be None: the resumed run's)."""
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
        if not (value is None and resumed) and not (integer(value) and value >= least):
            also = " or None (the resumed run's)" if resumed else ""
            raise BenchmarlSettingsError(f"{name} = {value!r}; allowed: an integer >= {least}{also}")


def check_settings(iterations, timesteps, time_limit_s, checkpoint_every, keep_checkpoints, wandb_mode: str,
                   resumed: bool = False) -> None:
    """What train_benchmarl and resume_benchmarl check first: limits, the cache folder, the W&B mode."""
    check_run_limits(iterations, timesteps, time_limit_s, checkpoint_every, keep_checkpoints, resumed)
    check_cache_folder()
    if wandb_mode not in WANDB_MODES:
        raise BenchmarlSettingsError(f"wandb mode {wandb_mode!r}; allowed: {', '.join(WANDB_MODES)}")
    try:  # the wandb package and, online, the credentials, before the task is built
        check_wandb(wandb_mode)
    except WandbSetupError as exc:
        raise BenchmarlSettingsError(str(exc)) from exc


def _check_baselines(eval_baselines: Sequence[str], run: "_Run") -> None:
    """The final evaluation's baselines, checked against the run's env before anything is built or written."""
    try:
        check_baselines(eval_baselines, run.spec.seed, run.task.his_config())
    except PreflightError as exc:
        raise BenchmarlSettingsError(str(exc)) from exc


@dataclass
class _Run:
    """A new or resumed run, checked and ready to train: its spec, settings and folder."""

    spec: RunSpec
    stop: StopRules
    env_config: Dict[str, Any]
    algorithm: Dict[str, Any]
    experiment: Dict[str, Any]
    out: Path
    checkpoint_every: int
    keep_checkpoints: int
    task: Any  # agents.benchmarl.task.HISTaskClass, built once (validate_spec) and handed to every use
    benchmarl: Dict[str, Dict[str, Any]]  # the `benchmarl` namespace's settings (agents.config.RunConfig.benchmarl)
    plan: Optional[ResumePlan] = None


def _prepare(env_config, algorithm: Mapping[str, Any], experiment: Mapping[str, Any], out: Path, stop: StopRules,
             checkpoint_every: int, keep_checkpoints: int, device: str, plan: Optional[ResumePlan] = None,
             benchmarl: Optional[Mapping[str, Mapping[str, Any]]] = None) -> _Run:
    """The run's spec: the settings' BenchMARL run, its frame and time budgets (`stop`; iterations and env
    steps count the whole run, the time this invocation), the checkpoint cadence; checked (validate_spec)."""
    algorithm = {**default_algorithm(), **dict(algorithm)}
    benchmarl = {section: dict(values) for section, values in (benchmarl or {}).items() if values}
    spec = run_spec_from_settings(env_config, algorithm, experiment, device, benchmarl)
    per_iter = int(spec.experiment["on_policy_collected_frames_per_batch"])
    stop = stop.with_default()
    budgets = [b for b in (stop.iterations and stop.iterations * per_iter, stop.timesteps) if b is not None]
    if budgets:
        spec.frame_budget = max(per_iter, -(-min(budgets) // per_iter) * per_iter)
    spec.time_budget_s = stop.time_limit_s
    spec.experiment.update({"checkpoint_interval": checkpoint_every * per_iter if checkpoint_every else 0,
                            "checkpoint_at_end": True, "keep_checkpoints_num": keep_checkpoints,
                            "exploration_anneal_frames": per_iter})
    task = validate_spec(spec)
    return _Run(spec, stop, task.his_config().to_dict(), algorithm, dict(experiment), out, checkpoint_every,
                keep_checkpoints, task, benchmarl, plan)


def train_benchmarl(env_config, algorithm: Mapping[str, Any], experiment: Mapping[str, Any], out_dir: str | Path, *,
                    iterations: Optional[int] = None, timesteps: Optional[int] = None,
                    time_limit_s: Optional[float] = None, checkpoint_every: int = 10, keep_checkpoints: int = 2,
                    eval_baselines: Sequence[str] = ("random", "iis-fixed"), device: str = "cpu",
                    wandb_mode: str = "offline", wandb_project: str = "his-marl", wandb_name: Optional[str] = None,
                    verbose: bool = False, log: Callable[[str], None] = print,
                    benchmarl: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """Train BenchMARL IPPO/MAPPO on the vector env into the new run folder `out_dir` (see the module docstring).
    `benchmarl` holds the `benchmarl` namespace's settings ({"experiment": ..., "algorithm": ..., "task": ...}),
    laid over what the run settings map to and kept in config.yaml (`benchmarl_overrides`) for --resume.

    Stop rules as train.py's: `iterations` (in total), `timesteps` (env steps = frames in total),
    `time_limit_s` (seconds of training), SIGINT/SIGTERM (see the module docstring); with no budget
    given, 300 s. A checkpoint every `checkpoint_every` iterations (0: only at the end) and always at
    the end. Returns the summary. Bad settings raise BenchmarlSettingsError, an unusable cache folder
    PreflightError, both before anything is built or written; a second stop signal raises
    TrainingInterrupted. `verbose` lets the libraries' warnings, logs and progress bars through.
    """
    check_settings(iterations, timesteps, time_limit_s, checkpoint_every, keep_checkpoints, wandb_mode)
    out = Path(out_dir).resolve()
    run = _prepare(env_config, algorithm, experiment, out, StopRules(iterations, timesteps, time_limit_s),
                   checkpoint_every, keep_checkpoints, device, benchmarl=benchmarl)
    _check_baselines(eval_baselines, run)
    check_new_run_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    MetricsFiles(out).rewrite([])
    _write_config(run)
    return _train(run, eval_baselines, wandb_mode, wandb_project, wandb_name, verbose, log)


def resume_benchmarl(path: str | Path, *, output_dir: Optional[str | Path] = None,
                     experiment_overrides: Optional[Mapping[str, Any]] = None, iterations: Optional[int] = None,
                     timesteps: Optional[int] = None, time_limit_s: Optional[float] = None,
                     checkpoint_every: Optional[int] = None, keep_checkpoints: Optional[int] = None,
                     eval_baselines: Sequence[str] = ("random", "iis-fixed"), device: str = "cpu",
                     wandb_mode: str = "offline", wandb_project: str = "his-marl", wandb_name: Optional[str] = None,
                     verbose: bool = False, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Continue the BenchMARL run that `path` names (its folder: from its newest checkpoint; one of its
    checkpoints: from there) with the settings in its config.yaml, as train.py --resume continues an RLlib run
    (agents.training.run_folder): `iterations` and `timesteps` count the whole run, `time_limit_s` this
    invocation; `experiment_overrides` may change only agents.training.RUNTIME_KEYS; `checkpoint_every` and
    `keep_checkpoints` of None keep the run's. Metrics rows and checkpoints continue the run's; history after
    the restored checkpoint goes to superseded/; temporary files of an interrupted save are removed; W&B
    continues as on the RLlib path. Errors (CheckpointError, RunFolderError, BenchmarlSettingsError,
    ConfigError) come before the run's config.yaml, metrics or checkpoints change."""
    from agents.config import RunConfig
    from agents.training import RUNTIME_KEYS

    check_settings(iterations, timesteps, time_limit_s, checkpoint_every, keep_checkpoints, wandb_mode, resumed=True)
    bad = sorted(set(experiment_overrides or {}) - set(RUNTIME_KEYS))
    if bad:
        raise BenchmarlSettingsError(f"experiment.{bad[0]} cannot change when resuming; allowed: "
                                     f"{', '.join('experiment.' + k for k in RUNTIME_KEYS)}")
    resume_backend(path, "benchmarl")
    plan = plan_resume(path, output_dir, BENCHMARL)
    info = plan.info
    run_config = RunConfig.from_dict({"env": info["env_config"], "algorithm": info["algorithm_config"],
                                      "experiment": info["experiment_config"],
                                      "benchmarl": info.get("benchmarl_config")})
    if experiment_overrides:
        run_config = run_config.with_overrides({f"experiment.{k}": v for k, v in experiment_overrides.items()})
    recorded = read_run_config_file(plan.run_dir)["benchmarl"]["experiment"]
    per_iter = int(recorded["on_policy_collected_frames_per_batch"])
    every = checkpoint_every if checkpoint_every is not None else int(info.get(
        "checkpoint_every", recorded.get("checkpoint_interval", 0) // per_iter))
    keep = keep_checkpoints if keep_checkpoints is not None else int(info.get(
        "keep_checkpoints", recorded.get("keep_checkpoints_num") or 2))
    run = _prepare(run_config.env, run_config.algorithm.to_dict(), run_config.experiment.to_dict(), plan.run_dir,
                   StopRules(iterations, timesteps, time_limit_s), every, keep, device, plan, run_config.benchmarl)
    _check_baselines(eval_baselines, run)
    if run.spec.experiment["on_policy_collected_frames_per_batch"] != per_iter:
        raise CheckpointError(f"the run in {str(plan.run_dir)!r} collected {per_iter} env steps per iteration, and "
                              f"its settings now give {run.spec.experiment['on_policy_collected_frames_per_batch']}: "
                              f"it was trained with another version of this code; start a new run")
    removed = clean_interrupted_saves(plan.run_dir / CHECKPOINTS_DIR)
    if removed:
        log(f"removed {len(removed)} unfinished checkpoint save(s) left by an interrupted run: "
            f"{', '.join(p.name for p in removed)}")
    return _train(run, eval_baselines, wandb_mode, wandb_project, wandb_name or info.get("wandb_name"), verbose, log)


def _write_config(run: _Run) -> None:
    """config.yaml: the env, train.py's settings, BenchMARL's settings of this invocation, `backend: benchmarl`."""
    spec = run.spec
    resolved = {**run.env_config, "backend": "benchmarl", "algorithm": run.algorithm, "experiment": run.experiment,
                "benchmarl": {"algorithm": spec.algorithm, "algorithm_settings": spec.algorithm_settings,
                              "experiment": spec.experiment, "learner_switches": spec.learner_switches,
                              "frame_budget": spec.frame_budget, "time_budget_s": spec.time_budget_s},
                "backend_unused": {k: run.algorithm[k] for k in UNUSED_KEYS if run.algorithm.get(k) is False}}
    if run.benchmarl:  # what --set benchmarl.* gave (already in `benchmarl:` above; kept apart for --resume)
        resolved["benchmarl_overrides"] = run.benchmarl
    atomic_write_text(run.out / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))


def _restore(run: _Run, callbacks: Sequence[Any], progress_bar: bool):
    """The run's experiment, restored from the plan's checkpoint (CheckpointError if that fails)."""
    try:
        exp = build_experiment(run.spec, run.out, callbacks, fixed_folder=True, restore_file=run.plan.checkpoint,
                               progress_bar=progress_bar, task=run.task)
    except Exception as exc:  # noqa: BLE001 - any failure to load the state into the experiment
        raise CheckpointError(f"cannot restore checkpoint {str(run.plan.checkpoint)!r}: {type(exc).__name__}: "
                              f"{exc}") from exc
    if (exp.n_iters_performed, exp.total_frames) != (run.plan.iteration, run.plan.info["env_steps"]):
        raise CheckpointError(f"checkpoint {str(run.plan.checkpoint)!r} restored iteration {exp.n_iters_performed}, "
                              f"but {run.plan.iteration} was recorded")
    # checkpoints of the run so far count towards keep_checkpoints (its later ones are set aside by now)
    exp._checkpointed_files = deque(p for p in BENCHMARL.list(run.out / CHECKPOINTS_DIR)
                                    if BENCHMARL.position(p) <= BENCHMARL.position(run.plan.checkpoint))
    return exp


def _train(run: _Run, eval_baselines: Sequence[str], wandb_mode: str, wandb_project: str,
           wandb_name: Optional[str], verbose: bool, log: Callable[[str], None]) -> Dict[str, Any]:
    """Build (or restore) the experiment, train until a stop rule, checkpoint, evaluate, log."""
    import torch

    quiet_libraries(verbose, ("torchrl",))
    spec, out, plan = run.spec, run.out, run.plan
    his_config = run.task.his_config()
    metrics_files = MetricsFiles(out)
    metrics_files.rows = [] if plan is None else restore_metrics_rows(plan)
    wb = None

    def write(row: Dict[str, Any]) -> None:
        if wb is not None:
            wb.log(row, step=int(row["iteration"]))
        log(progress_line(row))

    torch.set_num_threads(int(run.experiment.get("torch_threads", 1) or 1))  # experiment.torch_threads, as train.py's
    reset_peak_memory()
    rows = metrics_files.rows
    metrics = MetricsRows(metrics_files, his_config.num_ues, write, float(rows[-1]["elapsed_s"]) if rows else 0.0)
    signals = StopSignals(log)
    # The tracker enforces the time budget and the stop signals, after the metrics row of the iteration is
    # written; its curve is the final evaluation only (no points along the run).
    tracker = CurveTracker(lambda exp: {}, frames_per_point=1 << 62, time_budget_s=spec.time_budget_s,
                           signals=signals)
    progress_bar = verbose and sys.stderr.isatty()
    t0 = time.perf_counter()
    if plan is None:
        exp = build_experiment(spec, out, [metrics, tracker], fixed_folder=True, progress_bar=progress_bar,
                               task=run.task)
    else:
        exp = _restore(run, [metrics, tracker], progress_bar)
        continue_history(plan, metrics_files, log)
        _write_config(run)
        log(f"resumed {plan.checkpoint.relative_to(out)} at iteration {plan.iteration}, "
            f"{int(exp.total_frames):,} env steps")
    log(f"BenchMARL {learner_label(spec)} on {his_config.num_ues} UEs, scheme {spec.scheme}, seed {spec.seed}: "
        f"{spec.experiment['on_policy_n_envs_per_worker']} envs x {his_config.episode_length} decision points "
        f"per iteration; built in {time.perf_counter() - t0:.1f} s; output {out}")
    try:
        group = f"benchmarl-{run.algorithm['algo']}-{spec.scheme}"
        tags = ["benchmarl", run.algorithm["algo"], spec.scheme, f"N{his_config.num_ues}",
                f"reward-{spec.task['reward_mode']}"]
        name = wandb_name or out.name
        wb = open_wandb_run(wandb_mode, wandb_project, name, yaml.safe_load((out / CONFIG_FILE).read_text()), out,
                            group, tags, plan, metrics_files.rows, log)
        metrics.record = {"wandb_run_id": wb.run_id, "wandb_project": wandb_project, "wandb_name": name,
                          "checkpoint_every": run.checkpoint_every, "keep_checkpoints": run.keep_checkpoints}
        # as on the RLlib path, from the first iteration on; a first signal during the final evaluation lets it finish
        with signals:
            tracker.start_clock()
            metrics.start_clock()
            exp.run()  # after a stop signal or the time limit: ends with the iteration, checkpointed at its frames
            return _finish(exp, run, his_config, metrics, tracker, eval_baselines, wb, log)
    except BaseException:
        if wb is not None:
            wb.finish()
        raise


def _finish(exp, run: _Run, his_config, metrics: MetricsRows, tracker: CurveTracker, eval_baselines: Sequence[str],
            wb, log: Callable[[str], None]) -> Dict[str, Any]:
    """After training: the final evaluation, the plot, the summary (logged and to W&B), W&B finished."""
    spec, out, rows = run.spec, run.out, metrics.rows
    stop = exp.stop_reason or run.stop.reason(int(exp.n_iters_performed), float(exp.total_frames),
                                              tracker.train_seconds()) or "done"
    table = evaluate_final_policy(greedy_policy(exp), f"trained ({learner_label(spec)}, BenchMARL, greedy)",
                                  spec.task["reward_mode"], his_config.to_dict(), eval_baselines, spec.seed,
                                  int(run.experiment.get("evaluation_episodes", 4)),
                                  search_device=spec.device if str(spec.device).startswith("cuda") else None)
    write_tables(table, out)
    plot = plot_learning_curve(rows, out / "plots" / "learning_curve.png",
                               f"BenchMARL {learner_label(spec)}, N={his_config.num_ues}")
    session = [r for r in rows if run.plan is None or r["iteration"] > run.plan.iteration]
    train_s = sum(r["perf/iteration_s"] for r in session)
    session_steps = sum(r["perf/agent_steps_this_iter"] for r in session)
    checkpoints = BENCHMARL.list(out / CHECKPOINTS_DIR)
    summary = {"backend": "benchmarl", "algo": learner_label(spec), "iterations": int(exp.n_iters_performed),
               "env_steps": float(exp.total_frames), "agent_steps": float(exp.total_frames) * his_config.num_ues,
               "train_s": train_s, "agent_steps_per_s": session_steps / train_s if train_s else math.nan,
               "stopped": stop, "checkpoint": str(checkpoints[-1]) if checkpoints else None,
               **peak_memory(), **{f"eval/{r['policy']}/utility": r["utility"] for r in table}}
    wb.log_final(table, [plot] if plot is not None else [], summary, step=max(int(exp.n_iters_performed), 1))
    wb.finish()
    log(f"stopped: {stop} | iterations {summary['iterations']} | env steps {int(exp.total_frames):,} | "
        f"{summary['agent_steps_per_s']:,.0f} agent-steps/s | peak memory {summary['peak_rss_mb']:,.0f} MB"
        + (f", GPU {summary['peak_gpu_mb']:,.0f} MB" if "peak_gpu_mb" in summary else ""))
    if (out / "eval.md").is_file():
        log((out / "eval.md").read_text().rstrip())
    return summary


def restore_greedy_policy(checkpoint: str | Path, device: str = "cpu"):
    """The greedy policy (agents.benchmarl.experiment.BenchmarlGreedyPolicy) of a BenchMARL checkpoint of a
    train.py run: the run's experiment rebuilt from its config.yaml in a temporary folder (the run folder is
    only read) and restored from `checkpoint` onto `device`. A checkpoint that does not load raises
    CheckpointError."""
    import tempfile
    import warnings

    checkpoint = Path(checkpoint)
    info = BENCHMARL.read(checkpoint)
    spec = run_spec_from_settings(info["env_config"], info["algorithm_config"], info["experiment_config"], device,
                                  info.get("benchmarl_config"))
    with tempfile.TemporaryDirectory(prefix="his-benchmarl-policy-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchRL's, for the collector this builds
        try:
            exp = build_experiment(spec, folder, fixed_folder=True, restore_file=checkpoint)
        except Exception as exc:  # noqa: BLE001 - any failure to load the state into the experiment
            raise CheckpointError(f"cannot restore checkpoint {str(checkpoint)!r}: {type(exc).__name__}: "
                                  f"{exc}") from exc
        exp.close()
    return greedy_policy(exp)


def train_benchmarl_request(request, device: str = "cpu", log: Callable[[str], None] = print) -> Dict[str, Any]:
    """An `agents.training.TrainingRequest` (what train.py's flags describe) trained with BenchMARL
    IPPO/MAPPO on the vector env: the same stop rules, checkpoint cadence, baselines and W&B settings,
    into `request.output_dir` (default runs/benchmarl-<algo>-<scheme>-N<N>-seed<S>-<time>), or, with
    `request.resume`, continuing that run (resume_benchmarl)."""
    from datetime import datetime

    if request.ray_address:
        raise BenchmarlSettingsError("the benchmarl backend trains on this machine: it takes no --ray-address "
                                     "(benchmark.py runs its cells on Ray)")
    stop = request.stop
    common = dict(iterations=stop.iterations, timesteps=stop.timesteps, time_limit_s=stop.time_limit_s,
                  eval_baselines=request.eval_baselines, device=device, wandb_mode=request.wandb_mode,
                  wandb_project=request.wandb_project, wandb_name=request.wandb_name, verbose=request.verbose, log=log)
    if request.resume is not None:
        return resume_benchmarl(request.resume, output_dir=request.output_dir,
                                experiment_overrides=request.resume_overrides,
                                checkpoint_every=request.checkpoint_every, keep_checkpoints=request.keep_checkpoints,
                                **common)
    run = request.run_config
    output_dir = request.output_dir or (f"runs/benchmarl-{run.algorithm.algo}-{run.env.scheme.name}-N{run.env.num_ues}"
                                        f"-seed{run.experiment.seed}-{datetime.now():%Y%m%d-%H%M%S}")
    return train_benchmarl(run.env, run.algorithm.to_dict(), run.experiment.to_dict(), output_dir,
                           checkpoint_every=10 if request.checkpoint_every is None else request.checkpoint_every,
                           keep_checkpoints=request.keep_checkpoints or 2, benchmarl=run.benchmarl, **common)
