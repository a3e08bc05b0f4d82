"""The paper-results regeneration: every published result's commands call existing programs with
existing flags and name a page section that exists; the runner resumes, sets aside an unfinished
attempt, reports a failing result and still runs the others; the CLI refuses bad names."""
import json
import re
import sys

import pytest

from experiments import paper_results as pr
from tests.docs.test_docs_code import ROOT, check_arguments, github_slug, invocations


@pytest.mark.parametrize("name", pr.PUBLISHED.names)
def test_every_published_result_runs_existing_programs_with_existing_flags(name, tmp_path):
    commands = pr.commands_for(name, tmp_path / name)
    assert commands and all(cmd.startswith(sys.executable) for cmd in commands)
    problems, called = [], 0
    for cmd in commands:
        for program, args in invocations(cmd.replace(sys.executable, "python"), {}):
            called += 1
            problems += check_arguments(program, args, check_values=True)
    assert called == len(commands) and not problems, problems


@pytest.mark.parametrize("name", pr.PUBLISHED.names)
def test_every_published_result_names_a_section_that_exists(name):
    result = pr.PUBLISHED[name]
    page, _, anchor = result.page.partition("#")
    text = (ROOT / page).read_text()
    slugs = {github_slug(h) for h in re.findall(r"^#+\s+(.+)$", text, flags=re.M)}
    assert anchor in slugs, f"{result.page}: no such heading"
    assert result.device in pr.DEVICES and result.minutes > 0


@pytest.fixture
def toy_results():
    """Two cheap results registered for the test, and removed after it."""
    saved = dict(pr.PUBLISHED._entries)
    marker = "python -c \"import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('made')\" {out}/made.txt"
    pr.PUBLISHED.register("toy_ok", pr.PublishedResult("a file", "README.md#benchmarks", (marker,), "cpu", 0.1, "any"))
    pr.PUBLISHED.register("toy_fail", pr.PublishedResult("a failure", "README.md#benchmarks",
                                                          ("python -c 'raise SystemExit(3)'", marker), "cpu", 0.1,
                                                          "any"))
    try:
        yield
    finally:
        pr.PUBLISHED._entries = saved


def test_the_runner_resumes_reports_failures_and_keeps_every_attempt(toy_results, tmp_path):
    lines = []
    status = pr.run_published(["toy_fail", "toy_ok"], tmp_path, log=lines.append)
    assert status == {"toy_fail": "failed (exit 3)", "toy_ok": "done"}  # the failure did not stop the other
    assert (tmp_path / "toy_ok" / "made.txt").read_text() == "made"
    done = json.loads((tmp_path / "toy_ok" / "done.json").read_text())
    assert done["returncode"] == 0 and done["commands"] == pr.commands_for("toy_ok", tmp_path / "toy_ok")
    failed = json.loads((tmp_path / "toy_fail" / "failed.json").read_text())
    assert failed["returncode"] == 3 and not (tmp_path / "toy_fail" / "made.txt").exists()  # stopped at its failure
    assert "$ " in (tmp_path / "toy_fail" / "run.log").read_text()

    lines.clear()
    status = pr.run_published(["toy_fail", "toy_ok"], tmp_path, log=lines.append)
    assert status["toy_ok"] == "skipped (finished)"  # resumed: the finished one is not run again
    kept = list((tmp_path / "toy_fail" / "superseded").iterdir())  # the failed attempt's files, kept
    assert len(kept) == 1 and (kept[0] / "failed.json").is_file() and (kept[0] / "run.log").is_file()
    assert any("an earlier attempt's files moved to" in line for line in lines)


def test_dry_run_prints_the_commands_and_runs_nothing(toy_results, tmp_path):
    lines = []
    status = pr.run_published(["toy_ok"], tmp_path, dry_run=True, log=lines.append)
    assert status == {"toy_ok": "planned"} and not (tmp_path / "toy_ok").exists()
    assert any("made.txt" in line for line in lines)


def test_the_command_line_refuses_unknown_names_and_gpu_results_without_a_gpu(tmp_path, capsys, monkeypatch):
    from his_cli import paper_results

    assert paper_results.main(["--only", "fig99", "--output-dir", str(tmp_path)]) == 2
    assert "result 'fig99'; allowed: bench_env" in capsys.readouterr().err
    monkeypatch.setattr(pr, "cuda_present", lambda: False)
    assert paper_results.main(["--only", "bench_vec_env_gpu", "--output-dir", str(tmp_path)]) == 2
    assert "bench_vec_env_gpu need a CUDA GPU, and --device is cpu" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
