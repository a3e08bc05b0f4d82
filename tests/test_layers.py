"""The contracts of setup.cfg ([importlinter]) hold: his_cli > experiments > agents > his_env >
quality_oracle > his_common, each layer importing only from the layers below it; and the simulator,
the oracle and the shared utilities import no learner library (BenchMARL, Ray, TorchRL's losses)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e '.[test]')")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    done = subprocess.run([sys.executable, "-c", script, "--no-cache"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


# import-linter forbids `benchmarl` and `ray` below agents/, but it cannot forbid a submodule of an
# external package (`torchrl.objectives`, the losses: TorchRL's envs are the simulator's own API).
LEARNER_LIBRARIES = ("benchmarl", "ray", "torchrl.objectives")
LIBRARY_FREE_PACKAGES = ("his_env", "his_common", "quality_oracle")


def learner_library_imports(source: str, filename: str = "<source>"):
    """(line, module) of every import of a learner library in `source`, at any depth (a lazy import
    inside a function counts the same)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if any(name == lib or name.startswith(lib + ".") for lib in LEARNER_LIBRARIES):
                found.append((node.lineno, name))
                break
    return sorted(found)


def test_learner_library_detector_sees_lazy_and_from_imports():
    source = ("import os\n"
              "def f():\n    import ray.tune\n"
              "def g():\n    from torchrl import objectives\n"
              "from torchrl.objectives.value import GAE\n"
              "from benchmarl.utils import x\n"
              "import torchrl.envs, rayon\n")
    assert sorted(line for line, _ in learner_library_imports(source)) == [3, 5, 6, 7]


@pytest.mark.parametrize("package", LIBRARY_FREE_PACKAGES)
def test_no_learner_library_below_agents(package):
    bad = [f"{path.relative_to(REPO)}:{line}: {name}"
           for path in sorted((REPO / package).rglob("*.py"))
           for line, name in learner_library_imports(path.read_text(encoding="utf-8"), str(path))]
    assert not bad, f"{package} imports a learner library ({', '.join(LEARNER_LIBRARIES)}): " + "; ".join(bad)



def cli_imports(source: str, filename: str = "<source>"):
    """(line, module) of every import of the CLIs' package `his_cli` in `source`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        found += [(node.lineno, name) for name in names if name == "his_cli" or name.startswith("his_cli.")]
    return sorted(found)


def test_benchmarks_import_no_cli():
    """Benchmarks measure the library: their flags and presets come from it, not from a CLI's parser."""
    assert cli_imports("def f():\n    from his_cli.train import x\nimport his_cli\nimport his_clique\n") == [
        (2, "his_cli.train"), (3, "his_cli")]
    bad = [f"{path.relative_to(REPO)}:{line}: {name}" for path in sorted((REPO / "benchmarks").glob("*.py"))
           for line, name in cli_imports(path.read_text(encoding="utf-8"), str(path))]
    assert not bad, "benchmarks import a CLI: " + "; ".join(bad)
