"""benchmarks/bench_live.py stands on the library alone (no CLI script, no test helper) and runs on a CPU."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_live.py"
FORBIDDEN = ("tests", "his_cli", "train", "evaluate", "conftest")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module or "")
    return modules


def test_bench_live_imports_no_cli_script_and_no_test_helper():
    modules = imported_modules(BENCH)
    assert "quality_oracle.live.tiny_models" in modules  # the check sees nested imports too
    bad = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert bad == [], f"bench_live.py imports {bad}"


def test_bench_live_tiny_cpu_run_with_oracle_smoke(capsys):
    pytest.importorskip("diffusers")
    spec = importlib.util.spec_from_file_location("bench_live_under_test", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--device", "cpu", "--tiny", "--dtype", "float32", "--oracle-smoke", "--steps", "4",
                       "--common", "2", "--users", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "oracle smoke on cpu (float32)" in out and "cache hit OK" in out
    assert "SUMMARY bench_live [CPU, tiny SD3, float32, 32px, 4 steps]" in out
