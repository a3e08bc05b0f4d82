"""Fig. 15 from training logs: curves read from hand-written metrics files, the moving average
against hand sums, and the warning when runs of different envs (different N) share one axis."""
import json

import numpy as np
import pytest

from experiments import curves
from experiments.grid import ExperimentError
from experiments.runner import EvaluationRequest, execute, prepare


def write_run(folder, utilities, num_ues=10, scheme="his", fmt="csv"):
    folder.mkdir(parents=True)
    rows = [{"iteration": i + 1, "perf/env_steps_total": 8 * (i + 1), "his/utility": u} for i, u in enumerate(utilities)]
    if fmt == "csv":
        lines = ["iteration,perf/env_steps_total,his/utility"] + [
            f"{r['iteration']},{r['perf/env_steps_total']},{r['his/utility']}" for r in rows]
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    else:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 9, "per')
    (folder / "config.yaml").write_text(f"num_ues: {num_ues}\nscheme:\n  name: {scheme}\ntrain:\n  lr: 0.005\n")
    return folder


def test_read_run_curve_from_csv_and_from_jsonl_with_a_torn_last_line(tmp_path):
    a = write_run(tmp_path / "a", [1.0, 2.0, float("nan"), 4.0])
    assert curves.read_run_curve(a) == ([8.0, 16.0, 32.0], [1.0, 2.0, 4.0])
    b = write_run(tmp_path / "b", [3.0, 5.0], fmt="jsonl")
    assert curves.read_run_curve(b) == ([8.0, 16.0], [3.0, 5.0])
    with pytest.raises(ValueError, match="no metrics.csv or metrics.jsonl"):
        curves.read_run_curve(tmp_path)


def test_moving_average_is_the_trailing_mean():
    got = curves.moving_average([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3)
    assert got.tolist() == pytest.approx([1.0, 1.5, 2.0, 3.0, 4.0, 5.0])
    assert curves.moving_average([2.0, 4.0], 1).tolist() == [2.0, 4.0]


def test_env_differences_name_the_runs_and_values(tmp_path):
    a = write_run(tmp_path / "a", [1.0], num_ues=10)
    b = write_run(tmp_path / "b", [1.0], num_ues=50, scheme="cfis")
    c = write_run(tmp_path / "c", [1.0], num_ues=10)
    configs = {name: curves.run_env_config(run) for name, run in (("a", a), ("b", b), ("c", c))}
    assert configs["a"] == {"num_ues": 10, "scheme": {"name": "his"}}  # the learner's section is not env
    diff = curves.env_differences(configs)
    assert diff == {"num_ues": {"a": 10, "b": 50, "c": 10}, "scheme.name": {"a": "his", "b": "cfis", "c": "his"}}
    warning = curves.mixed_env_warning(diff)
    assert "different numbers of UEs N" in warning and "num_ues (a: 10, b: 50, c: 10)" in warning
    assert warning.index("num_ues") < warning.index("scheme.name")
    assert curves.env_differences({"a": configs["a"], "c": configs["c"]}) == {}
    assert curves.mixed_env_warning({}) == ""


def test_figure15_warns_when_runs_of_different_n_share_the_axis(tmp_path):
    a = write_run(tmp_path / "a", [1.0, 2.0, 3.0], num_ues=10)
    b = write_run(tmp_path / "b", [5.0, 6.0], num_ues=50)
    logged = []
    report = execute(prepare(EvaluationRequest(figure=15, runs=[str(a), str(b)], output_dir=tmp_path / "out")),
                     log=logged.append)
    assert report.warnings and "num_ues (a: 10, b: 50)" in report.warnings[0]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "num_ues (a: 10, b: 50)" in md
    assert "| a | 10 | 3 | 2.0000 | 2.0000 | 2.0000 |" in md  # mean of 1, 2, 3; 5-point trailing mean peaks at 2
    assert (tmp_path / "out" / "fig15.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    same = execute(prepare(EvaluationRequest(figure=15, runs=[str(a)], labels=["x"], output_dir=tmp_path / "o2")),
                   log=logged.append)
    assert same.warnings == []


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "--figure 15 needs --runs"),
    ({"runs": ["r1", "r2"], "labels": ["a"]}, "--labels has 1 entries but --runs has 2"),
])
def test_figure15_bad_requests(kwargs, needle, tmp_path):
    with pytest.raises(ExperimentError, match=needle):
        prepare(EvaluationRequest(figure=15, output_dir=tmp_path, **kwargs))
