"""Throughput of the vectorised HIS environment (`his_env.vector.HISVecEnv`) stepping alone.

    python benchmarks/bench_vec_env.py [--device cpu|cuda] [--seconds 3] [--batch-sizes 64 256 1024]
                                       [--scenarios paper seq-medium-heavy]
                                       [--no-validate-actions | --compare-validation]
                                       [--no-capture | --compare-capture] [--breakdown]

Random actions are drawn on the device, the env steps (and resets at truncation, as a collector
would) with no learner attached; one torch thread on the CPU. Actions are validated as by default
(`HISVecEnv(validate_actions=True)`); `--no-validate-actions` times the env without the value
checks, and `--compare-validation` times every setting both ways: two envs step in turns of
about 20 ms (1 to 5 steps) for twice `--seconds`, so that a shared machine's load falls on both
alike, and the validation overhead printed is the median, over adjacent pairs of turns, of the
extra time per step. The step is captured as by default (`HISVecEnv(capture=None)`: compiled and
CUDA-graphed on a GPU, `his_env.vector.capture`); `--no-capture` times the uncaptured step, and
`--compare-capture` times every setting both ways (one after the other) and prints the speed-up;
a captured env's first steps compile, timed apart and printed. `--breakdown` also times the parts
of a step of each setting apart (`step_breakdown`). Prints, one line each:

* the decision-point bank of the default config (N = 50): its size and build time (or load time
  when cached), and a check that it does not change results: U and the mean phi under a random
  policy from the bank against fresh PettingZoo decision points (z of the mean difference, KS p);
* agent-steps/s (B x N per step) and the time of one step at N = 50 for each scenario, batch size
  B and reward mode
  (`paper`: independent decision points; `seq-medium-heavy`: the Markov game, every dynamics
  process on, N = 50), and each scenario's rate over `paper`'s at the same B and reward mode;
* the same at N = 1,000, M = 30 (its own, smaller bank);
* a final summary line (with `--compare-validation`: the largest and the median overhead).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from his_env.reward_modes import REWARD_MODES  # noqa: E402


def stepper(env):
    """A function taking one env step with random actions on the device (reset at truncation), warmed up."""
    import torch

    shape = env.full_action_spec["agents", "action"].shape
    high = torch.tensor(env.core.action_nvec, device=env.device)
    td = env.reset()

    def random_actions():
        if env.action_mode == "multi_categorical":
            return (torch.rand(shape, device=env.device) * high).long()
        if env.action_mode == "categorical":
            return (torch.rand(shape, device=env.device) * int(high.prod())).long()
        return torch.rand(shape, device=env.device)

    def one() -> None:
        nonlocal td
        td["agents", "action"] = random_actions()
        _, td = env.step_and_maybe_reset(td)

    start = time.perf_counter()
    for _ in range(3):  # warm-up (a captured env compiles here)
        one()
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    one.warm_up_seconds = time.perf_counter() - start
    return one


def timed_turn(step, device, steps: int = 5) -> float:
    """Seconds that `steps` calls of `step` take (the GPU's queue drained)."""
    import torch

    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def steps_per_second(env, seconds: float, device) -> tuple[float, float]:
    """Env steps per second (random actions on the device, reset at truncation) and the seconds
    the three warm-up steps took (with capture, the compilation)."""
    step = stepper(env)
    timed_turn(step, device, 0)  # drains the GPU's queue after the warm-up
    steps, elapsed = 0, 0.0
    while elapsed < seconds:
        elapsed += timed_turn(step, device)
        steps += 5
    return steps / elapsed, step.warm_up_seconds


def paired_steps_per_second(first, second, seconds: float, device) -> tuple[float, float, float]:
    """Steps per second of two envs stepped in turns (of 1 to 5 steps, about 20 ms) for `seconds` in
    all, and the median over adjacent pairs of turns of first's time / second's (the order within a
    pair alternates)."""
    steps = [stepper(first), stepper(second)]
    timed_turn(steps[0], device, 0)  # drains the GPU's queue after the warm-ups
    per_turn = max(1, min(5, int(0.02 / timed_turn(steps[0], device, 1))))  # many pairs even for slow steps
    totals, ratios, turns = [0.0, 0.0], [], 0
    while sum(totals) < seconds:
        pair = [0.0, 0.0]
        for i in ((0, 1) if turns % 2 == 0 else (1, 0)):
            pair[i] = timed_turn(steps[i], device, per_turn)
            totals[i] += pair[i]
        ratios.append(pair[0] / pair[1])
        turns += 1
    return per_turn * turns / totals[0], per_turn * turns / totals[1], float(np.median(ratios))


def step_breakdown(env, reps: int = 200) -> str:
    """Milliseconds per call of the parts of one step of `env`, each timed alone over `reps` calls
    with the GPU's queue drained: the captured part (dynamics off: the evaluation of the actions with
    the next decision points; on: with the slot's charges, the transition and the next slot's
    decision points) as the env runs it, and uncaptured, the random draws it takes, the step's output
    TensorDict (from the graph's results), the action check, the whole step (random actions, reset
    at truncation), and TorchRL's `step_and_maybe_reset` around a `_step` that returns a prebuilt
    output (what any env with these specs pays around its own work)."""
    import torch

    shape = env.full_action_spec["agents", "action"].shape
    actions = (torch.rand(shape, device=env.device) * torch.tensor(env.core.action_nvec, device=env.device)).long()
    done = torch.zeros(env.num_envs, dtype=torch.bool, device=env.device)
    step = stepper(env)

    def ms(fn) -> float:
        fn()
        return 1e3 * timed_turn(fn, env.device, reps) / reps

    if env.dynamics is None:
        drawn = env.core.sample_draws(env._generator)
        args = (env._contexts, actions, drawn)
        captured, uncaptured, draws = env._advance, env._advancement, lambda: env.core.sample_draws(env._generator)
        names = ("evaluation and next points", "draws of the next points")
        result, reward, _, observation = uncaptured(*args)
        executed = None
    else:
        drawn = env.dynamics.draws(env._draws, (env.num_envs,), False, env.core.dtype)
        args = (env._contexts, actions, env._dynamics_state, env._slot, drawn, env._rows, None)
        captured, uncaptured = env._advance_slot, env._slot_advancement

        def draws():
            env._next_rows()
            env.dynamics.draws(env._draws, (env.num_envs,), False, env.core.dtype)

        names = ("evaluation, transition and next slot", "draws of the next slot")
        result, reward, *_, observation = uncaptured(*args)
        executed = env._slot, env._dynamics_state
    parts = {names[0]: lambda: captured(*args),
             "the same uncaptured": lambda: uncaptured(*args),
             names[1]: draws,
             "output": lambda: env._output(result, reward, done, executed, observation),
             "action check": lambda: env._check_actions(actions),
             "whole step": step}
    timed = {name: ms(fn) for name, fn in parts.items()}
    # TorchRL's step_and_maybe_reset alone: around a _step that returns a step's output, prebuilt
    td = env.reset()
    td["agents", "action"] = actions
    prebuilt = env._step(td)
    env._step = lambda tensordict: prebuilt.clone(False)
    try:
        timed["TorchRL's step around it"] = ms(step)
    finally:
        del env._step  # the env's own _step again
        env.reset()
    return ", ".join(f"{name} {value:.3f} ms" for name, value in timed.items())


def bank_check(bank, samples: int, seed: int = 0) -> str:
    """U and mean phi under a random policy: bank contexts against fresh PettingZoo decision points."""
    import torch
    from scipy.stats import ks_2samp

    import his_env
    from his_env.vector import HISVecEnv

    env = his_env.parallel_env()
    rng = np.random.default_rng(seed)
    nvec = env.action_space("ue_0").nvec
    env.reset(seed=seed + 1000)  # decision points not in the bank (bank seed 0)
    ref_u, ref_phi = [], []
    for _ in range(samples):
        actions = rng.integers(0, nvec, size=(env.num_ues, 2))
        _, _, _, _, infos = env.step({a: actions[n] for n, a in enumerate(env.possible_agents)})
        ref_u.append(infos["ue_0"]["network_utility"])
        ref_phi.append(np.mean([infos[a]["similarity"] for a in env.possible_agents]))
        if not env.agents:
            env.reset()
    vec = HISVecEnv(num_envs=256, seed=seed, reward_mode="individual", bank=bank)
    td, u, phi = vec.reset(), [], []
    for _ in range(-(-samples // 256) * 2):
        phi.append(td["agents", "observation"][..., 0].double().mean(-1).numpy())
        td["agents", "action"] = torch.as_tensor(rng.integers(0, nvec, size=(256, env.num_ues, 2)))
        td = vec.step(td)
        u.append(td["next", "info", "utility"].numpy())
        td = td["next"]
    parts = []
    for name, ours, theirs in (("U", np.concatenate(u), np.array(ref_u)), ("phi", np.concatenate(phi), np.array(ref_phi))):
        z = (ours.mean() - theirs.mean()) / np.sqrt(ours.var() / len(ours) + theirs.var() / len(theirs))
        parts.append(f"{name} {ours.mean():.4f} (bank, {len(ours)} points) vs {theirs.mean():.4f} "
                     f"(PettingZoo, {len(theirs)} fresh points): z = {z:+.2f}, KS p = {ks_2samp(ours, theirs).pvalue:.2f}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per setting")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="B at N = 50 (default: 64 256 1024 on the CPU, 256 1024 4096 16384 on a GPU)")
    parser.add_argument("--large-batch-sizes", type=int, nargs="+", default=None,
                        help="B at N = 1,000 (default: 16 on the CPU, 64 256 on a GPU)")
    parser.add_argument("--reward-modes", nargs="+", default=list(REWARD_MODES.names), choices=REWARD_MODES.names)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--bank-size", type=int, default=None, help="bank at N = 50 (default: the env's)")
    parser.add_argument("--large-bank-size", type=int, default=256, help="bank at N = 1,000, M = 30")
    parser.add_argument("--check-samples", type=int, default=4000,
                        help="fresh PettingZoo decision points in the bank check (0: skip it)")
    parser.add_argument("--scenarios", nargs="+", default=["paper", "seq-medium-heavy"],
                        help="scenarios timed at N = 50 (his_env.scenarios; default: paper and seq-medium-heavy)")
    parser.add_argument("--skip-large", action="store_true", help="skip N = 1,000")
    validation = parser.add_mutually_exclusive_group()
    validation.add_argument("--no-validate-actions", action="store_true",
                            help="time HISVecEnv(validate_actions=False): no per-step action value checks")
    validation.add_argument("--compare-validation", action="store_true",
                            help="time each setting with and without action validation, in turns, and print the "
                                 "overhead")
    capture = parser.add_mutually_exclusive_group()
    capture.add_argument("--no-capture", action="store_true", help="time HISVecEnv(capture=False): the "
                         "uncaptured step (the default captures on a GPU)")
    capture.add_argument("--compare-capture", action="store_true",
                         help="time each setting captured and uncaptured and print the speed-up")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the parts of one step of each setting (the captured part, the same "
                             "uncaptured, its draws, output, action check)")
    args = parser.parse_args()
    if args.compare_capture and args.compare_validation:
        parser.error("--compare-capture and --compare-validation: allowed: one of them at a time")

    from his_env.scenarios import scenario_config, scenario_names

    unknown = [name for name in args.scenarios if name not in scenario_names()]
    if unknown:
        parser.error(f"--scenarios {' '.join(unknown)}: unknown; allowed: {', '.join(scenario_names())}")
    import torch

    torch.set_num_threads(1)
    from his_env.config import HISConfig
    from his_env.vector import DEFAULT_BANK_SIZE, DecisionBank, HISVecEnv
    from his_env.vector.env import checked_device

    device = checked_device(args.device)  # refuses a device that is not there, before anything runs
    dtype = getattr(torch, args.dtype)
    gpu = device.type == "cuda"
    sizes = args.batch_sizes or ([256, 1024, 4096, 16384] if gpu else [64, 256, 1024])
    large_sizes = args.large_batch_sizes or ([64, 256] if gpu else [16])
    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {os.cpu_count()} cores, 1 torch thread"
    print(f"device: {where}; dtype {args.dtype}; torch {torch.__version__}")

    def bank_for(cfg, size):
        start = time.perf_counter()
        bank = DecisionBank.build(cfg, size)
        how = f"built in {bank.build_seconds:.1f} s" if bank.build_seconds else "loaded from the disk cache"
        print(f"bank N={cfg.num_ues} M={cfg.num_clusters}: D = {len(bank)} contexts, {how} "
              f"({time.perf_counter() - start:.1f} s with the env build)", flush=True)
        return bank

    default = HISConfig.from_dict({})
    bank = bank_for(default, args.bank_size or DEFAULT_BANK_SIZE)
    if args.check_samples:
        print(f"bank check (N=50, random policy): {bank_check(bank, args.check_samples)}", flush=True)

    best, overheads, rates, speedups = {}, [], {}, []
    # None: the env's default; with --compare-capture, captured against uncaptured on any device
    capture_setting = True if args.compare_capture else False if args.no_capture else None

    def measure(label: str, n: str, mode: str, b: int, make) -> float:
        """Time `make(validate_actions, capture)`'s env; print and record its agent-steps/s and step
        time (and the validation overhead, or the capture's speed-up)."""
        if args.compare_validation:
            checked = make(True, capture_setting)
            rate, unchecked, ratio = paired_steps_per_second(checked, make(False, capture_setting),
                                                             2 * args.seconds, device)
            rate, unchecked = rate * b * checked.num_ues, unchecked * b * checked.num_ues
            overheads.append(100.0 * (ratio - 1.0))
            note = (f" validated, {unchecked:,.0f} not (in turns); validation overhead {overheads[-1]:+.1f} % "
                    f"time per step")
            env = checked
        else:
            env = make(not args.no_validate_actions, capture_setting)
            steps, warm_up = steps_per_second(env, args.seconds, device)
            rate = steps * b * env.num_ues
            note = " (actions not validated)" if args.no_validate_actions else ""
            note += f", step {1e3 / steps:.3f} ms" + (
                " uncaptured (not off: the compiler failed, see the warning above)" if env.capture_failed else
                f" captured (3 warm-up steps with compilation: {warm_up:.1f} s)" if env.capture else " uncaptured")
            if args.compare_capture:
                plain_steps, _ = steps_per_second(make(not args.no_validate_actions, False), args.seconds, device)
                speedups.append(steps / plain_steps)
                note += (f"; uncaptured {plain_steps * b * env.num_ues:,.0f} agent-steps/s, step "
                         f"{1e3 / plain_steps:.3f} ms: captured x{speedups[-1]:.1f}")
        print(f"{label}: {rate:,.0f} agent-steps/s{note}", flush=True)
        if args.breakdown:
            print(f"  breakdown (ms per call): {step_breakdown(env)}", flush=True)
        best[(n, mode)] = max(best.get((n, mode), (0, 0)), (rate, b))
        return rate

    for scenario in args.scenarios:
        cfg = scenario_config(scenario)
        if cfg.num_ues != 50:
            parser.error(f"--scenarios {scenario}: N = {cfg.num_ues}; allowed: scenarios of N = 50 (the timed size)")
        scenario_bank = bank if cfg == default else bank_for(cfg, args.bank_size or DEFAULT_BANK_SIZE)
        tag = "50" if scenario == "paper" else f"50 {scenario}"
        for mode in args.reward_modes:
            for b in sizes:
                rates[(scenario, mode, b)] = measure(
                    f"N=50 {scenario} B={b} reward={mode}", tag, mode, b, lambda flag, capture: HISVecEnv(
                        cfg, num_envs=b, device=device, reward_mode=mode, dtype=dtype, bank=scenario_bank,
                        validate_actions=flag, capture=capture))
    ratios = []
    for (scenario, mode, b), rate in rates.items():
        if scenario != "paper" and ("paper", mode, b) in rates:
            ratios.append((f"{scenario} {mode} B={b}", rate / rates[("paper", mode, b)]))
    if ratios:
        print(f"dynamics on / off (paper) at N=50: {', '.join(f'{k} x{v:.2f}' for k, v in ratios)}", flush=True)
    if not args.skip_large:
        large = default.with_overrides({"num_ues": 1000, "num_clusters": 30})
        large_bank = bank_for(large, args.large_bank_size)
        for mode in args.reward_modes:
            for b in large_sizes:
                measure(f"N=1000 M=30 B={b} reward={mode}", "1000", mode, b, lambda flag, capture: HISVecEnv(
                    large, num_envs=b, device=device, reward_mode=mode, dtype=dtype, bank=large_bank,
                    validate_actions=flag, capture=capture))
    summary = ", ".join(f"N={n} {mode} {rate:,.0f} (B={b})" for (n, mode), (rate, b) in best.items())
    validation = ("actions not validated" if args.no_validate_actions else "actions validated" if not overheads else
                  f"action validation overhead max {max(overheads):+.1f} %, median {np.median(overheads):+.1f} % "
                  f"over {len(overheads)} settings")
    against_paper = f"; dynamics on / off at N=50: x{min(v for _, v in ratios):.2f} at worst" if ratios else ""
    captured = ("uncaptured" if args.no_capture else
                f"captured x{min(speedups):.1f} to x{max(speedups):.1f} over uncaptured" if speedups else
                "captured" if gpu else "uncaptured (the CPU default)")
    print(f"SUMMARY bench_vec_env ({args.device}, {args.dtype}): best agent-steps/s: {summary}; {validation}; "
          f"{captured}{against_paper}")


if __name__ == "__main__":
    main()
