"""The fitted HIQM (Eq. 7): error bound on the real SD3 data, monotonicity, continuity, refitting."""
import csv
import hashlib

import numpy as np
import pytest

from quality_oracle.base import ECDiffSchedule, QualityRequest
from quality_oracle.hiqm import DEFAULT_CSV, HIQMOracle

REFERENCE_SHA256 = "9a7a69cbea8978b13b3c10294979a255410e83864bb73e9139dce83d47fd9852"


@pytest.fixture(scope="module")
def oracle():
    return HIQMOracle.from_csv()


def read_rows(path):
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def test_shipped_data_is_the_reference_data():
    # SHA-256 of the reference SD3-medium measurements (27,104 images, the paper's Fig. 5)
    assert hashlib.sha256(DEFAULT_CSV.read_bytes()).hexdigest() == REFERENCE_SHA256


def test_rmse_at_most_0006_on_every_curve(oracle):
    rows = read_rows(DEFAULT_CSV)
    curves = {}
    for r in rows:
        curves.setdefault((int(r["sim_npi"]), r["similarity"]), []).append((r["common_steps"], r["clip_score"]))
    assert len(curves) == 12
    for (iota, phi), points in curves.items():
        x, y = np.array(points).T
        rmse = np.sqrt(np.mean((oracle.quality(x, np.full_like(x, phi), bool(iota)) - y) ** 2))
        assert rmse <= 0.006, (iota, phi, rmse)
    assert max(r.rmse for r in oracle.fit_report()) <= 0.006


@pytest.mark.parametrize("sim_npi", [False, True])
def test_monotone_in_steps_and_similarity(oracle, sim_npi):
    x = np.linspace(-3, 35, 761)[:, None]
    phi = np.linspace(-1, 1, 4001)[None, :]
    q = oracle.quality(x, phi, sim_npi)
    assert np.all(np.diff(q, axis=0) <= 0), "quality rose with more common steps"
    assert np.all(np.diff(q, axis=1) >= 0), "quality fell with higher similarity"


def test_continuous_in_similarity(oracle):
    x = np.arange(28)[:, None]
    phi = np.linspace(-1, 1, 200001)[None, :]
    jumps = np.abs(np.diff(oracle.quality(x, phi, True), axis=1))
    assert jumps.max() < 1e-4  # steps of 1e-5 in phi move Q by < 1e-4: no discontinuity


def test_curves_shape_as_in_fig5(oracle):
    # SIM/NPI on lifts the curve; higher similarity flattens it (Sec. III-E)
    x = np.arange(28)
    for phi in (0.3, 0.5, 0.7):
        on, off = oracle.quality(x, phi, True), oracle.quality(x, phi, False)
        assert on[8:20].mean() > off[8:20].mean()
    drop = [oracle.quality(0, phi, True) - oracle.quality(27, phi, True) for phi in (0.2, 0.45, 0.7)]
    assert drop[0] > drop[1] > drop[2]


def test_vectorised_with_mixed_flags(oracle):
    x = np.array([0, 10, 20])
    phi = np.array([0.3, 0.5, 0.65])
    flags = np.array([True, False, True])
    mixed = oracle.quality(x, phi, flags)
    for i in range(3):
        assert mixed[i] == pytest.approx(float(oracle.quality(x[i], phi[i], bool(flags[i]))))


def test_refit_recovers_known_curves(tmp_path):
    # synthetic measurements from known Eq. (7) coefficients, refitted with the one-liner
    path = tmp_path / "mine.csv"
    truth = {0.3: (0.22, 0.25, 12.0, 0.09), 0.6: (0.12, 0.2, 14.0, 0.19)}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sim_npi", "similarity", "common_steps", "clip_score"])
        for phi, (L, K, B, G) in truth.items():
            for x in range(28):
                writer.writerow([1, phi, x, L / (1 + np.exp(K * (x - B))) + G])
    refit = HIQMOracle.from_csv(path)
    for phi, (L, K, B, G) in truth.items():
        x = np.arange(28)
        np.testing.assert_allclose(refit.quality(x, phi, True), L / (1 + np.exp(K * (x - B))) + G, atol=1e-6)
    with pytest.raises(ValueError, match="no curves for sim_npi=0"):
        refit.quality(3, 0.5, False)


def test_bad_measurement_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HIQMOracle.from_csv(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("sim_npi,similarity,steps,score\n1,0.2,0,0.3\n")
    with pytest.raises(ValueError, match="lacks columns"):
        HIQMOracle.from_csv(bad)


def test_ecdiff_quality_model(oracle):
    request = QualityRequest(common_steps=np.array([5, 5]), es_personal_steps=np.array([6, 6]),
                             ue_steps=np.array([17, 17]), similarity=np.array([0.5, 0.5]), cluster=np.zeros(2, int),
                             sim_npi=True, approximated_es_steps=np.array([0, 4]),
                             ecdiff=ECDiffSchedule(7, 2, 0.3, 2))
    lossy = oracle.with_approximation_loss(0.001).evaluate(request)
    assert lossy[0] == pytest.approx(float(oracle.quality(5, 0.5, True)))
    assert lossy[1] == pytest.approx(lossy[0] * (1 - 0.004))
