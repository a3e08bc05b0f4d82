"""benchmark.py under faults: damaged or unwritable caches and output folders, non-finite scores,
unusable settings, an unreachable Ray address, and a grid killed with kill -9 or stopped with
SIGTERM in the middle of a cell, then resumed (no worker left behind, every cell exactly once)."""
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")

from experiments import benchmark as bm  # noqa: E402
from his_common import storage  # noqa: E402
from tests.benchmark.test_benchmark import FakeRunner, fake_result, small  # noqa: E402
from tests.benchmark.test_task import FRAMES_PER_BATCH, SMALL_EXPERIMENT, SMALL_TASK  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def fake_grid(monkeypatch, outcomes):
    runner = FakeRunner(outcomes)
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    monkeypatch.setattr(bm, "references", lambda *a, **k: {"random": 0.0, "search": 1.0})
    return runner


def cells_csv(out):
    rows = csv.DictReader((out / "cells.csv").open())
    return [(r["algorithm"], r["scheme"], int(r["seed"]), r["status"]) for r in rows]


def unusable(folder, name):
    return sorted(p for p in folder.iterdir() if p.name.startswith(f"{name}.unusable-"))


# ---------------------------------------------------------------------- the references cache
@pytest.fixture
def fake_evaluation(tmp_path, monkeypatch):
    """U of the random policy 1.0, of the search 3.0, counted; the cache in tmp_path."""
    import agents.evaluation
    from agents.baselines import SearchPolicy
    from agents.benchmarl.task import task_by_name

    calls = []

    def evaluate(policy, env_dict, seeds, **kw):
        calls.append(type(policy).__name__)
        return [{"utility": 3.0 if isinstance(policy, SearchPolicy) else 1.0, "wall_s": 0.5} for _ in seeds]

    monkeypatch.setattr(agents.evaluation, "evaluate_policy", evaluate)
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache"))
    his_config = task_by_name("his").get_task(dict(SMALL_TASK)).his_config()
    return his_config, calls


@pytest.mark.parametrize("content, reason", [
    (b"\x80\x9f\xff binary \x00", "not UTF-8"),
    (b"{}", "random = None; allowed: a finite number"),
    (b'{"random": 1.0, "search": 3.0, "seeds": [90000], "search_sweeps": 1', "not JSON"),
    (b"[1.0, 3.0]", "a JSON list, not an object"),
    (b'{"random": NaN, "search": 3.0, "seeds": [90000], "search_sweeps": 1}', "random = nan"),
    (b'{"random": 2.0, "search": 2.0, "seeds": [90000], "search_sweeps": 1}', "normalised score is undefined"),
    (b'{"random": 1.0, "search": 3.0, "seeds": [7], "search_sweeps": 1}', "written for the seeds [7]"),
])
def test_unusable_references_cache_is_moved_aside_and_recomputed(fake_evaluation, tmp_path, content, reason):
    his_config, calls = fake_evaluation
    first = bm.references(his_config, [90000], 1, log=lambda *_: None)
    (path,) = (tmp_path / "cache" / "benchmark").glob("references-*.json")
    assert (first["random"], first["search"]) == (1.0, 3.0) and len(calls) == 2
    assert bm.references(his_config, [90000], 1, log=lambda *_: None) == first and len(calls) == 2  # cached
    path.write_bytes(content)
    with pytest.warns(RuntimeWarning, match="unusable") as seen:
        again = bm.references(his_config, [90000], 1, log=lambda *_: None)
    assert len(seen) == 1 and reason in str(seen[0].message)
    # put together again from the episodes, each cached as it ended (none runs again)
    assert (again["random"], again["search"]) == (1.0, 3.0) and len(calls) == 2
    assert json.loads(path.read_text())["search"] == 3.0  # and written again
    (kept,) = unusable(path.parent, path.name)
    assert kept.read_bytes() == content
    (part,) = path.with_name(path.stem + ".parts").glob("search-*.json")
    part.write_bytes(content)  # an unusable episode is moved aside and runs again
    path.unlink()
    with pytest.warns(RuntimeWarning, match="unusable"):
        assert bm.references(his_config, [90000], 1, log=lambda *_: None)["search"] == 3.0
    assert calls[2:] == ["SearchPolicy"] and len(unusable(part.parent, part.name)) == 1


def test_read_only_cache_folder_costs_a_warning_not_the_run(fake_evaluation, tmp_path, monkeypatch):
    his_config, calls = fake_evaluation
    real_write = storage.atomic_write_bytes

    def refuse_in_cache(path, data):
        if Path(path).is_relative_to(tmp_path / "cache"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_write(path, data)

    monkeypatch.setattr(storage, "atomic_write_bytes", refuse_in_cache)
    monkeypatch.setattr(storage, "_UNWRITABLE", set())
    lines = []
    with pytest.warns(RuntimeWarning, match="cannot write the benchmark references .*PermissionError"):
        refs = bm.references(his_config, [90000], 1, log=lines.append)
    assert (refs["random"], refs["search"]) == (1.0, 3.0) and "U_search 3.0000" in lines[-1]
    assert not list((tmp_path / "cache").rglob("references-*.json"))


def test_references_that_cannot_normalise_stop_the_benchmark_with_a_message(fake_evaluation, monkeypatch):
    his_config, _ = fake_evaluation
    import agents.evaluation

    monkeypatch.setattr(agents.evaluation, "evaluate_policy",
                        lambda policy, env, seeds, **kw: [{"utility": 2.0, "wall_s": 0.5}])
    with pytest.raises(bm.BenchmarkError, match=r"references \(his, N=4, seeds 90000..90000\): search = random = 2.0"):
        bm.references(his_config, [90000], 1, log=lambda *_: None)


# ---------------------------------------------------------------------- non-finite scores are never "ok"
def test_a_nan_score_fails_the_cell_and_a_rerun_recomputes_it(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    # What the old code wrote with a references cache of {}: status "ok" and the score NaN.
    bad = {"status": "ok", "cell": {"algorithm": "ippo", "scheme": "his", "seed": 0}, "attempts": 1, "errors": [],
           "settings_key": bm.settings_key(small(tmp_path).result_settings()), **fake_result(math.nan)}
    storage.atomic_write_json(out / "cells" / "ippo-his-seed0" / "result.json", bad)
    runner = fake_grid(monkeypatch, {("ippo", 0): [fake_result(math.nan), fake_result(math.nan)]})
    with pytest.warns(RuntimeWarning, match="result.json' is unusable \\(status 'ok' with score nan"):
        result = bm.run_benchmark(small(tmp_path), log=lambda *_: None, show_bar=False)
    assert runner.calls == [("ippo", 0), ("ippo", 0)]  # read as not run, then retried once
    (record,) = result["records"]
    assert record["status"] == "failed" and record["attempts"] == 2
    assert "CellResultError: the final evaluation is not finite: score nan, utility nan" in record["errors"][-1]
    assert bm.failed_cells(result["records"]) == ["ippo-his-seed0"]  # benchmark.py exits 1
    assert cells_csv(out) == [("ippo", "his", 0, "failed")]
    # fixed (a good references cache): the rerun computes the cell again
    runner.outcomes[("ippo", 0)] = [fake_result(0.4)]
    result = bm.run_benchmark(small(tmp_path), log=lambda *_: None, show_bar=False)
    assert [r["status"] for r in result["records"]] == ["ok"] and cells_csv(out) == [("ippo", "his", 0, "ok")]


# ---------------------------------------------------------------------- a damaged output folder
def test_damaged_result_and_settings_files_are_moved_aside_and_the_cell_runs_again(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    runner = fake_grid(monkeypatch, {("ippo", 0): [fake_result(0.5), fake_result(0.7)],
                                     ("ippo", 1): [fake_result(0.6)]})
    bm.run_benchmark(small(tmp_path, seeds=[0, 1]), log=lambda *_: None, show_bar=False)
    seed0 = out / "cells" / "ippo-his-seed0"
    (seed0 / "result.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00 not a result")
    settings = (out / "benchmark.json").read_text()
    (out / "benchmark.json").write_text(settings[: len(settings) // 2])
    runner.calls.clear()
    with pytest.warns(RuntimeWarning, match="unusable") as seen:
        result = bm.run_benchmark(small(tmp_path, seeds=[0, 1]), log=lambda *_: None, show_bar=False)
    messages = sorted(str(w.message) for w in seen)
    assert len(messages) == 2 and "benchmark.json' is unusable (not JSON" in messages[0]
    assert "result.json' is unusable (not UTF-8 text)" in messages[1]
    assert runner.calls == [("ippo", 0)]
    assert [r["summary"]["score"] for r in result["records"]] == [0.7, 0.6]
    assert len(unusable(seed0, "result.json")) == 1 and len(unusable(out, "benchmark.json")) == 1
    assert json.loads((out / "benchmark.json").read_text())["settings_key"]  # written again


def test_a_result_written_for_another_cell_is_not_read_as_this_one(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    runner = fake_grid(monkeypatch, {("ippo", 0): [fake_result(0.5)], ("ippo", 1): [fake_result(0.6)]})
    bm.run_benchmark(small(tmp_path, seeds=[0]), log=lambda *_: None, show_bar=False)
    seed1 = out / "cells" / "ippo-his-seed1"
    seed1.mkdir()
    (seed1 / "result.json").write_bytes((out / "cells" / "ippo-his-seed0" / "result.json").read_bytes())
    with pytest.warns(RuntimeWarning, match="written for the cell 'ippo-his-seed0'"):
        result = bm.run_benchmark(small(tmp_path, seeds=[0, 1]), log=lambda *_: None, show_bar=False)
    assert runner.calls == [("ippo", 0), ("ippo", 1)]
    assert [r["summary"]["score"] for r in result["records"]] == [0.5, 0.6]


def test_leftovers_of_an_unfinished_attempt_are_kept_under_superseded(tmp_path):
    cell = tmp_path / "ippo-his-seed0"
    assert bm.set_aside_earlier_attempt(cell) is None  # no folder yet
    (cell / "ippo_his_mlp__1234").mkdir(parents=True)
    (cell / "ippo_his_mlp__1234" / "ippo.csv").write_text("step,reward\n")
    (cell / "result.json").write_text('{"status": "failed"}')
    first = bm.set_aside_earlier_attempt(cell)
    assert first.parent == cell / "superseded" and first.name.startswith("attempt-")
    assert sorted(p.name for p in cell.iterdir()) == ["superseded"]
    assert sorted(p.name for p in first.iterdir()) == ["ippo_his_mlp__1234", "result.json"]
    assert bm.set_aside_earlier_attempt(cell) is None  # superseded/ itself stays
    (cell / "ippo_his_mlp__5678").mkdir()
    second = bm.set_aside_earlier_attempt(cell)  # a second attempt in the same second gets its own folder
    assert second != first and [p.name for p in second.iterdir()] == ["ippo_his_mlp__5678"]


# ---------------------------------------------------------------------- settings refused before anything starts
@pytest.mark.parametrize("change, fragment", [
    ({"time_budget_s": math.inf}, "time_budget_s inf; allowed: a finite number of seconds > 0"),
    ({"time_budget_s": math.nan}, "time_budget_s nan; allowed: a finite number of seconds > 0"),
    ({"time_budget_s": 0.0}, "time_budget_s 0.0; allowed: a finite number of seconds > 0"),
    ({"frame_budget": 0}, "frame_budget 0; allowed: an integer >= 1"),
    ({"frame_budget": 100.5}, "frame_budget 100.5; allowed: an integer >= 1"),
    ({"frame_budget": -80}, "frame_budget -80; allowed: an integer >= 1"),
])
def test_budgets_that_never_end_or_make_no_sense_are_refused(tmp_path, change, fragment):
    with pytest.raises(bm.BenchmarkError) as info:
        bm.run_benchmark(small(tmp_path, **change), log=lambda *_: None, show_bar=False)
    assert fragment in str(info.value)
    assert not (tmp_path / "bench").exists()


def test_a_wandb_mode_without_the_wandb_package_is_refused_before_anything_starts(tmp_path, monkeypatch, capsys):
    """Not after the grid, when the report logs to W&B."""
    from his_cli.benchmark import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as where it is not installed
    code = main(["--algorithms", "ippo", "--num-ues", "4", "--frame-budget", "80", "--output-dir",
                 str(tmp_path / "b"), "--wandb-mode", "offline"])
    err = capsys.readouterr().err
    assert code == 2 and "W&B mode 'offline' needs the wandb package" in err and "--wandb-mode disabled" in err
    assert "Traceback" not in err and not (tmp_path / "b").exists()


def test_command_line_refuses_an_infinite_time_budget(tmp_path, capsys):
    from his_cli.benchmark import main

    with pytest.raises(SystemExit) as info:
        main(["--algorithms", "ippo", "--time-budget", "inf", "--output-dir", str(tmp_path / "b")])
    assert info.value.code == 2 and "--time-budget" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_cache_location_naming_a_file_is_an_input_error_before_anything_starts(tmp_path, monkeypatch, capsys):
    from his_cli.benchmark import main

    (tmp_path / "cachefile").write_text("not a folder")
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cachefile"))
    code = main(["--algorithms", "ippo", "--num-ues", "4", "--frame-budget", "80", "--output-dir",
                 str(tmp_path / "b"), "--wandb-mode", "disabled"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("benchmark.py: error: HIS_MARL_CACHE=") and "is a file" in err
    assert "Traceback" not in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["the output folder", "a folder under it"])
def test_an_output_folder_that_is_a_file_is_refused(tmp_path, name):
    (tmp_path / "bench").write_text("a file")
    out = tmp_path / "bench" if name == "the output folder" else tmp_path / "bench" / "sub"
    with pytest.raises(bm.BenchmarkError, match="allowed: a folder"):
        bm.validate(small(tmp_path, output_dir=str(out)))


# ---------------------------------------------------------------------- Ray
@pytest.mark.parametrize("address, env", [("127.0.0.1:1", None), ("auto", "127.0.0.1:1"), ("no-port", None)])
def test_an_unreachable_ray_address_fails_fast_with_what_is_allowed(tmp_path, monkeypatch, address, env):
    pytest.importorskip("ray")
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)  # 'auto' resolves to it, as in Ray
    t0 = time.perf_counter()
    with pytest.raises(bm.BenchmarkError) as info:
        bm.run_benchmark(small(tmp_path, ray_address=address), log=lambda *_: None, show_bar=False)
    assert time.perf_counter() - t0 < 15
    text = str(info.value)
    assert f"ray address {address!r}" in text and "'auto' or host:port" in text and "ray start --head" in text
    assert not (tmp_path / "bench").exists()


# ---------------------------------------------------------------------- a stop keeps the finished cells
class StopAfterFirst(FakeRunner):
    """Stands in for a SIGTERM that arrives while the second cell runs."""

    capacity = 2

    def __init__(self, outcomes, stop):
        super().__init__(outcomes)
        self.stop = stop
        self.closed = []

    def wait(self, pending):
        first = next(iter(pending))
        self.stop.requested = "SIGTERM"
        return [first]

    def close(self, interrupted=False):
        self.closed.append(interrupted)


def test_a_stop_reports_the_finished_cells_and_ends_the_running_ones(tmp_path, monkeypatch):
    from agents.training.signals import StopSignals

    stop = StopSignals()
    runner = StopAfterFirst({("ippo", 0): [fake_result(0.5)], ("ippo", 1): [fake_result(0.6)],
                             ("ippo", 2): [fake_result(0.7)]}, stop)
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    monkeypatch.setattr(bm, "references", lambda *a, **k: {"random": 0.0, "search": 1.0})
    result = bm.run_benchmark(small(tmp_path, seeds=[0, 1, 2]), log=lambda *_: None, show_bar=False, signals=stop)
    assert runner.calls == [("ippo", 0), ("ippo", 1)]  # nothing submitted after the stop
    assert result["stopped"] == "SIGTERM" and result["missing"] == ["ippo-his-seed1", "ippo-his-seed2"]
    assert runner.closed[0] is True  # the running cell is ended before the report
    assert cells_csv(tmp_path / "bench") == [("ippo", "his", 0, "ok")]
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "Not finished (2 of 3 cells" in report and "ippo-his-seed1, ippo-his-seed2" in report


class SecondSignal(StopAfterFirst):
    def wait(self, pending):
        from agents.training.signals import TrainingInterrupted

        raise TrainingInterrupted("SIGTERM")


def test_a_second_signal_stops_at_once_ends_the_workers_and_exits_130(tmp_path, monkeypatch, capsys):
    from his_cli.benchmark import main

    runner = SecondSignal({("ippo", 0): [fake_result(0.5)]}, stop=None)
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    monkeypatch.setattr(bm, "references", lambda *a, **k: {"random": 0.0, "search": 1.0})
    code = main(["--algorithms", "ippo", "--seeds", "1", "--num-ues", "4", "--frame-budget", "640", "--output-dir",
                 str(tmp_path / "b"), "--wandb-mode", "disabled", "--no-progress-bar"])
    err = capsys.readouterr().err
    assert code == 130 and "benchmark.py: stopped at once by a second signal" in err and "Traceback" not in err
    assert runner.closed[0] is True


# ---------------------------------------------------------------------- kill -9 and SIGTERM of benchmark.py
def command(out):
    settings = {f"benchmarl.task.{k}": v for k, v in SMALL_TASK.items() if k != "num_ues"}
    settings.update({f"benchmarl.experiment.{k}": v for k, v in SMALL_EXPERIMENT.items()})
    settings["benchmarl.experiment.evaluation_interval"] = 10 * FRAMES_PER_BATCH
    sets = [f"--set={k}={json.dumps(v)}" for k, v in settings.items()]
    # a time budget makes each cell train for 2 s, long enough to be caught in the middle
    return [sys.executable, str(REPO / "benchmark.py"), "--algorithms", "ippo", "--seeds", "2", "--num-ues", "4",
            "--frame-budget", str(1000 * FRAMES_PER_BATCH), "--time-budget", "2", "--eval-episodes", "1",
            "--absolute-episodes", "2",
            "--search-sweeps", "1", "--hidden", "16", "--no-progress-bar", "--wandb-mode", "disabled",
            "--output-dir", str(out), *sets]


def seed_embeddings(cache):
    """Copy the prompt embeddings of this session's cache, if it has them, into `cache`: computing
    them takes a cold cache 20 s or more, and they are not what this test is about."""
    import sqlite3

    source = storage.cache_root() / "all-MiniLM-L6-v2" / "embeddings.sqlite"
    if not source.is_file():
        return
    (cache / source.parent.name).mkdir(parents=True)
    try:
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=5) as src, \
                sqlite3.connect(cache / source.parent.name / source.name) as dst:
            src.backup(dst)  # a consistent copy, even while another process writes
    except sqlite3.Error:
        shutil.rmtree(cache / source.parent.name)


def launch(tmp_path, out, name):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HIS_MARL_CACHE=str(tmp_path / "cache"))
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen(command(out), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def output(tmp_path, name):
    return (tmp_path / f"{name}.log").read_text()


def attempt_folders(cell):
    """BenchMARL's run folders in a cell folder (one per attempt)."""
    return sorted(p.name for p in cell.iterdir() if p.is_dir() and p.name != "superseded")


def wait_for(proc, condition, what, log, timeout=180):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"benchmark.py ended (exit {proc.returncode}) before {what}:\n{log()[-3000:]}"
        assert time.time() < deadline, f"no {what} after {timeout} s:\n{log()[-3000:]}"
        time.sleep(0.1)


def _children_by_proc(pid):
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def descendants(pid):
    """(pid, start time, command line) of every process below `pid`: psutil if installed, else /proc."""
    try:
        import psutil
    except ImportError:
        psutil = None
    out = []
    pids = [p.pid for p in psutil.Process(pid).children(recursive=True)] if psutil else _children_by_proc(pid)
    for child in pids:
        try:
            stat = Path(f"/proc/{child}/stat").read_text().rsplit(") ", 1)[1].split()
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append((child, stat[19], cmdline))
        except OSError:
            pass
    return out


def alive(procs):
    left = []
    for pid, start, cmdline in procs:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if stat[19] == start and stat[0] != "Z":  # the same process (not a reused PID), not yet exited
            left.append((pid, cmdline))
    return left


def assert_none_left(procs, timeout=5.0):
    deadline = time.time() + timeout
    while alive(procs) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(procs), f"left behind: {alive(procs)}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_and_sigterm_leave_no_worker_and_the_grid_resumes_to_one_attempt_per_cell(tmp_path):
    out = tmp_path / "bench"
    seed0, seed1 = out / "cells" / "ippo-his-seed0", out / "cells" / "ippo-his-seed1"
    seed_embeddings(tmp_path / "cache")

    # 1. kill -9 in the middle of the first cell: its worker dies with the driver.
    proc = launch(tmp_path, out, "killed")
    wait_for(proc, lambda: seed0.is_dir() and attempt_folders(seed0), "a cell in training",
             lambda: output(tmp_path, "killed"))
    procs = descendants(proc.pid)
    assert any("multiprocessing" in cmdline for _, _, cmdline in procs), procs  # a pool worker was running
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert_none_left(procs)
    killed_attempt = attempt_folders(seed0)
    assert len(killed_attempt) == 1 and not (seed0 / "result.json").exists()

    # 2. Run again, SIGTERM in the middle of the second cell: exit 130 with a message, the finished
    #    cell kept and reported, no process left; the killed attempt moved to superseded/.
    proc = launch(tmp_path, out, "stopped")
    wait_for(proc, lambda: (seed0 / "result.json").is_file() and seed1.is_dir() and attempt_folders(seed1),
             "the second cell in training", lambda: output(tmp_path, "stopped"))
    procs = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    text = output(tmp_path, "stopped")
    assert code == 130, text[-3000:]
    assert "SIGTERM: stopping after ending the running cells" in text
    assert f"benchmark.py: stopped by SIGTERM: 1 of 2 cells finished and kept in {out}" in text
    assert "run the same command again" in text and "Traceback" not in text
    assert_none_left(procs)
    assert cells_csv(out) == [("ippo", "his", 0, "ok")]
    assert "Not finished (1 of 2 cells" in (out / "report.md").read_text()
    (moved,) = (seed0 / "superseded").iterdir()
    assert moved.name.startswith("attempt-") and attempt_folders(moved) == killed_attempt
    assert len(attempt_folders(seed0)) == 1 and attempt_folders(seed0) != killed_attempt
    stopped_attempt = attempt_folders(seed1)

    # 3. Run again to completion: the first cell is read back, the second runs once more.
    proc = launch(tmp_path, out, "resumed")
    code = proc.wait(timeout=180)
    text = output(tmp_path, "resumed")
    assert code == 0, text[-3000:]
    assert "1 already finished, 1 to run" in text
    # quiet by default: to a pipe, the cells' libraries print no warning, log line or colour code
    assert "Warning" not in text and "[torchrl]" not in text and "\x1b[" not in text, text[-3000:]
    assert cells_csv(out) == [("ippo", "his", 0, "ok"), ("ippo", "his", 1, "ok")]
    report = (out / "report.md").read_text()
    assert "| ippo | his | 0 | ok |" in report and "| ippo | his | 1 | ok |" in report and "Not finished" not in report
    (moved,) = (seed1 / "superseded").iterdir()
    assert attempt_folders(moved) == stopped_attempt
    assert len(attempt_folders(seed1)) == 1 and (seed1 / "result.json").is_file()
