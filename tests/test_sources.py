"""Every Python source of the project compiles without a warning: an invalid escape such as "\\*" in a
docstring is a DeprecationWarning on Python 3.11 and a SyntaxWarning, printed at every import, from 3.12."""
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "benchmarks", "experiments", "his_cli", "his_common", "his_env", "hydra_plugins",
            "quality_oracle", "tests")


def test_every_source_compiles_without_warnings():
    sources = sorted([p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")] + list(ROOT.glob("*.py")))
    assert len(sources) > 100 and ROOT / "train.py" in sources
    problems = []
    for path in sources:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                compile(path.read_text(encoding="utf-8"), str(path), "exec")
            except (SyntaxError, Warning) as exc:
                problems.append(f"{path.relative_to(ROOT)}: {exc}")
    assert not problems, problems
