"""Worker processes on this machine for the experiments (the benchmark's cells and reference
episodes, the evaluation grid's baseline episodes): spawned, quiet, one torch thread each, and
ending with the driver."""
from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import signal

QUIET_ENV = {"TQDM_DISABLE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "PYTHONWARNINGS": "ignore"}


def quiet_worker() -> None:
    """Worker start: no per-iteration progress bars or library chatter, one torch thread."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def pool_worker() -> None:
    """Start of a local pool worker: it dies with the driver (even one killed with kill -9), and
    ignores Ctrl-C, which the terminal sends to the whole process group: the driver decides."""
    from agents.training.signals import exit_with_parent

    exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_worker()


def worker_pool(jobs: int) -> futures.ProcessPoolExecutor:
    """`jobs` spawned worker processes (started as `pool_worker` says)."""
    return futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=pool_worker)
