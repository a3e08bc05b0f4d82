"""evaluate.py as users call it: every flag documented, bad values refused with a message and
exit status 2 before anything runs, and one tiny run end to end. The figures, the grid and the
tables are tested at library level in tests/experiments and tests/agents."""
import subprocess
import sys
from pathlib import Path

import pytest

from his_cli.evaluate import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def test_help_documents_every_flag():
    parser = build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
    text = parser.format_help()
    for flag in ("--figure", "--checkpoint", "--policy", "--runs", "--labels", "--config", "--set", "--episodes",
                 "--seed-base", "--output-dir", "--env-factory"):
        assert flag in text
    for number in range(10, 18):
        assert f"\n  {number}  " in text  # each figure is described


def test_launcher_is_thin():
    assert len((REPO / "evaluate.py").read_text().splitlines()) < 30
    assert len((REPO / "his_cli" / "evaluate.py").read_text().splitlines()) < 150
    proc = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--env-factory" in proc.stdout


@pytest.mark.parametrize("argv, needle", [
    ([], "nothing to evaluate"),
    (["--policy", "fixed:99,99"], "common steps X=99 is out of range; allowed: common steps X in 0..16"),
    (["--policy", "search:-1"], "SWEEPS=-1 is out of range"),
    (["--policy", "random", "--env-factory", "foo:bar"], "--env-factory has value 'foo:bar': cannot import module"),
    (["--policy", "random", "--env-factory", "his_env:nothing"], "module 'his_env' has no attribute 'nothing'"),
    (["--checkpoint", "/nonexistent"], "does not exist"),
    (["--figure", "15"], "--figure 15 needs --runs"),
    (["--figure", "15", "--runs", "/tmp"], "no metrics.csv"),
    (["--policy", "random", "--set", "num_ues=-3"], "num_ues"),
    (["--policy", "random", "--set", "nonsense"], "expected KEY=VALUE"),
])
def test_bad_inputs_give_clear_errors(argv, needle, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(argv + ["--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: error: ") and needle in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_one_table_end_to_end(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["--policy", "random", "--policy", "search:1", "--episodes", "1", "--set", "num_ues=3",
                 "--set", "num_clusters=1", "--set", "episode_length=2", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| policy | reward mode | U | Q | T (s) | E (J) | score |" in printed
    assert "| search reference (1 sweep) | none |" in printed
    for name in ("episodes.csv", "summary.csv", "summary.md", "eval.png"):
        assert (out / name).is_file()
