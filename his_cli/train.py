"""Command line of train.py (console script his-train): flags -> agents.training.run_training (RLlib) or
agents.benchmarl.training.train_benchmarl_request (--backend benchmarl, or --resume of a BenchMARL run)."""

import argparse
import os
import sys
from typing import Optional, Sequence

from agents.baselines import BASELINE_USAGE
from agents.config import DEFAULT_BENCHMARL_PRESET, LEARNERS, benchmarl_preset_names
from his_cli.args import UsageError, add_set_argument, nonneg_int, parse_overrides, positive_int, positive_seconds

REWARD_NOTE = """Reward: by default each UE learns from the difference reward (algorithm.reward_mode=difference:
its marginal contribution to the network utility U), NOT the paper's per-UE reward of Eq. (33).
For Eq. (33) exactly use --config configs/train_paper_reward.yaml (algorithm.reward_mode=individual)."""
EPILOG = """examples:
  train.py                                            N = 50, HIS, IPPO, 5 minutes
  train.py --config configs/train_small.yaml --iterations 30 --seed 1
  train.py --iterations 50 --algo mappo --set num_ues=10 --set algorithm.lr=0.001
  train.py --resume runs/my-run                       continue a run (either backend) from its latest checkpoint
  train.py --resume runs/my-run/checkpoints/iter_000020   continue it from iteration 20
  train.py --ray-address auto --num-env-runners 16    the same run on a Ray cluster
  train.py --backend benchmarl                        the vector env, preset fast (configs/presets/benchmarl_fast.yaml)
  train.py --backend benchmarl --scenario seq-medium-heavy --device cuda   a sequential scenario: preset markov
  train.py --backend benchmarl --preset like-for-like     per-UE IPPO with RLlib's settings

Run folder (--output-dir): config.yaml, metrics.jsonl/.csv (a row per iteration), checkpoints/ (iter_NNNNNN/
and latest; benchmarl: checkpoint_<env steps>.pt), eval.csv/.md (greedy final policy beside baselines; each row
names its reward mode), plots/, wandb/. Resuming from an older checkpoint moves the run's later history to
superseded/. Same --seed, same machine: the same run (train.py fixes PYTHONHASHSEED). Quiet unless --verbose:
one line per iteration, no library warnings or progress bars.
exit status: 0 done (also after Ctrl-C/SIGTERM: the iteration in progress ends, then the final checkpoint,
evaluation and W&B), 1 non-finite loss (the last good checkpoint is kept) or a failure while running, 2 bad flags,
config, checkpoint or HIS_MARL_CACHE (nothing written), 130 a second Ctrl-C/SIGTERM (stops at once, files kept)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train IPPO (the paper's MIRA learner), shared-parameter "
                                "PPO or MAPPO on the HIS env with Ray RLlib, or with BenchMARL on the vectorised env "
                                "(--backend benchmarl).\n\n" + REWARD_NOTE, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=None, metavar="YAML",
                   help="config file (a path or a shipped name such as train_small) overlaid on configs/default.yaml "
                        "(repeatable, later ones win)")
    add_set_argument(p, ("env", "algorithm", "experiment", "benchmarl"),
                     "es.sm_range=[800,1200], algorithm.reward_mode=individual, experiment.num_env_runners=2",
                     "; benchmarl.* only with --backend benchmarl")
    p.add_argument("--scenario", default=None, metavar="NAME",
                   help="a named scenario laid over configs/default.yaml, under --config and --set: paper (the "
                        "default config), seq-<small|medium|large>-<light|moderate|heavy> (the sequential ladder), "
                        "heldout-<0..7> (held-out tests); see his_env.scenarios")
    p.add_argument("--algo", choices=LEARNERS.names, help="learner (default: algorithm.algo: ippo, or the benchmarl preset's)")
    p.add_argument("--backend", choices=("rllib", "benchmarl"), default=None,
                   help="rllib (default; with --resume: the run's): the PettingZoo env through RLlib; benchmarl: "
                        "BenchMARL's IPPO/MAPPO on the vectorised env (HISVecEnv; ppo-shared = its IPPO with one "
                        "network for all UEs), with the same learner switches and run-folder files, no --ray-address")
    p.add_argument("--preset", choices=benchmarl_preset_names(), default=None,
                   help=f"--backend benchmarl's settings under --config and --set: "
                        f"configs/presets/benchmarl_<PRESET>.yaml (default {DEFAULT_BENCHMARL_PRESET}: the fastest to a score of "
                        f"0.9 on a 2-core CPU; markov where any dynamics process is on, as on the sequential scenarios: "
                        f"lr 0.0005, 128 envs, no value clip; like-for-like: per-UE IPPO with RLlib's settings)")
    p.add_argument("--device", default="cpu", help="torch device of the benchmarl backend (cpu, cuda, cuda:1); "
                   "the rllib backend takes only cpu")
    p.add_argument("--seed", type=nonneg_int("--seed"), help="seed of env runners, modules and evaluation "
                   "(default: experiment.seed, 0)")
    p.add_argument("--iterations", type=positive_int("--iterations"), help="stop after this many iterations in total")
    p.add_argument("--timesteps", type=positive_int("--timesteps"),
                   help="stop after this many env steps (decision points) in total; agent-steps = env steps x N")
    p.add_argument("--time-limit", type=positive_seconds("--time-limit"),
                   help="stop after this many seconds of this invocation (default 300 when no other stop is given)")
    p.add_argument("--checkpoint-every", type=nonneg_int("--checkpoint-every"), default=None,
                   help="save a checkpoint every N iterations (0: only at the end; default 10, or the resumed run's)")
    p.add_argument("--keep-checkpoints", type=positive_int("--keep-checkpoints"), default=None,
                   help="how many recent checkpoints to keep (default 2, or the resumed run's)")
    p.add_argument("--resume", metavar="PATH", help="a run folder (continue from its latest checkpoint) or one of "
                   "its checkpoints (continue from that iteration; later history is moved to superseded/)")
    p.add_argument("--num-env-runners", type=nonneg_int("--num-env-runners"),
                   help="sampling processes (0: sample in the driver; default experiment.num_env_runners)")
    p.add_argument("--ray-address", help="address of a running Ray cluster ('auto' or host:port); default: local")
    p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"), default=None,
                   help="W&B mode (default $WANDB_MODE, else offline: no key or network needed)")
    p.add_argument("--wandb-project", default="his-marl", help="W&B project (default his-marl)")
    p.add_argument("--wandb-name", default=None, help="W&B run name (default: the run folder's name)")
    p.add_argument("--output-dir", help="run folder of a new run (default runs/[benchmarl-]<algo>-<scheme>-N<n>-seed<s>-"
                   "<time>); "
                   "with --resume only the resumed run's own folder is allowed")
    p.add_argument("--eval-baselines", default="random,iis-fixed",
                   help="baselines evaluated beside the final policy, comma-separated, each one of: "
                        f"{BASELINE_USAGE} (default random,iis-fixed; 'none' for none; e.g. "
                        "random,search,backlog-search on a sequential scenario)")
    p.add_argument("--verbose", action="store_true", help="show the libraries' own warnings and log output (Ray, "
                   "RLlib, TorchRL) and, on a terminal, BenchMARL's progress bar")
    return p


def resolve_config(args, backend: str = "rllib"):
    """The run's agents.config.RunConfig from the preset (benchmarl), --config, --set and the named flags."""
    from agents.config import load_benchmarl_run_config, load_run_config

    if args.preset and backend != "benchmarl":
        raise UsageError(f"--preset {args.preset} is for --backend benchmarl; the rllib backend's settings are "
                         f"configs/default.yaml's")
    named = dict(scenario=args.scenario, algo=args.algo, seed=args.seed, num_env_runners=args.num_env_runners)
    if backend == "benchmarl":
        run = load_benchmarl_run_config(args.preset, args.config or [], args.overrides, **named)
    else:
        run = load_run_config(args.config or [], args.overrides, **named)
    if run.has_benchmarl_settings and backend != "benchmarl":
        raise UsageError(f"{', '.join(run.benchmarl_keys())}: the benchmarl.* settings are BenchMARL's own, for "
                         f"--backend benchmarl; the {backend} backend's settings are algorithm.* and experiment.*")
    return run


def resume_overrides(args) -> dict:
    """{experiment key: value} of the --set pairs allowed when resuming (RUNTIME_KEYS)."""
    from agents.config import route_key
    from agents.training import RUNTIME_KEYS

    if args.config or args.algo or args.seed is not None or args.preset or args.scenario:
        raise UsageError("--resume continues a run with its saved config; --config, --scenario, --algo, --seed and "
                         "--preset cannot change it (start a new run instead)")
    over = {}
    for key, value in parse_overrides(args.overrides, "--set experiment.num_env_runners=4").items():
        part, name = route_key(key)
        if part != "experiment" or name not in RUNTIME_KEYS:
            raise UsageError(f"--resume: --set {key}=... would change what the run learns; allowed when resuming: "
                             f"{', '.join('experiment.' + k for k in RUNTIME_KEYS)}")
        over[name] = value
    if args.num_env_runners is not None:
        over["num_env_runners"] = args.num_env_runners
    return over


def request_from_args(args, backend: str = "rllib"):
    from agents.training import StopRules, TrainingRequest
    from agents.training.preflight import parse_baselines

    wandb_mode = args.wandb_mode or os.environ.get("WANDB_MODE", "offline")
    common = dict(stop=StopRules(args.iterations, args.timesteps, args.time_limit),
                  checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                  eval_baselines=parse_baselines(args.eval_baselines), wandb_mode=wandb_mode,
                  wandb_project=args.wandb_project, wandb_name=args.wandb_name, ray_address=args.ray_address,
                  verbose=args.verbose, output_dir=args.output_dir)
    if args.resume:
        return TrainingRequest(resume=args.resume, resume_overrides=resume_overrides(args), **common)
    return TrainingRequest(run_config=resolve_config(args, backend), **common)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None:  # a real command line (not a call from Python): the run depends on PYTHONHASHSEED
        from agents.training.ray_session import restart_with_fixed_hash_seed

        restart_with_fixed_hash_seed()
    for name, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("RAY_DEDUP_LOGS", "1")):
        os.environ.setdefault(name, value)
    from agents.checkpoints import CheckpointError
    from agents.config import ConfigError
    from agents.training import SETUP_ERRORS, preflight, run_training
    from agents.training.run_folder import resume_backend

    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        backend = resume_backend(args.resume, args.backend) if args.resume else args.backend or "rllib"
        if backend == "rllib" and args.device != "cpu":
            raise UsageError(f"--device {args.device} is for --backend benchmarl; the RLlib learners train on the CPU")
        if backend == "benchmarl":  # BenchMARL (and torchrl) are imported only for this backend
            preflight.check_cache_folder()  # as train_benchmarl does, but before BenchMARL's imports (seconds)
            request = request_from_args(args, backend)
            from agents.training.ray_session import quiet_libraries

            quiet_libraries(args.verbose, ("torchrl",))  # before BenchMARL's imports, which warn
            from agents.benchmarl.training import BenchmarlSettingsError, train_benchmarl_request
            try:
                train_benchmarl_request(request, args.device, log=log)
            except BenchmarlSettingsError as exc:
                raise UsageError(str(exc)) from None
            return 0
        result = run_training(request_from_args(args), log=log)
    except (UsageError, ConfigError, CheckpointError, *SETUP_ERRORS) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train.py: stopped at once; the checkpoints on disk are as they were", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a failure while running: its traceback, then one line
        from agents.training.signals import stopped_at_once

        if stopped_at_once():  # the second signal's interrupt, turned into another error by library code
            print("train.py: stopped at once; the checkpoints on disk are as they were", file=sys.stderr)
            return 130
        sys.excepthook(type(exc), exc, exc.__traceback__)
        print(f"train.py: error: the run failed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
