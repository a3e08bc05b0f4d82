"""The evaluation runner: everything is checked before the first episode (bad baseline
arguments, env factory, config keys, per-variant checkpoints), and a tiny grid writes its
tables and figure with the paper's names."""
import csv

import pytest

from agents.checkpoints import CheckpointError
from agents.evaluation import EnvFactoryError
from experiments.grid import ExperimentError
from experiments.runner import EvaluationRequest, prepare, run_evaluation
from his_env.config import ConfigError

TINY = {"num_ues": 3, "num_clusters": 1, "episode_length": 2}


@pytest.mark.parametrize("kwargs, error, needle", [
    ({"baselines": ["fixed:99,99"]}, ExperimentError,
     "common steps X=99 is out of range; allowed: common steps X in 0..16, ES personalised steps Y in 0..11"),
    ({"baselines": ["fixed:8,4"], "overrides": {**TINY, "steps.max_common": 6}}, ExperimentError,
     "X=8 is out of range; allowed: common steps X in 0..6"),
    ({"baselines": ["search:-1"]}, ExperimentError, "SWEEPS=-1 is out of range"),
    ({"baselines": ["oracle"]}, ExperimentError, "unknown baseline 'oracle'"),
    ({}, ExperimentError, "nothing to evaluate"),
    ({"baselines": ["random"], "figure": 9}, ExperimentError, "allowed: 10, 11"),
    ({"baselines": ["random"], "episodes": 0}, ExperimentError, "an integer >= 1"),
    ({"baselines": ["random"], "jobs": 0}, ExperimentError, "jobs has value 0; allowed: an integer >= 1"),
    ({"baselines": ["random"], "env_factory": "nonexistent_module_xyz:make"}, EnvFactoryError,
     "--env-factory has value 'nonexistent_module_xyz:make': cannot import module"),
    ({"baselines": ["random"], "env_factory": "tests.experiments.factory_for_tests:NOT_CALLABLE"}, EnvFactoryError,
     "int object is not callable"),
    ({"baselines": ["random"], "overrides": {"num_ues": -3}}, ConfigError, "num_ues"),
    ({"baselines": ["random"], "scenario": "seq-huge"}, ConfigError, "scenario 'seq-huge'; allowed: paper"),
    ({"checkpoints": ["/nonexistent"]}, CheckpointError, "does not exist"),
    ({"baselines": ["random", "backlog-search"]}, ExperimentError,
     "variant 'base': policy 'backlog-search' weighs the request queues, and config key "
     "'dynamics.requests.enabled' is false"),
    ({"baselines": ["queue-aware"], "figure": 10}, ExperimentError, "policy 'queue-aware' reads the request queues"),
])
def test_bad_requests_are_refused_before_anything_runs(kwargs, error, needle, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        prepare(EvaluationRequest(output_dir=out, **kwargs))
    assert not out.exists()


def test_a_scenario_is_the_base_config_under_config_and_overrides():
    from his_env.scenarios import scenario_config

    plan = prepare(EvaluationRequest(baselines=["queue-aware"], scenario="seq-small-heavy",
                                     overrides={"episode_length": 3}))
    expected = scenario_config("seq-small-heavy").to_dict()
    assert plan.base["num_ues"] == expected["num_ues"] == 10
    assert plan.base["dynamics"] == expected["dynamics"] and plan.base["episode_length"] == 3


@pytest.mark.slow
def test_tiny_grid_writes_tables_and_figure_through_the_given_factory(tmp_path):
    from tests.experiments import factory_for_tests

    factory_for_tests.BUILT.clear()
    out = tmp_path / "fig16"
    lines = []
    report = run_evaluation(EvaluationRequest(
        figure=16, baselines=["random", "fixed:8,4"], episodes=2, overrides=TINY, output_dir=out,
        env_factory="tests.experiments.factory_for_tests:counting_env"), log=lines.append)
    assert len(factory_for_tests.BUILT) == 2 * 3  # one env per policy and variant
    assert [c["scheme"]["allocation"] for c in factory_for_tests.BUILT[:3]] == ["kkt", "user_equal", "cluster_equal"]
    with (out / "episodes.csv").open() as fh:
        episodes = list(csv.DictReader(fh))
    assert len(episodes) == 2 * 3 * 2 and {e["seed"] for e in episodes} == {"20000.0", "20001.0"}
    assert all(e["reward_mode"] == "none" for e in episodes)  # baselines are not trained
    with (out / "summary.csv").open() as fh:
        summary = list(csv.DictReader(fh))
    fixed_kkt = [float(e["utility"]) for e in episodes if e["policy"] == "fixed:8,4" and e["variant"] == "kkt"]
    row = next(r for r in summary if r["policy"] == "fixed:8,4" and r["variant"] == "kkt")
    assert float(row["utility"]) == pytest.approx(sum(fixed_kkt) / 2)
    md = (out / "summary.md").read_text()
    assert "| fixed x=8, y=4 | KKT | none |" in md and "| random | cluster-wise equal | none |" in md
    assert "highest U:" in md and "paper: KKT in all three" in md
    assert (out / "fig16.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.files[-1] == out / "fig16.png" and len(lines) == 1 + 2 * 3


@pytest.mark.slow
def test_baselines_in_worker_processes_give_the_same_rows(tmp_path):
    """--jobs: the baselines' episodes run in spawned workers, one per episode, and the rows are the
    serial run's (each episode is seeded on its own), in the same order."""
    from experiments.grid import run_grid

    plan = prepare(EvaluationRequest(baselines=["random", "search:1", "queue-aware", "backlog-search:2"],
                                     scenario="seq-small-heavy", overrides={"episode_length": 4}, episodes=3,
                                     output_dir=tmp_path / "out"))
    serial = run_grid(plan.policies, plan.variants, plan.base, plan.seeds, log=lambda *_: None)
    lines = []
    parallel = run_grid(plan.policies, plan.variants, plan.base, plan.seeds, log=lines.append, jobs=3)

    def comparable(rows):
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]

    assert comparable(parallel) == comparable(serial) and len(serial) == 4 * 3
    assert len({row["utility"] for row in serial}) > 3  # the policies and seeds differ
    assert all("in 3 workers" in line for line in lines) and len(lines) == 4
