"""A benchmark of BenchMARL algorithms on HIS: algorithms x schemes x seeds, locally or on a Ray cluster.

`run_benchmark(BenchmarkSpec(...))`

1. refuses, before anything starts, unknown algorithm or scheme names, task settings the env
   rejects, a budget too small for one iteration (after which the first evaluation runs), a
   device that is not there, and an output folder that holds a benchmark with other settings;
2. computes U_random and U_search (agents.baselines' random and search policies on the
   PettingZoo env, on the fixed evaluation seeds) once per scheme, cached on disk under
   `$HIS_MARL_CACHE/benchmark/` keyed by the env config, the seeds, the search's sweeps and a
   digest of the code and data behind U;
3. runs every (algorithm, scheme, seed) cell that has no finished result yet in worker
   processes (peak memory is measured per cell: Linux's VmHWM, reset when the cell starts):
   `jobs` at a time here, or as Ray tasks spread over a cluster (`ray_address`); a cell that fails is run once more, and if it fails again it
   is reported as failed with both errors, not lost;
4. writes one report (experiments.benchmark_report): per algorithm and scheme, the normalised
   score (U - U_random) / (U_search - U_random) of the greedy policy, mean and 95 % bootstrap
   confidence interval over seeds, learning curves against frames and training time, peak memory.

Output folder: `benchmark.json` (the settings), `references.json`, `cells/<algo>-<scheme>-seed<S>/`
with `result.json` (summary, curve, status, attempts), BenchMARL's own run folder (its CSV and W&B
logs) and, in the report, `cells.csv`, `summary.csv`, `curves.csv`, `report.md`, `scores.png`,
`curves.png`. A benchmark interrupted or extended (more algorithms, schemes or seeds) with the same
settings resumes: finished cells are read back, not run again.
"""
from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from his_common.storage import atomic_write_json, cache_root

EVAL_SEED_BASE = 90_000
REPO = Path(__file__).resolve().parents[1]
RESULT_FILE = "result.json"
# Settings that change what a cell computes; the rest (W&B, output folder, Ray address) do not.
RESULT_KEYS = ("task", "experiment", "frame_budget", "time_budget_s", "eval_episodes", "hidden", "activation",
               "device", "search_sweeps")
RAY_EXCLUDES = [".venv/", ".git/", "runs/", "results/", "benchmarks/results/", "wandb/", ".cache/", ".whl/",
                ".device/", "**/__pycache__/"]


class BenchmarkError(ValueError):
    """A benchmark that cannot start (names the setting, the value and what is allowed)."""


@dataclass
class BenchmarkSpec:
    algorithms: List[str]
    schemes: List[str] = field(default_factory=lambda: ["his"])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    task: Dict[str, Any] = field(default_factory=dict)        # HIS task settings shared by all cells
    experiment: Dict[str, Any] = field(default_factory=dict)  # BenchMARL ExperimentConfig overrides
    frame_budget: Optional[int] = None
    time_budget_s: Optional[float] = None
    eval_episodes: int = 4
    hidden: List[int] = field(default_factory=lambda: [256, 256, 256])
    activation: str = "tanh"
    device: str = "cpu"
    search_sweeps: int = 4
    output_dir: str = "results/benchmark"
    ray_address: Optional[str] = None
    cpus_per_cell: float = 1.0
    wandb_mode: str = "offline"
    wandb_project: str = "his-marl"

    @property
    def eval_seeds(self) -> List[int]:
        return [EVAL_SEED_BASE + i for i in range(self.eval_episodes)]

    def result_settings(self) -> Dict[str, Any]:
        data = asdict(self)
        return {key: data[key] for key in RESULT_KEYS}


def cell_name(algorithm: str, scheme: str, seed: int) -> str:
    return f"{algorithm}-{scheme}-seed{seed}"


def run_spec(spec: BenchmarkSpec, algorithm: str, scheme: str, seed: int):
    from agents.benchmarl_experiment import RunSpec

    return RunSpec(algorithm=algorithm, scheme=scheme, seed=int(seed), task=dict(spec.task),
                   experiment=dict(spec.experiment), frame_budget=spec.frame_budget,
                   time_budget_s=spec.time_budget_s, eval_seeds=spec.eval_seeds, hidden=list(spec.hidden),
                   activation=spec.activation, device=spec.device, wandb_mode=spec.wandb_mode,
                   wandb_project=spec.wandb_project)


def settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def validate(spec: BenchmarkSpec) -> List[Tuple[str, str, int]]:
    """The grid's cells, or a BenchmarkError / ConfigError naming what is wrong and what is allowed."""
    from agents.benchmarl_experiment import WANDB_MODES, algorithm_registry, validate_spec
    from his_env.vector.benchmarl_task import SCHEMES

    registry = algorithm_registry()
    if not spec.algorithms:
        raise BenchmarkError(f"no algorithms given; allowed: {', '.join(registry.names)}")
    for name in spec.algorithms:
        registry.check(name, "algorithm", BenchmarkError)
    if not spec.schemes:
        raise BenchmarkError(f"no schemes given; allowed: {', '.join(SCHEMES)}")
    for name in spec.schemes:
        if name not in SCHEMES:
            raise BenchmarkError(f"scheme has value {name!r}; allowed: {', '.join(SCHEMES)}")
    if not spec.seeds or any(int(s) < 0 for s in spec.seeds):
        raise BenchmarkError(f"seeds {spec.seeds!r}; allowed: one or more integers >= 0")
    if spec.eval_episodes < 1:
        raise BenchmarkError(f"eval_episodes {spec.eval_episodes!r}; allowed: an integer >= 1")
    if spec.search_sweeps < 1:
        raise BenchmarkError(f"search_sweeps {spec.search_sweeps!r}; allowed: an integer >= 1")
    if spec.wandb_mode not in WANDB_MODES:
        raise BenchmarkError(f"wandb mode {spec.wandb_mode!r}; allowed: {', '.join(WANDB_MODES)}")
    if not spec.cpus_per_cell > 0:
        raise BenchmarkError(f"cpus_per_cell {spec.cpus_per_cell!r}; allowed: a number > 0")
    cells = [(a, s, int(seed)) for a in dict.fromkeys(spec.algorithms) for s in dict.fromkeys(spec.schemes)
             for seed in dict.fromkeys(spec.seeds)]
    checked = set()
    for algorithm, scheme, _ in cells:  # the device, budget and settings checks, once per (algorithm, scheme)
        if (algorithm, scheme) not in checked:
            validate_spec(run_spec(spec, algorithm, scheme, spec.seeds[0]))
            checked.add((algorithm, scheme))
    out = Path(spec.output_dir)
    saved = out / "benchmark.json"
    if saved.is_file():
        previous = json.loads(saved.read_text()).get("result_settings", {})
        current = json.loads(json.dumps(spec.result_settings()))
        differ = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        if differ:
            raise BenchmarkError(f"output folder {str(out)!r} holds a benchmark with other settings (different: "
                                 f"{', '.join(differ)}); resume it with the same settings or choose another "
                                 f"--output-dir")
    return cells


# ---------------------------------------------------------------------- references
def model_source_digest() -> str:
    """Digest of the code and data behind U (simulator, oracle, shared formulas, baselines, evaluation):
    any change there invalidates the cached references."""
    digest = hashlib.sha256()
    files = [REPO / "agents" / "baselines.py", REPO / "agents" / "evaluation.py"]
    for package in ("his_env", "quality_oracle", "his_common"):
        files += sorted((REPO / package).glob("*.py")) + sorted((REPO / package / "data").glob("*"))
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def references(his_config, seeds: Sequence[int], search_sweeps: int, log: Callable[[str], None] = print
               ) -> Dict[str, float]:
    """U_random and U_search of the PettingZoo env on `seeds` (cached on disk)."""
    from agents.baselines import RandomPolicy, SearchPolicy
    from agents.evaluation import evaluate_policy, mean_metric
    from his_common.storage import atomic_write_json as write

    env_dict = his_config.to_dict()
    key = settings_key({"env": env_dict, "seeds": list(seeds), "search_sweeps": search_sweeps,
                        "code": model_source_digest()})
    path = cache_root() / "benchmark" / f"references-{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass  # a damaged cache file is recomputed
    t0 = time.perf_counter()
    u_random = mean_metric(evaluate_policy(RandomPolicy(0), env_dict, seeds))
    t1 = time.perf_counter()
    u_search = mean_metric(evaluate_policy(SearchPolicy(max_sweeps=search_sweeps), env_dict, seeds))
    t2 = time.perf_counter()
    out = {"random": u_random, "search": u_search, "random_s": t1 - t0, "search_s": t2 - t1,
           "seeds": list(seeds), "search_sweeps": search_sweeps}
    write(path, out)
    log(f"references ({env_dict['scheme']['name']}, N={env_dict['num_ues']}, seeds {seeds[0]}..{seeds[-1]}): "
        f"U_random {u_random:.4f} ({t1 - t0:.1f} s), U_search {u_search:.4f} ({t2 - t1:.1f} s)")
    return out


# ---------------------------------------------------------------------- one cell
QUIET_ENV = {"TQDM_DISABLE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "PYTHONWARNINGS": "ignore"}


def _quiet_worker() -> None:
    """Worker start: no per-iteration progress bars or library chatter from the cells, one torch thread."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def run_cell(spec_dict: Dict[str, Any], refs: Dict[str, float], folder: str) -> Dict[str, Any]:
    """Train one cell and return its record (runs in a worker process or a Ray worker)."""
    import logging
    import warnings

    _quiet_worker()
    warnings.filterwarnings("ignore")
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    from agents.benchmarl_experiment import RunSpec, run_benchmarl

    result = run_benchmarl(RunSpec(**spec_dict), folder, references=refs)
    return {"summary": result["summary"], "curve": result["curve"]}


class _LocalRunner:
    """Cells in `jobs` worker processes on this machine (spawned once, reused from cell to cell)."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = jobs
        self.capacity = jobs
        self.pool = self._new_pool()

    def _new_pool(self):
        return futures.ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_quiet_worker)

    def submit(self, spec_dict, refs, folder):
        try:
            return self.pool.submit(run_cell, spec_dict, refs, folder)
        except futures.process.BrokenProcessPool:  # a worker died (killed, out of memory): start new ones
            self.pool.shutdown(wait=False)
            self.pool = self._new_pool()
            return self.pool.submit(run_cell, spec_dict, refs, folder)

    @staticmethod
    def wait(pending):
        done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
        return list(done)

    @staticmethod
    def result(handle):
        return handle.result()

    def close(self, interrupted: bool = False) -> None:
        self.pool.shutdown(wait=not interrupted, cancel_futures=interrupted)  # a second call does nothing


class _RayRunner:
    """Cells as Ray tasks on a cluster, all submitted at once; Ray places them where CPUs are free."""

    capacity = 1 << 30

    def __init__(self, address: str, cpus_per_cell: float) -> None:
        import logging

        import ray

        env_vars = dict(QUIET_ENV)
        if os.environ.get("HIS_MARL_CACHE"):
            env_vars["HIS_MARL_CACHE"] = os.environ["HIS_MARL_CACHE"]
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 runtime_env={"working_dir": str(REPO), "excludes": RAY_EXCLUDES, "env_vars": env_vars})
        self.ray = ray
        self.remote = ray.remote(num_cpus=cpus_per_cell, max_retries=0)(run_cell)

    def submit(self, spec_dict, refs, folder):
        return self.remote.remote(spec_dict, refs, folder)

    def wait(self, pending):
        done, _ = self.ray.wait(list(pending), num_returns=1)
        return done

    def result(self, handle):
        return self.ray.get(handle)

    def close(self, interrupted: bool = False) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-2000:]


def read_finished(folder: Path, key: str) -> Optional[Dict[str, Any]]:
    path = folder / RESULT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return record if record.get("status") == "ok" and record.get("settings_key") == key else None


def node_label(summary: Mapping[str, Any]) -> str:
    """Where a cell ran: the host, or for a Ray task its node's IP and the start of its node ID."""
    if summary.get("node_id"):
        return f"node {summary.get('node_ip', '')} {summary['node_id'][:8]}"
    return summary.get("host", "")


def progress_line(i: int, total: int, record: Mapping[str, Any]) -> str:
    c = record["cell"]
    head = f"[{i}/{total}] {c['algorithm']:<6} {c['scheme']:<6} seed {c['seed']}"
    if record["status"] != "ok":
        return f"{head}: FAILED after {record['attempts']} attempts: {record['errors'][-1].splitlines()[-1]}"
    s = record["summary"]
    where = node_label(s)
    return (f"{head}: score {s['score']:.3f} (U {s['utility']:.3f}) | {int(s['frames']):,} frames in "
            f"{s['train_s']:.0f} s | {s['agent_steps_per_s']:,.0f} agent-steps/s | peak {s['peak_rss_mb']:,.0f} MB"
            + (f" | {where}" if where else "") + (" (retried)" if record["attempts"] > 1 else ""))


def run_benchmark(spec: BenchmarkSpec, log: Callable[[str], None] = print, jobs: int = 1,
                  show_bar: bool = True) -> Dict[str, Any]:
    """Run the grid (see the module docstring); returns {"records": [...], "report": {paths}}."""
    cells = validate(spec)
    runner = _start_runner(spec, jobs)  # a Ray address that does not answer fails here, before any work
    try:
        return _run(spec, cells, runner, log, show_bar)
    finally:
        runner.close()


def _start_runner(spec: BenchmarkSpec, jobs: int):
    if not spec.ray_address:
        return _LocalRunner(jobs)
    try:
        return _RayRunner(spec.ray_address, spec.cpus_per_cell)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BenchmarkError(f"ray address {spec.ray_address!r}: cannot connect ({type(exc).__name__}: {exc}); "
                             f"allowed: 'auto' or host:port of a running cluster (ray start --head)") from exc


def _run(spec: BenchmarkSpec, cells, runner, log, show_bar: bool) -> Dict[str, Any]:
    from experiments.benchmark_report import write_report
    from his_env.vector.benchmarl_task import task_by_name

    out = Path(spec.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    key = settings_key(spec.result_settings())
    atomic_write_json(out / "benchmark.json", {"spec": asdict(spec), "result_settings": spec.result_settings(),
                                               "settings_key": key})
    refs: Dict[str, Dict[str, float]] = {}
    for scheme in dict.fromkeys(spec.schemes):
        his_config = task_by_name(scheme).get_task(dict(spec.task)).his_config()
        refs[scheme] = references(his_config, spec.eval_seeds, spec.search_sweeps, log)
    atomic_write_json(out / "references.json", refs)

    records: Dict[str, Dict[str, Any]] = {}
    todo = []
    for algorithm, scheme, seed in cells:
        name = cell_name(algorithm, scheme, seed)
        finished = read_finished(out / "cells" / name, key)
        if finished is not None:
            records[name] = finished
        else:
            todo.append((algorithm, scheme, seed))
    log(f"benchmark: {len(cells)} cells ({len(spec.algorithms)} algorithms x {len(spec.schemes)} schemes x "
        f"{len(spec.seeds)} seeds), {len(records)} already finished, {len(todo)} to run"
        + (f" on the Ray cluster at {spec.ray_address}" if spec.ray_address else "") + f"; output {out}")

    bar = None
    if show_bar and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(cells), initial=len(records), desc="benchmark", unit="cell", file=sys.stderr,
                   dynamic_ncols=True)
    emit = bar.write if bar is not None else log
    pending: Dict[Any, Tuple[str, str, int, int, List[str]]] = {}

    queue: List[Tuple[str, str, int, int, List[str]]] = [(a, s, seed, 1, []) for a, s, seed in todo]

    def submit_next() -> None:
        while queue and len(pending) < runner.capacity:
            algorithm, scheme, seed, attempt, errors = queue.pop(0)
            folder = out / "cells" / cell_name(algorithm, scheme, seed)
            rs = run_spec(spec, algorithm, scheme, seed)
            handle = runner.submit(rs.to_dict(), refs[scheme], str(folder))
            pending[handle] = (algorithm, scheme, seed, attempt, errors)

    try:
        done_count = len(records)
        submit_next()
        while pending:
            for handle in runner.wait(list(pending)):
                algorithm, scheme, seed, attempt, errors = pending.pop(handle)
                name = cell_name(algorithm, scheme, seed)
                cell = {"algorithm": algorithm, "scheme": scheme, "seed": seed}
                try:
                    result = runner.result(handle)
                except Exception as exc:  # noqa: BLE001 - any failure of the cell is recorded
                    errors = errors + [_error_text(exc)]
                    if attempt < 2:
                        emit(f"{name}: failed ({errors[-1].splitlines()[-1]}); running it once more")
                        queue.insert(0, (algorithm, scheme, seed, attempt + 1, errors))
                        continue
                    record = {"status": "failed", "cell": cell, "attempts": attempt, "errors": errors,
                              "settings_key": key}
                else:
                    record = {"status": "ok", "cell": cell, "attempts": attempt, "errors": errors,
                              "settings_key": key, "summary": result["summary"], "curve": result["curve"]}
                atomic_write_json(out / "cells" / name / RESULT_FILE, record)
                records[name] = record
                done_count += 1
                emit(progress_line(done_count, len(cells), record))
                if bar is not None:
                    bar.update(1)
            submit_next()
    except KeyboardInterrupt:
        runner.close(interrupted=True)
        raise
    finally:
        if bar is not None:
            bar.close()

    ordered = [records[cell_name(a, s, seed)] for a, s, seed in cells if cell_name(a, s, seed) in records]
    report = write_report(ordered, refs, spec, out, log=log)
    return {"records": ordered, "references": refs, "report": report}


def failed_cells(records: Sequence[Mapping[str, Any]]) -> List[str]:
    return [cell_name(**r["cell"]) for r in records if r.get("status") != "ok"]
