"""The run folder of a training run and what resuming one means, for both backends of train.py.

    <run>/config.yaml          the resolved configuration (`backend: benchmarl` for a BenchMARL run)
    <run>/metrics.jsonl, .csv  one row per iteration (agents.training.metrics_files)
    <run>/checkpoints/         iter_NNNNNN/ checkpoints and `latest`, or BenchMARL's
                               checkpoint_<env steps>.pt (agents.checkpoints)
    <run>/eval.csv, eval.md    the final greedy evaluation
    <run>/plots/               the learning curve
    <run>/wandb/               the W&B run files (offline mode)
    <run>/superseded/          history set aside by a resume from an older checkpoint

**The folder given to --resume is the run.** `--resume RUN` continues RUN from its latest
checkpoint; `--resume RUN/checkpoints/iter_N` (BenchMARL: `RUN/checkpoints/checkpoint_<env
steps>.pt`) continues RUN from that iteration, on the run's own backend (`resume_backend`). Nothing is read
from, or written to, any other folder, whatever path the run recorded (a copied or moved run
folder is a run of its own).

**Resuming from the middle.** A run continues from the iteration of the checkpoint it
restores. Whatever the run folder holds beyond that iteration (later checkpoints, and metrics
rows of iterations that were trained but not checkpointed before a crash) is history that the
resumed run replaces: it is moved, not deleted, to `<run>/superseded/after_iter_N-<time>/`
(its `checkpoints/` and `metrics.jsonl`), and a message says so. The run folder then always
holds one linear history: metrics rows 1..N, checkpoints up to N, and from there on the
resumed run. `plan_resume` and `set_aside_later_history` do this for either backend, given its
kind of checkpoint (agents.checkpoints.RLLIB, the default, or BENCHMARL).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from agents.checkpoints import (CHECKPOINTS_DIR, CONFIG_FILE, RLLIB, CheckpointError, CheckpointKind,
                                LooseCheckpointError, benchmarl_run_note, list_checkpoints, locate_run, run_backend)
from agents.training.metrics_files import METRICS_JSONL, MetricsFiles, read_jsonl

SUPERSEDED_DIR = "superseded"


class RunFolderError(RuntimeError):
    """A run folder or a --resume path that cannot be used as asked."""


@dataclass
class ResumePlan:
    """Where a resumed run lives, what it restores, and what of its history it sets aside."""

    run_dir: Path
    checkpoint: Path
    info: Dict[str, Any]
    later_checkpoints: List[Path] = field(default_factory=list)
    later_rows: List[Dict[str, Any]] = field(default_factory=list)
    last_iteration: int = 0  # the last iteration the run folder's history reaches

    @property
    def iteration(self) -> int:
        return int(self.info["iteration"])

    @property
    def has_later_history(self) -> bool:
        return bool(self.later_checkpoints or self.later_rows)


def plan_resume(path: str | Path, output_dir: Optional[str | Path] = None,
                kind: CheckpointKind = RLLIB) -> ResumePlan:
    """The run folder and checkpoint that `--resume path` means (see the module docstring), for a
    run whose checkpoints are of `kind`."""
    try:
        run_dir, checkpoint = locate_run(path, (kind,))
    except LooseCheckpointError as exc:
        raise RunFolderError(f"--resume: {exc}") from None
    except CheckpointError as exc:
        raise CheckpointError(f"--resume: {exc}") from None
    if checkpoint is None:
        root = run_dir / CHECKPOINTS_DIR
        if not root.is_dir():
            raise CheckpointError(f"--resume {str(path)!r} is neither a train.py checkpoint ({kind.example}) "
                                  f"nor a run folder with {CHECKPOINTS_DIR}/")
        checkpoint = kind.newest(root)
        if checkpoint is None:
            note = benchmarl_run_note(run_dir) if kind is RLLIB else ""
            raise CheckpointError(f"--resume {str(path)!r}: the run folder holds no complete checkpoint in "
                                  f"{str(root)!r}{note}")
    if output_dir is not None and Path(output_dir).expanduser().resolve() != run_dir:
        raise RunFolderError(f"--resume continues the run in {str(run_dir)!r}, and --output-dir "
                             f"{str(output_dir)!r} is another folder: a run's metrics, checkpoints and config "
                             f"stay in its own folder (copy the run folder first to continue a copy)")
    info = kind.read(checkpoint)
    k, here = int(info["iteration"]), kind.position(checkpoint)
    if here is None:
        raise CheckpointError(f"--resume {str(path)!r}: a checkpoint of a run is named as it was saved "
                              f"({kind.example})")
    later_ckpts = [p for p in kind.list(run_dir / CHECKPOINTS_DIR) if (kind.position(p) or 0) > here]
    later_rows = [r for r in read_jsonl(run_dir / METRICS_JSONL) if int(r["iteration"]) > k]
    # a checkpoint's position grows in proportion to its iteration (RLlib: the iteration; BenchMARL: env steps,
    # the same number in every iteration of a run)
    last = max([k] + [int(r["iteration"]) for r in later_rows] + [kind.position(p) * k // here for p in later_ckpts])
    return ResumePlan(run_dir, checkpoint, info, later_ckpts, later_rows, last)


def resume_backend(path: str | Path, asked: Optional[str] = None) -> str:
    """The backend of the run that `--resume path` names (agents.checkpoints.run_backend); `asked`, a
    --backend given with it, must be the same."""
    run_dir, _ = locate_run(path)
    backend = run_backend(run_dir)
    if asked is not None and asked != backend:
        raise RunFolderError(f"--backend {asked} with --resume {str(path)!r}, a run of --backend {backend} (as "
                             f"its {CONFIG_FILE} and checkpoints say): a run continues on the backend it was trained "
                             f"with; leave out --backend")
    return backend


def set_aside_later_history(plan: ResumePlan) -> Optional[Path]:
    """Move the run's history after the restored iteration to `superseded/`; returns that folder
    (None when there was nothing to move). Rows at or before the iteration stay in place."""
    if not plan.has_later_history:
        return None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    dest = plan.run_dir / SUPERSEDED_DIR / f"after_iter_{plan.iteration:06d}-{stamp}"
    (dest / CHECKPOINTS_DIR).mkdir(parents=True)
    if plan.later_rows:
        files = MetricsFiles(dest)
        files.rewrite(plan.later_rows)
    for ckpt in plan.later_checkpoints:
        os.replace(ckpt, dest / CHECKPOINTS_DIR / ckpt.name)
    (dest / "README.txt").write_text(
        f"History of this run after iteration {plan.iteration}, set aside when the run was resumed from "
        f"{plan.checkpoint.name} on {datetime.now().isoformat(timespec='seconds')}.\n", encoding="utf-8")
    return dest


def continue_history(plan: ResumePlan, metrics: MetricsFiles, log) -> None:
    """After a successful restore: the history beyond the restored iteration to superseded/ (said in
    `log`), and `metrics` rewritten to hold rows 1..N."""
    moved = set_aside_later_history(plan)
    if moved is not None:
        log(f"resuming {plan.run_dir.name} from iteration {plan.iteration}, but its history reaches iteration "
            f"{plan.last_iteration}: iterations {plan.iteration + 1}..{plan.last_iteration} ({len(plan.later_rows)} "
            f"metrics rows, {len(plan.later_checkpoints)} checkpoints) are replaced by the resumed run and were moved "
            f"to {moved.relative_to(plan.run_dir)}/")
    metrics.rewrite(restore_metrics_rows(plan))


def restore_metrics_rows(plan: ResumePlan) -> List[Dict[str, Any]]:
    """Metrics rows 1..N of a resumed run: those in the file up to N, plus the checkpoint's own
    row for N when the file lacks it (a crash between the checkpoint and the row)."""
    rows = [r for r in read_jsonl(plan.run_dir / METRICS_JSONL) if int(r["iteration"]) <= plan.iteration]
    saved = plan.info.get("metrics_row")
    if isinstance(saved, dict) and (not rows or int(rows[-1]["iteration"]) < plan.iteration):
        rows.append(saved)
    return rows


def default_run_name(algo: str, scheme: str, num_ues: int, seed: int) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{algo}-{scheme}-N{num_ues}-seed{seed}-{stamp}"


def check_new_run_folder(run_dir: Path) -> None:
    """A new run must not write into another run's folder."""
    if benchmarl_run_note(run_dir):
        raise RunFolderError(f"{str(run_dir)!r} already holds a run of train.py --backend benchmarl "
                             f"(checkpoints/checkpoint_*.pt): use another --output-dir")
    if (run_dir / CHECKPOINTS_DIR).is_dir() and list_checkpoints(run_dir / CHECKPOINTS_DIR):
        raise RunFolderError(f"{str(run_dir)!r} already holds a run (checkpoints/): use --resume {str(run_dir)!r} "
                             f"to continue it, or another --output-dir")
    if (run_dir / METRICS_JSONL).is_file() and read_jsonl(run_dir / METRICS_JSONL):
        raise RunFolderError(f"{str(run_dir)!r} already holds metrics of a run: use another --output-dir")
