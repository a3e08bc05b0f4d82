"""experiments.measure_hiqm: pairs, binning, resumable CSV measurement, refit, and the CLI end to end."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from experiments import measure_hiqm as measure
from experiments.measure_hiqm import PromptPair, Unit

REFERENCE_CSV = Path(__file__).resolve().parents[2] / "quality_oracle" / "data" / "hiqm_sd3_medium.csv"


def _pair(sim, tag="a"):
    return PromptPair(f"public {tag}", f"personal {tag}", f"negative {tag}", sim)


def test_candidate_pairs_from_prompt_rows():
    rows = [{"personal_prompt": "p1", "negative_prompt": "n1", "public_prompt": ""},
            {"personal_prompt": "p2", "negative_prompt": "", "public_prompt": "pub2"},
            {"personal_prompt": "p3", "negative_prompt": "n3", "public_prompt": ""}]
    pairs = measure.candidate_pairs(rows)
    assert set(pairs) == {("p1", "p2", ""), ("p1", "p3", "n3"), ("p2", "p1", "n1"), ("p2", "p3", "n3"),
                          ("p3", "p1", "n1"), ("p3", "p2", ""), ("pub2", "p2", "")}


def test_similarity_is_cosine_of_embeddings():
    vectors = {"a": [1.0, 0.0], "b": [1.0, 1.0], "c": [0.0, 3.0]}
    sims = measure.sentence_similarity([("a", "b", ""), ("a", "c", ""), ("b", "c", "")],
                                       embed=lambda texts: np.array([vectors[t] for t in texts]))
    np.testing.assert_allclose(sims, [1 / np.sqrt(2), 0.0, 1 / np.sqrt(2)])


def test_binning_nearest_bin_within_half_width():
    pairs = [_pair(s, str(i)) for i, s in enumerate([0.19, 0.24, 0.26, 0.31, 0.451, 0.9, 0.3, 0.28])]
    by_bin = measure.bin_pairs(pairs, [0.2, 0.3, 0.4], width=0.1, per_bin=2, seed=0)
    assert sorted(p.similarity for p in by_bin[0.2]) == [0.19, 0.24]
    assert len(by_bin[0.3]) == 2 and {p.similarity for p in by_bin[0.3]} <= {0.26, 0.31, 0.3, 0.28}
    assert 0.4 not in by_bin  # 0.451 is nearest 0.4 but outside +-0.05


def test_pairs_file_round_trip(tmp_path):
    pairs = [_pair(0.25, "x"), PromptPair('a "quoted", prompt', "b", "", 0.5)]
    measure.write_pairs(tmp_path / "pairs.csv", pairs)
    assert measure.read_pairs(tmp_path / "pairs.csv") == pairs
    (tmp_path / "bad.csv").write_text("public_prompt,personal_prompt\na,b\n")
    with pytest.raises(measure.MeasurementError, match="lacks the columns \\['similarity'\\]"):
        measure.read_pairs(tmp_path / "bad.csv")


def _units():
    by_bin = {0.3: [_pair(0.31, "a"), _pair(0.28, "b")], 0.6: [_pair(0.62, "c")]}
    return measure.build_units(by_bin, seeds=[0, 1], sim_npi=[1, 0])


def _fake_score(unit: Unit):
    # a known number per (unit, x): the aggregate must be its mean over pairs and seeds
    base = {"a": 0.1, "b": 0.2, "c": 0.3}[unit.pair.personal[-1]]
    return [base + 0.01 * unit.seed + 0.001 * x + 0.5 * unit.sim_npi for x in range(3)]


def test_measurement_csv_means_and_columns(tmp_path):
    out = tmp_path / "hiqm.csv"
    ran = measure.run_measurement(_units(), [0, 1, 2], _fake_score, out, progress=False)
    assert ran == 12
    with out.open() as f:
        rows = list(csv.reader(f))
    with REFERENCE_CSV.open() as f:
        assert rows[0] == next(csv.reader(f))  # exactly the reference columns
    table = {(int(r[0]), float(r[1]), int(r[2])): float(r[3]) for r in rows[1:]}
    assert len(table) == 2 * 2 * 3
    # bin 0.3, sim_npi 1, x = 2: pairs a (0.1) and b (0.2), seeds 0 and 1 -> mean 0.15 + 0.005 + 0.002 + 0.5
    assert table[(1, 0.3, 2)] == pytest.approx(0.657)
    assert table[(0, 0.6, 0)] == pytest.approx(0.305)
    assert [r[0] for r in rows[1:]][:6] == ["1"] * 6  # sim_npi 1 first, as the reference


def test_measurement_resumes_and_redoes_a_cut_unit(tmp_path):
    out = tmp_path / "hiqm.csv"
    units = _units()
    calls = []

    def interrupted(unit):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(unit.key)
        return _fake_score(unit)

    with pytest.raises(KeyboardInterrupt):
        measure.run_measurement(units, [0, 1, 2], interrupted, out, progress=False)
    raw = measure.raw_path_for(out)
    text = raw.read_text()
    raw.write_text(text[: text.rstrip("\n").rfind("\n") + 12])  # cut the last unit's last line
    calls.clear()
    again = []
    ran = measure.run_measurement(units, [0, 1, 2], lambda u: again.append(u.key) or _fake_score(u), out,
                                  progress=False)
    assert ran == 12 - 4 and len(again) == 8  # the 5th unit lost a row and is redone
    complete = tmp_path / "complete.csv"
    measure.run_measurement(units, [0, 1, 2], _fake_score, complete, progress=False)
    assert out.read_text() == complete.read_text()
    assert measure.run_measurement(units, [0, 1, 2], lambda u: 1 / 0, out, progress=False) == 0


def test_refit_recovers_a_known_hiqm_curve(tmp_path):
    """A full grid generated from Eq. 7 with known coefficients is fitted back by HIQMOracle."""
    pytest.importorskip("quality_oracle.hiqm")
    steps = list(range(28))

    def eq7(x, phi, iota):
        L, K, B, G = 0.05 + 0.02 * iota, 0.4, 8 + 10 * phi, 0.27 + 0.01 * iota
        return L / (1 + np.exp(K * (np.asarray(x) - B))) + G

    by_bin = {b: [_pair(b, str(b))] for b in measure.DEFAULT_BINS}
    units = measure.build_units(by_bin, seeds=[0], sim_npi=[1, 0])
    out = tmp_path / "hiqm.csv"
    measure.run_measurement(units, steps, lambda u: eq7(steps, u.similarity_bin, u.sim_npi), out, progress=False)
    oracle = measure.refit(out)
    for iota in (0, 1):
        for phi in (0.3, 0.6):
            got = oracle.quality(np.array(steps), np.full(28, phi), bool(iota))
            np.testing.assert_allclose(got, eq7(steps, phi, iota), atol=2e-3)


# ----------------------------------------------------------------------------- CLI with tiny models


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests import live_fixtures as lf
    root = tmp_path_factory.mktemp("measure_models")
    lf.tiny_sd3_pipeline().save_pretrained(root / "sd3")
    lf.save_tiny_clip(root / "clip")
    return root


def test_cli_end_to_end_on_cpu(tiny_models, tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    pairs = tmp_path / "pairs.csv"
    measure.write_pairs(pairs, [PromptPair("a cat at home", "a grey cat", "a white cat", 0.62),
                                PromptPair("a dog outside", "a grey cat", "a white cat", 0.33)])
    out = tmp_path / "out" / "hiqm.csv"
    args = ["--model", str(tiny_models / "sd3"), "--clip", str(tiny_models / "clip"), "--out", str(out),
            "--pairs", str(pairs), "--steps", "3", "--seeds", "1", "--device", "cpu", "--dtype", "float32",
            "--height", "32", "--width", "32", "--max-sequence-length", "32", "--no-refit", "--no-progress"]
    assert measure.main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["sim_npi"], r["similarity"], r["common_steps"]) for r in rows] == [
        (i, b, x) for i in ("1", "0") for b in ("0.3", "0.6") for x in ("0", "1", "2")]
    scores = np.array([float(r["clip_score"]) for r in rows])
    assert np.all(np.abs(scores) <= 1)
    # x = 0 ignores the public prompt, so both bins agree there for the same personal prompt and seed
    assert float(rows[0]["clip_score"]) == pytest.approx(float(rows[3]["clip_score"]), abs=1e-6)
    assert float(rows[1]["clip_score"]) != float(rows[4]["clip_score"])  # x = 1: the public prompt matters
    assert measure.main(args) == 0  # resumes: nothing left to do
    assert "ran 0 units (4 already done)" in capsys.readouterr().err


def test_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(SystemExit, match="--model: path .*does not exist; expected a diffusers pipeline folder"):
        measure.main(["--model", str(tmp_path / "nothing"), "--clip", str(tmp_path), "--out",
                      str(tmp_path / "o.csv"), "--device", "cpu"])


# ----------------------------------------------------------------------------- CLI refit: accepted or refused


def _measured_without_models(tmp_path, score):
    """Model folders that pass the CLI's checks, and a raw file in which every unit is done (no model loads)."""
    (tmp_path / "sd3").mkdir()
    (tmp_path / "sd3" / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    pairs = [_pair(b, str(b)) for b in measure.DEFAULT_BINS]
    measure.write_pairs(tmp_path / "pairs.csv", pairs)
    steps = list(range(8))
    units = measure.build_units(measure.bin_pairs(pairs, measure.DEFAULT_BINS, 0.1, 8, 0), seeds=[0], sim_npi=[1, 0])
    out = tmp_path / "hiqm.csv"
    measure.run_measurement(units, steps, lambda u: score(u, np.array(steps)), out, progress=False)
    return ["--model", str(tmp_path / "sd3"), "--clip", str(tmp_path / "clip"), "--out", str(out),
            "--pairs", str(tmp_path / "pairs.csv"), "--steps", "8", "--seeds", "1", "--device", "cpu",
            "--no-progress"]


def test_cli_refuses_a_refit_of_noise_and_exits_nonzero(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    args = _measured_without_models(tmp_path, lambda unit, steps: rng.uniform(0.1, 0.3, len(steps)))
    assert measure.main(args) == 1
    out, err = capsys.readouterr()
    assert "ran 0 units (12 already done)" in err  # nothing generated: the raw file had every unit
    assert "refit refused" in err and "explains only" in err and "similarity 0.2: RMSE" in err
    assert out.count("\n| 1 | 0.") == 6 and "| sim_npi | method | explained variance" in out  # the per-curve table


def test_cli_prints_the_per_curve_error_of_an_accepted_refit(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "cache"))

    def eq7(unit, x):
        return 0.1 + 0.2 / (1 + np.exp(0.8 * (x - 3 - 2 * unit.similarity_bin))) + 0.1 * unit.similarity_bin

    assert measure.main(_measured_without_models(tmp_path, eq7)) == 0
    out, err = capsys.readouterr()
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| 0 | 0.") or line.startswith("| 1 | 0.")]
    assert len(rows) == 12 and all(float(r[4]) < 1e-3 for r in rows)  # RMSE column of each curve
    assert "| 1 | per-similarity |" in out and "refused" not in err
