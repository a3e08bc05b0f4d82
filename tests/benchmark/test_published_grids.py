"""The published grids under benchmarks/results/ keep every cell's record, so that the same command,
pointed at a copy of the folder, resumes or extends the grid: each record must be one the grid
accepts as finished for the folder's settings, and the published report must be the one of them."""
import csv
import json
from pathlib import Path

import pytest

from experiments.benchmark import RESULT_FILE, record_problem

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
GRIDS = sorted({p.parents[2] for p in RESULTS.glob("*/cells/*/" + RESULT_FILE)})  # <grid>/cells/<cell>/result.json


def test_there_is_a_published_grid_with_its_cells():
    assert GRIDS, "no benchmarks/results/<grid>/cells/<cell>/result.json"


@pytest.mark.parametrize("grid", GRIDS, ids=[g.name for g in GRIDS])
def test_every_published_cell_is_a_finished_record_of_the_grids_settings(grid: Path):
    key = json.loads((grid / "benchmark.json").read_text())["settings_key"]
    rows = {(r["algorithm"], r["scheme"], int(r["seed"])): r for r in csv.DictReader(open(grid / "cells.csv"))}
    folders = sorted((grid / "cells").iterdir())
    assert len(folders) == len(rows)
    for folder in folders:
        record = json.loads((folder / RESULT_FILE).read_text())
        # the check the grid applies on resume (read_finished), without its moving a bad file aside
        assert record_problem(record, folder.name) is None, folder.name
        assert record["status"] == "ok" and record["settings_key"] == key, folder.name
        cell = record["cell"]
        row = rows[(cell["algorithm"], cell["scheme"], cell["seed"])]
        assert float(row["score"]) == pytest.approx(record["summary"]["score"], rel=1e-12), folder.name
        assert int(row["frames"]) == record["summary"]["frames"], folder.name
