"""A training run as a library: `run_training(TrainingRequest(...))` checks, trains, checkpoints,
resumes and evaluates; train.py is a thin command line over it.

Modules: `trainer` (the run and its loop), `stop_rules`, `run_folder` (layout and what resuming
means), `metrics_files` (metrics.jsonl/csv and the progress line), `wandb_logger` (W&B),
`preflight` (checks before anything starts), `final_evaluation` (the greedy evaluation table),
`ray_session` (Ray start-up, quiet logs), `signals` (SIGINT/SIGTERM as a clean stop, workers that exit with their parent).
"""
from agents.training.preflight import PreflightError
from agents.training.run_folder import RunFolderError
from agents.training.stop_rules import StopRules
from agents.training.trainer import (EXIT_NONFINITE, EXIT_OK, RUNTIME_KEYS, TrainingError, TrainingRequest,
                                     TrainingResult, run_training)
from agents.training.wandb_logger import WANDB_MODES, WandbSetupError

SETUP_ERRORS = (TrainingError, PreflightError, RunFolderError, WandbSetupError)

__all__ = ["EXIT_NONFINITE", "EXIT_OK", "PreflightError", "RUNTIME_KEYS", "RunFolderError", "SETUP_ERRORS",
           "StopRules", "TrainingError", "TrainingRequest", "TrainingResult", "WANDB_MODES", "WandbSetupError",
           "run_training"]
