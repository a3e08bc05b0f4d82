"""The published results of the README and docs, each with the commands that regenerate it from scratch.

    python -m his_cli.paper_results --list                 # what there is, where it is published, its cost
    python -m his_cli.paper_results                        # every result this machine can run (cuda ones need a GPU)
    python -m his_cli.paper_results --only grid_7algos_cpu fig10

`PUBLISHED` is the one list: a result published in the README or docs is added here, with the page
that shows it, the commands (run from the repository root with this Python, in order) and the machine
it was measured on. `run_published` runs the chosen ones one after another; each writes its output to
`<output dir>/<name>/` (the commands' own `--output-dir`s point there) and its log to
`<output dir>/<name>/run.log`; a finished one leaves `done.json` (its commands, times, exit status)
and is not run again with the same commands, so an interrupted regeneration resumes where it stopped
(an earlier unfinished attempt's files move to `superseded/attempt-<UTC time>/`, kept). A result whose
commands fail is reported and the others still run.
"""
from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from his_common.registry import Registry
from his_common.storage import atomic_write_json, set_aside_attempt

OUT = "{out}"  # stands for the result's own output folder in a command
DONE_FILE = "done.json"
LOG_FILE = "run.log"
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class PublishedResult:
    """One published table or figure: where it is shown, how it is made, on what."""

    what: str                 # the table or figure
    page: str                 # where it is published (file#anchor)
    commands: tuple[str, ...]  # shell commands from the repository root; {out}: the result's folder
    device: str               # "cpu" or "cuda": what the commands need
    minutes: float            # about how long the commands take on `measured_on` (as the page reports it)
    measured_on: str          # the machine the published numbers come from


PUBLISHED: Registry[PublishedResult] = Registry("published result")
_BENCH_BOTH = "python benchmarks/bench_train.py --backend both --seed {seed} --time-limit 90"
_GRID_7 = ("python benchmark.py --algorithms ippo mappo iql qmix vdn isac masac --schemes his --seeds 3 "
           "--time-budget 45 --absolute-episodes 0 --wandb-mode disabled --no-progress-bar --output-dir {out}/grid")
_GAMMA_GRID = ("python benchmark.py --algorithms mappo --scenarios seq-medium-heavy --seeds 5 --time-budget 240 --jobs 5 "
               "--device cuda --absolute-episodes 40 --set benchmarl.experiment.gamma={gamma} "
               "--set benchmarl.experiment.on_policy_collected_frames_per_batch=12800 "
               "--set benchmarl.experiment.on_policy_n_envs_per_worker=128 "
               "--set benchmarl.experiment.on_policy_minibatch_size=1600 "
               "--set benchmarl.experiment.evaluation_interval=102400 --wandb-mode disabled --no-progress-bar "
               "--output-dir {{out}}/gamma-{gamma}")
for _name, _result in {
    "bench_env": PublishedResult(
        "PettingZoo env decision points/s at N = 50 and N = 1,000", "docs/benchmarks.md#throughput-and-learning-speed",
        ("python benchmarks/bench_env.py",), "cpu", 2, "2-core CPU"),
    "bench_vec_env_cpu": PublishedResult(
        "HISVecEnv agent-steps/s on the CPU, per reward mode", "docs/benchmarks.md#throughput-and-learning-speed",
        ("python benchmarks/bench_vec_env.py",), "cpu", 3, "2-core CPU"),
    "bench_vec_env_gpu": PublishedResult(
        "HISVecEnv agent-steps/s on one GPU, and the cost of the action checks",
        "docs/benchmarks.md#throughput-and-learning-speed",
        ("python benchmarks/bench_vec_env.py --device cuda --compare-validation --no-capture",), "cuda", 5, "one H200"),
    "bench_train_rllib": PublishedResult(
        "RLlib IPPO agent-steps/s and training time to a score of 0.9", "docs/benchmarks.md#throughput-and-learning-speed",
        ("python benchmarks/bench_train.py",), "cpu", 3, "2-core CPU"),
    "bench_train_both": PublishedResult(
        "BenchMARL (preset fast) against RLlib IPPO, seeds 0, 1, 2: throughput and time-to-0.9 ratios",
        "docs/benchmarks.md#rllib-ippo-against-benchmarl-ippo",
        tuple(_BENCH_BOTH.format(seed=s) for s in (0, 1, 2)), "cpu", 9, "2-core CPU"),
    "grid_7algos_cpu": PublishedResult(
        "seven discrete BenchMARL algorithms on HIS, 3 seeds, 45 s each", "docs/benchmarks.md#seven-discrete-algorithms-on-his",
        (_GRID_7,), "cpu", 19, "2-core CPU"),
    "grid_7algos_seq_cpu": PublishedResult(
        "seven discrete BenchMARL algorithms on seq-medium-heavy, 3 seeds, 45 s each",
        "docs/benchmarks.md#the-discount-on-a-sequential-scenario",
        ("python benchmark.py --algorithms ippo mappo iql qmix vdn isac masac --scenarios seq-medium-heavy --seeds 3 "
         "--time-budget 45 --jobs 2 --absolute-episodes 40 --wandb-mode disabled --no-progress-bar --output-dir {out}/grid",),
        "cpu", 13, "2-core CPU"),
    "grid_7algos_seq_small_cpu": PublishedResult(
        "seven discrete BenchMARL algorithms on seq-small-heavy, 3 seeds, 60 s each; ippo, mappo and qmix again "
        "with one network shared by all UEs",
        "docs/benchmarks.md#seven-algorithms-a-sequential-task-ten-seeds-gpu",
        ("python benchmark.py --algorithms ippo mappo iql qmix vdn isac masac --scenarios seq-small-heavy --seeds 3 "
         "--time-budget 60 --jobs 2 --wandb-mode disabled --no-progress-bar --output-dir {out}/grid",
         "python benchmark.py --algorithms ippo mappo qmix --scenarios seq-small-heavy --seeds 3 --time-budget 60 "
         "--jobs 2 --set benchmarl.experiment.share_policy_params=true --wandb-mode disabled --no-progress-bar "
         "--output-dir {out}/shared"),
        "cpu", 23, "2-core CPU"),
    "grid_7algos_seq_moderate_gpu": PublishedResult(
        "seven discrete BenchMARL algorithms on paper and seq-medium-moderate, 10 seeds, 90 s each",
        "docs/benchmarks.md#seven-algorithms-a-sequential-task-ten-seeds-gpu",
        ("python benchmark.py --algorithms ippo mappo iql qmix vdn isac masac --scenarios paper seq-medium-moderate "
         "--seeds 10 --time-budget 90 --device cuda --jobs 11 --wandb-mode disabled --no-progress-bar "
         "--output-dir {out}/grid",),
        "cuda", 30, "one H100"),
    "gamma_seq_gpu": PublishedResult(
        "MAPPO on seq-medium-heavy at discounts 0 / 0.5 / 0.9 / 0.99, 5 seeds, 240 s each",
        "docs/benchmarks.md#the-discount-on-a-sequential-scenario",
        tuple(_GAMMA_GRID.format(gamma=g) for g in ("0", "0.5", "0.9", "0.99")), "cuda", 24, "one H100"),
    "train_n1000_gpu": PublishedResult(
        "BenchMARL shared PPO at N = 1,000 (preset n1000): agent-steps/s and memory", "docs/benchmarks.md#a-thousand-ues-on-one-gpu",
        ("python train.py --backend benchmarl --preset n1000 --device cuda --time-limit 120 --wandb-mode disabled "
         "--output-dir {out}/run",), "cuda", 4, "one H100"),
    "discount_presets_seq_gpu": PublishedResult(
        "train.py's shared PPO on seq-medium-heavy: the fast preset (64 envs) at discounts 0 / 0.99 / 0.99 without "
        "value clip and the markov preset at 0 / 0.99, 5 seeds each, with each seed's random and search references",
        "docs/benchmarks.md#the-discount-on-a-sequential-scenario",
        tuple(f"python train.py --backend benchmarl --device cuda --scenario seq-medium-heavy --seed {seed} {preset} "
              f"--set algorithm.gamma={gamma} --timesteps {frames} --eval-baselines none --checkpoint-every 0 "
              f"--wandb-mode disabled --output-dir {{out}}/{name}-gamma{gamma}-seed{seed}"
              for name, preset, frames, gammas in (
                  ("fast", "--preset fast --set algorithm.episodes_per_iteration=64", 249600, ("0", "0.99")),
                  ("fast-no-value-clip", "--preset fast --set algorithm.episodes_per_iteration=64 "
                                         "--set algorithm.value_clip=null", 249600, ("0.99",)),
                  ("markov", "--preset markov", 1100800, ("0", "0.99")))
              for gamma in gammas for seed in range(5))
        + tuple(f"python evaluate.py --scenario seq-medium-heavy --policy random --policy search --policy backlog-search "
                f"--episodes 4 --seed-base {10000 + 1000 * seed} --output-dir {{out}}/references-seed{seed}"
                for seed in range(5)), "cuda", 150, "one H200 (fast) and one H100 (markov), runs side by side"),
    "action_mask_seq_gpu": PublishedResult(
        "train.py's markov preset on seq-medium-heavy with inactive UEs' actions masked: discounts 0 / 0.99 at "
        "entropy 0.002, discount 0 at entropy 0.01, 5 seeds each (references: discount_presets_seq_gpu's)",
        "docs/benchmarks.md#the-discount-on-a-sequential-scenario",
        tuple(f"python train.py --backend benchmarl --device cuda --scenario seq-medium-heavy --seed {seed} "
              f"--set algorithm.gamma={gamma} --set algorithm.entropy={entropy} --set benchmarl.task.action_mask=true "
              f"--iterations 87 --eval-baselines none --checkpoint-every 0 --wandb-mode disabled "
              f"--output-dir {{out}}/masked-entropy{entropy}-gamma{gamma}-seed{seed}"
              for entropy, gammas in (("0.002", ("0", "0.99")), ("0.01", ("0",)))
              for gamma in gammas for seed in range(5)), "cuda", 70, "one H100, six to eight runs side by side"),
    "charged_reward_seq_gpu": PublishedResult(
        "train.py's markov preset on seq-medium-heavy with the difference reward charging each UE its own queue: "
        "discounts 0 / 0.9 / 0.99, seeds 0 and 1 (references: discount_presets_seq_gpu's)",
        "docs/benchmarks.md#the-discount-on-a-sequential-scenario",
        tuple(f"python train.py --backend benchmarl --device cuda --scenario seq-medium-heavy --seed {seed} "
              f"--set algorithm.gamma={gamma} --iterations 300 --time-limit 300 --eval-baselines none "
              f"--checkpoint-every 0 --wandb-mode disabled --output-dir {{out}}/charged-gamma{gamma}-seed{seed}"
              for seed in range(2) for gamma in ("0.99", "0.9", "0")), "cuda", 6, "one H100, six runs side by side"),
    "charged_reward_seq_small_cpu": PublishedResult(
        "the same on seq-small-heavy on one CPU core: discounts 0 / 0.9 / 0.99 and 0.99 with the action mask, seed 0",
        "docs/benchmarks.md#the-discount-on-a-sequential-scenario",
        tuple(f"python train.py --backend benchmarl --scenario seq-small-heavy --seed 0 --set algorithm.gamma={gamma} "
              f"{mask}--set algorithm.episodes_per_iteration=32 --set algorithm.minibatch_size=8000 --time-limit 600 "
              f"--eval-baselines random,search,backlog-search --checkpoint-every 0 --wandb-mode disabled "
              f"--output-dir {{out}}/charged-gamma{gamma}{'-masked' if mask else ''}"
              for gamma, mask in (("0", ""), ("0.9", ""), ("0.99", ""),
                                  ("0.99", "--set benchmarl.task.action_mask=true "))), "cpu", 42, "one CPU core"),
    "held_sms_reward_seq_small_cpu": PublishedResult(
        "the difference reward that also returns each UE's held ES SMs, on seq-small-heavy: discounts 0 and 0.99, "
        "seeds 0-4, one CPU core per run",
        "docs/benchmarks.md#the-discount-on-a-sequential-scenario",
        tuple(f"python train.py --backend benchmarl --scenario seq-small-heavy --seed {seed} --set algorithm.gamma={gamma} "
              f"--set algorithm.episodes_per_iteration=32 --set algorithm.minibatch_size=8000 --time-limit 600 "
              f"--eval-baselines random,search,open-loop --checkpoint-every 0 --wandb-mode disabled "
              f"--output-dir {{out}}/gamma{gamma}-seed{seed}"
              for seed in range(5) for gamma in ("0", "0.99")), "cpu", 110, "one CPU core per run, two at a time"),
    "markov_preset_seq_small_cpu": PublishedResult(
        "train.py's default on a sequential scenario (the markov preset, 128 envs per iteration) on seq-small-heavy: "
        "discounts 0 and 0.99, seeds 0-4, 50 iterations (640,000 frames), against the open-loop and backlog searches",
        "docs/benchmarks.md#the-discount-on-a-sequential-scenario",
        tuple(f"python train.py --backend benchmarl --scenario seq-small-heavy --seed {seed} --set algorithm.gamma={gamma} "
              f"--iterations 50 --eval-baselines random,search,open-loop,backlog-search --checkpoint-every 0 "
              f"--wandb-mode disabled --output-dir {{out}}/gamma{gamma}-seed{seed}"
              for seed in range(5) for gamma in ("0.99", "0")), "cpu", 62, "one CPU core per run, two at a time"),
    "held_sms_reward_seq_medium_cpu": PublishedResult(
        "the same on seq-medium-heavy, seeds 0-9, the markov preset on one CPU core per run, 19 iterations",
        "docs/benchmarks.md#the-discount-across-loads",
        tuple(f"python train.py --backend benchmarl --scenario seq-medium-heavy --seed {seed} --set algorithm.gamma={gamma} "
              f"--iterations 19 --eval-baselines none --checkpoint-every 0 --wandb-mode disabled "
              f"--output-dir {{out}}/gamma{gamma}-seed{seed}" for seed in range(10) for gamma in ("0", "0.99")),
        "cpu", 265, "one CPU core per run, two at a time"),
    "gamma_seq_medium_moderate_gpu": PublishedResult(
        "discount 0 against 0.99 on seq-medium-moderate, 5 seeds each, the markov preset, 420 s per run",
        "docs/benchmarks.md#the-discount-across-loads",
        tuple(f"python train.py --backend benchmarl --device cuda --scenario seq-medium-moderate --seed {seed} "
              f"--set algorithm.gamma={gamma} --time-limit 420 --eval-baselines none --checkpoint-every 0 "
              f"--wandb-mode disabled --output-dir {{out}}/gamma{gamma}-seed{seed}"
              for seed in range(5) for gamma in ("0", "0.99")), "cuda", 16, "one H100, five runs at a time"),
    "scenario_loads_cpu": PublishedResult(
        "the baselines on the three loads of the ladder (medium cell; the moderate load on every size), and the "
        "references of seq-medium-moderate's training seeds 0-4",
        "docs/scenarios.md#the-ladder",
        tuple(f"python evaluate.py --scenario seq-medium-{load} --policy random --policy search --policy backlog-search "
              f"--policy open-loop --policy fixed:16,0 --policy fixed:16,2 --policy fixed:16,5 --policy fixed:16,8 "
              f"--policy fixed:16,11 --policy fixed:8,5 --episodes 4 --seed-base 90000 --jobs 2 --output-dir {{out}}/medium-{load}"
              for load in ("light", "moderate", "heavy"))
        + tuple(f"python evaluate.py --scenario seq-{size}-moderate --policy random --policy search --policy backlog-search "
                f"--policy open-loop --episodes 4 --seed-base 90000 --jobs 2 --output-dir {{out}}/{size}-moderate"
                for size in ("small", "large"))
        + tuple(f"python evaluate.py --scenario seq-medium-moderate --policy random --policy search --policy backlog-search "
                f"--policy open-loop --episodes 4 --seed-base {10000 + 1000 * seed} --jobs 2 "
                f"--output-dir {{out}}/medium-moderate-{10000 + 1000 * seed}" for seed in range(5)),
        "cpu", 90, "2-core CPU"),
    "train_scale_gpu": PublishedResult(
        "the n1000 preset at N = 250, 1,000 and 4,000 (the cell grown with N, a bank of 1,024): agent-steps/s and "
        "memory",
        "docs/benchmarks.md#a-thousand-ues-on-one-gpu",
        tuple(f"python train.py --backend benchmarl --preset n1000 --device cuda --set num_ues={n} "
              f"--set num_clusters={n * 30 // 1000} --set es.sm_range=[{1026 * n // 50},{1674 * n // 50}] "
              f"--set benchmarl.task.bank_size=1024 --set experiment.evaluation_episodes=0 --time-limit {limit} "
              f"--eval-baselines none --checkpoint-every 0 --wandb-mode disabled --output-dir {{out}}/n{n}"
              for n, limit in ((250, 90), (1000, 150), (4000, 400))), "cuda", 17, "one H100"),
    "train_scale_n5000_gpu": PublishedResult(
        "the n1000 preset at N = 5,000 (M = 150, a bank of 1,024): agent-steps/s and memory (81 GB as nvidia-smi "
        "counts it: a card of more than 80 GB; the published run also set "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)",
        "docs/benchmarks.md#a-thousand-ues-on-one-gpu",
        ("python train.py --backend benchmarl --preset n1000 --device cuda --set num_ues=5000 --set num_clusters=150 "
         "--set es.sm_range=[102600,167400] --set benchmarl.task.bank_size=1024 "
         "--set experiment.evaluation_episodes=0 --time-limit 420 --eval-baselines none --checkpoint-every 0 "
         "--wandb-mode disabled --output-dir {out}/n5000",), "cuda", 10, "one H200"),
    "dynamics_gpu": PublishedResult(
        "the dynamics step against the paper step on one GPU (N = 50, B = 1,024)",
        "docs/benchmarks.md#the-markov-game-dynamics-on",
        ("python benchmarks/bench_vec_env.py --device cuda --seconds 1 --check-samples 0 --skip-large "
         "--reward-modes difference individual --batch-sizes 1024 --scenarios paper seq-medium-heavy",), "cuda", 3,
        "one H100"),
    "baselines_seq_cpu": PublishedResult(
        "the baselines (backlog-search, open-loop, queue rules, fixed splits) on seq-medium-heavy and seq-large-heavy",
        "docs/evaluation.md#policies",
        tuple(f"python evaluate.py --scenario {s} --policy random --policy search --policy backlog-search "
              "--policy open-loop --policy queue-aware --policy iis-fixed --policy es-only --policy ue-only "
              f"--episodes 4 --seed-base 90000 --jobs 2 --output-dir {{out}}/{s}"
              for s in ("seq-medium-heavy", "seq-large-heavy")), "cpu", 15, "2-core CPU"),
    "open_loop_seq_cpu": PublishedResult(
        "the open-loop baseline (the better of the myopic schedule and the best constant action) on the heavy "
        "sequential scenarios, and the references of the medium one's training seeds 0-4",
        "docs/evaluation.md#policies",
        tuple(f"python evaluate.py --scenario seq-{size}-heavy --policy random --policy search --policy open-loop "
              f"--episodes 4 --seed-base {base} --jobs 2 --output-dir {{out}}/{size}-{base}"
              for size, base in (("small", 90000), ("medium", 90000), ("large", 90000),
                                 *(("medium", 10000 + 1000 * s) for s in range(5)))), "cpu", 40, "2-core CPU"),
    "capture_gpu": PublishedResult(
        "the captured step against the uncaptured one on one GPU, and a breakdown of its parts",
        "docs/benchmarks.md#step-capture",
        ("python benchmarks/bench_vec_env.py --device cuda --seconds 1 --check-samples 0 --skip-large "
         "--compare-capture --reward-modes difference individual --batch-sizes 1024 16384 --scenarios paper "
         "--breakdown",), "cuda", 5, "one H200"),
    **{f"fig{n}": PublishedResult(
        f"Fig. {n} of the paper on this implementation (search and random policies)",
        "docs/evaluation.md#one-command-per-figure",
        (f"python evaluate.py --figure {n} --policy search --policy random --output-dir {{out}}",), "cpu", 10,
        "2-core CPU") for n in (10, 11, 12, 13, 14, 16, 17)},
    "fig15": PublishedResult(
        "Fig. 15, reward curves of the MIRA ablations", "docs/evaluation.md#fig-15-reward-curves-of-the-ablations",
        tuple(f"python train.py --config configs/ablations/{a}.yaml --iterations 40 --wandb-mode disabled "
              f"--output-dir {{out}}/{a}" for a in ("full", "no_reward_norm", "no_adv_norm", "vanilla"))
        + ("python evaluate.py --figure 15 --runs {out}/full {out}/no_reward_norm {out}/no_adv_norm {out}/vanilla "
           "--output-dir {out}/figure",), "cpu", 40, "2-core CPU"),
}.items():
    PUBLISHED.register(_name, _result)
del _name, _result


def commands_for(name: str, out: Path) -> List[str]:
    """The result's commands with its output folder filled in and `python` as this interpreter."""
    result = PUBLISHED[name]
    python = shlex.quote(sys.executable)
    return [(python + cmd[len("python"):] if cmd.startswith("python ") else cmd).replace(OUT, shlex.quote(str(out)))
            for cmd in result.commands]


def cuda_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _finished(folder: Path, commands: Sequence[str]) -> bool:
    try:
        done = json.loads((folder / DONE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(done, dict) and done.get("returncode") == 0 and done.get("commands") == list(commands)


def run_published(names: Sequence[str], output_dir: str | Path = "results/paper", *, dry_run: bool = False,
                  log: Callable[[str], None] = print, repo: Optional[Path] = None) -> Dict[str, str]:
    """Run the results `names` one after another (see the module docstring); returns {name: "done" | "skipped
    (finished)" | "failed (exit N)" | "planned"}. SIGINT/SIGTERM reach the running command (its own handling
    applies: train.py and benchmark.py stop cleanly and resume) and then stop the regeneration."""
    for name in names:
        PUBLISHED.check(name, "result", ValueError)
    repo = Path(repo or Path(__file__).resolve().parents[1])
    out_root = Path(output_dir).resolve()
    status: Dict[str, str] = {}
    for name in names:
        folder = out_root / name
        commands = commands_for(name, folder)
        if _finished(folder, commands):
            status[name] = "skipped (finished)"
            log(f"paper-results: {name}: finished before, in {folder}")
            continue
        if dry_run:
            status[name] = "planned"
            log(f"paper-results: {name} ({PUBLISHED[name].page}):")
            for cmd in commands:
                log(f"  {cmd}")
            continue
        moved = set_aside_attempt(folder)
        if moved is not None:
            log(f"paper-results: {name}: an earlier attempt's files moved to {moved}")
        folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        returncode = 0
        with open(folder / LOG_FILE, "w", encoding="utf-8") as log_file:
            for cmd in commands:
                log(f"paper-results: {name}: {cmd}")
                log_file.write(f"$ {cmd}\n")
                log_file.flush()
                proc = subprocess.Popen(["bash", "-c", cmd], cwd=repo, stdout=log_file, stderr=subprocess.STDOUT)
                try:
                    returncode = proc.wait()
                except KeyboardInterrupt:  # the child got the signal too; let it finish its own stop
                    returncode = proc.wait()
                    raise
                if returncode != 0:
                    break
        record = {"name": name, **asdict(PUBLISHED[name]), "commands": commands, "returncode": returncode,
                  "started": started, "wall_s": time.time() - started}
        atomic_write_json(folder / (DONE_FILE if returncode == 0 else "failed.json"), record)
        if returncode == 0:
            status[name] = "done"
            log(f"paper-results: {name}: done in {record['wall_s'] / 60:.1f} min; log {folder / LOG_FILE}")
        else:
            status[name] = f"failed (exit {returncode})"
            if returncode in (130, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGTERM):
                log(f"paper-results: {name}: stopped (exit {returncode}); run the same command again to resume")
                status[name] = "stopped"
                break
            log(f"paper-results: {name}: failed (exit {returncode}); see {folder / LOG_FILE}")
    return status


__all__ = ["DEVICES", "PUBLISHED", "PublishedResult", "commands_for", "cuda_present", "run_published"]
