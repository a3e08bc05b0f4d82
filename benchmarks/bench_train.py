"""Training benchmark: IPPO on the default N = 50 HIS env on this machine.

Prints, for the default configuration (or the one given by --config/--set, as in train.py):

- agent-steps/s of training (sampling + learning, evaluation excluded; target >= 2,000 on the
  2-core CI machine),
- peak resident memory of the driver (and of the largest child process, when env runners run
  in their own processes),
- the wall time of training until the greedy learned policy reaches a normalised score of
  `--target` (0.9), where score = (U_policy - U_random) / (U_search - U_random) and U is the
  mean network utility per decision point over `--eval-episodes` fixed evaluation seeds
  (target < 30 minutes). U_random and U_search (agents.baselines) are computed first on the
  same seeds.

    python benchmarks/bench_train.py                       # up to 30 minutes
    python benchmarks/bench_train.py --time-limit 300 --set algorithm.lr=0.001

`--backend benchmarl` measures the same for BenchMARL on the vectorised env (agents.benchmarl.training's
mapping of the run settings), `--backend both` runs the RLlib side (in a child process) and then
BenchMARL's on the same config, evaluation seeds and target. The BenchMARL side starts from a preset,
as `train.py --backend benchmarl` does: by default `fast` (configs/presets/benchmarl_fast.yaml: shared-
parameter IPPO, 2 epochs, 8 episodes per iteration, minibatches of 6,400 samples, the settings
measured fastest to 0.9 on the 2-core CPU), `--preset like-for-like` for RLlib's own settings; --config,
--set, --algo and --benchmarl-algo go over it; `--set benchmarl.<section>.<key>` (BenchMARL's own
settings, as in train.py) reaches the BenchMARL side only. With `--backend both` the summary
line ends with the throughput ratio and the ratio of the training times to `--target`, BenchMARL/RLlib.

    python benchmarks/bench_train.py --backend both --seed 0
    python benchmarks/bench_train.py --backend both --preset like-for-like

The last line is the one-line summary.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EVAL_SEED_BASE = 90_000

from agents.config import (DEFAULT_BENCHMARL_PRESET, LEARNERS, benchmarl_preset_config,  # noqa: E402 - after the path is set
                           benchmarl_preset_names)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=None, help="as in train.py")
    p.add_argument("--set", action="append", default=[], dest="overrides",
                   help="as in train.py: env keys, algorithm.*, experiment.* for both sides; benchmarl.* (BenchMARL's "
                        "own settings) for the BenchMARL side")
    p.add_argument("--algo", default=None, help="learner: ippo, ppo-shared or mappo (as in train.py)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-env-runners", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=1800.0, help="seconds of training (default 1800)")
    p.add_argument("--target", type=float, default=0.9, help="normalised score to reach (default 0.9)")
    p.add_argument("--eval-every", type=int, default=2, help="evaluate the greedy policy every N iterations")
    p.add_argument("--eval-episodes", type=int, default=4, help="evaluation episodes (fixed seeds)")
    p.add_argument("--search-sweeps", type=int, default=4, help="coordinate-descent sweeps of the search reference")
    p.add_argument("--quiet", action="store_true", help="only the final summary line")
    p.add_argument("--keep-going", action="store_true", help="train until --time-limit even after the target")
    p.add_argument("--backend", choices=("rllib", "benchmarl", "both"), default="rllib",
                   help="RLlib IPPO (default), BenchMARL on the vector env (the preset's learner), or both and the "
                        "ratios of their throughputs and of their training times to --target")
    p.add_argument("--device", default="cpu", help="torch device of the BenchMARL side (cpu, cuda)")
    p.add_argument("--preset", default=DEFAULT_BENCHMARL_PRESET, choices=benchmarl_preset_names(),
                   help=f"the BenchMARL side's preset, configs/presets/benchmarl_<PRESET>.yaml, under --config and "
                        f"--set (default {DEFAULT_BENCHMARL_PRESET}: the fastest to 0.9 here; like-for-like: RLlib's settings)")
    p.add_argument("--benchmarl-algo", default=None, choices=LEARNERS.names,
                   help="the BenchMARL side's learner (default: --algo's, else the preset's); ppo-shared is "
                        "BenchMARL's ippo with one network for all UEs, BenchMARL's own default")
    p.add_argument("--benchmarl-threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the BenchMARL side (default: every core; the RLlib side keeps one, as "
                        "two made its updates far slower here)")
    args = p.parse_args(argv)
    if args.backend != "rllib":
        return compare_backends(args, argv)

    from agents.baselines import RandomPolicy, SearchPolicy
    from agents.evaluation import ModulePolicy, evaluate_policy, mean_metric, normalized_score
    from agents.rllib.ippo import build_algo_config, set_torch_threads

    from agents.config import load_run_config
    from agents.training.ray_session import init_ray, quiet_libraries

    quiet_libraries(verbose=False)
    run_cfg = load_run_config(args.config or [], args.overrides, algo=args.algo, seed=args.seed,
                              num_env_runners=args.num_env_runners)
    if run_cfg.has_benchmarl_settings:
        raise SystemExit(f"bench_train: {', '.join(run_cfg.benchmarl_keys())}: BenchMARL's own settings are for "
                         f"--backend benchmarl or both; the RLlib side's are algorithm.* and experiment.*")
    algorithm, experiment = run_cfg.algorithm, run_cfg.experiment
    env_cfg = run_cfg.env.to_dict()
    set_torch_threads(experiment.torch_threads)
    n = run_cfg.env.num_ues
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    seeds = [EVAL_SEED_BASE + i for i in range(args.eval_episodes)]

    t_start = time.perf_counter()
    t0 = time.perf_counter()
    u_random = mean_metric(evaluate_policy(RandomPolicy(0), env_cfg, seeds, env_factory=experiment.env_factory))
    t_rand = time.perf_counter() - t0
    t0 = time.perf_counter()
    u_search = mean_metric(evaluate_policy(SearchPolicy(max_sweeps=args.search_sweeps), env_cfg, seeds,
                                           env_factory=experiment.env_factory))
    t_search = time.perf_counter() - t0
    log(f"references on seeds {seeds[0]}..{seeds[-1]}: U_random {u_random:.4f} ({t_rand:.1f} s), "
        f"U_search {u_search:.4f} ({t_search:.1f} s)")

    init_ray(None, experiment.torch_threads, experiment.num_env_runners, verbose=False)
    t_build = time.perf_counter()
    algo = build_algo_config(run_cfg).build_algo()
    log(f"{algorithm.algo}, N={n}, lr {algorithm.lr}, {algorithm.episodes_per_iteration} episodes/iteration, "
        f"minibatch {algorithm.minibatch_size}, {algorithm.num_epochs} epochs, reward {algorithm.reward_mode}; "
        f"built in {time.perf_counter() - t_build:.1f} s")

    def current_policy() -> ModulePolicy:
        if experiment.num_learners == 0:
            mods = algo.learner_group._learner.module
            return ModulePolicy({mid: mods[mid] for mid in mods.keys()}, algorithm.algo)
        return ModulePolicy({mid: algo.get_module(mid) for mid in algo.config.policies}, algorithm.algo)

    train_s = 0.0
    agent_steps = 0.0
    reached_at = None
    reached_iter = None
    score = float("nan")
    u_pol = float("nan")
    best = -float("inf")
    while train_s < args.time_limit:
        t = time.perf_counter()
        result = algo.train()
        dt = time.perf_counter() - t
        train_s += dt
        steps = float(result["env_runners"].get("num_env_steps_sampled", 0) or 0) * n
        agent_steps += steps
        it = int(result["training_iteration"])
        if it % args.eval_every == 0:
            u_pol = mean_metric(evaluate_policy(current_policy(), env_cfg, seeds, env_factory=experiment.env_factory))
            score = normalized_score(u_pol, u_random, u_search)
            best = max(best, score)
            his = result["env_runners"].get("his", {})
            log(f"iter {it:4d} | train {train_s:7.1f} s | {agent_steps / train_s:,.0f} agent-steps/s | "
                f"train U {his.get('utility', float('nan')):.3f} | greedy U {u_pol:.4f} score {score:.3f}")
            if score >= args.target and reached_at is None:
                reached_at, reached_iter = train_s, it
                if not args.keep_going:
                    break
    algo.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    wall = time.perf_counter() - t_start
    reached = (f"score {args.target} reached after {reached_at:.1f} s of training (iteration {reached_iter}; "
               f"{wall:.0f} s wall incl. references, startup, evaluation)"
               if reached_at is not None else
               f"score {args.target} NOT reached in {train_s:.0f} s (best {best:.3f})")
    print(f"bench_train: {algorithm.algo} N={n} | {agent_steps / max(train_s, 1e-9):,.0f} agent-steps/s | "
          f"peak RSS driver {rss:,.0f} MB, largest child {child:,.0f} MB | {reached} | U_random {u_random:.3f} "
          f"U_search {u_search:.3f} U_policy {u_pol:.3f} score {score:.3f}", flush=True)
    return 0 if reached_at is not None else 1


# ---------------------------------------------------------------------- --backend benchmarl | both
def _run_settings(args):
    """(env config, algorithm settings, experiment settings) of the BenchMARL side, as train.py --backend benchmarl
    resolves them: the preset, then --config, --set and --algo, --seed."""
    from agents.config import load_run_config

    run = load_run_config([benchmarl_preset_config(args.preset), *(args.config or [])], args.overrides, algo=args.algo,
                          seed=args.seed)
    return run.env, run.algorithm.to_dict(), run.experiment.to_dict(), run.benchmarl


def benchmarl_side(args, log) -> dict:
    """BenchMARL IPPO with the run's settings (agents.benchmarl.training's mapping) on the vector env:
    agent-steps/s of training and the training time until the greedy policy's score reaches --target."""
    from agents.benchmarl.experiment import StopTraining, build_task, run_benchmarl
    from agents.benchmarl.training import run_spec_from_settings
    from agents.training.ray_session import quiet_libraries
    from experiments.benchmark import references, search_device

    quiet_libraries(verbose=False, libraries=("torchrl",))
    env_cfg, algorithm, experiment, benchmarl = _run_settings(args)  # the preset, then --algo etc. as for RLlib
    if args.benchmarl_algo:
        algorithm["algo"] = args.benchmarl_algo
    spec = run_spec_from_settings(env_cfg, algorithm, experiment, args.device, benchmarl)
    frames_per_iter = spec.experiment["on_policy_collected_frames_per_batch"]
    spec.eval_seeds = [EVAL_SEED_BASE + i for i in range(args.eval_episodes)]
    spec.time_budget_s = args.time_limit
    spec.experiment.update({"evaluation_interval": args.eval_every * frames_per_iter,
                            "exploration_anneal_frames": frames_per_iter})
    task = build_task(spec)
    refs = references(task.his_config(), spec.eval_seeds, args.search_sweeps, log,
                      search_device(spec, task.his_config()))
    reached = {}

    def on_point(point):
        log(f"benchmarl {algorithm['algo']} | train {point['train_s']:7.1f} s | {int(point['frames']):,} env steps | "
            f"greedy U {point['utility']:.4f} score {point['score']:.3f}")
        if point["score"] >= args.target and not reached:
            reached.update(point)
            if not args.keep_going:
                raise StopTraining()

    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_train_benchmarl_") as folder:
        result = run_benchmarl(spec, folder, references=refs, on_point=on_point, task=task)
    s = result["summary"]
    return {"algo": algorithm["algo"], "agent_steps_per_s": s["agent_steps_per_s"], "reached_s": reached.get("train_s"),
            "train_s": s["train_s"], "score": s["score"], "peak_rss_mb": s["peak_rss_mb"], "refs": refs}


def compare_backends(args, argv) -> int:
    """--backend benchmarl: the BenchMARL side alone; --backend both: RLlib (this script, in a child process)
    then BenchMARL on the same config, evaluation seeds and target, and the ratios."""
    import re
    import subprocess

    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    rllib = None
    if args.backend == "both":
        given = list(argv if argv is not None else sys.argv[1:])
        child, skip = [], 0
        own = ("--backend", "--device", "--benchmarl-algo", "--benchmarl-threads", "--preset")
        for i, a in enumerate(given):  # the RLlib side gets every flag but the BenchMARL side's
            if skip:
                skip -= 1
            elif a in own or (a == "--set" and given[i + 1:i + 2] and given[i + 1].startswith("benchmarl.")):
                skip = 1
            elif not a.startswith(tuple(f"{flag}=" for flag in own) + ("--set=benchmarl.",)):
                child.append(a)
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--backend", "rllib", *child],
                              capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("bench_train:")), "")
        log("\n".join(ln for ln in proc.stdout.splitlines() if ln != line))
        steps = re.search(r"\| ([\d,]+) agent-steps/s", line)
        after = re.search(r"reached after ([\d.]+) s of training", line)
        if steps is None:
            print(f"bench_train: the RLlib side failed (exit {proc.returncode}): {proc.stderr[-2000:]}", flush=True)
            return 2
        rllib = {"agent_steps_per_s": float(steps.group(1).replace(",", "")),
                 "reached_s": float(after.group(1)) if after else None, "line": line}
        print(line, flush=True)
    os.environ["OMP_NUM_THREADS"] = str(args.benchmarl_threads)  # run_benchmarl sets torch's threads from it
    bm = benchmarl_side(args, log)

    def reach(side):
        return f"{side['reached_s']:.1f} s" if side.get("reached_s") is not None else "not reached"

    line = (f"bench_train: benchmarl {bm['algo']} (preset {args.preset}, {args.benchmarl_threads} threads) | "
            f"{bm['agent_steps_per_s']:,.0f} agent-steps/s | score {args.target} after "
            f"{reach(bm)} of training | final score {bm['score']:.3f} | peak RSS {bm['peak_rss_mb']:,.0f} MB")
    if rllib is not None:
        ratio = bm["agent_steps_per_s"] / rllib["agent_steps_per_s"]
        both = bm.get("reached_s") is not None and rllib.get("reached_s") is not None
        time_ratio = (f"{bm['reached_s'] / rllib['reached_s']:.3f}" if both else
                      f"n/a ({'RLlib' if rllib.get('reached_s') is None else 'BenchMARL'} did not reach it)")
        line += f" || RLlib {rllib['agent_steps_per_s']:,.0f} agent-steps/s, score {args.target} after {reach(rllib)}"
        line += f" || throughput BenchMARL/RLlib {ratio:.2f}x, time to {args.target} BenchMARL/RLlib {time_ratio}"
    print(line, flush=True)
    return 0 if bm.get("reached_s") is not None else 1


if __name__ == "__main__":
    sys.exit(main())
