"""A benchmark of BenchMARL algorithms on HIS: algorithms x schemes x seeds, locally or on a Ray cluster.

`run_benchmark(BenchmarkSpec(...))`

1. refuses, before anything starts (`BenchmarkError` / ConfigError naming the setting, the value and
   what is allowed), unknown algorithm or scheme names, task settings the env rejects, a frame budget
   that is not an integer >= one iteration (after which the first evaluation runs), a time budget
   that is not a finite number of seconds > 0, a device that is not there, a cache location
   (`$HIS_MARL_CACHE`) that names a file, an output folder that is a file, cannot be written or
   holds a benchmark with other settings, and a Ray address that does not answer a TCP connect
   within a few seconds ('auto' must find a running cluster);
2. computes U_random and U_search (agents.baselines' random and search policies on the
   PettingZoo env, on the fixed evaluation seeds) once per scheme, cached on disk under
   `$HIS_MARL_CACHE/benchmark/` keyed by the env config, the seeds, the search's sweeps and a
   digest of the code and data behind U, and in the output folder's `references/` too (looked in
   first: a grid copied to another machine resumes without recomputing them); a read-only cache
   folder only costs a warning;
3. with a time budget on a GPU (the env's step captured), first trains one iteration per task and
   collection batch size in the workers and discards it (`warm_up_runs`; `warm_up=False` skips it):
   the compiled step lands in inductor's disk cache, so no cell's time budget pays for compiling it
   (a first cell on an empty cache would train ~10x fewer frames on a sequential task);
   then runs every (algorithm, scheme, seed) cell that has no finished result yet in worker
   processes (peak memory is measured per cell: Linux's VmHWM, reset when the cell starts):
   `jobs` at a time here, or as Ray tasks spread over a cluster (`ray_address`); a cell that fails,
   or whose evaluation is not finite (a NaN score is never "ok"), is run once more, and if it fails
   again it is reported as failed with both errors, not lost;
4. after each cell's training, scores its final greedy policy once more on `absolute_episodes`
   episodes of their own seeds (95000..; marl-eval's "absolute metric", 10x the episodes of an
   evaluation along the run by default), normalised by references on those seeds (`absolute` in
   its `result.json`; 0 episodes: none);
5. writes one report (experiments.benchmark_report): per algorithm and scheme, the normalised
   score (U - U_random) / (U_search - U_random) of the greedy policy, mean and 95 % bootstrap
   confidence interval over seeds, learning curves against frames and training time, peak memory.

Output folder: `benchmark.json` (the settings), `references.json`, `references/` (the references'
cache files and episodes, so that the folder alone resumes), `cells/<algo>-<scheme>-seed<S>/`
with `result.json` (summary, curve, status, attempts), BenchMARL's own run folder (its CSV and W&B
logs) and, in the report, `cells.csv`, `summary.csv`, `curves.csv`, `report.md`, `scores.png`,
`curves.png`. A benchmark interrupted or extended (more algorithms, schemes or seeds) with the same
settings resumes: finished cells are read back, not run again.

Faults:
- every file the grid reads back (the cached references, `benchmark.json`, each cell's
  `result.json`) is checked on load; one that is unusable (not UTF-8 JSON, missing or non-finite
  values, written for other seeds or sweeps) is moved aside to `<name>.unusable-<UTC time>` (kept)
  with one warning, then recomputed, or its cell is treated as not run;
- a cell started again whose folder holds files of an earlier unfinished attempt (killed, failed,
  other settings) first moves them to `cells/<name>/superseded/attempt-<UTC time>/` (kept), so the
  cell folder holds one attempt;
- SIGINT and SIGTERM (agents.training.signals.StopSignals) stop the grid: nothing more is submitted,
  the running cells' workers are terminated (they run again on resume), the finished cells are kept
  and reported, and the result says `stopped`; a second signal stops at once (KeyboardInterrupt);
- local workers die with the driver (PR_SET_PDEATHSIG), so a driver killed with kill -9 leaves none.

Sessions: `stop_after_s` (benchmark.py `--stop-after`) bounds one session's wall time: a cell is
started only while the session's elapsed time plus the longest cell this session has taken (before
any finished: 1.25 x the time budget + 60 s, or no bound without a time budget) stays within it;
the running cells finish, the report covers what is done, and the result says `stopped` = "session
limit". Every session appends {started (UTC), seconds, cells finished, how it ended} to
`sessions.json`, and the report says how many sessions the grid took. The references before the
cells are bounded alike: each reference episode is cached as it ends and starts only while the
longest one so far fits (`references`).
"""
from __future__ import annotations

import concurrent.futures as futures
import contextlib
import hashlib
import json
import math
import numbers
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from his_common.storage import (CacheLocationError, atomic_write_json, cache_root, move_aside,
                                set_aside_attempt, write_cache_file)
from experiments.workers import QUIET_ENV, quiet_worker, worker_pool

EVAL_SEED_BASE = 90_000
PAPER = "paper"  # the scenario of the paper's setting: a task of it is named by its scheme alone
ABSOLUTE_SEED_BASE = 95_000  # the final evaluation's seeds, apart from those of the evaluations along a run
REPO = Path(__file__).resolve().parents[1]
RESULT_FILE = "result.json"
# Settings that change what a cell computes; the rest (W&B, output folder, Ray address) do not.
RESULT_KEYS = ("task", "experiment", "frame_budget", "time_budget_s", "eval_episodes", "hidden", "activation",
               "device", "search_sweeps")
RAY_EXCLUDES = [".venv/", ".git/", "runs/", "results/", "benchmarks/results/", "wandb/", ".cache/", ".whl/",
                ".device/", "**/__pycache__/"]
RAY_CONNECT_TIMEOUT_S = 5.0
RAY_ALLOWED = "allowed: 'auto' or host:port of a running Ray cluster (start one with `ray start --head`)"
POLL_S = 0.5  # how often the driver looks at the stop signals while cells run
STOP_UNIT = "ending the running cells (they run again on resume) and reporting the finished ones"


class BenchmarkError(ValueError):
    """A benchmark that cannot start (names the setting, the value and what is allowed)."""


class CellResultError(RuntimeError):
    """A cell trained but its result is unusable (its evaluation is not finite)."""


@dataclass
class BenchmarkSpec:
    algorithms: List[str]
    schemes: List[str] = field(default_factory=lambda: ["his"])
    scenarios: List[str] = field(default_factory=lambda: [PAPER])  # his_env.scenarios; tasks = schemes x scenarios
    seeds: List[int] = field(default_factory=lambda: list(range(10)))  # the field's standard for a published grid
    task: Dict[str, Any] = field(default_factory=dict)        # HIS task settings shared by all cells
    experiment: Dict[str, Any] = field(default_factory=dict)  # BenchMARL ExperimentConfig overrides
    algorithm_settings: Dict[str, Any] = field(default_factory=dict)  # overrides of every cell's algorithm config
    frame_budget: Optional[int] = None
    time_budget_s: Optional[float] = None
    eval_episodes: int = 4
    absolute_episodes: int = 40  # the final evaluation's episodes (marl-eval's absolute metric); 0: none
    held_out: int = 0  # held-out test scenarios (heldout-0..) each sequential task's policies are scored on; 0: none
    hidden: List[int] = field(default_factory=lambda: [256, 256, 256])
    activation: str = "tanh"
    device: str = "cpu"
    search_sweeps: int = 4
    output_dir: str = "results/benchmark"
    ray_address: Optional[str] = None
    cpus_per_cell: float = 1.0
    wandb_mode: str = "offline"
    wandb_project: str = "his-marl"
    warm_up: bool = True  # compile the captured env step once before the cells (`warm_up_runs`); not a result setting

    @property
    def eval_seeds(self) -> List[int]:
        return [EVAL_SEED_BASE + i for i in range(self.eval_episodes)]

    @property
    def absolute_seeds(self) -> List[int]:
        return [ABSOLUTE_SEED_BASE + i for i in range(self.absolute_episodes)]

    @property
    def tasks(self) -> List[str]:
        """The grid's tasks: `<scheme>` on the paper scenario, `<scheme>@<scenario>` on another."""
        return [task_label(scheme, scenario) for scenario in dict.fromkeys(self.scenarios)
                for scheme in dict.fromkeys(self.schemes)]

    def result_settings(self) -> Dict[str, Any]:
        data = asdict(self)
        settings = {key: data[key] for key in RESULT_KEYS}
        for name in ("algorithm_settings", "absolute_episodes", "held_out"):  # only when set, so that grids run before
            if data[name]:                                          # these settings existed keep their key
                settings[name] = data[name]
        return settings


def task_label(scheme: str, scenario: str = PAPER) -> str:
    return scheme if scenario == PAPER else f"{scheme}@{scenario}"


def split_task(task: str) -> Tuple[str, str]:
    """(scheme, scenario) of a task label."""
    scheme, _, scenario = task.partition("@")
    return scheme, scenario or PAPER


def task_settings(spec: "BenchmarkSpec", task: str) -> Dict[str, Any]:
    """The BenchMARL task settings of `task`: the grid's, with the scenario (whose N counts unless --num-ues
    or num_ues sets one)."""
    _, scenario = split_task(task)
    settings = dict(spec.task)
    if scenario != PAPER:
        settings["scenario"] = scenario
        settings.setdefault("num_ues", None)
    return settings


def cell_name(algorithm: str, scheme: str, seed: int) -> str:
    return f"{algorithm}-{scheme}-seed{seed}"


def run_spec(spec: BenchmarkSpec, algorithm: str, task: str, seed: int):
    from agents.benchmarl.experiment import RunSpec

    return RunSpec(algorithm=algorithm, scheme=split_task(task)[0], seed=int(seed), task=task_settings(spec, task),
                   experiment=dict(spec.experiment), algorithm_settings=dict(spec.algorithm_settings),
                   frame_budget=spec.frame_budget,
                   time_budget_s=spec.time_budget_s, eval_seeds=spec.eval_seeds, hidden=list(spec.hidden),
                   activation=spec.activation, device=spec.device, wandb_mode=spec.wandb_mode,
                   wandb_project=spec.wandb_project)


def settings_key(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def validate(spec: BenchmarkSpec) -> List[Tuple[str, str, int]]:
    """The grid's cells, or a BenchmarkError / ConfigError naming what is wrong and what is allowed."""
    from agents.benchmarl.experiment import WANDB_MODES, algorithm_registry, validate_spec
    from agents.training.wandb_logger import WandbSetupError, check_wandb
    from his_env.schemes import SCHEMES

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
    from his_env.scenarios import scenario_names

    if not spec.scenarios:
        raise BenchmarkError(f"no scenarios given; allowed: {', '.join(scenario_names())}")
    for name in spec.scenarios:
        if name not in scenario_names():
            raise BenchmarkError(f"scenario has value {name!r}; allowed: {', '.join(scenario_names())}")
    if not spec.seeds or any(int(s) < 0 for s in spec.seeds):
        raise BenchmarkError(f"seeds {spec.seeds!r}; allowed: one or more integers >= 0")
    if spec.eval_episodes < 1:
        raise BenchmarkError(f"eval_episodes {spec.eval_episodes!r}; allowed: an integer >= 1")
    if not (_is_integer(spec.absolute_episodes) and spec.absolute_episodes >= 0):
        raise BenchmarkError(f"absolute_episodes {spec.absolute_episodes!r}; allowed: an integer >= 0 (0: no final "
                             f"evaluation on more episodes)")
    if spec.search_sweeps < 1:
        raise BenchmarkError(f"search_sweeps {spec.search_sweeps!r}; allowed: an integer >= 1")
    from his_env.scenarios import HELD_OUT_COUNT

    if not (_is_integer(spec.held_out) and 0 <= spec.held_out <= HELD_OUT_COUNT):
        raise BenchmarkError(f"held_out {spec.held_out!r}; allowed: an integer in 0..{HELD_OUT_COUNT} (held-out test "
                             f"scenarios heldout-0.. to score the policies on)")
    if spec.held_out:
        if all(name == PAPER for name in spec.scenarios):
            raise BenchmarkError(f"held_out {spec.held_out}: the held-out scenarios are sequential (every dynamics "
                                 f"process on), and the grid trains on {PAPER!r} only, whose observations differ; "
                                 f"allowed: a sequential training scenario (--scenarios seq-medium-heavy ...)")
        if not spec.experiment.get("share_policy_params", False):
            raise BenchmarkError(f"held_out {spec.held_out}: the held-out scenarios have other numbers of UEs, which a "
                                 f"network per UE cannot serve; allowed: with shared parameters, "
                                 f"--set benchmarl.experiment.share_policy_params=true")
    if not isinstance(spec.warm_up, bool):
        raise BenchmarkError(f"warm_up={spec.warm_up!r}; allowed: True or False")
    if spec.wandb_mode not in WANDB_MODES:
        raise BenchmarkError(f"wandb mode {spec.wandb_mode!r}; allowed: {', '.join(WANDB_MODES)}")
    try:  # the wandb package and, online, the credentials: every cell and the report log there
        check_wandb(spec.wandb_mode)
    except WandbSetupError as exc:
        raise BenchmarkError(str(exc)) from exc
    if not spec.cpus_per_cell > 0:
        raise BenchmarkError(f"cpus_per_cell {spec.cpus_per_cell!r}; allowed: a number > 0")
    if spec.frame_budget is not None and not (_is_integer(spec.frame_budget) and spec.frame_budget >= 1):
        raise BenchmarkError(f"frame_budget {spec.frame_budget!r}; allowed: an integer >= 1 (frames per run) or "
                             f"none")
    if spec.time_budget_s is not None and not (_is_number(spec.time_budget_s) and math.isfinite(spec.time_budget_s)
                                               and spec.time_budget_s > 0):
        raise BenchmarkError(f"time_budget_s {spec.time_budget_s!r}; allowed: a finite number of seconds > 0 or none")
    from agents.benchmarl.experiment import RUN_OWNED_EXPERIMENT_KEYS

    for key in spec.experiment:
        if key in RUN_OWNED_EXPERIMENT_KEYS and not key.startswith(("checkpoint", "keep_checkpoints")):
            raise BenchmarkError(f"benchmarl.experiment.{key} cannot be set: it comes from "
                                 f"{RUN_OWNED_EXPERIMENT_KEYS[key]}")
    try:
        cache_root()
    except CacheLocationError as exc:
        raise BenchmarkError(str(exc)) from None
    # seed-major: a grid stopped by a session limit holds whole seeds (every algorithm on every task) first
    cells = [(a, s, int(seed)) for seed in dict.fromkeys(spec.seeds) for s in spec.tasks
             for a in dict.fromkeys(spec.algorithms)]
    checked = set()
    for algorithm, scheme, _ in cells:  # the device, budget and settings checks, once per (algorithm, scheme)
        if (algorithm, scheme) not in checked:
            validate_spec(run_spec(spec, algorithm, scheme, spec.seeds[0]))
            checked.add((algorithm, scheme))
    out = Path(spec.output_dir)
    _check_output_folder(out)
    previous = _read_saved_settings(out / "benchmark.json")
    if previous is not None:
        current = json.loads(json.dumps(spec.result_settings()))
        differ = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        if differ:
            raise BenchmarkError(f"output folder {str(out)!r} holds a benchmark with other settings (different: "
                                 f"{', '.join(differ)}); resume it with the same settings or choose another "
                                 f"--output-dir")
    return cells


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _check_output_folder(out: Path) -> None:
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out.absolute() else f"lies under {str(existing)!r}, which is a file"
        raise BenchmarkError(f"output folder {str(out)!r} {where}; allowed: a folder (created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BenchmarkError(f"output folder {str(out)!r}: {str(existing)!r} cannot be written; allowed: a "
                             f"writable folder (created if missing)")


def _read_json(path: Path) -> Tuple[Any, Optional[str]]:
    """(data, None), or (None, why the file is not JSON)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"


def _read_saved_settings(path: Path) -> Optional[Dict[str, Any]]:
    """The result settings in an output folder's `benchmark.json`, or None (absent, or unusable:
    then moved aside, and the cells' own settings keys still decide what is finished)."""
    if not path.is_file():
        return None
    data, problem = _read_json(path)
    if problem is None and not (isinstance(data, dict) and isinstance(data.get("result_settings"), dict)):
        problem = "no result_settings object"
    if problem is not None:
        move_aside(path, problem)
        return None
    return data["result_settings"]


# ---------------------------------------------------------------------- references
def model_source_digest() -> str:
    """Digest of the code and data behind U (simulator with its dynamics and vector env, oracle, shared
    formulas, baselines, evaluation):
    any change there invalidates the cached references."""
    digest = hashlib.sha256()
    files = [REPO / "agents" / "baselines.py", REPO / "agents" / "evaluation.py"]
    for package in ("his_env", "quality_oracle", "his_common"):
        files += sorted((REPO / package).rglob("*.py")) + sorted((REPO / package / "data").glob("*"))
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def references_problem(data: Any, seeds: Sequence[int], search_sweeps: int) -> Optional[str]:
    """Why `data` cannot serve as the references for `seeds` and `search_sweeps`, or None."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for name in ("random", "search"):
        if not _finite(data.get(name)):
            return f"{name} = {data.get(name)!r}; allowed: a finite number"
    if abs(data["search"] - data["random"]) < 1e-12:  # agents.evaluation.normalized_score's threshold
        return f"search = random = {data['random']!r}, so the normalised score is undefined"
    if data.get("seeds") != list(seeds):
        return f"written for the seeds {data.get('seeds')!r}, not {list(seeds)!r}"
    if data.get("search_sweeps") != search_sweeps:
        return f"written for {data.get('search_sweeps')!r} search sweeps, not {search_sweeps!r}"
    return None


class ReferencesUnfinished(Exception):
    """The session limit came before every reference episode had run (those that ran are kept)."""


def _reference_policy(name: str, search_sweeps: int, search_device: Optional[str]):
    from agents.baselines import BACKLOG_WEIGHT, OpenLoopPolicy, RandomPolicy, SearchPolicy

    if name == "random":
        return RandomPolicy(0)
    if name == "search":
        return SearchPolicy(max_sweeps=search_sweeps, device=search_device)
    if name == "open_loop":
        return OpenLoopPolicy()
    return SearchPolicy(max_sweeps=search_sweeps, backlog_weight=BACKLOG_WEIGHT)


def reference_episode(env_dict: Dict[str, Any], name: str, seed: int, search_sweeps: int,
                      search_device: Optional[str] = None) -> Dict[str, float]:
    """U (the episode's mean per decision point) and wall time of one reference policy ("random",
    "search", "backlog_search", "open_loop") on one seed: the unit the references are computed, cached and run
    in parallel by (each policy is reset per seed, so a seed's episode does not depend on the others)."""
    from agents.evaluation import evaluate_policy

    quiet_worker()
    row = evaluate_policy(_reference_policy(name, search_sweeps, search_device), env_dict, [int(seed)])[0]
    return {"utility": float(row["utility"]), "wall_s": float(row["wall_s"])}


def references(his_config, seeds: Sequence[int], search_sweeps: int, log: Callable[[str], None] = print,
               search_device: Optional[str] = None, backlog: bool = False, pool=None, pool_size: int = 1,
               may_start: Optional[Callable[[float], bool]] = None, store: Optional[Path] = None) -> Dict[str, float]:
    """U_random and U_search of the PettingZoo env on `seeds` (cached on disk; an unusable cache file
    is moved aside and recomputed). `store`: a folder that keeps them and their episodes as well (a
    grid's `references/`), looked in first, so that a grid resumes without recomputing them wherever
    its output folder goes (another machine, an empty cache). BenchmarkError when they give no
    usable normalisation. The search scores its candidates on the torch device `search_device` where
    given (the same sweeps, so the cache serves both). `backlog` with request queues on: also U of the backlog search
    (`agents.baselines`, `backlog-search`), "backlog_search", a policy above the myopic search, and
    of the open-loop policy (`open-loop`), "open_loop", what holding the best schedule without
    looking at the state gets.

    Each (policy, seed) episode is a unit, cached as soon as it has run (`references-<key>.parts/`),
    so an interrupted computation resumes where it stopped; `pool` (a concurrent.futures executor of
    `pool_size` workers) runs the numpy units side by side (units on a `search_device` run here, one
    at a time). `may_start(seconds)`: whether a unit that may take that long (the longest so far)
    may start now (the session limit, a stop signal); once it says no, ReferencesUnfinished after
    the running units are done."""
    from agents.baselines import BACKLOG_WEIGHT

    env_dict = his_config.to_dict()
    backlog = backlog and his_config.dynamics.requests.enabled
    key = settings_key({"env": env_dict, "seeds": list(seeds), "search_sweeps": search_sweeps,
                        "code": model_source_digest(),
                        **({"backlog_weight": BACKLOG_WEIGHT, "open_loop": True} if backlog else {})})
    folders = ([Path(store)] if store is not None else []) + [cache_root() / "benchmark"]
    paths = [folder / f"references-{key}.json" for folder in folders]
    for path in paths:
        if path.is_file():
            data, problem = _read_json(path)
            problem = problem or references_problem(data, seeds, search_sweeps)
            for name in (("backlog_search", "open_loop") if backlog else ()):
                if problem is None and not _finite(data.get(name)):
                    problem = f"{name} = {data.get(name)!r}; allowed: a finite number"
            if problem is None:
                for other in paths[:paths.index(path)]:  # the store gets a copy of the cache's
                    write_cache_file(other, json.dumps(data, indent=1, sort_keys=True), "benchmark references")
                return data
            move_aside(path, problem)
    names = ["random", "search"] + (["backlog_search", "open_loop"] if backlog else [])
    episodes = _reference_episodes(env_dict, names, seeds, search_sweeps, search_device,
                                   folders[0] / f"references-{key}.parts", pool, pool_size, may_start)
    out: Dict[str, Any] = {"seeds": list(seeds), "search_sweeps": search_sweeps}
    for name in names:
        runs = [episodes[(name, int(seed))] for seed in seeds]
        out[name] = math.fsum(r["utility"] for r in runs) / len(runs)
        out[f"{name}_s"] = float(sum(r["wall_s"] for r in runs))
    if backlog:
        out["backlog_weight"] = BACKLOG_WEIGHT
    where = f"{env_dict['scheme']['name']}, N={env_dict['num_ues']}, seeds {seeds[0]}..{seeds[-1]}"
    problem = references_problem(out, seeds, search_sweeps)
    if problem is not None:
        raise BenchmarkError(f"references ({where}): {problem}; no cell could be scored: change the env settings, "
                             f"the evaluation episodes or the search sweeps")
    for path in paths:
        write_cache_file(path, json.dumps(out, indent=1, sort_keys=True), "benchmark references")
    log(f"references ({where}): " + ", ".join(f"U_{name} {out[name]:.4f} ({out[name + '_s']:.1f} s)"
                                              for name in names))
    return out


def _reference_episodes(env_dict, names, seeds, search_sweeps, search_device, parts: Path, pool, pool_size: int,
                        may_start):
    """{(name, seed): {"utility", "wall_s"}} for every reference unit: from `parts` where cached, else
    run (numpy units in `pool` where given) and cached there one by one."""
    done: Dict[Tuple[str, int], Dict[str, float]] = {}
    todo: List[Tuple[str, int]] = []
    for name in names:
        for seed in seeds:
            part = parts / f"{name}-{int(seed)}.json"
            data, problem = _read_json(part) if part.is_file() else (None, None)
            if isinstance(data, dict) and _finite(data.get("utility")) and _finite(data.get("wall_s")):
                done[(name, int(seed))] = data
            else:
                if part.is_file():
                    move_aside(part, problem or f"{data!r} holds no finite utility and wall_s")
                todo.append((name, int(seed)))
    longest = [0.0]
    refused = []

    def keep(unit, result):
        done[unit] = result
        longest[0] = max(longest[0], result["wall_s"])
        write_cache_file(parts / f"{unit[0]}-{unit[1]}.json", json.dumps(result), "benchmark reference episode")

    def fits() -> bool:
        if not refused and may_start is not None and not may_start(longest[0]):
            refused.append(True)
        return not refused

    def device_of(name):
        return search_device if name == "search" else None

    here = [u for u in todo if pool is None or device_of(u[0]) is not None]
    queue = [u for u in todo if u not in here]
    pending: Dict[Any, Tuple[str, int]] = {}

    def submit_more():
        while queue and len(pending) < max(1, pool_size) and fits():
            unit = queue.pop(0)
            pending[pool.submit(reference_episode, env_dict, unit[0], unit[1], search_sweeps, None)] = unit

    submit_more()
    for unit in here:
        if not fits():
            break
        keep(unit, reference_episode(env_dict, unit[0], unit[1], search_sweeps, device_of(unit[0])))
    while pending:
        finished, _ = futures.wait(list(pending), return_when=futures.FIRST_COMPLETED)
        for handle in finished:
            keep(pending.pop(handle), handle.result())
        submit_more()
    left = [u for u in todo if u not in done]
    if left:
        raise ReferencesUnfinished(f"{len(left)} of {len(names) * len(seeds)} reference episodes left to run")
    return done


# ---------------------------------------------------------------------- one cell
def set_aside_earlier_attempt(folder: str | Path) -> Optional[Path]:
    """Move everything in a cell folder but `superseded/` (the files of an earlier attempt that did
    not finish with a usable result) to `superseded/attempt-<UTC time>/` (his_common.storage)."""
    return set_aside_attempt(folder)


def search_device(spec: BenchmarkSpec, his_config) -> Optional[str]:
    """The torch device the search reference scores its candidates on: the grid's CUDA device for
    independent decision points (`agents.vector_search`), else None (numpy, the PettingZoo env's code)."""
    if str(spec.device).startswith("cuda") and not his_config.dynamics.enabled_processes:
        return spec.device
    return None


def held_out_references(spec: BenchmarkSpec, task: str, log: Callable[[str], None], stop=None,
                        run_in: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Per held-out scenario (heldout-0 .. heldout-<held_out - 1>): its env config (the task's scheme
    and settings on that scenario, its own N) and its U_random and U_search on the evaluation seeds
    (`run_in`: `references`' pool, pool_size and may_start)."""
    from agents.benchmarl.task import task_by_name
    from his_env.scenarios import held_out_names

    scheme = split_task(task)[0]
    out: Dict[str, Any] = {}
    for name in held_out_names()[:spec.held_out]:
        if stop is not None and stop.requested:
            break
        settings = {**task_settings(spec, task_label(scheme, name)), "num_ues": spec.task.get("num_ues")}
        his_config = task_by_name(scheme).get_task(settings).his_config()
        out[name] = {**references(his_config, spec.eval_seeds, spec.search_sweeps, log, **(run_in or {})),
                     "config": his_config.to_dict()}
    return out


def run_cell(spec_dict: Dict[str, Any], refs: Dict[str, float], folder: str) -> Dict[str, Any]:
    """Train one cell and return its record (runs in a worker process or a Ray worker, where the
    cell folder is: an earlier attempt's files there go to superseded/ first)."""
    from agents.training.ray_session import quiet_libraries

    quiet_worker()
    quiet_libraries(False, ("torchrl",))  # after torchrl's import, which sets its own logger and warning filters
    from agents.benchmarl.experiment import RunSpec, run_benchmarl

    moved = set_aside_earlier_attempt(folder)
    result = run_benchmarl(RunSpec(**spec_dict), folder, references=refs)
    out = {"summary": result["summary"], "curve": result["curve"], "set_aside": str(moved) if moved else None}
    if refs.get("absolute"):
        out["absolute"] = absolute_evaluation(result["experiment"], result["task"].his_config(), refs["absolute"])
    if refs.get("held_out"):  # the trained policy on test scenarios it never saw (his_env.scenarios)
        from his_env.config import HISConfig

        out["held_out"] = {name: absolute_evaluation(result["experiment"], HISConfig.from_dict(ref["config"]), ref)
                           for name, ref in refs["held_out"].items()}
    return out


def absolute_evaluation(experiment, his_config, refs: Mapping[str, Any]) -> Dict[str, Any]:
    """The final greedy policy of `experiment` on the seeds of `refs` (the references computed on them):
    mean U, Q, T, E per decision point and the normalised score, with the episodes and seeds."""
    from agents.benchmarl.experiment import greedy_policy
    from agents.evaluation import evaluate_policy, mean_metric, normalized_score

    t0 = time.perf_counter()
    rows = evaluate_policy(greedy_policy(experiment), his_config.to_dict(), list(refs["seeds"]))
    out: Dict[str, Any] = {key: mean_metric(rows, key) for key in ("utility", "quality", "delay", "energy")}
    out.update(score=normalized_score(out["utility"], refs["random"], refs["search"]), episodes=len(refs["seeds"]),
               seeds=[int(refs["seeds"][0]), int(refs["seeds"][-1])], eval_s=time.perf_counter() - t0)
    return out


def warm_up_runs(spec: BenchmarkSpec, tasks: Optional[Sequence[str]] = None) -> List[Tuple[str, str]]:
    """The (algorithm, task) runs of one iteration each that the grid trains, and discards, before its
    cells, so that their time budget does not pay for compiling the env's captured step
    (`his_env.vector.capture`): one per task of `tasks` (default: the grid's) and per collection batch
    size among the grid's algorithms (each compiles its own shapes; inductor's disk cache then serves
    every cell of the same shapes, in any process). None where nothing is compiled (capture off: the
    CPU by default), where compilation does not count (a frame budget, no time budget), on a Ray
    cluster (each node has its own cache), or when `spec.warm_up` is off."""
    import torch

    from agents.benchmarl.experiment import algorithm_registry, experiment_config
    from his_env.vector.capture import resolve_capture

    if not spec.warm_up or spec.time_budget_s is None or spec.ray_address:
        return []
    registry, cfg = algorithm_registry(), experiment_config(spec.experiment)
    runs = []
    for task in spec.tasks if tasks is None else tasks:
        if not resolve_capture(task_settings(spec, task).get("capture"), torch.device(spec.device)):
            continue
        batches = set()
        for algorithm in spec.algorithms:
            batch = cfg.n_envs_per_worker(registry[algorithm].on_policy())
            if batch not in batches:
                batches.add(batch)
                runs.append((algorithm, task))
    return runs


def warm_up(spec_dict: Dict[str, Any]) -> float:
    """Train one iteration of the run `spec_dict` (a RunSpec's fields) in a temporary folder that is
    removed afterwards (runs in a worker process); returns its seconds. What it leaves is the compiled
    step in inductor's disk cache."""
    import tempfile

    from agents.training.ray_session import quiet_libraries

    quiet_worker()
    quiet_libraries(False, ("torchrl",))
    from agents.benchmarl.experiment import RunSpec, run_benchmarl

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="his-warm-up-") as folder:
        run_benchmarl(RunSpec(**spec_dict), folder)
    return time.perf_counter() - t0


def run_warm_up(spec: BenchmarkSpec, runs: Sequence[Tuple[str, str]], pool, log: Callable[[str], None]) -> None:
    """`warm_up` each of `runs` side by side in `pool` (the cells' workers), then say what it took; a run
    that fails costs only a warning (each cell then compiles for itself)."""
    from agents.benchmarl.experiment import algorithm_registry, experiment_config

    t0 = time.monotonic()
    cfg, registry = experiment_config(spec.experiment), algorithm_registry()
    handles = {}
    for algorithm, task in runs:
        rs = run_spec(spec, algorithm, task, 0)
        per_iter = cfg.collected_frames_per_batch(registry[algorithm].on_policy())
        rs = replace(rs, frame_budget=per_iter, time_budget_s=None, eval_seeds=rs.eval_seeds[:1], wandb_mode="disabled")
        handles[pool.submit(warm_up, rs.to_dict())] = f"{algorithm} on {task}"
    failed = []
    for handle, what in handles.items():
        try:
            handle.result()
        except Exception as exc:  # noqa: BLE001 - the cells compile for themselves
            failed.append(f"{what}: {_error_text(exc).splitlines()[-1]}")
    log(f"benchmark: warm-up: one iteration each of {', '.join(handles.values())} in {time.monotonic() - t0:.0f} s, "
        f"so that the cells' time budget does not count compiling the env's captured step (--no-warm-up skips it)"
        + (f"; failed ({'; '.join(failed)}): each cell compiles for itself" if failed else ""))


def check_result(result: Mapping[str, Any]) -> None:
    """CellResultError unless the cell's final evaluation is finite (a NaN score is never "ok")."""
    summary = result.get("summary") if isinstance(result, Mapping) else None
    if not isinstance(summary, Mapping):
        raise CellResultError("the cell returned no summary")
    bad = [f"{key} {summary.get(key)!r}" for key in ("score", "utility") if not _finite(summary.get(key))]
    if bad:
        raise CellResultError(f"the final evaluation is not finite: {', '.join(bad)}")
    absolute = result.get("absolute")
    if absolute is not None and not (isinstance(absolute, Mapping) and _finite(absolute.get("score"))):
        raise CellResultError(f"the final evaluation on more episodes is not finite: {absolute!r}")


class _LocalRunner:
    """Cells in `jobs` worker processes on this machine (spawned once, reused from cell to cell)."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = jobs
        self.capacity = jobs
        self.pool = self._new_pool()

    def _new_pool(self):
        return worker_pool(self.jobs)

    def submit(self, spec_dict, refs, folder):
        try:
            return self.pool.submit(run_cell, spec_dict, refs, folder)
        except futures.process.BrokenProcessPool:  # a worker died (killed, out of memory): start new ones
            self.pool.shutdown(wait=False)
            self.pool = self._new_pool()
            return self.pool.submit(run_cell, spec_dict, refs, folder)

    @staticmethod
    def wait(pending):
        done, _ = futures.wait(pending, timeout=POLL_S, return_when=futures.FIRST_COMPLETED)
        return list(done)

    @staticmethod
    def result(handle):
        return handle.result()

    def close(self, interrupted: bool = False) -> None:
        """Wait for the workers to exit; interrupted: terminate them, running cells included
        (ProcessPoolExecutor.shutdown only cancels the cells not yet started). A second call does nothing."""
        if not interrupted:
            self.pool.shutdown(wait=True)
            return
        processes = list((getattr(self.pool, "_processes", None) or {}).values())  # no public API for them
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join(5.0)


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
        self.submitted: List[Any] = []

    def submit(self, spec_dict, refs, folder):
        ref = self.remote.remote(spec_dict, refs, folder)
        self.submitted.append(ref)
        return ref

    def wait(self, pending):
        done, _ = self.ray.wait(list(pending), num_returns=1, timeout=POLL_S)
        return done

    def result(self, handle):
        return self.ray.get(handle)

    def close(self, interrupted: bool = False) -> None:
        if not self.ray.is_initialized():
            return
        if interrupted and self.submitted:
            _, running = self.ray.wait(self.submitted, num_returns=len(self.submitted), timeout=0)
            for ref in running:
                self.ray.cancel(ref, force=True)
        self.ray.shutdown()


def ray_bootstrap_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> str:
    """The cluster address to give ray.init, once something answers a TCP connect there within
    `timeout_s` (ray.init itself retries a dead address silently for a minute or more); 'auto' is
    resolved as Ray does (RAY_ADDRESS, then the cluster `ray start` recorded on this machine)."""
    target = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto")
        except (ConnectionError, ValueError) as exc:
            raise BenchmarkError(f"ray address 'auto': no running Ray cluster found ({exc}); {RAY_ALLOWED}") from None
        if not target:
            raise BenchmarkError(f"ray address 'auto': no running Ray cluster found; {RAY_ALLOWED}")
    host, _, port = target.split("://", 1)[-1].rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchmarkError(f"ray address {address!r}" + (f" (found {target!r})" if target != address else "")
                             + f" is not host:port; {RAY_ALLOWED}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise BenchmarkError(f"ray address {address!r}: nothing answers at {host}:{port} within {timeout_s:g} s "
                             f"({reason}); {RAY_ALLOWED}") from None
    return target


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-2000:]


SUMMARY_NUMBERS = ("score", "utility", "quality", "delay", "energy", "frames", "agent_steps", "iterations", "train_s",
                   "wall_s", "agent_steps_per_s", "peak_rss_mb")


def record_problem(record: Any, name: str) -> Optional[str]:
    """Why `record` is not a usable result.json of the cell `name`, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if record.get("status") not in ("ok", "failed"):
        return f"status {record.get('status')!r}; allowed: 'ok' or 'failed'"
    cell = record.get("cell")
    try:
        written_for = cell_name(cell["algorithm"], cell["scheme"], cell["seed"])
    except (KeyError, TypeError):
        written_for = None
    if written_for is None or not _is_integer(cell["seed"]):
        return f"cell {cell!r} is not {{algorithm, scheme, seed}}"
    if written_for != name:
        return f"written for the cell {written_for!r}"
    if not isinstance(record.get("settings_key"), str):
        return f"settings_key {record.get('settings_key')!r}; allowed: a string"
    if record["status"] == "ok":
        summary = record.get("summary")
        if not isinstance(summary, dict):
            return "status 'ok' without a summary"
        for key in ("score", "utility"):
            if not _finite(summary.get(key)):
                return f"status 'ok' with {key} {summary.get(key)!r}; allowed: a finite number"
        wrong = [k for k in SUMMARY_NUMBERS if k in summary and not _is_number(summary[k])]
        if wrong:
            return f"summary {wrong[0]} {summary[wrong[0]]!r} is not a number"
        if not isinstance(record.get("curve"), list):
            return "status 'ok' without a curve list"
        absolute = record.get("absolute")
        if absolute is not None and not (isinstance(absolute, dict) and _finite(absolute.get("score"))
                                         and _is_integer(absolute.get("episodes"))):
            return f"absolute evaluation {absolute!r}; allowed: an object with a finite score and its episodes"
    return None


def read_finished(folder: Path, key: str) -> Optional[Dict[str, Any]]:
    """The cell's finished ("ok") record for the settings `key`, or None (absent, failed, other
    settings, or unusable: then moved aside with a warning, and the cell runs again)."""
    path = Path(folder) / RESULT_FILE
    if not path.is_file():
        return None
    record, problem = _read_json(path)
    problem = problem or record_problem(record, Path(folder).name)
    if problem is not None:
        move_aside(path, problem)
        return None
    return record if record["status"] == "ok" and record["settings_key"] == key else None


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
    absolute = record.get("absolute")
    final = f", {absolute['score']:.3f} on {absolute['episodes']} episodes" if absolute else ""
    return (f"{head}: score {s['score']:.3f}{final} (U {s['utility']:.3f}) | {int(s['frames']):,} frames in "
            f"{s['train_s']:.0f} s | {s['agent_steps_per_s']:,.0f} agent-steps/s | peak {s['peak_rss_mb']:,.0f} MB"
            + (f" | {where}" if where else "") + (" (retried)" if record["attempts"] > 1 else ""))


SESSION_LIMIT = "session limit"
SESSIONS_FILE = "sessions.json"


def cell_estimate_s(spec: BenchmarkSpec, durations: Sequence[float]) -> Optional[float]:
    """Seconds a new cell may take: the longest this session so far, else from the time budget."""
    if durations:
        return max(durations)
    return 1.25 * spec.time_budget_s + 60.0 if spec.time_budget_s else None


def read_sessions(out: Path) -> List[Dict[str, Any]]:
    """The sessions recorded in `sessions.json` (an unusable file is moved aside, with a warning)."""
    path = out / SESSIONS_FILE
    if not path.is_file():
        return []
    data, problem = _read_json(path)
    if problem is None and not (isinstance(data, list) and all(isinstance(x, dict) for x in data)):
        problem = f"a JSON {type(data).__name__}, not a list of sessions"
    if problem is not None:
        move_aside(path, problem)
        return []
    return data


def run_benchmark(spec: BenchmarkSpec, log: Callable[[str], None] = print, jobs: int = 1,
                  show_bar: bool = True, signals=None, stop_after_s: Optional[float] = None) -> Dict[str, Any]:
    """Run the grid (see the module docstring). Returns {"records": [...] (finished cells, in grid
    order), "references", "report" (None when stopped before the references were complete),
    "missing": [cells not finished], "stopped": None or the stop signal's name, "output_dir"}.

    `signals`: an agents.training.signals.StopSignals the caller has already entered (the command
    line does, at its start); without one the grid installs its own for its duration. `stop_after_s`:
    this session's wall-time bound (see "Sessions" in the module docstring)."""
    from agents.training.signals import StopSignals

    cells = validate(spec)
    if stop_after_s is not None and (not _is_number(stop_after_s) or not math.isfinite(stop_after_s)
                                     or stop_after_s <= 0):
        raise BenchmarkError(f"stop_after_s={stop_after_s!r}; allowed: None or a finite number of seconds > 0")
    with StopSignals(log, unit=STOP_UNIT) if signals is None else contextlib.nullcontext(signals) as stop:
        runner = _start_runner(spec, jobs)  # a Ray address that does not answer fails here, before any work
        try:
            return _run(spec, cells, runner, log, show_bar, stop, stop_after_s)
        except BaseException:
            runner.close(interrupted=True)
            raise
        finally:
            runner.close()


def _start_runner(spec: BenchmarkSpec, jobs: int):
    if not spec.ray_address:
        return _LocalRunner(jobs)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BenchmarkError(f"ray address {spec.ray_address!r}: Ray is not installed here (pip install "
                             f"'ray[default]'); allowed without Ray: no ray address, the cells run here") from None
    address = ray_bootstrap_address(spec.ray_address)
    try:
        return _RayRunner(address, spec.cpus_per_cell)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BenchmarkError(f"ray address {spec.ray_address!r}: cannot connect ({type(exc).__name__}: {exc}); "
                             f"{RAY_ALLOWED}") from exc


def _run(spec: BenchmarkSpec, cells, runner, log, show_bar: bool, stop, stop_after_s=None) -> Dict[str, Any]:
    from experiments.benchmark_report import write_report
    from agents.benchmarl.task import task_by_name

    out = Path(spec.output_dir).resolve()
    names = [cell_name(a, s, seed) for a, s, seed in cells]
    records: Dict[str, Dict[str, Any]] = {}
    session_start, started_utc = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    limited = []  # set when the session limit kept a cell from starting
    finished_now = []  # cells finished in this session

    def stopped_by():
        return stop.requested or (SESSION_LIMIT if limited else None)

    def outcome(refs, report, unfinished: bool = False) -> Dict[str, Any]:
        missing = [name for name in names if name not in records]
        return {"records": [records[name] for name in names if name in records], "references": refs,
                "report": report, "missing": missing, "stopped": stopped_by() if missing or unfinished else None,
                "output_dir": str(out)}

    def record_session(missing: Sequence[str]) -> List[Dict[str, Any]]:
        sessions = read_sessions(out) + [{
            "started": started_utc, "seconds": round(time.monotonic() - session_start, 1),
            "cells_finished": len(finished_now), "ended": (stopped_by() or "done") if missing else "done"}]
        atomic_write_json(out / SESSIONS_FILE, sessions)
        return sessions

    if stop.requested:
        return outcome({}, None)
    out.mkdir(parents=True, exist_ok=True)
    key = settings_key(spec.result_settings())
    atomic_write_json(out / "benchmark.json", {"spec": asdict(spec), "result_settings": spec.result_settings(),
                                               "settings_key": key})
    todo = []
    for (algorithm, scheme, seed), name in zip(cells, names):
        finished = read_finished(out / "cells" / name, key)
        if finished is not None:
            records[name] = finished
        else:
            todo.append((algorithm, scheme, seed))
    refs: Dict[str, Dict[str, float]] = {}

    def within_session(estimate_s: float) -> bool:  # work of that length would end within the session's limit
        return stop_after_s is None or time.monotonic() - session_start + estimate_s <= stop_after_s

    def may_start(estimate_s: float) -> bool:  # a reference episode
        return not stop.requested and within_session(estimate_s)

    # the reference episodes run in the cells' local workers (one at a time on a Ray cluster's driver)
    # and are kept in the output folder as well as the cache (a grid resumes on another machine without them)
    run_in = {"pool": getattr(runner, "pool", None), "pool_size": getattr(runner, "jobs", 1), "may_start": may_start,
              "store": out / "references"}
    try:
        for scheme in spec.tasks:  # a task label: his, or his@seq-medium-heavy
            if stop.requested:
                return outcome(refs, None)
            his_config = task_by_name(split_task(scheme)[0]).get_task(task_settings(spec, scheme)).his_config()
            device = search_device(spec, his_config)
            refs[scheme] = references(his_config, spec.eval_seeds, spec.search_sweeps, log, device, backlog=True,
                                      **run_in)
            if spec.absolute_episodes:
                refs[scheme] = {**refs[scheme], "absolute": references(his_config, spec.absolute_seeds,
                                                                       spec.search_sweeps, log, device, **run_in)}
            if spec.held_out and split_task(scheme)[1] != PAPER:
                refs[scheme] = {**refs[scheme], "held_out": held_out_references(spec, scheme, log, stop, run_in)}
    except ReferencesUnfinished as exc:
        if stop.requested:
            return outcome(refs, None)
        limited.append(True)
        log(f"benchmark: session limit: {time.monotonic() - session_start:.0f} s of {stop_after_s:g} s used "
            f"computing the references ({exc}; those that ran are kept): run the same command again to continue")
        record_session(names)
        return outcome(refs, None, unfinished=True)
    atomic_write_json(out / "references.json", refs)
    log(f"benchmark: {len(cells)} cells ({len(spec.algorithms)} algorithms x {len(spec.tasks)} tasks x "
        f"{len(spec.seeds)} seeds), {len(records)} already finished, {len(todo)} to run"
        + (f" on the Ray cluster at {spec.ray_address}" if spec.ray_address else "") + f"; output {out}")
    tasks_left = {task for _, task, _ in todo}
    warm = warm_up_runs(spec, [task for task in spec.tasks if task in tasks_left])
    if warm and getattr(runner, "pool", None) is not None and not stop.requested:
        run_warm_up(spec, warm, runner.pool, log)

    bar = None
    if show_bar and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(cells), initial=len(records), desc="benchmark", unit="cell", file=sys.stderr,
                   dynamic_ncols=True)
    emit = bar.write if bar is not None else log
    pending: Dict[Any, Tuple[str, str, int, int, List[str]]] = {}
    started_at: Dict[Any, float] = {}
    durations: List[float] = []

    queue: List[Tuple[str, str, int, int, List[str]]] = [(a, s, seed, 1, []) for a, s, seed in todo]

    def fits() -> bool:
        """Whether a new cell may start within this session's limit."""
        if stop_after_s is None:
            return True
        estimate = cell_estimate_s(spec, durations)
        if estimate is None or within_session(estimate):
            return True
        if not limited:
            limited.append(True)
            emit(f"benchmark: session limit: {time.monotonic() - session_start:.0f} s of {stop_after_s:g} s used, a "
                 f"cell takes up to {estimate:.0f} s: no cell starts now (the running ones finish); run the same "
                 f"command again to continue")
        return False

    def submit_next() -> None:
        while queue and len(pending) < runner.capacity and not stop.requested and fits():
            algorithm, scheme, seed, attempt, errors = queue.pop(0)
            folder = out / "cells" / cell_name(algorithm, scheme, seed)
            rs = run_spec(spec, algorithm, scheme, seed)
            handle = runner.submit(rs.to_dict(), refs[scheme], str(folder))
            pending[handle] = (algorithm, scheme, seed, attempt, errors)
            started_at[handle] = time.monotonic()

    try:
        done_count = len(records)
        submit_next()
        while pending and not stop.requested:
            for handle in runner.wait(list(pending)):
                algorithm, scheme, seed, attempt, errors = pending.pop(handle)
                started = started_at.pop(handle)
                name = cell_name(algorithm, scheme, seed)
                cell = {"algorithm": algorithm, "scheme": scheme, "seed": seed}
                try:
                    try:
                        result = runner.result(handle)
                    finally:  # how long the cell took, finished or failed
                        durations.append(time.monotonic() - started)
                    check_result(result)
                except Exception as exc:  # noqa: BLE001 - any failure of the cell is recorded
                    if stop.requested:  # ended by the stop (or by the same signal): not run, runs again on resume
                        continue
                    errors = errors + [_error_text(exc)]
                    if attempt < 2:
                        emit(f"{name}: failed ({errors[-1].splitlines()[-1]}); running it once more")
                        queue.insert(0, (algorithm, scheme, seed, attempt + 1, errors))
                        continue
                    record = {"status": "failed", "cell": cell, "attempts": attempt, "errors": errors,
                              "settings_key": key}
                else:
                    if result.get("set_aside"):
                        emit(f"{name}: the files of an earlier unfinished attempt were moved to {result['set_aside']}")
                    record = {"status": "ok", "cell": cell, "attempts": attempt, "errors": errors,
                              "settings_key": key, "summary": result["summary"], "curve": result["curve"]}
                    for extra in ("absolute", "held_out"):
                        if result.get(extra) is not None:
                            record[extra] = result[extra]
                atomic_write_json(out / "cells" / name / RESULT_FILE, record)
                records[name] = record
                finished_now.append(name)
                done_count += 1
                emit(progress_line(done_count, len(cells), record))
                if bar is not None:
                    bar.update(1)
            submit_next()
    finally:
        if bar is not None:
            bar.close()
    if pending:  # stopped: the running cells are ended before the report, so that none outlives it
        runner.close(interrupted=True)
    missing = [name for name in names if name not in records]
    ordered = [records[name] for name in names if name in records]
    sessions = record_session(missing)
    report = write_report(ordered, refs, spec, out, log=log, missing=missing, sessions=len(sessions))
    return outcome(refs, report)


def failed_cells(records: Sequence[Mapping[str, Any]]) -> List[str]:
    return [cell_name(**r["cell"]) for r in records if r.get("status") != "ok"]
