"""Atomic checkpoints of a training run and the files that go with them.

A checkpoint is a folder `<run>/checkpoints/iter_<NNNNNN>/` holding RLlib's algorithm
checkpoint (weights, optimiser state, Learner state with the reward-normalisation
statistics, iteration and lifetime counters) plus `his_run.json`, the run record: the
resolved env, algorithm and experiment configs, algo, counters, elapsed time, W&B run id, the run's
checkpoint cadence and the metrics row of the checkpoint's iteration. The record holds no
path: the folder a checkpoint sits in is its run.

A checkpoint is written to a temporary sibling folder `.iter_<NNNNNN>.<random>.tmp` and
renamed into place, so a crash never leaves a half-written checkpoint under the final name
(leftover temporary folders are removed by `clean_interrupted_saves`); `checkpoints/latest`
(a one-line text file, replaced atomically) names the newest one. Pruning only removes
checkpoints older than the one just written.

Runs of `train.py --backend benchmarl` keep BenchMARL's checkpoints instead, one file per
checkpoint, `<run>/checkpoints/checkpoint_<env steps>.pt` (written atomically by
agents.benchmarl.experiment.HISExperiment; an interrupted save leaves a temporary
`.checkpoint_<env steps>.pt.<random>.tmp`, removed by `clean_interrupted_saves` as well); their run
record is the run folder's `config.yaml` plus the `his_run` entry of each checkpoint's state. The
backend of a run folder is the `backend:` of its `config.yaml` (`run_backend`; RLlib runs write
none). `RLLIB` and `BENCHMARL` (`CHECKPOINT_KINDS`) say how each backend's checkpoints are
named, listed, found and read, so that resuming (agents.training.run_folder) and evaluating
(`find_checkpoint`) are one implementation for both.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from agents.config import ConfigError, RunConfig, split_train_section
from his_common.storage import atomic_write_text

RUN_INFO_FILE = "his_run.json"
# Keys of the run record that hold the parts of the run's `agents.config.RunConfig`.
RECORD_CONFIG_KEYS = {"env": "env_config", "algorithm": "algorithm_config", "experiment": "experiment_config"}
LATEST_FILE = "latest"
CHECKPOINT_PREFIX = "iter_"
CHECKPOINTS_DIR = "checkpoints"
MODULES_DIR = Path("learner_group") / "learner" / "rl_module"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# RLlib pickles classes by import path into its checkpoints (`class_and_ctor_args.pkl` of the
# algorithm, its learner and each RLModule: the RLModule, learner, env runner and callback classes).
# The RLlib-only modules moved from `agents.<name>` to `agents.rllib.<name>`; a checkpoint written
# before the move names the old paths, which `alias_moved_modules` makes resolve again.
MOVED_RLLIB_MODULES = {f"agents.{name}": f"agents.rllib.{name}"
                       for name in ("callbacks", "env_adapter", "env_runner", "ippo", "learner", "modules",
                                    "normalization")}

# BenchMARL's `config.pkl` of a run folder names the task class and the callbacks that are part of
# the run by import path too. Our own resume and evaluation rebuild the experiment from the run's
# config.yaml and do not read it; BenchMARL's `Experiment.reload_from_file` does, and reloads a run
# folder written before the move after `alias_moved_modules(MOVED_BENCHMARL_MODULES)`.
MOVED_BENCHMARL_MODULES = {"his_env.vector.benchmarl_task": "agents.benchmarl.task",
                           **{f"agents.benchmarl_{name}": f"agents.benchmarl.{name}"
                              for name in ("experiment", "normalization", "training")}}


def alias_moved_modules(moved: Mapping[str, str] = MOVED_RLLIB_MODULES) -> None:
    """Make the old import paths of moved modules name the moved modules (in `sys.modules`), so
    that checkpoints pickled before the move unpickle. Imports the moved modules (Ray for RLlib's,
    BenchMARL for MOVED_BENCHMARL_MODULES); call it just before the library reads a checkpoint."""
    import importlib
    import sys

    for old, new in moved.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)


class _MovedModulesUnpickler(pickle.Unpickler):
    """An unpickler that reads the old import paths of MOVED_RLLIB_MODULES as the new ones (and
    imports nothing a pickle does not name: no Ray for pickles without RLlib classes)."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED_RLLIB_MODULES.get(module, module), name)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, unreadable, or does not match its run record."""


class LooseCheckpointError(CheckpointError):
    """A checkpoint outside a run folder, where its run folder is needed."""


def checkpoint_name(iteration: int) -> str:
    return f"{CHECKPOINT_PREFIX}{int(iteration):06d}"


def checkpoint_iteration(path: str | Path) -> Optional[int]:
    """The iteration in a checkpoint folder's name (`iter_000012` -> 12), or None."""
    name = Path(path).name
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    digits = name[len(CHECKPOINT_PREFIX):]
    return int(digits) if digits.isdigit() else None


def read_run_info(checkpoint: str | Path) -> Dict[str, Any]:
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a directory (expected a folder written by train.py)")
    info_file = path / RUN_INFO_FILE
    if not info_file.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no {RUN_INFO_FILE}: not a complete train.py checkpoint")
    info = read_mapping(info_file, json.loads, json.JSONDecodeError, f"checkpoint {str(path)!r}: {RUN_INFO_FILE}")
    if "train_config" in info and "algorithm_config" not in info:  # a record written before the split
        try:
            parts = split_train_section(info.pop("train_config") or {})
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {str(path)!r}: {RUN_INFO_FILE}: {exc}") from exc
        info["algorithm_config"], info["experiment_config"] = parts["algorithm"], parts["experiment"]
    for key in ("algo", *RECORD_CONFIG_KEYS.values(), "iteration"):
        if key not in info:
            raise CheckpointError(f"checkpoint {str(path)!r}: {RUN_INFO_FILE} lacks {key!r}")
    return info


def record_config(run: RunConfig) -> Dict[str, Any]:
    """The run record's config entries of a `RunConfig`."""
    return {RECORD_CONFIG_KEYS[name]: part for name, part in run.to_dict().items()}


def run_config_from_record(info: Mapping[str, Any]) -> RunConfig:
    """The `RunConfig` a run record holds (a `ConfigError` if it no longer validates)."""
    return RunConfig.from_dict({name: info[key] for name, key in RECORD_CONFIG_KEYS.items()})


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full (no space left on device)"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    return f"{type(exc).__name__}: {exc}"


def save_checkpoint(algo, checkpoint_root: str | Path, run_info: Mapping[str, Any], keep: int = 2) -> Path:
    """Save `algo` + `run_info` atomically as `checkpoint_root/iter_<iteration>`, point `latest`
    at it, and prune checkpoints of lower iterations down to the `keep` newest (the one just
    written always stays). A failed save leaves every earlier checkpoint as it was and raises
    CheckpointError saying so."""
    root = Path(checkpoint_root)
    final = root / checkpoint_name(run_info["iteration"])
    try:
        previous = latest_checkpoint_name(root)
    except CheckpointError:  # a damaged `latest` is replaced by this save
        previous = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    except OSError as exc:
        raise CheckpointError(f"cannot save checkpoint {final.name} in {str(root)!r}: {_describe_os_error(exc)}") from exc
    try:
        algo.save_to_path(str(tmp))
        info_text = json.dumps(dict(run_info), indent=2, sort_keys=True, default=str)
        with open(tmp / RUN_INFO_FILE, "w", encoding="utf-8") as fh:
            fh.write(info_text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders; give the usual permissions
        if final.exists():  # the same iteration saved again (e.g. final save after a periodic one)
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=root))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        atomic_write_text(root / LATEST_FILE, final.name + "\n")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = (f"the previous checkpoint {previous} is intact" if previous
                else "no earlier checkpoint exists")
        raise CheckpointError(f"saving checkpoint {final.name} in {str(root)!r} failed: {_describe_os_error(exc)}; "
                              f"{kept}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_checkpoints(root, keep, newest=final)
    return final


def list_checkpoints(root: str | Path) -> List[Path]:
    """Complete-looking checkpoint folders under `root`, oldest iteration first."""
    return _numbered_entries(root, checkpoint_iteration, Path.is_dir)


def _numbered_entries(root: str | Path, number: Callable[[Path], Optional[int]], kind: Callable[[Path], bool]
                      ) -> List[Path]:
    """The entries of folder `root` of `kind` (Path.is_dir, Path.is_file) whose name has a `number`, by number."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(number(p), p) for p in root.iterdir() if kind(p)]
    return [p for n, p in sorted((n, p) for n, p in found if n is not None)]


def prune_checkpoints(root: str | Path, keep: int, newest: str | Path) -> List[Path]:
    """Remove checkpoints of lower iteration than `newest` beyond the `keep` most recent ones
    (counting `newest`). Checkpoints of higher iteration and `newest` itself are never removed."""
    if keep <= 0:
        return []
    newest_it = checkpoint_iteration(newest)
    older = [p for p in list_checkpoints(root) if (checkpoint_iteration(p) or 0) < (newest_it or 0)]
    doomed = older[:max(len(older) - (keep - 1), 0)]
    for old in doomed:
        shutil.rmtree(old, ignore_errors=True)
    return doomed


def clean_interrupted_saves(root: str | Path) -> List[Path]:
    """Remove what a save interrupted by a crash or kill leaves behind: RLlib's temporary folders
    (`.iter_*.tmp`, `.iter_*.old`) and BenchMARL's temporary files (`.checkpoint_*.pt.*.tmp`); they
    never hold a complete checkpoint under its final name."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    prefixes = (f".{CHECKPOINT_PREFIX}", f".{BENCHMARL_PREFIX}")
    for p in root.iterdir():
        if p.name.startswith(prefixes) and (p.name.endswith(".tmp") or p.name.endswith(".old")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def latest_checkpoint_name(root: str | Path) -> Optional[str]:
    """The name written in `root/latest`, or None when there is none. A `latest` file that is not
    a one-line checkpoint name raises CheckpointError."""
    latest = Path(root) / LATEST_FILE
    if not latest.is_file():
        return None
    try:
        name = latest.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{str(latest)!r} is unreadable or not text ({exc}); it should hold one checkpoint "
                              f"name such as 'iter_000010' (delete it to use the newest complete checkpoint)") from exc
    if checkpoint_iteration(name) is None or "/" in name or "\n" in name:
        raise CheckpointError(f"{str(latest)!r} holds {name[:60]!r}, not a checkpoint name such as 'iter_000010' "
                              f"(delete it to use the newest complete checkpoint)")
    return name


def benchmarl_run_note(run_dir: str | Path) -> str:
    """A sentence to add to an error of the RLlib side about `run_dir` when it holds BenchMARL
    checkpoints (a run of train.py --backend benchmarl, which RLlib cannot restore), else ''."""
    if not list_benchmarl_checkpoints(Path(run_dir) / CHECKPOINTS_DIR):
        return ""
    return (" (it holds BenchMARL checkpoints, checkpoints/checkpoint_<env steps>.pt, of train.py --backend benchmarl, "
            "which RLlib cannot restore: train.py --resume and evaluate.py --checkpoint take the backend from the "
            "run folder; in Python, agents.benchmarl.training.resume_benchmarl continues it)")


def newest_complete_checkpoint(root: str | Path) -> Optional[Path]:
    """The checkpoint folder `root/latest` names if it is complete, else the complete one of the
    highest iteration, else None."""
    root = Path(root)
    name = latest_checkpoint_name(root)
    if name is not None and (root / name / RUN_INFO_FILE).is_file():
        return root / name
    found = [p for p in list_checkpoints(root) if (p / RUN_INFO_FILE).is_file()]
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """The absolute RLlib checkpoint folder from a checkpoint path, a `checkpoints/` folder or a
    run's output dir (RLlib's loaders need absolute paths). `find_checkpoint` takes either backend."""
    if not Path(path).expanduser().exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    path = Path(path).expanduser().resolve()
    if (path / RUN_INFO_FILE).is_file():
        return path
    for root in (path, path / CHECKPOINTS_DIR):
        found = newest_complete_checkpoint(root)
        if found is not None:
            return found
    raise CheckpointError(f"{str(path)!r} is neither a train.py checkpoint (no {RUN_INFO_FILE}) nor a run "
                          f"folder with checkpoints/{benchmarl_run_note(path)}")


def validate_checkpoint(path: str | Path) -> Dict[str, Any]:
    """run_info of a checkpoint after checking that RLlib's files are all there."""
    path = Path(path)
    info = read_run_info(path)
    required = ["rllib_checkpoint.json", "algorithm_state.pkl", "learner_group/learner/state.pkl",
                "learner_group/learner/rl_module"]
    missing = [r for r in required if not (path / r).exists()]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: missing {', '.join(missing)}")
    try:
        json.loads((path / "rllib_checkpoint.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: rllib_checkpoint.json is corrupt ({exc})") from exc
    return info


# ---------------------------------------------------------------------- BenchMARL checkpoints, both kinds
BENCHMARL_PREFIX = "checkpoint_"
BENCHMARL_SUFFIX = ".pt"
BENCHMARL_RECORD_KEY = "his_run"  # the run record in the state of a BenchMARL checkpoint
CONFIG_FILE = "config.yaml"
# Top-level keys of a BenchMARL run's config.yaml that are not env keys.
BENCHMARL_CONFIG_KEYS = ("backend", "algorithm", "experiment", "benchmarl", "benchmarl_overrides", "backend_unused")
BACKENDS = ("rllib", "benchmarl")


def benchmarl_checkpoint_frames(path: str | Path) -> Optional[int]:
    """The env steps in a BenchMARL checkpoint file's name (`checkpoint_120.pt` -> 120), or None."""
    name = Path(path).name
    digits = name[len(BENCHMARL_PREFIX):-len(BENCHMARL_SUFFIX)]
    ok = name.startswith(BENCHMARL_PREFIX) and name.endswith(BENCHMARL_SUFFIX) and digits.isdigit()
    return int(digits) if ok else None


def list_benchmarl_checkpoints(root: str | Path) -> List[Path]:
    """BenchMARL checkpoint files under `root`, fewest env steps first."""
    return _numbered_entries(root, benchmarl_checkpoint_frames, Path.is_file)


def read_mapping(path: Path, parse: Callable[[str], Any], parse_error: type, what: str) -> Dict[str, Any]:
    """The mapping that text file `path` holds, read by `parse`; CheckpointError naming `what` when the
    file cannot be read or parsed (`parse_error`) or holds no mapping."""
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, parse_error) as exc:
        raise CheckpointError(f"{what} is corrupt ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} is corrupt (not a mapping)")
    return data


def read_run_config_file(run_dir: str | Path) -> Dict[str, Any]:
    """A run folder's config.yaml as a mapping ({} when there is none); a damaged one raises."""
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    return read_mapping(path, yaml.safe_load, yaml.YAMLError, repr(str(path))) if path.is_file() else {}


def run_backend(run_dir: str | Path) -> str:
    """The backend that trained the run in `run_dir`: its config.yaml's `backend:`; without one (or without
    a readable config.yaml), benchmarl when it holds BenchMARL checkpoints, else rllib (RLlib runs write no
    `backend:`, and their checkpoints hold their whole run record)."""
    try:
        backend = read_run_config_file(run_dir).get("backend")
    except CheckpointError:
        backend = None
    if backend is None:
        return "benchmarl" if list_benchmarl_checkpoints(Path(run_dir) / CHECKPOINTS_DIR) else "rllib"
    if backend not in BACKENDS:
        raise CheckpointError(f"{str(Path(run_dir) / CONFIG_FILE)!r} has backend {backend!r}; allowed: "
                              f"{', '.join(BACKENDS)}")
    return str(backend)


def benchmarl_run_info(checkpoint: str | Path) -> Dict[str, Any]:
    """The run record of a BenchMARL checkpoint, in the keys of an RLlib run record: backend, algo,
    env_config, algorithm_config, experiment_config (from the run folder's config.yaml), iteration,
    env_steps, and what the checkpoint's `his_run` entry holds (elapsed_s, metrics_row, W&B run,
    checkpoint cadence). A file that is not a complete checkpoint raises CheckpointError."""
    path = Path(checkpoint)
    frames = benchmarl_checkpoint_frames(path)
    if frames is None or not path.is_file():
        raise CheckpointError(f"{str(path)!r} is not a BenchMARL checkpoint (expected a file "
                              f"RUN/{CHECKPOINTS_DIR}/{BENCHMARL_PREFIX}<env steps>{BENCHMARL_SUFFIX})")
    run_dir = path.parent.parent
    config = read_run_config_file(run_dir)
    try:
        per_iteration = int(config["benchmarl"]["experiment"]["on_policy_collected_frames_per_batch"])
        algorithm, experiment = dict(config["algorithm"]), dict(config.get("experiment") or {})
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint {str(path)!r}: {str(run_dir / CONFIG_FILE)!r} is not the config.yaml of a "
                              f"train.py --backend benchmarl run (it needs algorithm: and "
                              f"benchmarl.experiment.on_policy_collected_frames_per_batch)") from None
    if per_iteration < 1 or frames % per_iteration:
        raise CheckpointError(f"checkpoint {str(path)!r}: {frames} env steps is not a whole number of iterations of "
                              f"{per_iteration} env steps (the run's config.yaml)")
    try:
        import torch

        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        record = dict(state.get(BENCHMARL_RECORD_KEY) or {})
        counters = state["state"]
    except Exception as exc:  # noqa: BLE001 - any failure to read a damaged file
        raise CheckpointError(f"checkpoint {str(path)!r} is not a complete BenchMARL checkpoint "
                              f"({type(exc).__name__}: {exc})") from exc
    if int(counters["total_frames"]) != frames:
        raise CheckpointError(f"checkpoint {str(path)!r} holds {int(counters['total_frames'])} env steps, not the "
                              f"{frames} in its name")
    env = {k: v for k, v in config.items() if k not in BENCHMARL_CONFIG_KEYS}
    return {**record, "backend": "benchmarl", "algo": str(algorithm.get("algo")), "env_config": env,
            "algorithm_config": algorithm, "experiment_config": experiment,
            "benchmarl_config": dict(config.get("benchmarl_overrides") or {}),
            "iteration": int(counters["n_iters_performed"]), "env_steps": frames}


class RLlibCheckpoints:
    """train.py's RLlib checkpoints: folders `iter_NNNNNN/` with a run record, and `latest`."""

    backend = "rllib"
    example = f"RUN/{CHECKPOINTS_DIR}/{CHECKPOINT_PREFIX}NNNNNN"

    def is_checkpoint(self, path: Path) -> bool:
        return (path / RUN_INFO_FILE).is_file()

    def position(self, path: Path) -> Optional[int]:
        """Where a checkpoint stands in the run (grows with the iteration): its iteration."""
        return checkpoint_iteration(path)

    def list(self, root: Path) -> List[Path]:
        return list_checkpoints(root)

    def newest(self, root: Path) -> Optional[Path]:
        return newest_complete_checkpoint(root)

    def read(self, path: Path) -> Dict[str, Any]:
        """The checked run record (a CheckpointError when the checkpoint is incomplete, or named for another
        iteration; a folder of another name, such as a copy, is read by its record)."""
        info = validate_checkpoint(path)
        if checkpoint_iteration(path) not in (None, int(info["iteration"])):
            raise CheckpointError(f"checkpoint {str(path)!r} records iteration {info['iteration']}, not the one in "
                                  f"its name")
        return {**info, "backend": self.backend}


class BenchmarlCheckpoints:
    """train.py --backend benchmarl's checkpoints: files `checkpoint_<env steps>.pt` (atomic writes: every
    one under its final name is complete)."""

    backend = "benchmarl"
    example = f"RUN/{CHECKPOINTS_DIR}/{BENCHMARL_PREFIX}<env steps>{BENCHMARL_SUFFIX}"

    def is_checkpoint(self, path: Path) -> bool:
        return path.is_file() and benchmarl_checkpoint_frames(path) is not None

    def position(self, path: Path) -> Optional[int]:
        """Where a checkpoint stands in the run (grows with the iteration): its env steps."""
        return benchmarl_checkpoint_frames(path)

    def list(self, root: Path) -> List[Path]:
        return list_benchmarl_checkpoints(root)

    def newest(self, root: Path) -> Optional[Path]:
        found = list_benchmarl_checkpoints(root)
        return found[-1] if found else None

    def read(self, path: Path) -> Dict[str, Any]:
        return benchmarl_run_info(path)


RLLIB = RLlibCheckpoints()
BENCHMARL = BenchmarlCheckpoints()
CHECKPOINT_KINDS = {kind.backend: kind for kind in (RLLIB, BENCHMARL)}
CheckpointKind = RLlibCheckpoints | BenchmarlCheckpoints


def locate_run(path: str | Path, kinds: Sequence[CheckpointKind] = (RLLIB, BENCHMARL)) -> Tuple[Path, Optional[Path]]:
    """(run folder, checkpoint) that a --resume or --checkpoint `path` names: a checkpoint of one of
    `kinds` (its run folder is the one its `checkpoints/` lies in), a `checkpoints/` folder or a run
    folder (checkpoint None). A checkpoint outside a run folder, or a path that does not exist, raises."""
    given = Path(path).expanduser()
    if not given.exists():
        raise CheckpointError(f"{str(path)!r} does not exist")
    given = given.resolve()
    kind = next((k for k in kinds if k.is_checkpoint(given)), None)
    if kind is None:
        return (given.parent if given.name == CHECKPOINTS_DIR else given), None
    if given.parent.name != CHECKPOINTS_DIR:
        raise LooseCheckpointError(f"{str(path)!r} is a checkpoint outside a run folder (expected {kind.example}); "
                              f"give the run folder it came from, or copy the whole run folder")
    return given.parent.parent, given


def find_checkpoint(path: str | Path) -> Tuple[CheckpointKind, Path]:
    """The kind (backend) and the absolute checkpoint of a checkpoint path, a `checkpoints/` folder or
    a run folder (its newest complete checkpoint), for either backend. An RLlib checkpoint folder may lie
    anywhere (its run record is inside it); a BenchMARL one needs its run folder's config.yaml."""
    given = Path(path).expanduser()
    if given.exists() and RLLIB.is_checkpoint(given.resolve()):
        return RLLIB, given.resolve()
    run_dir, checkpoint = locate_run(path, (BENCHMARL,))
    kind = CHECKPOINT_KINDS[run_backend(run_dir)]
    if checkpoint is None:
        checkpoint = kind.newest(run_dir / CHECKPOINTS_DIR)
    if checkpoint is None or not kind.is_checkpoint(checkpoint):
        raise CheckpointError(f"{str(path)!r} is neither a train.py checkpoint nor a run folder with one in "
                              f"{CHECKPOINTS_DIR}/ (a run of --backend {kind.backend} keeps {kind.example})")
    return kind, checkpoint


# ---------------------------------------------------------------------- the modules a checkpoint holds
ModuleShapes = Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]]


def space_shape(space) -> Tuple[int, ...]:
    """(observation size,) of a Box, or the nvec of a MultiDiscrete, as a tuple of ints."""
    nvec = getattr(space, "nvec", None)
    if nvec is not None:
        return tuple(int(n) for n in nvec)
    n = getattr(space, "n", None)
    if n is not None and getattr(space, "shape", None) == ():
        return (int(n),)
    shape = getattr(space, "shape", None) or ()
    size = 1
    for d in shape:
        size *= int(d)
    return (size,)


def checkpoint_module_shapes(checkpoint: str | Path) -> ModuleShapes:
    """{module id: (observation size, action nvec)} of the RLModules stored in a checkpoint, read
    from each module's saved constructor arguments."""
    module_dir = Path(checkpoint) / MODULES_DIR
    if not module_dir.is_dir():
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} has no RLModule folder {str(MODULES_DIR)!r}")
    shapes: ModuleShapes = {}
    for sub in sorted(p for p in module_dir.iterdir() if p.is_dir()):
        ctor = sub / "class_and_ctor_args.pkl"
        try:
            with open(ctor, "rb") as fh:
                data = _MovedModulesUnpickler(fh).load()  # it names the RLModule class by import path
            kwargs = data["ctor_args_and_kwargs"][1]
            shapes[sub.name] = (space_shape(kwargs["observation_space"]), space_shape(kwargs["action_space"]))
        except Exception as exc:  # noqa: BLE001 - any unpickling failure of a damaged file
            raise CheckpointError(f"checkpoint {str(checkpoint)!r}: cannot read module {sub.name!r} "
                                  f"({type(exc).__name__}: {exc})") from exc
    if not shapes:
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} holds no RLModules")
    return shapes


def describe_module_mismatch(expected: ModuleShapes, found: ModuleShapes) -> Optional[str]:
    """None when module ids and observation/action sizes agree, else what differs, in words."""
    def ids(names: Sequence[str]) -> str:
        names = list(names)
        return ", ".join(names) if len(names) <= 4 else f"{names[0]}..{names[-1]} ({len(names)} modules)"

    if set(expected) != set(found):
        return f"modules {ids(found)} where the run record implies {ids(expected)}"
    for mid in expected:
        if expected[mid] != found[mid]:
            (eo, ea), (fo, fa) = expected[mid], found[mid]
            return (f"module {mid!r} has observation size {fo[0]} and action sizes {list(fa)} where the run "
                    f"record implies {eo[0]} and {list(ea)}")
    return None
