"""benchmark.py's runner and report: refusals, bootstrap intervals, retries, resume, and a small real grid."""
import csv
import json
import math

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")

from experiments import benchmark as bm  # noqa: E402
from experiments.benchmark_report import bootstrap_ci, summarise  # noqa: E402
from tests.benchmark.test_task import FRAMES_PER_BATCH, SMALL_EXPERIMENT, SMALL_TASK  # noqa: E402


def small(tmp_path, **kw):
    base = dict(algorithms=["ippo"], schemes=["his"], seeds=[0], task=dict(SMALL_TASK),
                experiment=dict(SMALL_EXPERIMENT), frame_budget=2 * FRAMES_PER_BATCH, eval_episodes=1,
                absolute_episodes=2, hidden=[16, 16], output_dir=str(tmp_path / "bench"), wandb_mode="disabled")
    base.update(kw)
    return bm.BenchmarkSpec(**base)


# ---------------------------------------------------------------------- refusals before anything starts
@pytest.mark.parametrize("change, fragment", [
    ({"algorithms": ["ippo", "ppo"]}, "algorithm has value 'ppo'; allowed: "),
    ({"schemes": ["his", "hybrid"]}, "scheme has value 'hybrid'; allowed: his, ppgfis, cfis, iis"),
    ({"frame_budget": FRAMES_PER_BATCH - 1}, f"allowed: at least {FRAMES_PER_BATCH}"),
    ({"device": "cuda:3"}, "device 'cuda:3' is not present on this machine; present here: cpu"),
    ({"task": {"num_ues": 4, "reward_mode": "greedy"}}, "task.reward_mode has value 'greedy'"),
    ({"experiment": {"learning_rate": 0.1}},
     "benchmarl.experiment.learning_rate (experiment overrides) is not a BenchMARL"),
    ({"experiment": {"max_n_frames": 10}}, "benchmarl.experiment.max_n_frames cannot be set: it comes from the frame"),
    ({"algorithm_settings": {"mix_hidden": 8}}, "benchmarl.algorithm.mix_hidden is not a setting of BenchMARL's ippo"),
])
def test_bad_settings_are_refused_with_the_allowed_values(tmp_path, change, fragment):
    if change.get("device", "").startswith("cuda"):
        import torch

        if torch.cuda.device_count() > 3:
            pytest.skip("this machine has a cuda:3")
    with pytest.raises(ValueError) as info:
        bm.run_benchmark(small(tmp_path, **change), log=lambda *_: None, show_bar=False)
    assert fragment in str(info.value)
    assert not (tmp_path / "bench").exists()  # nothing started


def test_algorithm_refusal_lists_benchmarls_algorithms(tmp_path):
    with pytest.raises(ValueError) as info:
        bm.validate(small(tmp_path, algorithms=["dqn"]))
    for name in ("ippo", "mappo", "iql", "qmix", "vdn", "isac", "masac", "iddpg", "maddpg"):
        assert name in str(info.value)


# ---------------------------------------------------------------------- report arithmetic
def test_bootstrap_interval_of_two_values_spans_them():
    # The resampled means of {0, 1} are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: 2.5 % and 97.5 % quantiles 0 and 1.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.4, 0.4, 0.4]) == (pytest.approx(0.4), pytest.approx(0.4))
    assert bootstrap_ci([0.7]) == (0.7, 0.7)


def test_bootstrap_interval_agrees_with_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(3).normal(0.6, 0.2, size=12)
    lo, hi = bootstrap_ci(x)
    ref = scipy_stats.bootstrap((x,), np.mean, method="percentile", n_resamples=20_000, random_state=1)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.01)


def test_summary_ranks_by_mean_score_within_each_scheme():
    def row(a, s, seed, score, status="ok"):
        return {"algorithm": a, "scheme": s, "seed": seed, "status": status, "score": score, "utility": 10 * score,
                "frames": 100, "train_s": 1.0, "agent_steps_per_s": 5.0, "peak_rss_mb": 100.0 + seed}
    rows = [row("ippo", "his", 0, 0.5), row("ippo", "his", 1, 0.7), row("qmix", "his", 0, 0.9),
            row("qmix", "his", 1, math.nan, "failed"), row("ippo", "cfis", 0, 0.2)]
    summary = summarise(rows)
    his = [r for r in summary if r["scheme"] == "his"]
    assert [(r["algorithm"], r["rank"]) for r in his] == [("qmix", 1), ("ippo", 2)]
    assert his[1]["score_mean"] == pytest.approx(0.6) and his[1]["peak_rss_mb_max"] == 101.0
    assert his[0]["seeds"] == 1 and his[0]["failed"] == 1


# ---------------------------------------------------------------------- retries and failures (no training)
class Handle:
    def __init__(self, outcome):
        self.outcome = outcome


class FakeRunner:
    """Stands in for the process pool: a cell's result is decided by `outcomes[(algo, seed)]` per attempt."""

    capacity = 1

    def __init__(self, outcomes):
        self.outcomes = outcomes
        self.calls = []

    def submit(self, spec_dict, refs, folder):
        key = (spec_dict["algorithm"], spec_dict["seed"])
        self.calls.append(key)
        return Handle(self.outcomes[key].pop(0))

    def wait(self, pending):
        return [next(iter(pending))]

    def result(self, handle):
        outcome = handle.outcome
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def close(self, interrupted=False):
        pass


def fake_result(score):
    summary = {"score": score, "utility": score, "quality": 0.0, "delay": 0.0, "energy": 0.0, "frames": 80,
               "agent_steps": 320, "iterations": 2, "train_s": 1.0, "wall_s": 2.0, "agent_steps_per_s": 320.0,
               "peak_rss_mb": 500.0, "host": "h", "continuous_actions": False}
    return {"summary": summary, "curve": [{"iteration": 1.0, "frames": 80.0, "train_s": 1.0, "score": score}]}


def test_a_failing_cell_is_retried_once_then_reported(tmp_path, monkeypatch):
    outcomes = {("ippo", 0): [RuntimeError("flaky node"), fake_result(0.8)],
                ("ippo", 1): [RuntimeError("out of memory"), RuntimeError("out of memory again")]}
    runner = FakeRunner(outcomes)
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    monkeypatch.setattr(bm, "references", lambda *a, **k: {"random": 0.0, "search": 1.0})
    lines = []
    result = bm.run_benchmark(small(tmp_path, seeds=[0, 1]), log=lines.append, show_bar=False)
    assert runner.calls == [("ippo", 0), ("ippo", 0), ("ippo", 1), ("ippo", 1)]
    by_seed = {r["cell"]["seed"]: r for r in result["records"]}
    assert by_seed[0]["status"] == "ok" and by_seed[0]["attempts"] == 2
    assert by_seed[1]["status"] == "failed" and len(by_seed[1]["errors"]) == 2
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "ippo his seed 1: RuntimeError: out of memory again" in report
    cells = list(csv.DictReader((tmp_path / "bench" / "cells.csv").open()))
    assert [c["status"] for c in cells] == ["ok", "failed"]
    # resuming runs the failed cell again, not the finished one
    outcomes[("ippo", 1)] = [fake_result(0.6)]
    runner.calls.clear()
    result = bm.run_benchmark(small(tmp_path, seeds=[0, 1]), log=lines.append, show_bar=False)
    assert runner.calls == [("ippo", 1)]
    assert [r["status"] for r in result["records"]] == ["ok", "ok"]
    assert result["report"]["summary"][0]["score_mean"] == pytest.approx(0.7)


def test_cells_run_seed_by_seed_so_a_stopped_grid_holds_whole_seeds(tmp_path):
    cells = bm.validate(small(tmp_path, seeds=[0, 1], algorithms=["ippo", "qmix"], schemes=["his", "iis"]))
    assert cells == [("ippo", "his", 0), ("qmix", "his", 0), ("ippo", "iis", 0), ("qmix", "iis", 0),
                     ("ippo", "his", 1), ("qmix", "his", 1), ("ippo", "iis", 1), ("qmix", "iis", 1)]


def test_other_settings_in_the_same_folder_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: FakeRunner({("ippo", 0): [fake_result(0.5)]}))
    monkeypatch.setattr(bm, "references", lambda *a, **k: {"random": 0.0, "search": 1.0})
    bm.run_benchmark(small(tmp_path), log=lambda *_: None, show_bar=False)
    with pytest.raises(bm.BenchmarkError) as info:
        bm.validate(small(tmp_path, frame_budget=3 * FRAMES_PER_BATCH))
    assert "different: frame_budget" in str(info.value)
    bm.validate(small(tmp_path, seeds=[0, 1, 2], algorithms=["ippo", "qmix"]))  # a larger grid may extend it


# ---------------------------------------------------------------------- a real grid, in worker processes
def test_small_grid_runs_resumes_and_reproduces_its_scores(tmp_path):
    spec = small(tmp_path, algorithms=["ippo", "iql"], seeds=[0, 1], eval_episodes=1)
    lines = []
    first = bm.run_benchmark(spec, log=lines.append, show_bar=False)
    assert [r["status"] for r in first["records"]] == ["ok"] * 4
    refs = json.loads((tmp_path / "bench" / "references.json").read_text())["his"]
    for record in first["records"]:
        s = record["summary"]
        assert s["frames"] == 2 * FRAMES_PER_BATCH and s["peak_rss_mb"] > 0
        assert s["score"] == pytest.approx((s["utility"] - refs["random"]) / (refs["search"] - refs["random"]))
    for name in ("cells.csv", "summary.csv", "curves.csv", "report.md", "scores.png", "curves.png"):
        assert (tmp_path / "bench" / name).stat().st_size > 0
    # the final evaluation on more episodes, on seeds of its own, normalised by references on those seeds
    assert refs["absolute"]["seeds"] == [95_000, 95_001] and refs["seeds"] == [90_000]
    for record in first["records"]:
        a = record["absolute"]
        assert a["episodes"] == 2 and a["seeds"] == [95_000, 95_001]
        expected = (a["utility"] - refs["absolute"]["random"]) / (refs["absolute"]["search"] - refs["absolute"]["random"])
        assert a["score"] == pytest.approx(expected)
    marl = json.loads((tmp_path / "bench" / "marl_eval.json").read_text())
    run = marl["his-marl"]["his"]["ippo"]["seed_0"]
    assert run["absolute_metrics"]["score"] == [pytest.approx(first["records"][0]["absolute"]["score"])]
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "| his, final evaluation | " in report and "| 95000..95001 (2) |" in report  # its references, stated
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "bench" / "cells").glob("*/result.json")}
    lines.clear()
    second = bm.run_benchmark(spec, log=lines.append, show_bar=False)
    assert any("4 already finished, 0 to run" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # the same cell again in a fresh folder: the same seed gives the same score
    again = bm.run_benchmark(small(tmp_path, algorithms=["iql"], seeds=[1], eval_episodes=1,
                                   output_dir=str(tmp_path / "again")), log=lambda *_: None, show_bar=False)
    old = next(r for r in second["records"] if r["cell"]["algorithm"] == "iql" and r["cell"]["seed"] == 1)
    assert again["records"][0]["summary"]["utility"] == old["summary"]["utility"]


def test_command_line_refuses_with_exit_code_2(tmp_path, capsys):
    from his_cli.benchmark import main

    code = main(["--algorithms", "ippo", "qlearning", "--frame-budget", "80", "--num-ues", "4",
                 "--output-dir", str(tmp_path / "b"), "--wandb-mode", "disabled"])
    err = capsys.readouterr().err
    assert code == 2 and "algorithm has value 'qlearning'; allowed: " in err and "qmix" in err
    assert main(["--algorithms", "ippo", "--schemes", "his", "--device", "tpu", "--frame-budget", "80",
                 "--output-dir", str(tmp_path / "b"), "--wandb-mode", "disabled"]) == 2
    assert "device 'tpu'" in capsys.readouterr().err


def test_scenarios_make_tasks_of_every_scheme(tmp_path, monkeypatch):
    """--scenarios: a task per scheme and scenario, `<scheme>@<scenario>` (the paper's scenario keeps the scheme's
    name, so grids from before scenarios resume); each cell's BenchMARL task runs the scenario, at its N."""
    seen_configs = []
    submitted = []

    class Recording(FakeRunner):
        def submit(self, spec_dict, refs, folder):
            submitted.append((spec_dict["scheme"], spec_dict["task"].get("scenario"), spec_dict["task"].get("num_ues"),
                              Path(folder).name, refs["random"]))
            return Handle(fake_result(0.5))

    def fake_references(his_config, seeds, sweeps, log, search_device=None, backlog=False, **run_in):
        seen_configs.append(his_config)
        extra = ({"backlog_search": 1300.0, "open_loop": 1500.0} if backlog and his_config.dynamics.requests.enabled
                 else {})
        return {"random": float(his_config.num_ues), "search": 1000.0, **extra}

    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: Recording({}))
    monkeypatch.setattr(bm, "references", fake_references)
    spec = small(tmp_path, schemes=["his", "iis"], scenarios=["paper", "seq-small-light"], task={"bank_size": 64})
    assert spec.tasks == ["his", "iis", "his@seq-small-light", "iis@seq-small-light"]
    result = bm.run_benchmark(spec, log=lambda *_: None, show_bar=False)
    assert [r["status"] for r in result["records"]] == ["ok"] * 4
    assert sorted(submitted, key=str) == sorted([
        ("his", None, None, "ippo-his-seed0", 50.0), ("iis", None, None, "ippo-iis-seed0", 50.0),
        ("his", "seq-small-light", None, "ippo-his@seq-small-light-seed0", 10.0),
        ("iis", "seq-small-light", None, "ippo-iis@seq-small-light-seed0", 10.0)], key=str)
    scenario_configs = [c for c in seen_configs if c.num_ues == 10]
    assert scenario_configs and all(c.dynamics.requests.enabled for c in scenario_configs)
    refs = json.loads((tmp_path / "bench" / "references.json").read_text())
    assert set(refs) == {"his", "iis", "his@seq-small-light", "iis@seq-small-light"}
    # the backlog search's and the open-loop policy's scores, references above the myopic search, on the
    # sequential tasks only
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "backlog-search" in report and f"scores {(1300 - 10) / (1000 - 10):.2f} on his@seq-small-light, " \
        f"{(1300 - 10) / (1000 - 10):.2f} on iis@seq-small-light." in report
    assert "open-loop" in report and f"scores {(1500 - 10) / (1000 - 10):.2f} on his@seq-small-light, " \
        f"{(1500 - 10) / (1000 - 10):.2f} on iis@seq-small-light." in report
    assert "backlog_search" not in refs["his"] and refs["his@seq-small-light"]["backlog_search"] == 1300.0
    assert "open_loop" not in refs["his"] and refs["his@seq-small-light"]["open_loop"] == 1500.0
    with pytest.raises(bm.BenchmarkError, match="scenario has value 'seq-tiny'; allowed: paper, seq-large-heavy"):
        bm.validate(small(tmp_path / "other", scenarios=["seq-tiny"]))


def test_held_out_scenarios_score_a_shared_policy_and_report_the_gap(tmp_path):
    """--held-out: a policy with shared parameters, trained on a sequential scenario of N = 4, is scored on
    held-out scenarios of other N, each normalised by its own references; the report states the gap."""
    task = {"num_ues": None, "bank_size": 64, "env": {"episode_length": 3}}
    base = dict(scenarios=["seq-small-light"], task=task, absolute_episodes=0, search_sweeps=1)
    with pytest.raises(bm.BenchmarkError, match="share_policy_params=true"):
        bm.validate(small(tmp_path / "per-ue", held_out=1, **base))
    with pytest.raises(bm.BenchmarkError, match="trains on 'paper' only"):
        bm.validate(small(tmp_path / "paper", held_out=1, experiment={**SMALL_EXPERIMENT, "share_policy_params": True}))
    with pytest.raises(bm.BenchmarkError, match=r"held_out 9; allowed: an integer in 0..8"):
        bm.validate(small(tmp_path / "nine", held_out=9, **base))
    spec = small(tmp_path, held_out=2, experiment={**SMALL_EXPERIMENT, "share_policy_params": True}, **base)
    result = bm.run_benchmark(spec, log=lambda *_: None, show_bar=False)
    record = result["records"][0]
    assert record["status"] == "ok"
    main = json.loads((tmp_path / "bench" / "references.json").read_text())["his@seq-small-light"]
    assert np.isfinite(main["backlog_search"]) and main["backlog_weight"] == 4.0  # the backlog search ran
    assert np.isfinite(main["open_loop"])  # and the open-loop policy
    refs = main["held_out"]
    assert all("backlog_search" not in ref for ref in refs.values())  # not on every held-out scenario
    assert sorted(refs) == ["heldout-0", "heldout-1"]
    from his_env.scenarios import scenario_config

    for name, ref in refs.items():
        assert ref["config"]["num_ues"] == scenario_config(name).num_ues != 10  # the scenario's own N
        got = record["held_out"][name]
        assert got["score"] == pytest.approx((got["utility"] - ref["random"]) / (ref["search"] - ref["random"]))
    mean_held = np.mean([record["held_out"][n]["score"] for n in refs])
    report = (tmp_path / "bench" / "report.md").read_text()
    section = report.split("## Held-out scenarios", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| his@seq-small-light | ippo | 1 |"))
    gap = record["summary"]["score"] - mean_held
    assert f"| {mean_held:.3f} [" in row and f"| {gap:.3f} [" in row
    assert len(list(csv.DictReader((tmp_path / "bench" / "held_out.csv").open()))) == 2


def test_a_shared_policy_acts_on_any_number_of_ues_as_on_its_own(tmp_path):
    """The greedy policy of a shared-parameter run serves an env of other N group by group: each UE's
    action is the one the policy gives its observation alone (decentralised actor)."""
    import torch

    from agents.benchmarl.experiment import BenchmarlGreedyPolicy

    class PerRow(torch.nn.Module):  # a decentralised 'policy': the action of a UE from its observation alone
        def forward(self, td):
            obs = td["agents", "observation"]
            assert obs.shape[-2] == 3  # always called with the trained number of UEs
            td["agents", "action"] = (obs[..., 0] > 0).long() * 5 + (obs[..., 1] > 0).long()
            return td

    import his_env

    env = his_env.parallel_env(num_ues=7, num_clusters=2)
    observations, _ = env.reset(seed=3)
    actions = BenchmarlGreedyPolicy(PerRow(), n_agents=3, shared=True).act(observations, env)
    nvec = env.action_space("ue_0").nvec
    for agent, obs in observations.items():
        flat = int(obs[0] > 0) * 5 + int(obs[1] > 0)
        assert actions[agent].tolist() == [flat // nvec[1], flat % nvec[1]]
    with pytest.raises(ValueError, match="a network per UE for 3 UEs and the env has 7"):
        BenchmarlGreedyPolicy(PerRow(), n_agents=3, shared=False).act(observations, env)


def test_a_session_limit_starts_no_cell_that_might_not_finish_and_the_next_session_continues(tmp_path, monkeypatch):
    """Cells of 100 s (a fake clock) and a 250 s limit: the third cell would end at 300 s, so it does not
    start; the session ends 'session limit' with two cells kept, and the same call again runs the rest.
    sessions.json and the report count the sessions."""
    clock = [1000.0]
    monkeypatch.setattr(bm.time, "monotonic", lambda: clock[0])

    class TimedRunner(FakeRunner):
        def result(self, handle):
            clock[0] += 100.0  # the cell ran 100 s
            return super().result(handle)

    outcomes = {("ippo", s): [fake_result(0.5)] for s in range(4)}
    runner = TimedRunner(outcomes)
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    monkeypatch.setattr(bm, "references", lambda *a, **k: {"random": 0.0, "search": 1.0})
    lines = []
    spec = small(tmp_path, seeds=[0, 1, 2, 3])
    result = bm.run_benchmark(spec, log=lines.append, show_bar=False, stop_after_s=250)
    assert runner.calls == [("ippo", 0), ("ippo", 1)]
    assert result["stopped"] == bm.SESSION_LIMIT and len(result["missing"]) == 2
    assert any("session limit: 200 s of 250 s used, a cell takes up to 100 s" in line for line in lines)
    sessions = json.loads((tmp_path / "bench" / "sessions.json").read_text())
    assert [(s["cells_finished"], s["ended"], s["seconds"]) for s in sessions] == [(2, "session limit", 200.0)]
    assert "Run in 1 session (sessions.json)." in (tmp_path / "bench" / "report.md").read_text()
    result = bm.run_benchmark(spec, log=lines.append, show_bar=False, stop_after_s=250)
    assert runner.calls[2:] == [("ippo", 2), ("ippo", 3)] and result["stopped"] is None and not result["missing"]
    sessions = json.loads((tmp_path / "bench" / "sessions.json").read_text())
    assert [(s["cells_finished"], s["ended"]) for s in sessions] == [(2, "session limit"), (2, "done")]
    assert "Run in 2 sessions (sessions.json)." in (tmp_path / "bench" / "report.md").read_text()
    with pytest.raises(bm.BenchmarkError, match=r"stop_after_s=0; allowed: None or a finite number of seconds > 0"):
        bm.run_benchmark(spec, log=lines.append, show_bar=False, stop_after_s=0)


def _fake_episodes(monkeypatch, clock=None, seconds=100.0):
    """reference_episode replaced by U = the seed's last digit (+10 for the search, +20 for the backlog
    search, +30 for the open-loop policy), each 'taking' `seconds` on the fake clock; returns the list
    of the units that ran."""
    ran = []

    def fake(env_dict, name, seed, sweeps, search_device=None):
        ran.append((name, seed))
        if clock is not None:
            clock[0] += seconds
        return {"utility": seed % 10 + {"random": 0.0, "search": 10.0, "backlog_search": 20.0, "open_loop": 30.0}[name],
                "wall_s": seconds}

    monkeypatch.setattr(bm, "reference_episode", fake)
    return ran


def test_references_run_episode_by_episode_and_resume_where_they_stopped(tmp_path, monkeypatch):
    """Each (policy, seed) episode is cached as it ends: a computation stopped after three units
    resumes with the other five, and the means are those of all eight; a pool runs them too."""
    from concurrent.futures import ThreadPoolExecutor

    from his_env.scenarios import scenario_config

    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache"))
    ran = _fake_episodes(monkeypatch)
    config = scenario_config("seq-small-heavy")
    allowed = iter([True, True, True, False])
    with pytest.raises(bm.ReferencesUnfinished, match="5 of 8 reference episodes left"):
        bm.references(config, [1, 2], 1, log=lambda *_: None, backlog=True, may_start=lambda s: next(allowed))
    assert ran == [("random", 1), ("random", 2), ("search", 1)]
    with ThreadPoolExecutor(2) as pool:
        refs = bm.references(config, [1, 2], 1, log=lambda *_: None, backlog=True, pool=pool, pool_size=2)
    assert sorted(ran[3:]) == [("backlog_search", 1), ("backlog_search", 2), ("open_loop", 1), ("open_loop", 2),
                               ("search", 2)]
    assert (refs["random"], refs["search"], refs["backlog_search"], refs["open_loop"]) == (1.5, 11.5, 21.5, 31.5)
    assert refs["search_s"] == 200.0 and refs["backlog_weight"] == 4.0
    assert bm.references(config, [1, 2], 1, log=lambda *_: None, backlog=True) == refs and len(ran) == 8  # cached
    paper = bm.references(scenario_config("paper"), [1], 1, log=lambda *_: None, backlog=True)
    assert "backlog_search" not in paper and "open_loop" not in paper  # no queues: neither
    assert ran[8:] == [("random", 1), ("search", 1)]


def test_a_session_limit_while_the_references_run_keeps_the_episodes_that_ran(tmp_path, monkeypatch):
    """Reference episodes of 100 s (a fake clock) and a 250 s limit: two run, the third would end past
    the limit; the session ends 'session limit' (exit 3 on the command line) with no cell started, and
    the same call again finishes the references and the grid."""
    clock = [1000.0]
    monkeypatch.setattr(bm.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache"))
    ran = _fake_episodes(monkeypatch, clock)
    runner = FakeRunner({("ippo", 0): [fake_result(0.5)]})
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    lines = []
    spec = small(tmp_path, absolute_episodes=0, eval_episodes=2)
    result = bm.run_benchmark(spec, log=lines.append, show_bar=False, stop_after_s=250)
    assert len(ran) == 2 and runner.calls == [] and result["stopped"] == bm.SESSION_LIMIT
    assert any("session limit: 200 s of 250 s used computing the references (2 of 4 reference episodes left"
               in line for line in lines)
    sessions = json.loads((tmp_path / "bench" / "sessions.json").read_text())
    assert [(s["cells_finished"], s["ended"]) for s in sessions] == [(0, "session limit")]
    result = bm.run_benchmark(spec, log=lines.append, show_bar=False, stop_after_s=500)
    assert len(ran) == 4 and runner.calls == [("ippo", 0)] and result["stopped"] is None
    assert "Run in 2 sessions (sessions.json)." in (tmp_path / "bench" / "report.md").read_text()


def test_a_grid_resumed_elsewhere_reads_its_references_from_its_output_folder(tmp_path, monkeypatch):
    """A grid stopped by its session limit while the references ran, then copied to a machine whose
    cache is empty (another $HIS_MARL_CACHE), runs only the reference episodes left and its cells;
    a third session with yet another empty cache runs none."""
    import shutil

    clock = [1000.0]
    monkeypatch.setattr(bm.time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache-a"))
    ran = _fake_episodes(monkeypatch, clock)
    runner = FakeRunner({("ippo", 0): [fake_result(0.5)], ("ippo", 1): [fake_result(0.6)]})
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    spec = small(tmp_path, absolute_episodes=0, eval_episodes=2)
    bm.run_benchmark(spec, log=lambda *_: None, show_bar=False, stop_after_s=250)
    assert len(ran) == 2 and runner.calls == []
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "bench", moved / "bench")
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache-b"))
    spec = small(moved, absolute_episodes=0, eval_episodes=2)
    result = bm.run_benchmark(spec, log=lambda *_: None, show_bar=False, stop_after_s=500)
    assert sorted(ran[2:]) == [("search", 90000), ("search", 90001)] and result["stopped"] is None
    assert runner.calls == [("ippo", 0)]
    refs = json.loads((moved / "bench" / "references.json").read_text())["his"]
    assert (refs["random"], refs["search"]) == (0.5, 10.5)  # seeds 90000, 90001: last digits 0, 1
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache-c"))
    bm.run_benchmark(small(moved, absolute_episodes=0, eval_episodes=2, seeds=[0, 1]), log=lambda *_: None,
                     show_bar=False)
    assert len(ran) == 4 and runner.calls == [("ippo", 0), ("ippo", 1)]
    assert not (tmp_path / "cache-c" / "benchmark").exists() or not any(
        (tmp_path / "cache-c" / "benchmark").glob("*.parts/*"))


def test_the_first_cell_of_a_session_is_bounded_by_the_time_budget(tmp_path, monkeypatch):
    """Before any cell has finished, a cell is taken to need 1.25 x the time budget + 60 s."""
    monkeypatch.setattr(bm.time, "monotonic", lambda: 0.0)
    runner = FakeRunner({("ippo", 0): [fake_result(0.5)]})
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    monkeypatch.setattr(bm, "references", lambda *a, **k: {"random": 0.0, "search": 1.0})
    spec = small(tmp_path, frame_budget=None, time_budget_s=100.0)
    assert bm.cell_estimate_s(spec, []) == 185.0 and bm.cell_estimate_s(spec, [30.0, 50.0]) == 50.0
    result = bm.run_benchmark(spec, log=lambda *_: None, show_bar=False, stop_after_s=180)
    assert runner.calls == [] and result["stopped"] == bm.SESSION_LIMIT
    result = bm.run_benchmark(spec, log=lambda *_: None, show_bar=False, stop_after_s=185)
    assert runner.calls == [("ippo", 0)] and result["stopped"] is None


def test_command_line_exit_code_3_after_a_session_limit(tmp_path, monkeypatch, capsys):
    from his_cli import benchmark as cli

    seen = {}

    def fake_run(spec, log, jobs, show_bar, signals, stop_after_s):
        seen["stop_after_s"] = stop_after_s
        return {"records": [{}], "missing": ["x", "y"], "stopped": bm.SESSION_LIMIT, "report": None}

    monkeypatch.setattr(bm, "run_benchmark", fake_run)
    code = cli.main(["--algorithms", "ippo", "--seeds", "3", "--time-budget", "5", "--stop-after", "540",
                     "--output-dir", str(tmp_path / "b")])
    assert code == 3 and seen["stop_after_s"] == 540.0
    assert "session limit (--stop-after 540): 1 of 3 cells finished" in capsys.readouterr().err
