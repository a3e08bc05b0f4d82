"""Starting Ray for a training run, and quieting the libraries of both backends (the stop signals are
`agents.training.signals`, shared with the BenchMARL backend and the benchmark grid)."""
from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
# Python's string hashing decides the order in which RLlib visits agents and modules (it keeps
# them in sets), and with it which random draws each module gets: a fixed hash seed in every
# process makes runs with the same seed repeat exactly on one machine.
HASH_SEED = "0"


# Loggers that print warnings and notes a run's reader need not see, by the library that configures them.
QUIET_LOGGERS = {"ray": ("ray", "ray.rllib", "ray.tune", "ray.data", "ray.train"), "torchrl": ("torchrl",)}


def quiet_libraries(verbose: bool, libraries: Sequence[str] = ("ray",)) -> None:
    """Unless `verbose`: no deprecation and known-harmless warnings, and the loggers of `libraries` (keys of
    QUIET_LOGGERS: "ray" for the RLlib backend, "torchrl" for BenchMARL's) at ERROR. Each library is imported
    first, since importing it sets its loggers' levels (ray sets ray.rllib's to WARNING, which let RLlib's
    new-API-stack warning through)."""
    if verbose:
        return

    def ignore_warnings() -> None:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*Overriding environment.*")
        warnings.filterwarnings("ignore", message=".*Casting input x to numpy array.*")
        warnings.filterwarnings("ignore", message=".*new API stack.*")
        # TorchRL's collector rounds the frame budget up to whole batches (the run's line reports the frames)
        warnings.filterwarnings("ignore", message=".*is not exactly divisible by frames_per_batch.*")
        # BenchMARL, when an iteration ends no episode (the Markov game's 100-slot episodes): expected
        warnings.filterwarnings("ignore", message=".*No episode terminated this iteration.*")
        # TorchRL's MaskedCategorical.log_prob (masked policies on sequential scenarios) calls cross_entropy
        # with the legacy reduce=False; the values are right
        warnings.filterwarnings("ignore", message=".*size_average and reduce args will be deprecated.*")

    ignore_warnings()  # the imports warn
    for library in libraries:
        importlib.import_module(library)
        for name in QUIET_LOGGERS[library]:
            logging.getLogger(name).setLevel(logging.ERROR)
    ignore_warnings()  # again, in front of the filter torchrl's import puts first (its deprecations, once)


def hash_seed_fixed() -> bool:
    import sys

    return not sys.flags.hash_randomization or bool(os.environ.get("PYTHONHASHSEED"))


def worker_env_vars(torch_threads: int) -> Dict[str, str]:
    return {"OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads),
            "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", HASH_SEED),
            "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def init_ray(address: Optional[str], torch_threads: int, num_env_runners: int, verbose: bool) -> None:
    import ray

    env_vars = worker_env_vars(torch_threads)
    kwargs: Dict[str, Any] = dict(include_dashboard=False, log_to_driver=verbose,
                                  logging_level=logging.INFO if verbose else logging.ERROR,
                                  runtime_env={"env_vars": env_vars})
    if address:
        # Ship this checkout to the cluster's workers (they still need the Python packages).
        kwargs["runtime_env"]["working_dir"] = str(REPO)
        kwargs["runtime_env"]["excludes"] = [".venv/", ".git/", "runs/", "results/", "wandb/", ".cache/", ".whl/",
                                             ".device/", "**/__pycache__/"]
        ray.init(address=address, **kwargs)
    else:
        pythonpath = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        env_vars["PYTHONPATH"] = pythonpath
        # address="local": always a fresh local instance, never a cluster another program left running.
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, num_env_runners + 1), **kwargs)


def restart_with_fixed_hash_seed() -> None:
    """Re-run this program once with PYTHONHASHSEED fixed, if it is not: RLlib's agent order, and
    so the whole run, depends on Python's string hashing (for command lines, not library calls)."""
    if sys.flags.hash_randomization and not os.environ.get("PYTHONHASHSEED"):
        os.environ["PYTHONHASHSEED"] = HASH_SEED
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
