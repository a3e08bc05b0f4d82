"""Train IPPO (the paper's MIRA learner), shared-parameter PPO or MAPPO on the HIS env with RLlib.

    python train.py                                   # N = 50, HIS, fitted HIQM, IPPO, 5 minutes
    python train.py --iterations 50 --algo mappo --set num_ues=10 --set algorithm.lr=0.001
    python train.py --config configs/ablations/vanilla.yaml    # Fig. 15's "vanilla MIRA"
    python train.py --resume runs/my-run               # continue from the latest checkpoint
    python train.py --ray-address auto --num-env-runners 16   # the same run on a Ray cluster

Configuration (agents.config.load_run_config): `configs/default.yaml`, overlaid by YAML files
(`--config`, a path or a shipped name such as `train_small`; repeatable, later ones win) with the
env's keys and the `algorithm:` and `experiment:` sections, then `--set key=value` (repeatable;
dotted env keys like `es.sm_range=[800,1200]` or `scheme.name=cfis`, `algorithm.<key>=...`,
`experiment.<key>=...`), then the named flags. The resolved config is written to
`<output-dir>/config.yaml`.

Outputs in `--output-dir`: `metrics.jsonl` and `metrics.csv` (one row per iteration),
`checkpoints/iter_NNNNNN/` (atomic; `checkpoints/latest` names the newest), `eval.csv` and
`eval.md` (greedy evaluation of the final policy beside the baselines on fixed seeds),
`plots/learning_curve.png`, and the W&B run (offline by default) under `wandb/`.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import resource
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

import yaml  # noqa: E402

from his_cli.args import UsageError, nonneg_int, parse_overrides, positive_int, positive_seconds  # noqa: E402

REPO = Path(__file__).resolve().parent
EVAL_SEED_BASE = 10_000
WANDB_MODES = ("online", "offline", "disabled")
ALGOS = ("ippo", "ppo-shared", "mappo")
# experiment.* keys that may change when resuming (they do not change what is learned)
RUNTIME_EXPERIMENT_KEYS = {"num_env_runners", "num_envs_per_env_runner", "num_learners", "torch_threads",
                           "evaluation_episodes"}
LEARNER_STAT_KEYS = ("policy_loss", "vf_loss", "vf_loss_unclipped", "entropy", "mean_kl_loss", "clip_fraction",
                     "vf_explained_var", "total_loss")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=None, metavar="YAML",
                   help="config file overlaid on configs/default.yaml (repeatable, later ones win)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one key: env keys dotted (es.sm_range=[800,1200]), algorithm.<key>, experiment.<key>")
    p.add_argument("--algo", choices=ALGOS, help="learner (default: algorithm.algo, ippo)")
    p.add_argument("--seed", type=nonneg_int("--seed"), help="seed of env runners, modules and evaluation")
    p.add_argument("--iterations", type=positive_int("--iterations"), help="stop after this many iterations in total")
    p.add_argument("--timesteps", type=positive_int("--timesteps"),
                   help="stop after this many env steps (decision points) in total; agent-steps = env steps x N")
    p.add_argument("--time-limit", type=positive_seconds("--time-limit"),
                   help="stop after this many seconds of this invocation (default 300 when no other stop is given)")
    p.add_argument("--checkpoint-every", type=nonneg_int("--checkpoint-every"), default=10,
                   help="save a checkpoint every N iterations (0: only at the end; default 10)")
    p.add_argument("--keep-checkpoints", type=positive_int("--keep-checkpoints"), default=2,
                   help="how many recent checkpoints to keep (default 2)")
    p.add_argument("--resume", metavar="PATH", help="checkpoint folder or run output folder to continue from")
    p.add_argument("--num-env-runners", type=nonneg_int("--num-env-runners"),
                   help="sampling processes (0: sample in the driver; default experiment.num_env_runners)")
    p.add_argument("--ray-address", help="address of a running Ray cluster ('auto' or host:port); default: local")
    p.add_argument("--wandb-mode", choices=WANDB_MODES, default=None,
                   help="W&B mode (default offline: no key or network needed)")
    p.add_argument("--wandb-project", default="his-marl")
    p.add_argument("--wandb-name", default=None, help="W&B run name (default: the output folder's name)")
    p.add_argument("--output-dir", help="run folder (default runs/<algo>-<scheme>-N<n>-seed<s>-<time>)")
    p.add_argument("--eval-baselines", default="random,iis-fixed",
                   help="baselines evaluated beside the final policy, comma-separated from random, iis-fixed, "
                        "search (default random,iis-fixed; 'none' for none)")
    p.add_argument("--verbose", action="store_true", help="show Ray's and RLlib's own log output")
    return p


def resolve_config(args):
    """The run's `agents.config.RunConfig` from --config, --set and the named flags."""
    from agents.config import load_run_config

    return load_run_config(args.config or [], args.overrides, algo=args.algo, seed=args.seed,
                           num_env_runners=args.num_env_runners)


# ---------------------------------------------------------------------- results
def flat_metrics(result: Mapping[str, Any], num_agents: int, iter_s: float) -> Dict[str, float]:
    """The per-iteration row: env metrics (his/*), learner stats (learner/*), throughput."""
    row: Dict[str, float] = {}
    env_runners = result.get("env_runners", {}) or {}
    for key, value in (env_runners.get("his", {}) or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[f"his/{key}"] = float(value)
    learners = result.get("learners", {}) or {}
    per_key: Dict[str, List[float]] = {}
    for mid, stats in learners.items():
        if not isinstance(stats, Mapping) or mid in ("__all_modules__", "his"):
            continue
        for key in LEARNER_STAT_KEYS:
            if key in stats:
                try:
                    per_key.setdefault(key, []).append(float(stats[key]))
                except (TypeError, ValueError):
                    pass
    for key, vals in per_key.items():
        row[f"learner/{key}"] = float(sum(vals) / len(vals))
    for key, value in (learners.get("his", {}) or {}).items():
        try:
            row[f"learner/{key}"] = float(value)
        except (TypeError, ValueError):
            pass
    env_steps = float(env_runners.get("num_env_steps_sampled", 0) or 0)
    row["perf/env_steps_this_iter"] = env_steps
    row["perf/agent_steps_this_iter"] = env_steps * num_agents
    row["perf/iteration_s"] = iter_s
    row["perf/agent_steps_per_s"] = env_steps * num_agents / iter_s if iter_s > 0 else float("nan")
    row["perf/env_steps_total"] = float(result.get("num_env_steps_sampled_lifetime", 0) or 0)
    row["perf/agent_steps_total"] = row["perf/env_steps_total"] * num_agents
    return row


def write_metrics_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    from his_common.storage import atomic_write_text

    keys: List[str] = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line from a crash
    return rows


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(row: Mapping[str, Any]) -> str:
    def g(key: str, fmt: str = "{:.3f}") -> str:
        value = row.get(key)
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)

    return (f"[iter {int(row['iteration']):4d}] env-steps {int(row['perf/env_steps_total']):>9,} | "
            f"U {g('his/utility')}  Q {g('his/quality')}  T {g('his/delay', '{:.2f}')} s  "
            f"E {g('his/energy', '{:,.0f}')} J | "
            f"{g('perf/agent_steps_per_s', '{:,.0f}')} agent-steps/s | elapsed {fmt_duration(row['elapsed_s'])}")


def peak_memory_mb() -> Dict[str, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"driver_peak_rss_mb": self_kb / 1024.0, "largest_child_peak_rss_mb": child_kb / 1024.0}


# ---------------------------------------------------------------------- W&B
class WandbLogger:
    def __init__(self, mode: str, project: str, name: str, run_id: Optional[str], config: Mapping[str, Any],
                 directory: Path) -> None:
        self.run = None
        self.mode = mode
        if mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", mode=mode,
                              dir=os.environ.get("WANDB_DIR", str(directory)), config=dict(config),
                              settings=wandb.Settings(silent=True, console="off"))

    @property
    def run_id(self) -> Optional[str]:
        return None if self.run is None else self.run.id

    def log(self, row: Mapping[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def log_final(self, table_rows: Sequence[Mapping[str, Any]], plots: Sequence[Path], summary: Mapping[str, Any],
                  step: int) -> None:
        if self.run is None:
            return
        wandb = self._wandb
        if table_rows:
            columns = list(table_rows[0].keys())
            table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in table_rows])
            self.run.log({"eval/table": table}, step=step)
        for plot in plots:
            if plot.is_file():
                self.run.log({f"plots/{plot.stem}": wandb.Image(str(plot))}, step=step)
        for key, value in summary.items():
            self.run.summary[key] = value

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


# ---------------------------------------------------------------------- final evaluation
def final_evaluation(checkpoint: Path, env_cfg: Mapping[str, Any], run_cfg, baselines: Sequence[str],
                     out_dir: Path) -> List[Dict[str, Any]]:
    from agents.baselines import make_baseline
    from his_common.storage import atomic_write_text
    from agents.evaluation import CheckpointPolicy, evaluate_policy, mean_metric, normalized_score

    k = run_cfg.experiment.evaluation_episodes
    if k <= 0:
        return []
    seeds = [EVAL_SEED_BASE + run_cfg.experiment.seed * 1000 + i for i in range(k)]
    y_min = int(env_cfg.get("steps", {}).get("min_es_personal", 0))
    policies = [("trained (" + run_cfg.algorithm.algo + ", greedy)", CheckpointPolicy(checkpoint))]
    for spec in baselines:
        policies.append((spec, make_baseline(spec, seed=run_cfg.experiment.seed, es_personal_min=y_min)))
    table = []
    for label, policy in policies:
        rows = evaluate_policy(policy, env_cfg, seeds, env_factory=run_cfg.experiment.env_factory)
        table.append({"policy": label, "episodes": len(rows),
                      "utility": mean_metric(rows, "utility"), "quality": mean_metric(rows, "quality"),
                      "delay": mean_metric(rows, "delay"), "energy": mean_metric(rows, "energy"),
                      "utility_std": float(_std([r.get("utility", float("nan")) for r in rows]))})
    by = {row["policy"]: row["utility"] for row in table}
    if "random" in by and "search" in by:
        for row in table:
            row["score"] = normalized_score(row["utility"], by["random"], by["search"])
    lines = ["| policy | U | Q | T | E |" + (" score |" if "score" in table[0] else ""),
             "|---|---|---|---|---|" + ("---|" if "score" in table[0] else "")]
    for row in table:
        line = (f"| {row['policy']} | {row['utility']:.4f} ± {row['utility_std']:.4f} | {row['quality']:.4f} | "
                f"{row['delay']:.4f} | {row['energy']:.4f} |")
        if "score" in row:
            line += f" {row['score']:.3f} |"
        lines.append(line)
    md = (f"Greedy evaluation on {k} episodes, seeds {seeds[0]}..{seeds[-1]} (mean ± std over episodes of the "
          f"per-decision-point network utility U, quality Q, delay T, energy E).\n\n" + "\n".join(lines) + "\n")
    atomic_write_text(out_dir / "eval.md", md)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0].keys()))
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(out_dir / "eval.csv", buf.getvalue())
    return table


def _std(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def plot_learning_curve(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Optional[Path]:
    xs = [r["perf/env_steps_total"] for r in rows if "his/utility" in r]
    ys = [r["his/utility"] for r in rows if "his/utility" in r]
    if not xs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from his_common.storage import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, lw=1.5)
    ax.set_xlabel("env steps (decision points)")
    ax.set_ylabel("network utility U (training episodes)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ---------------------------------------------------------------------- main
def quiet_libraries(verbose: bool) -> None:
    if verbose:
        return
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*Overriding environment.*")
    warnings.filterwarnings("ignore", message=".*Casting input x to numpy array.*")
    for name in ("ray", "ray.rllib", "ray.tune", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def init_ray(address: Optional[str], experiment, verbose: bool) -> None:
    import ray

    env_vars = {"OMP_NUM_THREADS": str(experiment.torch_threads), "MKL_NUM_THREADS": str(experiment.torch_threads),
                "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    kwargs: Dict[str, Any] = dict(include_dashboard=False, log_to_driver=verbose,
                                  logging_level=logging.INFO if verbose else logging.ERROR,
                                  runtime_env={"env_vars": env_vars})
    if address:
        # Ship this checkout to the cluster's workers (they still need the Python packages).
        kwargs["runtime_env"]["working_dir"] = str(REPO)
        kwargs["runtime_env"]["excludes"] = [".venv/", ".git/", "runs/", "results/", "wandb/", ".cache/", ".whl/",
                                             ".device/", "**/__pycache__/"]
        ray.init(address=address, **kwargs)
    else:
        pythonpath = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        env_vars["PYTHONPATH"] = pythonpath
        # address="local": always a fresh local instance, never a cluster another program left running.
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, experiment.num_env_runners + 1), **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from his_env.config import ConfigError

    from agents.checkpoints import CheckpointError

    try:
        return run(args)
    except (UsageError, ConfigError, CheckpointError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    quiet_libraries(args.verbose)
    from agents.baselines import BASELINES
    from agents.checkpoints import (record_config, resolve_checkpoint, run_config_from_record, save_checkpoint,
                                    validate_checkpoint)
    from agents.checkpoints import CheckpointError
    from agents.config import route_key
    from agents.ippo import build_algo_config, set_torch_threads

    baselines = [] if args.eval_baselines.strip().lower() in ("", "none") else [
        b.strip() for b in args.eval_baselines.split(",") if b.strip()]
    for spec in baselines:
        if spec.partition(":")[0] not in BASELINES:
            raise UsageError(f"--eval-baselines: unknown baseline {spec!r}; allowed: random, iis-fixed, search")

    resume_ckpt: Optional[Path] = None
    run_info: Dict[str, Any] = {}
    if args.resume:
        resume_ckpt = resolve_checkpoint(args.resume)
        run_info = validate_checkpoint(resume_ckpt)
        run_cfg = run_config_from_record(run_info)
        # Only settings that do not change what is learned may differ on resume.
        over = parse_overrides(args.overrides, "--set experiment.num_env_runners=4")
        if args.config or args.algo or args.seed is not None:
            raise UsageError("--resume continues a run with its saved config; --config, --algo and --seed "
                             "cannot change it (start a new run instead)")
        allowed = sorted(f"experiment.{k}" for k in RUNTIME_EXPERIMENT_KEYS)
        for key in over:
            if route_key(key) not in [("experiment", k) for k in RUNTIME_EXPERIMENT_KEYS]:
                raise UsageError(f"--resume: {key} cannot change when resuming; allowed: {allowed}")
        if args.num_env_runners is not None:
            over["experiment.num_env_runners"] = args.num_env_runners
        if over:
            run_cfg = run_cfg.with_overrides(over)
        default_out = run_info.get("output_dir", resume_ckpt.parent.parent)
        out_dir = Path(args.output_dir) if args.output_dir else Path(default_out)
    else:
        run_cfg = resolve_config(args)
        if args.output_dir:
            out_dir = Path(args.output_dir)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            name = (f"{run_cfg.algorithm.algo}-{run_cfg.env.scheme.name}-N{run_cfg.env.num_ues}"
                    f"-seed{run_cfg.experiment.seed}-{stamp}")
            out_dir = REPO / "runs" / name
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    if args.iterations is None and args.timesteps is None and args.time_limit is None:
        args.time_limit = 300.0
    wandb_mode = args.wandb_mode or os.environ.get("WANDB_MODE", "offline")
    if wandb_mode not in WANDB_MODES:
        raise UsageError(f"WANDB_MODE={wandb_mode!r}; allowed: {', '.join(WANDB_MODES)}")

    set_torch_threads(run_cfg.experiment.torch_threads)
    env_dict = run_cfg.env.to_dict()
    resolved = run_cfg.to_file_dict()
    from his_common.storage import atomic_write_text

    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    num_agents = run_cfg.env.num_ues

    init_ray(args.ray_address, run_cfg.experiment, args.verbose)
    print(f"train.py: {run_cfg.algorithm.algo} on {num_agents} UEs, scheme {run_cfg.env.scheme.name}, "
          f"seed {run_cfg.experiment.seed}; output {out_dir}", flush=True)
    t_build = time.perf_counter()
    algo = build_algo_config(run_cfg).build_algo()
    if resume_ckpt is not None:
        try:
            algo.restore_from_path(str(resume_ckpt))
        except Exception as exc:  # noqa: BLE001 - any unpickling failure
            raise CheckpointError(f"cannot restore checkpoint {str(resume_ckpt)!r}: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if algo.iteration != int(run_info["iteration"]):
            raise CheckpointError(f"checkpoint {str(resume_ckpt)!r} restored iteration {algo.iteration}, "
                                  f"but {run_info['iteration']} was recorded")
        print(f"resumed {resume_ckpt} at iteration {algo.iteration}, "
              f"{int(run_info.get('env_steps', 0)):,} env steps", flush=True)
    print(f"built in {time.perf_counter() - t_build:.1f} s", flush=True)

    metrics_path = out_dir / "metrics.jsonl"
    rows = [r for r in read_jsonl(metrics_path) if int(r.get("iteration", 0)) <= algo.iteration]
    # Rows after the restored iteration belong to iterations that are about to be re-run.
    atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
    prev_elapsed = float(run_info.get("elapsed_s", 0.0))

    name = args.wandb_name or out_dir.name
    wb = WandbLogger(wandb_mode, args.wandb_project, name, run_info.get("wandb_run_id"), resolved, out_dir)

    def make_run_info(iteration: int, env_steps: float, elapsed: float) -> Dict[str, Any]:
        return {"algo": run_cfg.algorithm.algo, **record_config(run_cfg),
                "iteration": iteration, "env_steps": env_steps, "agent_steps": env_steps * num_agents,
                "elapsed_s": elapsed, "wandb_run_id": wb.run_id, "wandb_project": args.wandb_project,
                "output_dir": str(out_dir), "num_agents": num_agents, "saved_at": datetime.now().isoformat()}

    t_start = time.perf_counter()
    last_ckpt: Optional[Path] = resume_ckpt
    env_steps_total = float(run_info.get("env_steps", 0.0))
    stop_reason = None
    iterations_this_run = 0
    try:
        while True:
            if args.iterations is not None and algo.iteration >= args.iterations:
                stop_reason = f"reached {args.iterations} iterations"
                break
            if args.timesteps is not None and env_steps_total >= args.timesteps:
                stop_reason = f"reached {args.timesteps:,} env steps"
                break
            if args.time_limit is not None and time.perf_counter() - t_start >= args.time_limit:
                stop_reason = f"time limit {args.time_limit:.0f} s"
                break
            t0 = time.perf_counter()
            result = algo.train()
            iter_s = time.perf_counter() - t0
            iterations_this_run += 1
            row = flat_metrics(result, num_agents, iter_s)
            env_steps_total = row["perf/env_steps_total"]
            row = {"iteration": int(result["training_iteration"]),
                   "elapsed_s": prev_elapsed + time.perf_counter() - t_start, **row}
            rows.append(row)
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            write_metrics_csv(rows, out_dir / "metrics.csv")
            wb.log(row, step=row["iteration"])
            print(progress_line(row), flush=True)
            if args.checkpoint_every and row["iteration"] % args.checkpoint_every == 0:
                last_ckpt = save_checkpoint(algo, out_dir / "checkpoints",
                                            make_run_info(row["iteration"], env_steps_total, row["elapsed_s"]),
                                            keep=args.keep_checkpoints)
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    elapsed_total = prev_elapsed + time.perf_counter() - t_start
    if iterations_this_run or last_ckpt is None:
        last_ckpt = save_checkpoint(algo, out_dir / "checkpoints",
                                    make_run_info(algo.iteration, env_steps_total, elapsed_total),
                                    keep=args.keep_checkpoints)
    algo.stop()

    table = final_evaluation(last_ckpt, env_dict, run_cfg, baselines, out_dir)
    plots = [p for p in [plot_learning_curve(rows, out_dir / "plots" / "learning_curve.png",
                                             f"{run_cfg.algorithm.algo}, N={num_agents}")] if p]
    mem = peak_memory_mb()
    session_rows = rows[-iterations_this_run:] if iterations_this_run else []
    session_agent_steps = sum(r["perf/agent_steps_this_iter"] for r in session_rows)
    session_train_s = sum(r["perf/iteration_s"] for r in session_rows)
    summary = {
        "iterations": algo.iteration, "env_steps": env_steps_total, "agent_steps": env_steps_total * num_agents,
        "elapsed_s": elapsed_total,
        "agent_steps_per_s": session_agent_steps / session_train_s if session_train_s else float("nan"),
        "final_train_utility": rows[-1].get("his/utility", float("nan")) if rows else float("nan"),
        "checkpoint": str(last_ckpt), **mem,
    }
    for row in table:
        summary[f"eval/{row['policy']}/utility"] = row["utility"]
    wb.log_final(table, plots, summary, step=max(algo.iteration, 1))
    wb.finish()

    print("=" * 78)
    print(f"stopped: {stop_reason or 'done'}")
    print(f"iterations {summary['iterations']} | env steps {int(env_steps_total):,} | agent steps "
          f"{int(summary['agent_steps']):,} | wall {fmt_duration(elapsed_total)} | "
          f"{summary['agent_steps_per_s']:,.0f} agent-steps/s (training iterations of this run)")
    print(f"peak memory: driver {mem['driver_peak_rss_mb']:,.0f} MB, "
          f"largest child {mem['largest_child_peak_rss_mb']:,.0f} MB")
    print(f"checkpoint: {last_ckpt}")
    if table:
        print((out_dir / "eval.md").read_text().rstrip())
    print(f"metrics: {out_dir / 'metrics.csv'}  W&B: {wandb_mode}" + (f" (run {wb.run_id})" if wb.run_id else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
