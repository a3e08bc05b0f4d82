"""Command line of benchmark.py: BenchMARL algorithms x HIS schemes x seeds, one report."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from his_env.reward_modes import REWARD_MODES, help_text
from his_cli.args import UsageError, add_set_argument, nonneg_int, parse_overrides, positive_int, positive_seconds

SESSION_LIMIT_EXIT = 3  # --stop-after ended the session with cells left to run

REWARD_MODES_HELP = help_text()
# algorithm.* keys that mean the same for every BenchMARL algorithm of a grid (the others are RLlib-PPO settings
# of train.py; BenchMARL's own are benchmarl.experiment.* and benchmarl.algorithm.*)
GRID_ALGORITHM_KEYS = ("reward_mode", "hidden", "activation")
DEFAULT_ALGORITHMS = ("ippo", "mappo")
HIDDEN_DEFAULT = (256, 256, 256)
EPILOG = """Ctrl-C or SIGTERM stops the grid: the running cells are ended (they run again on resume), the
finished ones are kept and reported; a second signal stops at once. Killed with kill -9, it leaves no
worker behind, and the cell that was running moves its files to cells/<cell>/superseded/ when resumed.
exit status: 0 every cell finished ok, 1 some cells failed (each is run twice) or the run failed,
2 bad input (flags, settings, cache or output folder, Ray address; nothing was started),
3 --stop-after ended the session with cells left (run the same command again to continue),
130 stopped by SIGINT/SIGTERM (finished cells are kept: run the same command again to resume)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmark.py", description="Benchmark BenchMARL's MARL algorithms on the HIS "
                                "env: algorithms x schemes x seeds, each trained for\na frame or time budget, then "
                                "one report of normalised scores (95 % bootstrap CIs), learning curves\nand peak "
                                "memory.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", nargs="+", default=list(DEFAULT_ALGORITHMS), metavar="ALGO",
                   help="BenchMARL algorithms (ippo mappo iql qmix vdn isac masac; iddpg maddpg with continuous "
                        "actions); default: ippo mappo")
    p.add_argument("--schemes", nargs="+", default=["his"], metavar="SCHEME",
                   help="HIS schemes, each a BenchMARL task his/<scheme>: his ppgfis cfis iis (default his)")
    p.add_argument("--scenarios", nargs="+", default=["paper"], metavar="SCENARIO",
                   help="scenarios of his_env.scenarios, each with every scheme a task (<scheme>@<scenario>): paper "
                        "(default), seq-<small|medium|large>-<light|moderate|heavy>, heldout-<0..7>")
    p.add_argument("--seeds", type=positive_int("--seeds"), default=10,
                   help="seeds 0..K-1 per algorithm and scheme (default 10, the field's standard for a published "
                        "grid: Agarwal et al. 2021, Gorsane et al. 2022)")
    p.add_argument("--seed-start", type=nonneg_int("--seed-start"), default=0, help="first seed (default 0)")
    p.add_argument("--frame-budget", type=positive_int("--frame-budget"),
                   help="frames (env steps summed over the vector env's batch) per run")
    p.add_argument("--time-budget", type=positive_seconds("--time-budget"), help="seconds of training per run")
    p.add_argument("--num-ues", type=positive_int("--num-ues"), default=None, help="N (default 50)")
    p.add_argument("--reward-mode", default=None, choices=REWARD_MODES.names,
                   help="the UEs' training reward: " + REWARD_MODES_HELP)
    p.add_argument("--config", default=None, metavar="YAML", help="HIS env YAML overlaid on the defaults")
    add_set_argument(p, ("env", "algorithm", "benchmarl"),
                     "es.sm_range=[800,1200], algorithm.reward_mode=team, benchmarl.experiment.lr=0.001, "
                     "benchmarl.task.bank_size=4096",
                     f"; of algorithm.*: {', '.join(GRID_ALGORITHM_KEYS)} (each cell's algorithm keeps BenchMARL's "
                     f"own settings, changed with benchmarl.algorithm.<key>)")
    p.add_argument("--eval-episodes", type=positive_int("--eval-episodes"), default=4,
                   help="evaluation episodes (fixed seeds 90000..) of the greedy policy and the references (default 4)")
    p.add_argument("--absolute-episodes", type=nonneg_int("--absolute-episodes"), default=40,
                   help="episodes (seeds 95000..) of each run's final evaluation, marl-eval's absolute metric "
                        "(default 40, 10x --eval-episodes' default; 0: none)")
    p.add_argument("--held-out", type=nonneg_int("--held-out"), default=0, metavar="K",
                   help="score each sequential task's policies on the first K held-out test scenarios (heldout-0.., "
                        "never trained on; needs --set benchmarl.experiment.share_policy_params=true; default 0)")
    p.add_argument("--search-sweeps", type=positive_int("--search-sweeps"), default=4,
                   help="coordinate-descent sweeps of the search reference (default 4)")
    p.add_argument("--hidden", type=positive_int("--hidden"), nargs="+", default=None,
                   help="hidden layer widths of every policy and critic (default 256 256 256, the paper's; "
                        "the same as --set algorithm.hidden=[...])")
    p.add_argument("--device", default="cpu", help="torch device for sampling and training (cpu, cuda, cuda:1)")
    p.add_argument("--output-dir", default="results/benchmark", help="report and cell folder (default "
                   "results/benchmark); running again with the same settings resumes it")
    p.add_argument("--ray-address", default=None, help="run the cells as Ray tasks on this cluster ('auto' or "
                   "host:port of a running cluster, checked before anything starts)")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="CPUs a Ray cell asks for (default 1)")
    p.add_argument("--jobs", type=positive_int("--jobs"), default=1, help="cells at once without Ray (default 1)")
    p.add_argument("--stop-after", type=positive_seconds("--stop-after"), default=None, metavar="SECONDS",
                   help="end this session within SECONDS of wall time: no cell starts that might not finish by then "
                        "(the longest cell so far, or 1.25 x --time-budget + 60 s), the running ones finish, the "
                        "report covers what is done; exit code 3 while cells are left (run the same command again)"),
    p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"), default=None,
                   help="W&B for every run and the report (default offline: no key or network needed)")
    p.add_argument("--wandb-project", default="his-marl", help="W&B project (default his-marl)")
    p.add_argument("--no-progress-bar", action="store_true", help="progress lines only")
    p.add_argument("--no-warm-up", action="store_true",
                   help="skip the warm-up: with --time-budget and the env's step captured (on a GPU), the grid "
                        "first trains one iteration per task and batch size and discards it, so that compiling "
                        "the step fills inductor's disk cache instead of eating the first cells' budget")
    return p


def spec_from_args(args):
    from experiments.benchmark import BenchmarkSpec

    from agents.benchmarl.experiment import RUN_OWNED_TASK_KEYS
    from agents.config import route_overrides

    parts = route_overrides(parse_overrides(args.overrides, "--set es.sm_range=[800,1200]"),
                            ("env", "algorithm", "benchmarl"), "benchmark.py",
                            "its run settings are its flags (--seeds, --eval-episodes, --device); BenchMARL's "
                            "ExperimentConfig keys are benchmarl.experiment.<key>")
    algorithm = parts["algorithm"]
    for key in algorithm:
        if key not in GRID_ALGORITHM_KEYS:
            raise UsageError(f"--set algorithm.{key}: benchmark.py runs BenchMARL's algorithms with their own "
                             f"settings; allowed algorithm keys: {', '.join(GRID_ALGORITHM_KEYS)}; BenchMARL's are "
                             f"benchmarl.experiment.<key> (lr, gamma, ...) and benchmarl.algorithm.<key>")
    benchmarl = parts["benchmarl"]
    for key in benchmarl["task"]:
        if key in RUN_OWNED_TASK_KEYS:
            raise UsageError(f"--set benchmarl.task.{key}: it comes from {RUN_OWNED_TASK_KEYS[key]}")
    task: Dict[str, Any] = dict(benchmarl["task"])
    env = parts["env"]
    num_ues = env.pop("num_ues", None)
    if env:
        task["env"] = env
    if num_ues is not None or args.num_ues is not None:
        task["num_ues"] = args.num_ues if args.num_ues is not None else num_ues
    reward_mode = args.reward_mode if args.reward_mode is not None else algorithm.get("reward_mode")
    if reward_mode is not None:
        task["reward_mode"] = reward_mode
    if args.config is not None:
        if not Path(args.config).is_file():
            raise UsageError(f"--config {args.config!r}: no such file")
        task["config"] = str(Path(args.config).resolve())
    hidden = list(args.hidden) if args.hidden is not None else list(algorithm.get("hidden", HIDDEN_DEFAULT))
    activation = algorithm.get("activation", "tanh")
    wandb_mode = args.wandb_mode or os.environ.get("WANDB_MODE", "offline")
    return BenchmarkSpec(algorithms=list(args.algorithms), schemes=list(args.schemes), scenarios=list(args.scenarios),
                         seeds=list(range(args.seed_start, args.seed_start + args.seeds)), task=task,
                         experiment=dict(benchmarl["experiment"]), algorithm_settings=dict(benchmarl["algorithm"]),
                         frame_budget=args.frame_budget, time_budget_s=args.time_budget,
                         eval_episodes=args.eval_episodes, absolute_episodes=args.absolute_episodes,
                         held_out=args.held_out, hidden=hidden, activation=activation, device=args.device,
                         search_sweeps=args.search_sweeps, output_dir=args.output_dir,
                         ray_address=args.ray_address, cpus_per_cell=args.cpus_per_cell, wandb_mode=wandb_mode,
                         wandb_project=args.wandb_project, warm_up=not args.no_warm_up)


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    from agents.training.signals import StopSignals
    from experiments.benchmark import STOP_UNIT

    # Installed before the slow imports, so that a stop signal at any point ends with a message.
    with StopSignals(lambda line: print(line, flush=True), unit=STOP_UNIT) as signals:
        return _main(args, signals)


def _main(args, signals) -> int:
    from his_env.config import ConfigError

    from agents.benchmarl.experiment import BenchmarlSettingsError
    from experiments.benchmark import SESSION_LIMIT, BenchmarkError, failed_cells, run_benchmark
    from his_common.storage import CacheLocationError

    out = Path(args.output_dir).resolve()
    try:
        spec = spec_from_args(args)
        result = run_benchmark(spec, log=lambda line: print(line, flush=True), jobs=args.jobs,
                               show_bar=not args.no_progress_bar, signals=signals, stop_after_s=args.stop_after)
    except (UsageError, ConfigError, BenchmarkError, BenchmarlSettingsError, CacheLocationError) as exc:
        print(f"benchmark.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"benchmark.py: stopped at once by a second signal; the finished cells in {out} are kept, run the "
              f"same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # the output folder stopped being writable (disk full, removed) while running
        print(f"benchmark.py: failed: {exc}; the finished cells in {out} are kept, run the same command again to "
              f"resume", file=sys.stderr)
        return 1
    if result["stopped"] == SESSION_LIMIT:
        finished, missing = len(result["records"]), len(result["missing"])
        print(f"benchmark.py: session limit (--stop-after {args.stop_after:g}): {finished} of {finished + missing} "
              f"cells finished and kept in {out}; run the same command again for the other {missing}",
              file=sys.stderr)
        return SESSION_LIMIT_EXIT
    if result["stopped"]:
        finished, missing = len(result["records"]), len(result["missing"])
        report = " (report.md covers them)" if result["report"] is not None else ""
        print(f"benchmark.py: stopped by {result['stopped']}: {finished} of {finished + missing} cells finished and "
              f"kept in {out}{report}; run the same command again to run the other {missing}", file=sys.stderr)
        return 130
    return 1 if failed_cells(result["records"]) else 0


if __name__ == "__main__":
    sys.exit(main())
