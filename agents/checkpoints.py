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
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, unreadable, or does not match its run record."""


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
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {RUN_INFO_FILE} is corrupt ({exc})") from exc
    if not isinstance(info, dict):
        raise CheckpointError(f"checkpoint {str(path)!r}: {RUN_INFO_FILE} is corrupt (not a JSON object)")
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
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(checkpoint_iteration(p), p) for p in root.iterdir() if p.is_dir()]
    return [p for it, p in sorted((it, p) for it, p in found if it is not None)]


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
    """Remove the temporary folders (`.iter_*.tmp`, `.iter_*.old`) that a save interrupted by a
    crash or kill leaves behind; they never hold a complete checkpoint under its final name."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for p in root.iterdir():
        if p.name.startswith(f".{CHECKPOINT_PREFIX}") and (p.name.endswith(".tmp") or p.name.endswith(".old")):
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
    """A sentence to add to an error about `run_dir` when it holds BenchMARL checkpoints (a run of
    train.py --backend benchmarl, whose checkpoints RLlib cannot restore), else ''."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not (root.is_dir() and any(root.glob("checkpoint_*.pt"))):
        return ""
    return (" (it holds BenchMARL checkpoints, checkpoints/checkpoint_<frames>.pt, of train.py --backend benchmarl: "
            "train.py --resume and evaluate.py restore RLlib runs only; continue a BenchMARL run with "
            "benchmarl.experiment.Experiment.reload_from_file, its greedy evaluation is in its eval.md)")


def resolve_checkpoint(path: str | Path) -> Path:
    """The absolute checkpoint folder from a checkpoint path, a `checkpoints/` folder or a run's
    output dir (RLlib's loaders need absolute paths)."""
    if not Path(path).expanduser().exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    path = Path(path).expanduser().resolve()
    if (path / RUN_INFO_FILE).is_file():
        return path
    for root in (path, path / CHECKPOINTS_DIR):
        name = latest_checkpoint_name(root)
        if name is not None:
            candidate = root / name
            if (candidate / RUN_INFO_FILE).is_file():
                return candidate
        found = [p for p in list_checkpoints(root) if (p / RUN_INFO_FILE).is_file()]
        if found:
            return found[-1]
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
                data = pickle.load(fh)
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
