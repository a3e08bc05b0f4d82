"""Every command line also runs as `python -m his_cli.<name>` (the form that picks a checkout's
packages over an installed copy), not only through its launcher or console script."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module, flag", [("his_cli.train", "--backend"), ("his_cli.evaluate", "--figure"),
                                          ("his_cli.benchmark", "--algorithms")])
def test_python_dash_m_prints_the_help(module, flag):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:") and flag in proc.stdout


def test_benchmark_help_documents_every_flag():
    from his_cli.benchmark import build_parser

    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help"
