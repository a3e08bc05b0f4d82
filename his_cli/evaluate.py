"""`evaluate.py` / `his-evaluate`: the argument parser and `main`; the work is experiments.runner's."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from his_cli.args import UsageError, add_set_argument, nonneg_int, parse_overrides, positive_int

USAGE = """examples:
  evaluate.py --checkpoint runs/my-run                  one table: the policy on the run's env
  evaluate.py --checkpoint runs/bm-run/checkpoints/checkpoint_16000.pt --policy random   a BenchMARL checkpoint
  evaluate.py --policy search --policy random           baselines on configs/default.yaml
  evaluate.py --figure 10 --policy search               HIS vs PPGFIS vs CFIS vs IIS
  evaluate.py --figure 10 --checkpoint his=runs/his --checkpoint iis=runs/iis --policy search
  evaluate.py --figure 15 --runs runs/fig15/*           reward curves from train.py logs

figures (variants are env overrides on the base config; the summary sets the paper's values beside ours):
{figures}

outputs (--output-dir): episodes.csv (policy x variant x episode), summary.csv and summary.md (mean ± std,
the reward mode a trained policy learned with, the paper's values), fig<N>.png; Fig. 15: curves.csv,
summary.md, fig15.png. Every file is written atomically."""


def build_parser() -> argparse.ArgumentParser:
    from experiments.figures import FIGURES

    figures = "\n".join(f"  {f.number}  {f.title.partition(': ')[2]}: {f.paper}"
                        for f in (FIGURES[name] for name in FIGURES))
    p = argparse.ArgumentParser(
        prog="evaluate.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate trained checkpoints and baselines on the HIS env; reproduce the paper's Figs. 10-17.",
        epilog=USAGE.format(figures=figures))
    p.add_argument("--figure", type=int, choices=[int(n) for n in FIGURES.names],
                   help="paper figure to reproduce (default: one table on the base config)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="[VARIANT=]PATH",
                   help="train.py checkpoint or run folder of either backend (RLlib's checkpoints/iter_NNNNNN, "
                        "BenchMARL's checkpoints/checkpoint_<env steps>.pt; a run folder: its newest), acting "
                        "greedily on the PettingZoo env; with VARIANT= only on that variant of "
                        "the figure (e.g. cfis=runs/cfis in Fig. 10); repeatable")
    p.add_argument("--policy", action="append", default=[], metavar="NAME",
                   help="baseline, repeatable: random | iis-fixed (x = 0, middle y) | es-only (x_max, y_max) | "
                        "ue-only (0, y_min) | fixed:X,Y (X common steps in "
                        "0..steps.max_common, Y ES personalised steps in steps.min_es_personal..max_es_personal) | "
                        "search | search:SWEEPS (coordinate descent on the reward model, SWEEPS >= 0, default 4; "
                        "myopic with dynamics on) | backlog-search | backlog-search:ALPHA (the search, with each "
                        "active UE's delay also charged ALPHA times to the requests waiting behind it, default 4; "
                        "needs request queues) | open-loop | open-loop:EPISODES (one shared action per slot "
                        "index: the better of a slot-by-slot schedule and the best constant action, fitted on "
                        "EPISODES calibration episodes, default 4) | queue-aware | queue-aware:F "
                        "(offload a queue at least F full while the ES has room, default 0.25)")
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN_DIR", help="train.py output folders (Fig. 15)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="legend labels of --runs, one per run (Fig. 15; default: the folder names)")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="base env config, a path or a shipped name such as 'small', overlaid on configs/default.yaml "
                        "(only its env keys are used; default: the first checkpoint's env, else configs/default.yaml)")
    p.add_argument("--scenario", default=None, metavar="NAME",
                   help="a named scenario laid over configs/default.yaml, under --config and --set: paper, "
                        "seq-<small|medium|large>-<light|moderate|heavy> (the sequential ladder), heldout-<0..7> "
                        "(held-out tests); see his_env.scenarios")
    add_set_argument(p, ("env",), "num_ues=10", " of the base config")
    p.add_argument("--episodes", type=positive_int("--episodes"), default=5,
                   help="episodes per policy and variant (default 5)")
    p.add_argument("--seed-base", type=nonneg_int("--seed-base"), default=20_000,
                   help="episode i uses seed SEED_BASE + i, the same for every policy and variant (default 20000)")
    p.add_argument("--jobs", type=positive_int("--jobs"), default=1,
                   help="worker processes that run the baselines' episodes side by side (default 1; the same "
                        "numbers: each episode is seeded on its own)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="results folder (default results/fig<N>, or results/eval without --figure)")
    p.add_argument("--env-factory", default=None, metavar="MODULE:FUNCTION",
                   help="function building the PettingZoo ParallelEnv for the baselines from config=<dict> "
                        "(default: a checkpoint's, else his_env:parallel_env)")
    return p


def env_overrides(pairs: Sequence[str]) -> dict:
    """The --set pairs as env keys (bare or env.<key>); other namespaces are refused, naming what this takes."""
    from agents.config import route_overrides

    return route_overrides(parse_overrides(pairs), ("env",), "evaluate.py",
                           "it scores policies on the env, whose keys are the only ones it takes (a checkpoint "
                           "brings its own algorithm and experiment)")["env"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    import warnings

    from agents.checkpoints import CheckpointError
    from agents.evaluation import EnvFactoryError
    from experiments.grid import ExperimentError
    from experiments.runner import EvaluationRequest, run_evaluation
    from his_env.config import ConfigError

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    try:
        request = EvaluationRequest(
            figure=args.figure, checkpoints=args.checkpoint, baselines=args.policy, runs=args.runs,
            labels=args.labels, config=args.config, scenario=args.scenario, overrides=env_overrides(args.overrides),
            episodes=args.episodes, seed_base=args.seed_base, output_dir=args.output_dir,
            env_factory=args.env_factory, jobs=args.jobs)
        report = run_evaluation(request, log=lambda line: print(line, flush=True))
    except (UsageError, ExperimentError, ConfigError, CheckpointError, EnvFactoryError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    for line in report.warnings:
        print(line, file=sys.stderr)
    print(report.markdown)
    print("wrote " + ", ".join(str(p) for p in report.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
