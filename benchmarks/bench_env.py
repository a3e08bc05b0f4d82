"""Throughput of the HIS environment at the default configuration (N = 50), on one core.

    python benchmarks/bench_env.py [--steps 5000] [--config configs/default.yaml]

Reports, separately: the one-time cost of embedding the prompt pool (cold cache, in a temporary
cache folder), the env construction time with a warm cache, and the steady-state decision points
(and agent-steps) per second of reset/step with pre-built action dicts, after a warm-up that fills
the public-prompt embedding cache. Ends with one summary line.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in defaults)")
    parser.add_argument("--steps", type=int, default=5000, help="timed decision points")
    parser.add_argument("--warmup", type=int, default=2000, help="untimed decision points first")
    parser.add_argument("--skip-cold", action="store_true", help="do not measure the cold embedding cost")
    args = parser.parse_args()

    import subprocess

    import torch

    torch.set_num_threads(1)
    import his_env

    env = his_env.parallel_env(args.config)  # fills the default disk cache if it is cold
    probe = ("import time, his_env; t = time.perf_counter(); his_env.parallel_env(%r); "
             "print(time.perf_counter() - t)" % (args.config,))
    warm_seconds = float(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                        text=True).stdout.split()[-1])
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as cold_cache:
            start = time.perf_counter()
            cold = his_env.parallel_env(args.config, semantics={"cache_dir": cold_cache})
            cold_seconds = time.perf_counter() - start
            pool_size = len(cold.pool.texts)
            del cold
    n = env.num_ues

    rng = np.random.default_rng(0)
    nvec = env.action_space(env.possible_agents[0]).nvec
    action_sets = [dict(zip(env.possible_agents, rng.integers(0, nvec, size=(n, 2)))) for _ in range(64)]

    def run(steps: int) -> None:
        env.reset(seed=0)
        for t in range(steps):
            if not env.agents:
                env.reset()
            env.step(action_sets[t % 64])

    run(args.warmup)
    start = time.perf_counter()
    run(args.steps)
    elapsed = time.perf_counter() - start
    per_second = args.steps / elapsed
    if not args.skip_cold:
        print(f"one-time: embedding the {pool_size}-prompt pool with a cold cache and building the env: "
              f"{cold_seconds:.1f} s")
    print(f"env construction in a new process with a warm disk cache (imports included): {warm_seconds:.2f} s")
    print(f"steady state: {args.steps} decision points in {elapsed:.2f} s = {1e6 / per_second:.0f} us each")
    print(f"bench_env: N={n} scheme={env.scheme.name}: {per_second:,.0f} decision points/s "
          f"({per_second * n:,.0f} agent-steps/s) on one core, steady state"
          + (f"; one-time pool embedding {cold_seconds:.1f} s" if not args.skip_cold else ""))


if __name__ == "__main__":
    sys.exit(main())
