"""Atomic checkpoints of a train.py run and the files that go with them.

A checkpoint is a folder `<output>/checkpoints/iter_<NNNNNN>/` holding RLlib's algorithm
checkpoint (weights, optimiser state, Learner state with the reward-normalisation
statistics, iteration and lifetime counters) plus `his_run.json` (the resolved env, algorithm
and experiment configs, algo, counters, elapsed time, W&B run id). It is written to a temporary sibling
folder and renamed into place, so a crash never leaves a half-written checkpoint under the
final name; `<output>/checkpoints/latest` (a one-line text file, replaced atomically) names
the newest one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping

from agents.config import ConfigError, RunConfig, split_train_section
from his_common.storage import atomic_write_text

RUN_INFO_FILE = "his_run.json"
# Keys of the run record that hold the parts of the run's `agents.config.RunConfig`.
RECORD_CONFIG_KEYS = {"env": "env_config", "algorithm": "algorithm_config", "experiment": "experiment_config"}
LATEST_FILE = "latest"
CHECKPOINT_PREFIX = "iter_"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or unreadable."""


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
        info = json.loads(info_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: {RUN_INFO_FILE} is corrupt ({exc})") from exc
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


def save_checkpoint(algo, checkpoint_root: str | Path, run_info: Mapping[str, Any], keep: int = 2) -> Path:
    """Save `algo` + `run_info` atomically as `checkpoint_root/iter_<iteration>`; prune old ones."""
    root = Path(checkpoint_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CHECKPOINT_PREFIX}{int(run_info['iteration']):06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        algo.save_to_path(str(tmp))
        (tmp / RUN_INFO_FILE).write_text(json.dumps(dict(run_info), indent=2, sort_keys=True, default=str))
        if final.exists():  # the same iteration saved again (e.g. final save after a periodic one)
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=root))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST_FILE, final.name + "\n")
    prune_checkpoints(root, keep)
    return final


def list_checkpoints(root: str | Path) -> List[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX))


def prune_checkpoints(root: str | Path, keep: int) -> None:
    if keep <= 0:
        return
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """The absolute checkpoint folder from a checkpoint path, a `checkpoints/` folder or a run's
    output dir (RLlib's loaders need absolute paths)."""
    if not Path(path).expanduser().exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    path = Path(path).expanduser().resolve()
    if (path / RUN_INFO_FILE).is_file():
        return path
    for root in (path, path / "checkpoints"):
        latest = root / LATEST_FILE
        if latest.is_file():
            candidate = root / latest.read_text().strip()
            if (candidate / RUN_INFO_FILE).is_file():
                return candidate
        found = [p for p in list_checkpoints(root) if (p / RUN_INFO_FILE).is_file()]
        if found:
            return found[-1]
    raise CheckpointError(f"{str(path)!r} is neither a train.py checkpoint (no {RUN_INFO_FILE}) nor a run "
                          f"folder with checkpoints/")


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
        json.loads((path / "rllib_checkpoint.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: rllib_checkpoint.json is corrupt ({exc})") from exc
    return info
