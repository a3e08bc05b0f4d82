"""The grid's warm-up: with a time budget and the env's step captured, one discarded iteration per task
and collection batch size runs before the cells, so that no cell's budget pays for compiling the step."""
import concurrent.futures as futures
import tempfile

import pytest

pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")

from experiments import benchmark as bm  # noqa: E402
from tests.benchmark.test_benchmark import FakeRunner, fake_result, small  # noqa: E402
from tests.benchmark.test_task import FRAMES_PER_BATCH, SMALL_EXPERIMENT  # noqa: E402

TWO_BATCHES = {**SMALL_EXPERIMENT, "off_policy_n_envs_per_worker": 4}  # off-policy algorithms collect with 4 envs


def test_a_time_budget_on_a_gpu_warms_each_task_once_per_batch_size(tmp_path):
    spec = small(tmp_path, algorithms=["ippo", "mappo", "iql", "qmix"], scenarios=["paper", "seq-small-heavy"],
                 frame_budget=None, time_budget_s=90.0, device="cuda", experiment=TWO_BATCHES)
    # ippo and mappo collect with 2 envs, iql and qmix with 4: the first of each per task
    assert bm.warm_up_runs(spec) == [("ippo", "his"), ("iql", "his"), ("ippo", "his@seq-small-heavy"),
                                     ("iql", "his@seq-small-heavy")]
    assert bm.warm_up_runs(spec, ["his@seq-small-heavy"]) == [("ippo", "his@seq-small-heavy"),
                                                              ("iql", "his@seq-small-heavy")]
    same = small(tmp_path, algorithms=["ippo", "iql"], frame_budget=None, time_budget_s=90.0, device="cuda")
    assert bm.warm_up_runs(same) == [("ippo", "his")]  # one batch size: one run


@pytest.mark.parametrize("change, why", [
    ({"device": "cpu"}, "capture is off on the CPU by default"),
    ({"time_budget_s": None, "frame_budget": 2 * FRAMES_PER_BATCH}, "a frame budget does not count compiling"),
    ({"ray_address": "127.0.0.1:6379"}, "each Ray node has its own cache"),
    ({"warm_up": False}, "switched off"),
    ({"task": {"num_ues": 4, "bank_size": 64, "capture": False}}, "capture switched off"),
])
def test_no_warm_up_where_nothing_is_compiled_or_it_would_not_count(tmp_path, change, why):
    base = dict(frame_budget=None, time_budget_s=90.0, device="cuda")
    assert bm.warm_up_runs(small(tmp_path, **{**base, **change})) == [], why


def test_capture_forced_on_the_cpu_is_warmed_too(tmp_path):
    spec = small(tmp_path, frame_budget=None, time_budget_s=90.0, task={"num_ues": 4, "bank_size": 64, "capture": True})
    assert bm.warm_up_runs(spec) == [("ippo", "his")]


def test_a_bad_warm_up_setting_is_refused(tmp_path):
    with pytest.raises(ValueError, match="warm_up='no'; allowed: True or False"):
        bm.validate(small(tmp_path, warm_up="no"))


class PoolRunner(FakeRunner):
    """FakeRunner with a `pool` that runs the warm-up (a thread here), recording the order of events."""

    def __init__(self, outcomes, events):
        super().__init__(outcomes)
        self.events = events
        self.pool = futures.ThreadPoolExecutor(2)

    def submit(self, spec_dict, refs, folder):
        self.events.append(("cell", spec_dict["algorithm"], spec_dict["seed"]))
        return super().submit(spec_dict, refs, folder)


def run_with_warm_up(tmp_path, monkeypatch, fail=False):
    events, lines = [], []

    def fake_warm_up(spec_dict):
        events.append(("warm-up", spec_dict["algorithm"], spec_dict["frame_budget"], spec_dict["time_budget_s"],
                       len(spec_dict["eval_seeds"]), spec_dict["wandb_mode"]))
        if fail:
            raise RuntimeError("no compiler here")
        return 1.0

    runner = PoolRunner({("ippo", 0): [fake_result(0.5)], ("ippo", 1): [fake_result(0.7)]}, events)
    monkeypatch.setattr(bm, "_start_runner", lambda spec, jobs: runner)
    monkeypatch.setattr(bm, "references", lambda *a, **k: {"random": 0.0, "search": 1.0})
    monkeypatch.setattr(bm, "warm_up", fake_warm_up)
    # the spec says cuda (the plan's input); the cells here are fakes, so nothing needs a GPU
    monkeypatch.setattr(bm, "validate", lambda spec: [("ippo", "his", 0), ("ippo", "his", 1)])
    spec = small(tmp_path, seeds=[0, 1], frame_budget=None, time_budget_s=30.0, device="cuda")
    result = bm.run_benchmark(spec, log=lines.append, show_bar=False)
    return events, lines, result


def test_the_warm_up_runs_one_iteration_before_any_cell(tmp_path, monkeypatch):
    events, lines, result = run_with_warm_up(tmp_path, monkeypatch)
    assert events == [("warm-up", "ippo", FRAMES_PER_BATCH, None, 1, "disabled"), ("cell", "ippo", 0),
                      ("cell", "ippo", 1)]
    assert [r["status"] for r in result["records"]] == ["ok", "ok"]
    said = [line for line in lines if "warm-up" in line]
    assert len(said) == 1 and "one iteration each of ippo on his" in said[0] and "failed" not in said[0]
    # resumed with every cell finished: nothing to warm
    events.clear()
    events2, _, _ = run_with_warm_up(tmp_path, monkeypatch)
    assert not any(e[0] == "warm-up" for e in events2)


def test_a_failed_warm_up_costs_a_warning_and_the_cells_still_run(tmp_path, monkeypatch):
    events, lines, result = run_with_warm_up(tmp_path, monkeypatch, fail=True)
    assert [e[0] for e in events] == ["warm-up", "cell", "cell"]
    assert [r["status"] for r in result["records"]] == ["ok", "ok"]
    assert any("failed (ippo on his: RuntimeError: no compiler here)" in line for line in lines)


def test_warm_up_trains_one_iteration_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spec = small(tmp_path, frame_budget=FRAMES_PER_BATCH)
    rs = bm.run_spec(spec, "ippo", "his", 0)
    seconds = bm.warm_up(rs.to_dict())
    assert seconds > 0
    assert not list(tmp_path.glob("his-warm-up-*"))  # its run folder went with it
