"""Throughput of the HIS environment with fresh seeds, at N = 4, N = 50 and N = 1,000 (M = 30), on one core.

    python benchmarks/bench_env.py [--config FILE] [--seconds 8] [--skip-cold] [--scenario seq-medium-heavy]

Every timed episode starts from a seed never used before (drawn from the OS), so each decision
point brings new prompts, new clusters and new public prompts, as in training; the embedding
cache on disk is the user's own (``$HIS_MARL_CACHE``), so public prompts embedded by earlier runs
are found there, as they would be in a user's later runs. Before timing, each env runs a short
untimed warm-up on another fresh seed (process-level memos fill).

Prints one line per N (decision points/s, agent-steps/s, texts embedded while timed), one for the
Markov game at N = 50 (`--scenario`, every dynamics process on; `none` skips it), the
one-time costs (first run with an empty cache: pool embedding, then the first decision points
while public prompts are embedded; env construction in a new process with a warm cache), and a
final summary line.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

CASES = ((4, None), (50, None), (1000, 30))  # (N, M); None: the config's num_clusters
STEP_BUDGET = {4: 20_000, 50: 10_000, 1000: 400}  # at most this many timed decision points


def fresh_seed_source():
    """Seeds from the OS: never a replay of a warm-up or of an earlier run."""
    entropy = np.random.SeedSequence().entropy
    rng = np.random.default_rng(entropy)
    return lambda: int(rng.integers(2**62))


def run(env, steps: int, next_seed, action_sets) -> float:
    """Seconds for `steps` decision points, every episode on a fresh seed."""
    start = time.perf_counter()
    env.reset(seed=next_seed())
    for t in range(steps):
        if not env.agents:
            env.reset(seed=next_seed())
        env.step(action_sets[t % len(action_sets)])
    return time.perf_counter() - start


def timed_case(his_env, config, num_ues: int, num_clusters, seconds: float, next_seed, cache_dir=None,
               scenario=None):
    overrides = {"num_ues": num_ues}
    if num_clusters is not None:
        overrides["num_clusters"] = num_clusters
    if cache_dir is not None:
        overrides["semantics"] = {"cache_dir": cache_dir}
    env = his_env.parallel_env(config, scenario=scenario, **overrides)
    rng = np.random.default_rng(0)
    nvec = env.action_space(env.possible_agents[0]).nvec
    action_sets = [dict(zip(env.possible_agents, rng.integers(0, nvec, size=(num_ues, 2))))
                   for _ in range(16)]
    warmup = max(20, int(0.1 * STEP_BUDGET[num_ues]))
    run(env, warmup, next_seed, action_sets)
    probe = max(20, warmup // 2)  # size the timed run to about `seconds`
    per_step = run(env, probe, next_seed, action_sets) / probe
    steps = int(min(STEP_BUDGET[num_ues], max(probe, seconds / per_step)))
    embedded_before = env.embedder.encoded_texts
    elapsed = run(env, steps, next_seed, action_sets)
    return env, steps, elapsed, env.embedder.encoded_texts - embedded_before


def cold_first_run(his_env, config, next_seed):
    """An empty cache: pool embedding and env build, then 500 decision points at N = 50."""
    with tempfile.TemporaryDirectory() as cold_cache:
        start = time.perf_counter()
        env = his_env.parallel_env(config, semantics={"cache_dir": cold_cache})
        build = time.perf_counter() - start
        rng = np.random.default_rng(0)
        nvec = env.action_space(env.possible_agents[0]).nvec
        actions = [dict(zip(env.possible_agents, rng.integers(0, nvec, size=(env.num_ues, 2))))]
        before = env.embedder.encoded_texts
        first = run(env, 500, next_seed, actions)
        return len(env.pool), build, first, env.embedder.encoded_texts - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in defaults)")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per N (about)")
    parser.add_argument("--skip-cold", action="store_true", help="do not measure the empty-cache first run")
    parser.add_argument("--scenario", default="seq-medium-heavy",
                        help="a Markov-game scenario of N = 50 also timed (his_env.scenarios; 'none': skip it)")
    args = parser.parse_args()
    from his_env.scenarios import scenario_config, scenario_names

    if args.scenario != "none" and (args.scenario not in scenario_names()
                                    or scenario_config(args.scenario).num_ues != 50):
        parser.error(f"--scenario {args.scenario}; allowed: none or a scenario of N = 50: "
                     f"{', '.join(n for n in scenario_names() if scenario_config(n).num_ues == 50)}")

    import torch

    torch.set_num_threads(1)
    import his_env

    next_seed = fresh_seed_source()
    cold = None if args.skip_cold else cold_first_run(his_env, args.config, next_seed)
    his_env.parallel_env(args.config)  # fills the user's cache with the pool if it is cold
    probe = ("import time, his_env; t = time.perf_counter(); his_env.parallel_env(%r); "
             "print(time.perf_counter() - t)" % (args.config,))
    warm_build = float(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                      text=True).stdout.split()[-1])
    rates = {}
    for num_ues, num_clusters in CASES:
        env, steps, elapsed, embedded = timed_case(his_env, args.config, num_ues, num_clusters,
                                                   args.seconds, next_seed)
        rate = steps / elapsed
        rates[num_ues] = rate
        print(f"bench_env: N={num_ues} M={env.num_clusters} scheme={env.scheme.name}: {rate:,.1f} decision "
              f"points/s ({rate * num_ues:,.0f} agent-steps/s), fresh seeds, {steps} decision points in "
              f"{elapsed:.2f} s, {embedded} new texts embedded while timed", flush=True)
    if args.scenario != "none":
        env, steps, elapsed, embedded = timed_case(his_env, args.config, 50, None, args.seconds, next_seed,
                                                   scenario=args.scenario)
        rates["dynamics"] = steps / elapsed
        print(f"bench_env: N=50 scenario={args.scenario} (dynamics: {', '.join(env.config.dynamics.enabled_processes)}"
              f"): {rates['dynamics']:,.1f} decision points/s ({rates['dynamics'] * 50:,.0f} agent-steps/s), fresh "
              f"seeds, {steps} decision points in {elapsed:.2f} s, {embedded} new texts embedded while timed", flush=True)
    if cold is not None:
        pool_size, build, first, embedded = cold
        print(f"one-time, empty cache: embedding the {pool_size}-prompt pool and building the env "
              f"{build:.1f} s; then the first 500 decision points at N=50 {first:.1f} s "
              f"({embedded} public prompts embedded)")
    print(f"env construction in a new process with a warm cache (imports included): {warm_build:.2f} s")
    print("SUMMARY bench_env fresh seeds, one core: "
          + ", ".join(f"N={n}{' M=30' if n == 1000 else ''} {rates[n]:,.0f}/s" for n, _ in CASES)
          + " decision points"
          + (f"; N=50 {args.scenario} {rates['dynamics']:,.0f}/s" if "dynamics" in rates else "")
          + (f"; first run with an empty cache {cold[1]:.1f} s build + {cold[2]:.1f} s for 500 steps"
             if cold is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
