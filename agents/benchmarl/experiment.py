"""One BenchMARL run on an HIS task: settings, a frame or time budget, and the greedy score curve.

`run_benchmarl(RunSpec(...))` builds BenchMARL's `Experiment` for an HIS task
(agents.benchmarl.task), trains it until its frame budget (BenchMARL's `max_n_frames`) or
its time budget (seconds of training, checked after every iteration) is spent, and returns a
summary plus a learning curve. Curve points are taken after the first iteration and whenever the
collected frames reach a multiple of the experiment's `evaluation_interval`, and once more at the
end: the greedy policy plays the PettingZoo env (the reference env, not the vector env) on fixed
evaluation seeds, so that its network utility U is comparable with the random and search
baselines of agents.baselines on the same decision points. Time spent in these evaluations is
not counted as training time.

Settings come in three layers: BenchMARL's `base_experiment.yaml`, the HIS preset
`configs/benchmark/experiment/his.yaml`, then `RunSpec.experiment` overrides (unknown keys are
refused). Models are MLPs of `RunSpec.hidden` units (the paper's [256, 256, 256] by default) for
policies and critics alike.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import resource
import socket
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from benchmarl.experiment import Experiment
from benchmarl.experiment.callback import Callback
from benchmarl.utils import seed_everything

from agents.baselines import Policy
from agents.benchmarl import compat
from agents.config import default_discount
from his_common.registry import Registry
from his_common.storage import atomic_write_bytes

ACTIVATIONS = {"tanh": "torch.nn.Tanh", "relu": "torch.nn.ReLU"}
WANDB_MODES = ("online", "offline", "disabled")
UNBOUNDED_FRAMES = 10 ** 12  # BenchMARL needs a frame limit; a time budget stops the run before it


class BenchmarlSettingsError(ValueError):
    """A BenchMARL run setting that cannot work (names the setting, the value and what is allowed)."""


def algorithm_registry() -> Registry:
    """BenchMARL's algorithms by name (ippo, mappo, iql, qmix, vdn, isac, masac, iddpg, maddpg, ...)."""
    from benchmarl.algorithms import algorithm_config_registry

    registry: Registry = Registry("BenchMARL algorithm")
    for name, config_class in algorithm_config_registry.items():
        registry.register(name, config_class)
    return registry


def check_device(device: str, what: str = "device") -> str:
    """`device` if torch can use it here, else an error naming the devices that are there."""
    import torch

    present = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        present.append("mps")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BenchmarlSettingsError(f"{what} {device!r} is not a torch device; present here: "
                                     f"{', '.join(present)}") from None
    ok = (dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()
                                and (dev.index or 0) < torch.cuda.device_count())
          or (dev.type == "mps" and torch.backends.mps.is_available()))
    if not ok:
        raise BenchmarlSettingsError(f"{what} {device!r} is not present on this machine; present here: "
                                     f"{', '.join(present)}")
    return device


def experiment_config(overrides: Optional[Mapping[str, Any]] = None, preset: Optional[str | Path] = None):
    """BenchMARL's ExperimentConfig: base_experiment.yaml, the HIS preset, then `overrides`."""
    from benchmarl.experiment import ExperimentConfig
    from benchmarl.utils import _read_yaml_config

    from agents.benchmarl.task import CONFIG_DIR

    cfg = ExperimentConfig.get_from_yaml()
    allowed = [f.name for f in fields(ExperimentConfig)]
    preset = Path(preset) if preset is not None else CONFIG_DIR / "experiment" / "his.yaml"
    layers = [(str(preset), _read_yaml_config(str(preset)) if preset.is_file() else {}),
              ("experiment overrides", dict(overrides or {}))]
    for where, values in layers:
        for key, value in values.items():
            if key not in allowed:
                raise BenchmarlSettingsError(f"benchmarl.experiment.{key} ({where}) is not a BenchMARL experiment "
                                             f"setting; allowed: {', '.join(allowed)}")
            setattr(cfg, key, value)
    return cfg


def algorithm_config(name: str, overrides: Optional[Mapping[str, Any]] = None):
    """BenchMARL's config of algorithm `name` (its YAML defaults) with `overrides`; unknown keys are refused."""
    config_class = algorithm_registry()[name]
    cfg = config_class.get_from_yaml()
    allowed = [f.name for f in fields(config_class)]
    for key, value in dict(overrides or {}).items():
        if key not in allowed:
            raise BenchmarlSettingsError(f"benchmarl.algorithm.{key} is not a setting of BenchMARL's {name}; "
                                         f"allowed: {', '.join(allowed)}")
        setattr(cfg, key, value)
    return cfg


def model_config(hidden: Sequence[int] = (256, 256, 256), activation: str = "tanh"):
    """An MLP of `hidden` units with `activation` (tanh | relu)."""
    from benchmarl.models import MlpConfig

    if activation not in ACTIVATIONS:
        raise BenchmarlSettingsError(f"activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    if not hidden or any(int(h) < 1 for h in hidden):
        raise BenchmarlSettingsError(f"hidden {list(hidden)!r}; allowed: one or more positive layer widths")
    import torch

    return MlpConfig(num_cells=[int(h) for h in hidden],
                     activation_class=getattr(torch.nn, ACTIVATIONS[activation].rsplit(".", 1)[1]),
                     layer_class=torch.nn.Linear)


@dataclass
class RunSpec:
    """Everything one BenchMARL run on HIS depends on (all plain values, so it pickles and hashes)."""

    algorithm: str
    scheme: str = "his"
    seed: int = 0
    task: Dict[str, Any] = field(default_factory=dict)        # HIS task settings (num_ues, reward_mode, ...)
    experiment: Dict[str, Any] = field(default_factory=dict)  # BenchMARL ExperimentConfig overrides
    algorithm_settings: Dict[str, Any] = field(default_factory=dict)  # the BenchMARL algorithm config's overrides
    frame_budget: Optional[int] = None    # frames (env steps summed over the batch); None: the config's max_n_frames
    time_budget_s: Optional[float] = None  # seconds of training; checked after every iteration
    eval_seeds: List[int] = field(default_factory=lambda: [90_000, 90_001, 90_002, 90_003])
    hidden: List[int] = field(default_factory=lambda: [256, 256, 256])
    activation: str = "tanh"
    device: str = "cpu"                   # sampling and training device
    wandb_mode: str = "disabled"
    wandb_project: str = "his-marl"
    learner_switches: Dict[str, Any] = field(default_factory=dict)  # agents.benchmarl.normalization.LearnerSwitches

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# BenchMARL ExperimentConfig keys that the commands set themselves, with the flag that sets them.
RUN_OWNED_EXPERIMENT_KEYS = {
    "max_n_frames": "the frame or time budget (train.py --iterations/--timesteps/--time-limit, benchmark.py "
                    "--frame-budget/--time-budget)",
    "max_n_iters": "the frame or time budget", "save_folder": "the output folder (--output-dir)",
    "restore_file": "train.py --resume", "restore_map_location": "--device",
    "sampling_device": "--device", "train_device": "--device", "buffer_device": "--device",
    "checkpoint_interval": "train.py --checkpoint-every", "checkpoint_at_end": "train.py (always at the end)",
    "keep_checkpoints_num": "train.py --keep-checkpoints",
}
# HIS task settings that come from the run settings, with where they are set.
RUN_OWNED_TASK_KEYS = {"num_ues": "num_ues (the env's)", "reward_mode": "algorithm.reward_mode",
                       "config": "--config", "env": "the env's keys (bare or env.<key>)"}


def apply_benchmarl_settings(spec: RunSpec, settings: Optional[Mapping[str, Mapping[str, Any]]]) -> RunSpec:
    """`spec` with the `benchmarl` namespace's settings laid over it ({"experiment": BenchMARL ExperimentConfig
    keys, "algorithm": the algorithm config's, "task": the HIS task's}, agents.config.BENCHMARL_SECTIONS); a key
    that a command sets from its own flags or the run settings is refused naming them. Unknown keys are refused
    by validate_spec, naming the allowed ones."""
    settings = settings or {}
    for section, owned in (("experiment", RUN_OWNED_EXPERIMENT_KEYS), ("task", RUN_OWNED_TASK_KEYS)):
        for key in settings.get(section) or {}:
            if key in owned:
                raise BenchmarlSettingsError(f"benchmarl.{section}.{key} cannot be set: it comes from {owned[key]}")
    spec.experiment.update(settings.get("experiment") or {})
    spec.algorithm_settings.update(settings.get("algorithm") or {})
    spec.task.update(settings.get("task") or {})
    return spec


def build_task(spec: RunSpec):
    """The run's BenchMARL task (agents.benchmarl.task.HISTaskClass), with its settings checked (ConfigError);
    a run builds it once and hands it to `build_experiment`."""
    from agents.benchmarl.task import task_by_name

    task = task_by_name(spec.scheme).get_task(dict(spec.task))
    task.his_config()
    return task


def validate_spec(spec: RunSpec, task=None):
    """Refuse a run that cannot work, before anything is built (names, device, budget, settings); returns
    the run's task (`task`, or the one `build_task` makes)."""
    registry = algorithm_registry()
    registry.check(spec.algorithm, "algorithm", BenchmarlSettingsError)
    task = build_task(spec) if task is None else task
    check_device(spec.device)
    if spec.wandb_mode not in WANDB_MODES:
        raise BenchmarlSettingsError(f"wandb mode {spec.wandb_mode!r}; allowed: {', '.join(WANDB_MODES)}")
    algo_cls = registry[spec.algorithm]
    cfg = experiment_config(spec.experiment)
    on_policy = algo_cls.on_policy()
    per_iter = cfg.collected_frames_per_batch(on_policy)
    envs = cfg.n_envs_per_worker(on_policy)
    if per_iter % envs:
        kind = "on" if on_policy else "off"
        raise BenchmarlSettingsError(f"benchmarl.experiment.{kind}_policy_collected_frames_per_batch = {per_iter} "
                                     f"is not a multiple of benchmarl.experiment.{kind}_policy_n_envs_per_worker = "
                                     f"{envs}")
    if spec.frame_budget is not None and spec.frame_budget < per_iter:
        raise BenchmarlSettingsError(
            f"frame budget {spec.frame_budget:,} is smaller than one iteration ({per_iter:,} frames for "
            f"{spec.algorithm}), after which the first evaluation runs; allowed: at least {per_iter:,}")
    if spec.time_budget_s is not None and not (math.isfinite(spec.time_budget_s) and spec.time_budget_s > 0):
        raise BenchmarlSettingsError(f"time budget {spec.time_budget_s!r}; allowed: a finite number of seconds > 0")
    if spec.time_budget_s is not None and spec.frame_budget is None and cfg.exploration_anneal_frames is None:
        raise BenchmarlSettingsError("a time budget needs benchmarl.experiment.exploration_anneal_frames (the frames over which "
                                     "exploration is annealed; BenchMARL's default, a third of max_n_frames, needs a "
                                     "frame budget); allowed: an integer >= 1")
    if cfg.evaluation_interval % per_iter:
        raise BenchmarlSettingsError(f"benchmarl.experiment.evaluation_interval = {cfg.evaluation_interval} is not a "
                                     f"multiple "
                                     f"of the {per_iter} frames collected per iteration")
    if not spec.eval_seeds:
        raise BenchmarlSettingsError("no evaluation seeds; allowed: one or more")
    model_config(spec.hidden, spec.activation)
    algorithm_config(spec.algorithm, spec.algorithm_settings)
    check_learner_switches(spec)
    return task


def check_learner_switches(spec: RunSpec) -> None:
    """`spec.learner_switches`: known keys, values in range, the PPO-only ones on a PPO algorithm."""
    import inspect

    from agents.benchmarl.normalization import PPO_LOSS_ALGORITHMS, LearnerSwitches

    allowed = [k for k in inspect.signature(LearnerSwitches).parameters if k not in ("group", "eps")]
    switches = dict(spec.learner_switches)
    for key, value in switches.items():
        if key not in allowed:
            raise BenchmarlSettingsError(f"learner switch {key!r}; allowed: {', '.join(allowed)}")
        if key in ("reward_norm_clip", "value_clip") and value is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise BenchmarlSettingsError(f"learner switch {key} = {value!r}; allowed: a number > 0 or none")
    ppo_only = [k for k in ("advantage_normalization", "value_clip") if switches.get(k) not in (None, False)]
    if ppo_only and spec.algorithm not in PPO_LOSS_ALGORITHMS:
        raise BenchmarlSettingsError(f"{' and '.join(ppo_only)} for {spec.algorithm}: BenchMARL's {spec.algorithm} "
                                     f"has no PPO loss; allowed with {', '.join(PPO_LOSS_ALGORITHMS)}")


# ---------------------------------------------------------------------- greedy policy on the PettingZoo env
class BenchmarlGreedyPolicy(Policy):
    """The deterministic actions of a BenchMARL policy, acting on the HIS PettingZoo env.

    Observations of all UEs go through the policy in one batch, as the vector env would give them
    (with the vector env's action mask, from the observed `active` flag, where the policy reads one);
    the actions (one categorical index or two values in [0, 1] per UE) are turned into the
    PettingZoo env's MultiDiscrete indices by the vector env's own decoding.

    An env with another number of UEs than the policy was trained with (`n_agents`; a held-out
    scenario) is served by a policy with shared parameters (`shared`): its decentralised actor
    maps each UE's observation alone, so the UEs go through it in groups of `n_agents` (the last
    padded and the padding dropped). A policy with a network per UE cannot act there.
    """

    name = "benchmarl"

    def __init__(self, policy, group: str = "agents", action_mode: str = "categorical", device: str = "cpu",
                 n_agents: Optional[int] = None, shared: bool = False) -> None:
        self.policy = policy
        self.group = group
        self.action_mode = action_mode
        self.device = device
        self.n_agents, self.shared = n_agents, bool(shared)

    def act(self, observations, env):
        import torch
        from tensordict import TensorDict
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        from his_env.dynamics.slot import OBSERVATION_FEATURES
        from his_env.vector import action_mask

        agents = [a for a in env.possible_agents if a in observations]
        obs = torch.as_tensor(np.stack([np.asarray(observations[a], dtype=np.float32) for a in agents]),
                              device=self.device)
        n, width = len(agents), self.n_agents or len(agents)
        if n != width and not self.shared:
            raise ValueError(f"this policy has a network per UE for {width} UEs and the env has {n}; allowed: an env "
                             f"of {width} UEs, or a policy trained with shared parameters "
                             f"(benchmarl.experiment.share_policy_params=true)")
        groups = -(-n // width)
        padded = torch.cat([obs, obs[:1].expand(groups * width - n, -1)]) if groups * width > n else obs
        batch = padded.reshape(groups, width, -1)
        nvec = env.action_space(agents[0]).nvec
        agent_td = {"observation": batch}
        # a masked policy (dynamics on, discrete actions, task.action_mask) reads the vector env's mask
        if (self.group, "action_mask") in getattr(self.policy, "in_keys", ()):
            active = batch[..., 3 + OBSERVATION_FEATURES.index("active")] > 0.5  # after Eq. (31)'s three values
            agent_td["action_mask"] = action_mask(active, self.action_mode, nvec)
        td = TensorDict({self.group: TensorDict(agent_td, batch_size=(groups, width))},
                        batch_size=(groups,), device=self.device)
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            action = self.policy(td)[self.group, "action"]
            action = action.reshape(groups * width, *action.shape[2:])[:n]
        indices = decode_actions(action.cpu(), self.action_mode, nvec)
        return {agent: indices[i] for i, agent in enumerate(agents)}


def decode_actions(action, action_mode: str, action_nvec) -> np.ndarray:
    """(N, 2) MultiDiscrete indices from the vector env's action encoding, by the vector env's own code."""
    from types import SimpleNamespace

    from his_env.vector import HISVecEnv

    codec = SimpleNamespace(action_mode=action_mode, core=SimpleNamespace(action_nvec=tuple(int(v) for v in action_nvec)))
    return np.asarray(HISVecEnv.decode_actions(codec, action), dtype=np.int64)


def reset_peak_memory() -> None:
    """Start a new peak-memory measurement in this process (Linux: VmHWM via clear_refs; CUDA stats).

    What an earlier run in the same process left behind is collected and handed back to the OS
    first (glibc's malloc_trim), so that a reused worker measures the run it starts, not its past."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: ru_maxrss, the peak since the process started, is what there is
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> Dict[str, float]:
    """Peak resident memory (MB) of this process since `reset_peak_memory`, and on CUDA peak allocated MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    out = {"peak_rss_mb": peak}
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


# ---------------------------------------------------------------------- the run
class StopTraining(Exception):
    """Raised by a callback's `on_train_end` (the time budget, a stop signal): the run ends after this iteration
    as if its budget were spent. Its message is the reason (`HISExperiment.stop_reason`)."""


class NoProgressBar:
    """What BenchMARL's loop uses of tqdm, doing nothing: no output and, unlike a disabled tqdm, no
    multiprocessing lock (a named semaphore under TorchRL's spawn start method)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


class HISExperiment(Experiment):
    """BenchMARL's Experiment that stops on a time budget, can live in a given folder, saves atomically.

    `folder` (optional) is the run folder itself: BenchMARL's `config.pkl`, `checkpoints/` and its
    loggers' folders go there instead of into a subfolder BenchMARL names. Only callbacks marked
    `part_of_run` (agents.benchmarl.normalization.LearnerSwitches) are pickled into `config.pkl`,
    so that a reloaded run keeps them; the others may hold open environments.

    A callback's `StopTraining` ends the run as BenchMARL's frame limit does: the iteration counts,
    the end-of-run checkpoint (`checkpoint_at_end`) is written at its frame count, and
    `stop_reason` holds the exception's message (None when the frame limit ended the run).
    BenchMARL's progress bar (tqdm) is drawn only with `progress_bar=True`.
    """

    def __init__(self, *args, folder: Optional[str | Path] = None, progress_bar: bool = False, **kwargs) -> None:
        self.fixed_folder = Path(folder).resolve() if folder is not None else None
        self.stop_reason: Optional[str] = None
        self.progress_bar = progress_bar
        compat.apply()  # MASAC on a GPU
        super().__init__(*args, **kwargs)

    def _collection_loop(self) -> None:
        import benchmarl.experiment.experiment as module

        bar = module.tqdm
        if not self.progress_bar:  # BenchMARL's loop draws its bar with the module's tqdm
            module.tqdm = NoProgressBar
        try:
            super()._collection_loop()
        finally:
            module.tqdm = bar

    def _setup_name(self) -> None:
        from torchrl.record.loggers import generate_exp_name

        self.algorithm_name = self.algorithm_config.associated_class().__name__.lower()
        self.model_name = self.model_config.associated_class().__name__.lower()
        self.critic_model_name = self.critic_model_config.associated_class().__name__.lower()
        self.environment_name = self.task.env_name().lower()
        self.task_name = self.task.name.lower()
        self._checkpointed_files = deque([])
        if self.fixed_folder is not None:
            self.name = self.fixed_folder.name
            self.folder_name = self.fixed_folder
        else:
            save_folder = Path(self.config.save_folder or os.getcwd())
            self.name = generate_exp_name(f"{self.algorithm_name}_{self.task_name}_{self.model_name}", "")
            self.folder_name = save_folder / self.name
        self.folder_name.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        run_parts = [cb for cb in self.callbacks if getattr(cb, "part_of_run", False)]
        for obj in (self.task, self.task.config or {}, self.algorithm_config, self.model_config, self.seed,
                    self.config, self.critic_model_config, run_parts):
            pickle.dump(obj, buf)
        atomic_write_bytes(self.folder_name / "config.pkl", buf.getvalue())

    def _save_experiment(self) -> None:
        import torch

        if self._checkpointed_files and self._checkpointed_files[-1].name == f"checkpoint_{self.total_frames}.pt":
            return  # the end of a run that has just been checkpointed
        path = self.folder_name / "checkpoints" / f"checkpoint_{self.total_frames}.pt"
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        atomic_write_bytes(path, buf.getvalue())
        self._checkpointed_files.append(path)
        # old ones go only once the new one is on disk: a save cut short leaves the last `keep` in place
        if self.config.keep_checkpoints_num is not None:
            while len(self._checkpointed_files) > self.config.keep_checkpoints_num:
                self._checkpointed_files.popleft().unlink(missing_ok=True)

    def run(self) -> None:
        seed_everything(self.seed)
        try:
            self._collection_loop()
        except StopTraining as stop:
            self.stop_reason = str(stop)
            # raised in on_train_end of the last group, where BenchMARL's loop would count the iteration next
            self.n_iters_performed += 1
            try:
                if self.config.checkpoint_at_end:
                    self._save_experiment()
            finally:
                self.close()
        except BaseException:
            self.close()
            raise


class CurveTracker(Callback):
    """Greedy evaluations on the PettingZoo env along the run, and the stop rules checked after every
    iteration: a stop signal (`signals`, an agents.training.signals.StopSignals), then the time budget."""

    def __init__(self, evaluate, frames_per_point: int, time_budget_s: Optional[float], on_point=None,
                 signals=None) -> None:
        super().__init__()
        self.evaluate = evaluate
        self.frames_per_point = int(frames_per_point)
        self.time_budget_s = time_budget_s
        self.on_point = on_point
        self.signals = signals
        self.points: List[Dict[str, float]] = []
        self.eval_s = 0.0
        self.t0: Optional[float] = None
        self.iterations = 0
        self.last_point_frames = -1

    def start_clock(self) -> None:
        self.t0 = time.perf_counter()

    def train_seconds(self) -> float:
        return time.perf_counter() - (self.t0 or time.perf_counter()) - self.eval_s

    def add_point(self) -> None:
        exp = self.experiment
        frames = int(exp.total_frames)
        if frames == self.last_point_frames:
            return
        train_s = self.train_seconds()
        t = time.perf_counter()
        n_agents = sum(len(agents) for agents in exp.group_map.values())
        point = {"iteration": float(self.iterations), "frames": float(frames),
                 "agent_steps": float(frames * n_agents), "train_s": train_s, **self.evaluate(exp)}
        self.eval_s += time.perf_counter() - t
        self.points.append(point)
        self.last_point_frames = frames
        if self.on_point is not None:
            self.on_point(point)

    def on_train_end(self, training_td, group: str) -> None:
        if group != list(self.experiment.train_group_map)[-1]:
            return  # the iteration ends with its last group's training
        self.iterations += 1
        frames = int(self.experiment.total_frames)
        if self.iterations == 1 or frames % self.frames_per_point == 0:
            self.add_point()
        if self.signals is not None and self.signals.requested:
            raise StopTraining(f"interrupted ({self.signals.requested})")
        if self.time_budget_s is not None and self.train_seconds() >= self.time_budget_s:
            raise StopTraining(f"time limit {self.time_budget_s:.0f} s")


def build_experiment(spec: RunSpec, folder: str | Path, callbacks: Sequence[Any] = (), fixed_folder: bool = False,
                     restore_file: Optional[str | Path] = None, progress_bar: bool = False, task=None):
    """BenchMARL's Experiment for `spec` on `task` (default: `build_task(spec)`); its files go to `folder` (or a
    subfolder BenchMARL names). With `restore_file` (one of its checkpoints) it continues from that checkpoint's
    state, loaded onto `spec.device`."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    overrides = dict(spec.experiment)
    overrides.setdefault("sampling_device", spec.device)
    overrides.setdefault("train_device", spec.device)
    overrides.setdefault("buffer_device", spec.device)
    if spec.time_budget_s is not None:
        overrides["max_n_frames"] = spec.frame_budget or UNBOUNDED_FRAMES
    elif spec.frame_budget is not None:
        overrides["max_n_frames"] = int(spec.frame_budget)
    overrides["max_n_iters"] = None
    loggers = [name for name in overrides.get("loggers", experiment_config(spec.experiment).loggers) if name != "wandb"]
    if spec.wandb_mode != "disabled":
        loggers.append("wandb")
        extra = dict(overrides.get("wandb_extra_kwargs") or {})
        extra.setdefault("mode", spec.wandb_mode)
        overrides["wandb_extra_kwargs"] = extra
        overrides.setdefault("project_name", spec.wandb_project)
    overrides["loggers"] = loggers
    if not fixed_folder:
        overrides["save_folder"] = str(folder)
    if restore_file is not None:
        overrides.update(restore_file=str(restore_file), restore_map_location=spec.device)
    cfg = experiment_config(overrides)
    task = build_task(spec) if task is None else task
    if "gamma" not in spec.experiment:  # not set for this run: the task's (agents.config.default_discount)
        cfg.gamma = default_discount(task.his_config())
    model = model_config(spec.hidden, spec.activation)
    if any(v not in (None, False) for v in spec.learner_switches.values()):
        from agents.benchmarl.normalization import LearnerSwitches

        callbacks = [LearnerSwitches(**spec.learner_switches), *callbacks]
    return HISExperiment(task=task, algorithm_config=algorithm_config(spec.algorithm, spec.algorithm_settings),
                         model_config=model, critic_model_config=model_config(spec.hidden, spec.activation),
                         seed=int(spec.seed), config=cfg, callbacks=list(callbacks),
                         folder=folder if fixed_folder else None, progress_bar=progress_bar)


def greedy_policy(experiment) -> "BenchmarlGreedyPolicy":
    """The deterministic policy of a BenchMARL experiment, acting on the PettingZoo env."""
    action_mode = "continuous" if experiment.continuous_actions else "categorical"
    return BenchmarlGreedyPolicy(experiment.policy, "agents", action_mode, experiment.config.sampling_device,
                                 n_agents=len(experiment.group_map["agents"]),
                                 shared=bool(experiment.config.share_policy_params))


def greedy_evaluator(spec: RunSpec, task_his_config, references: Optional[Mapping[str, float]] = None):
    """A function experiment -> {utility, quality, delay, energy[, score]} on the PettingZoo env."""
    from agents.evaluation import evaluate_policy, mean_metric, normalized_score
    from his_env import parallel_env

    env = parallel_env(task_his_config)
    env_dict = task_his_config.to_dict()

    def evaluate(experiment) -> Dict[str, float]:
        rows = evaluate_policy(greedy_policy(experiment), env_dict, spec.eval_seeds, env=env)
        out = {key: mean_metric(rows, key) for key in ("utility", "quality", "delay", "energy")}
        if references:
            out["score"] = normalized_score(out["utility"], references["random"], references["search"])
        return out

    return evaluate


def run_benchmarl(spec: RunSpec, folder: str | Path, references: Optional[Mapping[str, float]] = None,
                  on_point=None, fixed_folder: bool = False, extra_callbacks: Sequence[Any] = (),
                  task=None) -> Dict[str, Any]:
    """Train `spec` and return {"summary": {...}, "curve": [points]} (see the module docstring).

    `references` = {"random": U_random, "search": U_search} on `spec.eval_seeds` adds normalised
    scores; `on_point(point)` is called at every curve point (for progress output); `task` is the
    run's task if the caller has built it (`build_task(spec)`).
    """
    import torch

    task = validate_spec(spec, task)
    reset_peak_memory()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    t_start = time.perf_counter()
    evaluate = greedy_evaluator(spec, task.his_config(), references)
    cfg = experiment_config(spec.experiment)
    tracker = CurveTracker(evaluate, cfg.evaluation_interval, spec.time_budget_s, on_point)
    experiment = build_experiment(spec, folder, [tracker, *extra_callbacks], fixed_folder=fixed_folder, task=task)
    n_agents = sum(len(agents) for agents in experiment.group_map.values())
    build_s = time.perf_counter() - t_start
    tracker.start_clock()  # training time starts now, not at construction
    experiment.run()
    tracker.add_point()  # the final policy (skipped when the last iteration already has a point)
    final = tracker.points[-1]
    train_s = final["train_s"]
    frames = int(experiment.total_frames)
    summary = {
        "algorithm": spec.algorithm, "scheme": spec.scheme, "seed": spec.seed,
        "continuous_actions": bool(experiment.continuous_actions),
        "iterations": tracker.iterations, "frames": frames, "agent_steps": frames * n_agents,
        "train_s": train_s, "build_s": build_s, "eval_s": tracker.eval_s,
        "wall_s": time.perf_counter() - t_start,
        "agent_steps_per_s": frames * n_agents / train_s if train_s > 0 else math.nan,
        "utility": final["utility"], "quality": final["quality"], "delay": final["delay"],
        "energy": final["energy"], "score": final.get("score", math.nan),
        "host": socket.gethostname(), "pid": os.getpid(), "folder": str(experiment.folder_name),
        **peak_memory(),
    }
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a Ray task: say which node ran it
        summary["node_ip"] = ray.util.get_node_ip_address()
        summary["node_id"] = ray.get_runtime_context().get_node_id()
    return {"summary": summary, "curve": tracker.points, "experiment": experiment, "task": task}
