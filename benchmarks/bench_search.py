"""Time of the search reference per decision point: numpy (the PettingZoo env's code) against a torch
device (`SearchPolicy(device=...)`, agents/vector_search.py).

    python benchmarks/bench_search.py [--num-ues 1000 --num-clusters 30] [--device cpu|cuda]
                                      [--points 2] [--seed 10000] [--skip-numpy]

Each decision point is a fresh one (the env reset with seed, seed + 1, ...; prompts and public prompts
new to the run unless cached); the device search runs once first on another seed to build (and on a
GPU compile) its evaluation, timed apart. For each point it prints U, the sweeps and the seconds of each
search, and whether both took the same joint action; the last line is the summary. The ES's SMs grow
with N as in the n1000 preset (Table II's range x N / 50).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-ues", type=int, default=1000, help="N (default 1,000)")
    p.add_argument("--num-clusters", type=int, default=30, help="M (default 30)")
    p.add_argument("--device", default="cpu", help="torch device of the device search (cpu, cuda, cuda:1)")
    p.add_argument("--points", type=int, default=2, help="decision points timed (default 2)")
    p.add_argument("--seed", type=int, default=10_000, help="seed of the first decision point")
    p.add_argument("--sweeps", type=int, default=4, help="the search's sweeps at most (default 4, as `search`)")
    p.add_argument("--skip-numpy", action="store_true", help="time the device search only")
    args = p.parse_args(argv)
    for name in ("num_ues", "num_clusters", "points", "sweeps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}; allowed: an integer >= 1")
    if args.num_clusters > args.num_ues:
        p.error(f"--num-clusters {args.num_clusters} > --num-ues {args.num_ues}; allowed: at most N clusters")
    import torch

    from his_env.vector.env import checked_device

    checked_device(args.device)  # a device that is not there is refused before anything runs
    torch.set_num_threads(1)
    import his_env
    from agents.baselines import SearchPolicy

    n = args.num_ues
    env = his_env.parallel_env(num_ues=n, num_clusters=args.num_clusters,
                               es__sm_range=[1026 * n // 50, 1674 * n // 50])
    device_search = SearchPolicy(max_sweeps=args.sweeps, seed=0, device=args.device)
    obs, _ = env.reset(seed=args.seed + 10_000)  # build (and compile) on a point that is not timed
    start = time.perf_counter()
    device_search.act(obs, env)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    print(f"device search built on {args.device} in {time.perf_counter() - start:.1f} s (first decision point, "
          f"with compilation where captured)", flush=True)
    times = {"numpy": [], args.device: []}
    same = []
    for i in range(args.points):
        seed = args.seed + i
        obs, _ = env.reset(seed=seed)
        actions = {}
        policies = [(args.device, device_search)] + ([] if args.skip_numpy else
                                                     [("numpy", SearchPolicy(max_sweeps=args.sweeps, seed=0))])
        parts = []
        for name, policy in policies:
            policy.reset(env, seed=seed)
            start = time.perf_counter()
            actions[name] = policy.act(obs, env)
            if name.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            parts.append(f"{name} {times[name][-1]:.2f} s (U {policy.last_utility:.4f}, {policy.last_sweeps} sweeps)")
        if not args.skip_numpy:
            same.append(all(np.array_equal(actions["numpy"][a], actions[args.device][a]) for a in actions["numpy"]))
            parts.append("same joint action" if same[-1] else "different joint actions")
        print(f"N={n} M={args.num_clusters} seed {seed}: " + ", ".join(parts), flush=True)
    summary = f"{args.device} {np.mean(times[args.device]):.2f} s"
    if not args.skip_numpy:
        summary += (f", numpy {np.mean(times['numpy']):.2f} s (x{np.mean(times['numpy']) / np.mean(times[args.device]):.1f}); "
                    f"same joint action at {sum(same)} of {len(same)} points")
    print(f"SUMMARY bench_search: N={n} M={args.num_clusters}, search per decision point: {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
