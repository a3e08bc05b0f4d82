"""Stop signals, one mechanism for every long-running command (train.py on both backends,
benchmark.py), and workers that do not outlive the process that started them.

`StopSignals`: SIGINT (Ctrl-C) and SIGTERM (what schedulers and `timeout` send) ask the run to
stop: the unit of work in progress (a training iteration) finishes, then the run saves its final
checkpoint, evaluates and closes W&B as after any other stop rule. A second signal stops at once
(`TrainingInterrupted`), with what is already on disk left as it is. Installed in the main thread
only; elsewhere it is inert (`requested` stays None).

`exit_with_parent()`: called at the start of a worker process, it makes the kernel send the worker
SIGKILL when its parent dies (Linux's PR_SET_PDEATHSIG), so that a driver killed with kill -9
leaves no worker behind; a watchdog thread does the same by polling the parent's PID where prctl
is not available.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional

PR_SET_PDEATHSIG = 1


class TrainingInterrupted(KeyboardInterrupt):
    """A second SIGINT or SIGTERM while the run is already stopping."""


_stopped_at_once = False  # a second signal was received in this process


def stopped_at_once() -> bool:
    """Whether a second stop signal ended the run at once. The interrupt is raised wherever the main
    thread happens to be, and library code running then (a torch module's context manager, say) may
    turn it into an error of its own: a command line asks this before calling a failure a failure."""
    return _stopped_at_once


class StopSignals:
    """Context manager: `requested` becomes the signal's name ("SIGINT", "SIGTERM") at the first stop
    signal, which the run polls between units of work; the second raises `TrainingInterrupted`."""

    def __init__(self, log: Callable[[str], None] = print, unit: str = "this iteration") -> None:
        self.requested: Optional[str] = None
        self._log = log
        self._unit = unit
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        global _stopped_at_once
        name = signal.Signals(signum).name
        if self.requested is not None:
            _stopped_at_once = True
            raise TrainingInterrupted(name)
        self.requested = name
        message = f"{name}: stopping after {self._unit} (send it again to stop at once)"
        try:
            self._log(message)
        except RuntimeError:  # the signal landed while the main thread was writing to the same stream
            os.write(2, (message + "\n").encode())

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def exit_with_parent(poll_s: float = 1.0) -> None:
    """Make this (worker) process end when its parent dies: SIGKILL from the kernel on Linux, else a
    daemon thread that polls the parent's PID every `poll_s` seconds and exits the process."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
