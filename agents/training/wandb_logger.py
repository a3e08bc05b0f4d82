"""The Weights & Biases side of a training run.

One W&B run follows one training run; its step is the training iteration. W&B steps only
grow, so a resumed training run first replays the metrics rows that W&B may lack (all of them
in offline mode, where every session writes its own `offline-run-*` folder; those from the
run's current step on in online mode), and a run whose W&B history went past the iteration it
resumes from continues in a new W&B run (same group and name) that gets the history again.
Either way the newest W&B run holds exactly the rows of `metrics.jsonl`.

Runs are grouped `<algo>-<scheme>` and tagged with the algo, scheme, N and reward mode.
"""
from __future__ import annotations

import netrc
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence
from urllib.parse import urlparse

WANDB_MODES = ("online", "offline", "disabled")
# A W&B service whose client was killed releases the run id after a few seconds.
IN_USE_RETRIES = 5
IN_USE_WAIT_S = 2.0
DEFAULT_PROJECT = "his-marl"


class WandbSetupError(RuntimeError):
    """W&B cannot log this run as asked (no credentials for online mode, wandb missing)."""


class WandbRunInUse(RuntimeError):
    """Another W&B process still holds the run id (e.g. the service of a process killed moments ago)."""


def has_credentials() -> bool:
    """Whether W&B finds an API key: WANDB_API_KEY, an identity token file, or a netrc entry for
    the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def check_wandb(mode: str) -> None:
    """Raise WandbSetupError unless W&B can run in `mode` (called before anything starts)."""
    if mode not in WANDB_MODES:
        raise WandbSetupError(f"W&B mode {mode!r}; allowed: {', '.join(WANDB_MODES)}")
    if mode == "disabled":
        return
    try:
        import wandb  # noqa: F401
    except ImportError as exc:
        raise WandbSetupError(f"W&B mode {mode!r} needs the wandb package ({exc}); "
                              f"install it or use --wandb-mode disabled") from exc
    if mode == "online" and not has_credentials():
        raise WandbSetupError("--wandb-mode online needs W&B credentials and none were found (no WANDB_API_KEY, "
                              "no entry in ~/.netrc): run `wandb login` first, or use --wandb-mode offline and "
                              "upload later with `wandb sync`")


class WandbLogger:
    """A W&B run (or nothing, in mode "disabled") that receives metrics rows by iteration."""

    def __init__(self, mode: str, project: str, name: str, run_id: Optional[str], config: Mapping[str, Any],
                 directory: Path, group: Optional[str] = None, tags: Sequence[str] = ()) -> None:
        self.run = None
        self.mode = mode
        self._id: Optional[str] = None
        if mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        for attempt in range(IN_USE_RETRIES + 1):
            try:
                self.run = wandb.init(project=project, name=name, id=run_id, resume="allow" if run_id else None,
                                      mode=mode, dir=os.environ.get("WANDB_DIR", str(directory)),
                                      config=dict(config), group=group, tags=list(tags),
                                      settings=wandb.Settings(silent=True, console="off"))
                break
            except Exception as exc:  # noqa: BLE001 - wandb raises its own error classes
                if "in use" not in str(exc):
                    raise WandbSetupError(f"W&B could not start the run ({type(exc).__name__}: {exc})") from exc
                if attempt == IN_USE_RETRIES:
                    raise WandbRunInUse(f"W&B run {run_id} is still held by another process ({exc})") from exc
                time.sleep(IN_USE_WAIT_S)
        self._id = self.run.id

    @property
    def run_id(self) -> Optional[str]:
        return self._id

    @property
    def next_step(self) -> int:
        """The first step this W&B run still accepts (0 for a new or offline run)."""
        return 0 if self.run is None else int(self.run.step or 0)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def replay(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Log the rows this run can still take (iteration >= next_step); returns how many."""
        start = self.next_step
        done = 0
        for row in rows:
            if int(row["iteration"]) >= start:
                self.log(row, step=int(row["iteration"]))
                done += 1
        return done

    def log_final(self, table_rows: Sequence[Mapping[str, Any]], plots: Sequence[Path], summary: Mapping[str, Any],
                  step: int) -> None:
        if self.run is None:
            return
        wandb = self._wandb
        if table_rows:
            columns = list(table_rows[0].keys())
            table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in table_rows])
            self.run.log({"eval/table": table}, step=step)
        for plot in plots:
            if plot.is_file():
                self.run.log({f"plots/{plot.stem}": wandb.Image(str(plot))}, step=step)
        for key, value in summary.items():
            self.run.summary[key] = value

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def open_wandb_run(mode: str, project: str, name: str, config: Mapping[str, Any], run_dir: Path,
                   group: Optional[str], tags: Sequence[str], plan=None, rows: Sequence[Mapping[str, Any]] = (),
                   log=print) -> WandbLogger:
    """The W&B run of a training run of either backend, with `rows` (the run's metrics rows so far) replayed.

    A new run (`plan` None) gets a new W&B run. A resumed one (`plan`, an agents.training.run_folder.ResumePlan
    whose `info` may name the W&B run) continues in the same W&B run unless that run's history went past the
    restored iteration, or may have (the run folder held later rows), or its id is still held by another
    process: then a new W&B run, same name and group, gets the history again (see the module docstring)."""
    info = plan.info if plan is not None else {}
    old_id = info.get("wandb_run_id")
    fork = plan is not None and bool(plan.later_rows)  # W&B may hold iterations after the restored one
    try:
        wb = WandbLogger(mode, project, name, None if fork else old_id, config, run_dir, group, tags)
    except WandbRunInUse as exc:
        log(f"W&B: {exc}; continuing in a new W&B run instead")
        fork = True
        wb = WandbLogger(mode, project, name, None, config, run_dir, group, tags)
    if wb.run is not None and plan is not None and wb.next_step > plan.iteration + 1:
        fork = True
        wb.finish()
        wb = WandbLogger(mode, project, name, None, config, run_dir, group, tags)
    if fork and old_id and wb.run_id:
        log(f"W&B: continuing in W&B run {wb.run_id} (same name and group; run {old_id} may hold iterations after "
            f"{plan.iteration}, and W&B steps cannot be rewritten), which receives the history again")
    wb.replay(rows)
    return wb
