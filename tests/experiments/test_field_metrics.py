"""Aggregate metrics to the field's standard (experiments.field_metrics: rliable's IQM, median, mean,
optimality gap, probability of improvement, stratified bootstrap, curves on a common grid) and the
marl-eval export (experiments.marl_eval_export), checked by hand, against rliable, through
marl-eval's loader (or a faithful reader of its layout), and in a whole report."""
import csv
import json
import math

import numpy as np
import pytest

from experiments import field_metrics as fm
from experiments.benchmark import BenchmarkSpec
from experiments.benchmark_report import write_report
from experiments.marl_eval_export import marl_eval_data

# A (runs x tasks) matrix: 4 runs of 3 tasks.
#   task A: 0.0 0.2 0.4 0.6   mean 0.30
#   task B: 0.5 0.5 0.7 1.3   mean 0.75
#   task C: -0.2 0.1 0.1 0.4  mean 0.10
SCORES = np.array([[0.0, 0.5, -0.2],
                   [0.2, 0.5, 0.1],
                   [0.4, 0.7, 0.1],
                   [0.6, 1.3, 0.4]])


# ---------------------------------------------------------------------- the statistics by hand
def test_ranks_and_kendall_tau_by_hand_and_against_scipy():
    # 3 and 3 share ranks 1 and 2 (1.5 each); 2 is third, 1 fourth
    assert fm.ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [1.5, 4.0, 1.5, 3.0]
    assert fm.ranks([[0.1, 0.2], [0.2, 0.1]]).tolist() == [[2.0, 1.0], [1.0, 2.0]]
    # by hand: (1, 2, 3) vs (1, 3, 2): pairs (12) concordant, (13) concordant, (23) discordant -> (2 - 1) / 3
    assert fm.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert fm.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(fm.kendall_tau([1, 1, 1], [1, 2, 3]))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.integers(0, 4, size=7).astype(float), rng.integers(0, 4, size=7).astype(float)
        assert fm.ranks(a) == pytest.approx(stats.rankdata(-a, method="average"))
        expected = stats.kendalltau(a, b).statistic
        got = fm.kendall_tau(a, b)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_ranking_stability_separated_tied_and_by_hand():
    rng = np.random.default_rng(0)
    separated = {"a": 0.9 + 0.01 * rng.random((6, 2)), "b": 0.5 + 0.01 * rng.random((6, 2)),
                 "c": 0.1 + 0.01 * rng.random((6, 2))}
    r = fm.ranking_stability(separated, reps=300)
    assert r["order"] == ["a", "b", "c"] and r["groups"] == [["a"], ["b"], ["c"]]
    assert r["stable"] and r["group_ranking_holds"] == 1.0 and r["same_full_ranking"] == 1.0
    assert r["split_half_tau_mean"] == 1.0 and r["split_half_agreement"] == 1.0
    assert r["first_vs_second_half_tau"] == 1.0
    assert [(x["rank"], x["rank_ci_low"], x["rank_ci_high"], x["p_same_rank"]) for x in r["rows"]] == [
        (1, 1, 1, 1), (2, 2, 2, 1), (3, 3, 3, 1)]
    # x's two runs 1 and 0 resample to means 1, 0.5, 0 with probabilities 1/4, 1/2, 1/4; y is always 0.5:
    # P(x above y) = 1/4 + 1/2 * 1/2 = 1/2, so the two are one tie group (trivially a stable ranking)
    half = fm.ranking_stability({"x": np.array([[1.0], [0.0]]), "y": np.array([[0.5], [0.5]])}, reps=4000)
    assert half["rows"][0]["p_above_next"] == pytest.approx(0.5, abs=0.03)
    assert [x["rank"] for x in half["rows"]] == [1.5, 1.5]
    assert half["groups"] == [["x", "y"]] and half["stable"]
    # a clear leader above two tied ones: two groups, and the group ranking holds
    mixed = {"top": 0.9 + 0.01 * rng.random((5, 1)), "p": 0.4 + 0.1 * rng.random((5, 1)),
             "q": 0.4 + 0.1 * rng.random((5, 1))}
    m = fm.ranking_stability(mixed, reps=500)
    assert m["groups"][0] == ["top"] and sorted(m["groups"][1]) == ["p", "q"] and m["stable"]
    with pytest.raises(ValueError, match="at least 2 algorithms"):
        fm.ranking_stability({"a": np.zeros((3, 1))})
    with pytest.raises(ValueError, match="at least 2 runs"):
        fm.ranking_stability({"a": np.zeros((3, 1)), "b": np.zeros((1, 1))})

def test_aggregates_by_hand():
    # IQM: the 12 scores sorted: -0.2 0.0 0.1 0.1 0.2 0.4 | 0.4 0.5 0.5 0.6 0.7 1.3 -> int(0.25 * 12) = 3 cut
    # from each end, the middle 6: 0.1 0.2 0.4 0.4 0.5 0.5, sum 2.1, IQM = 2.1 / 6 = 0.35.
    assert fm.iqm(SCORES) == pytest.approx(0.35)
    # mean of the task means: (0.30 + 0.75 + 0.10) / 3 = 1.15 / 3
    assert fm.mean(SCORES) == pytest.approx(1.15 / 3)
    # median of the task means {0.10, 0.30, 0.75}: 0.30
    assert fm.median(SCORES) == pytest.approx(0.30)
    # optimality gap, gamma 1: the sum of the scores is 1.2 + 3.0 + 0.4 = 4.6; 1.3 clipped to 1 -> 4.3;
    # 1 - 4.3 / 12
    assert fm.optimality_gap(SCORES) == pytest.approx(1 - 4.3 / 12)
    assert fm.aggregates(SCORES) == pytest.approx([0.35, 0.30, 1.15 / 3, 1 - 4.3 / 12])
    # IQM of 8 runs of one task = the mean of the middle 4: sorted 0.1 0.2 | 0.3 0.4 0.7 0.8 | 0.9 1.5
    eight = np.array([[0.1], [0.9], [0.2], [0.8], [0.3], [0.7], [0.4], [1.5]])
    assert fm.iqm(eight) == pytest.approx((0.3 + 0.4 + 0.7 + 0.8) / 4)
    # 3 runs: int(0.75) = 0 cut, the IQM is the mean
    assert fm.iqm([[0.1], [0.2], [0.9]]) == pytest.approx(0.4)
    # a batch of matrices (leading axis) gives one value per matrix
    assert fm.iqm(np.stack([SCORES, SCORES + 1.0])) == pytest.approx([0.35, 1.35])


def test_probability_of_improvement_by_hand():
    # task 1: X = 0.3 0.5 0.5, Y = 0.5 0.2. The 6 pairs (x, y):
    #   (0.3, 0.5) 0, (0.3, 0.2) 1, (0.5, 0.5) 1/2 (a tie), (0.5, 0.2) 1, (0.5, 0.5) 1/2, (0.5, 0.2) 1 -> 4 / 6
    # task 2: X = 1 1 1, Y = 0 0 -> every pair X wins: 1
    # P(X > Y) = (4/6 + 1) / 2 = 5/6; P(Y > X) = (2/6 + 0) / 2 = 1/6 = 1 - 5/6 (ties split evenly)
    x = np.array([[0.3, 1.0], [0.5, 1.0], [0.5, 1.0]])
    y = np.array([[0.5, 0.0], [0.2, 0.0]])
    assert fm.probability_of_improvement(x, y) == pytest.approx(5 / 6)
    assert fm.probability_of_improvement(y, x) == pytest.approx(1 / 6)
    assert fm.probability_of_improvement(x, x) == pytest.approx(0.5)


def test_performance_profile_by_hand():
    # fraction of the 12 scores above tau: above 0.45: 0.5 0.5 0.7 1.3 0.6 -> 5/12; above 1.0: 1.3 -> 1/12
    assert fm.performance_profile(SCORES, [-1.0, 0.45, 1.0, 2.0]) == pytest.approx([1.0, 5 / 12, 1 / 12, 0.0])


def test_statistics_equal_rliables_own_functions():
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(7)
    for shape in ((3, 1), (5, 2), (8, 4), (10, 3)):
        s = rng.normal(0.5, 0.4, size=shape)
        assert fm.iqm(s) == pytest.approx(metrics.aggregate_iqm(s), abs=1e-12)
        assert fm.median(s) == pytest.approx(metrics.aggregate_median(s), abs=1e-12)
        assert fm.mean(s) == pytest.approx(metrics.aggregate_mean(s), abs=1e-12)
        assert fm.optimality_gap(s) == pytest.approx(metrics.aggregate_optimality_gap(s, gamma=1), abs=1e-12)
        y = np.round(rng.normal(0.5, 0.4, size=(shape[0] + 1, shape[1])), 1)  # rounded: ties happen
        x = np.round(s, 1)
        assert fm.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y),
                                                                    abs=1e-12)


def test_bootstrap_intervals_agree_with_rliables_library():
    try:
        from rliable import library as rly, metrics
    except Exception as exc:  # noqa: BLE001 - rliable 1.2's arch (< 8) fails to import beside pandas 3
        pytest.skip(f"rliable.library does not import here ({type(exc).__name__}: {exc})")
    rng = np.random.default_rng(3)
    s = rng.normal(0.5, 0.3, size=(6, 3))
    np.random.seed(0)  # rliable draws its resamples from numpy's global generator
    _, ci = rly.get_interval_estimates({"a": s}, lambda x: np.array([metrics.aggregate_iqm(x),
                                                                     metrics.aggregate_mean(x)]), reps=4000)
    _, lo, hi = fm.interval_estimate(s, lambda x: np.stack([fm.iqm(x), fm.mean(x)], axis=-1), reps=4000)
    assert lo == pytest.approx(ci["a"][0], abs=0.03) and hi == pytest.approx(ci["a"][1], abs=0.03)


def test_stratified_bootstrap_by_hand_and_reproducible():
    # one task, scores {0, 1}: the resampled means are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4, so
    # the 2.5 % and 97.5 % percentiles are 0 and 1
    point, lo, hi = fm.interval_estimate([[0.0], [1.0]], fm.mean, reps=2000)
    assert (point, lo, hi) == (0.5, 0.0, 1.0)
    # stratified: a resampled column holds only that task's scores
    boot = fm.stratified_resamples(SCORES, 50, np.random.default_rng(0))
    assert boot.shape == (50, 4, 3)
    for task in range(3):
        assert set(np.unique(boot[:, :, task])) <= set(SCORES[:, task])
    # seeded by (seed, name): the same again, another name or seed differs
    a = fm.interval_estimate(SCORES, fm.iqm, reps=300, seed=0, key="x")
    assert fm.interval_estimate(SCORES, fm.iqm, reps=300, seed=0, key="x") == a
    assert fm.interval_estimate(SCORES, fm.iqm, reps=300, seed=1, key="x")[1:] != a[1:]


def test_curves_are_aligned_on_a_common_grid_by_hand():
    # run 1 evaluates at frames 10 20 30, run 2 at 15 30 45: the grid runs from the latest first
    # evaluation (15) to the earliest last one (30) over their evaluation frames: 15 20 30
    grid = fm.common_grid([[10, 20, 30], [15, 30, 45]])
    assert grid.tolist() == [15, 20, 30]
    # a run's value at a grid frame is its last evaluation at or before it
    assert fm.values_on_grid([10, 20, 30], [0.1, 0.2, 0.3], grid).tolist() == [0.1, 0.2, 0.3]
    assert fm.values_on_grid([15, 30, 45], [0.5, 0.6, 0.7], grid).tolist() == [0.5, 0.5, 0.6]
    assert math.isnan(fm.values_on_grid([15, 30], [0.5, 0.6], [10])[0])
    assert fm.common_grid([[1, 2], [3, 4]]).size == 0  # ranges that do not overlap
    assert fm.common_grid([np.arange(200)], max_points=5).tolist() == [0, 49.75, 99.5, 149.25, 199]
    # the IQM at each grid point of a (runs, tasks, points) cube
    cube = np.stack([SCORES, SCORES + 1.0], axis=-1)
    assert fm.iqm_curve(cube) == pytest.approx([0.35, 1.35])


def test_evaluate_names_what_it_skips():
    one_seed = {"his": {"ippo": {0: 0.4}, "qmix": {0: 0.6}}, "cfis": {"ippo": {0: 0.2}, "qmix": {0: 0.5}}}
    result = fm.evaluate(one_seed, reps=50)
    skipped = {k["metric"]: k["reason"] for k in result["skipped"]}
    assert any(m.startswith("confidence intervals") and "fewer than 2 seeds" in r for m, r in skipped.items())
    assert any(m.startswith("probability of improvement") and "fewer than 2 seeds" in r for m, r in skipped.items())
    assert result["probability_of_improvement"] == []
    across = {r["algorithm"]: r for r in result["aggregates"] if r["task"] == fm.ALL_TASKS}
    assert across["ippo"]["iqm"] == pytest.approx(0.3) and math.isnan(across["ippo"]["iqm_ci_low"])
    alone = fm.evaluate({"his": {"ippo": {0: 0.4, 1: 0.5}}}, reps=50)
    assert any(k["metric"] == "probability of improvement" and "it compares two" in k["reason"]
               for k in alone["skipped"])
    # a seed that did not finish on every task is left out of the across-task metrics, and named
    ragged = fm.evaluate({"his": {"ippo": {0: 0.4, 1: 0.5, 2: 0.6}}, "cfis": {"ippo": {0: 0.2, 2: 0.3}}}, reps=50)
    assert ragged["excluded"] == ["ippo seed 1: no finished run on cfis"]
    assert next(r for r in ragged["aggregates"] if r["task"] == fm.ALL_TASKS)["runs"] == 2


# ---------------------------------------------------------------------- records of a fake grid
REFS = {s: {"random": 0.1, "search": 0.9, "seeds": [90_000, 90_001, 90_002, 90_003], "search_sweeps": 4,
            "random_s": 0.1, "search_s": 1.0} for s in ("his", "cfis")}


def fake_record(algorithm, scheme, seed, score, status="ok", points=3):
    """A finished cell as benchmark.py stores it: its score climbs to `score` over `points` evaluations."""
    cell = {"algorithm": algorithm, "scheme": scheme, "seed": seed}
    if status != "ok":
        return {"status": "failed", "cell": cell, "attempts": 2, "errors": ["RuntimeError: a", "RuntimeError: b"],
                "settings_key": "k"}
    curve = [{"iteration": float(i + 1), "frames": 40.0 * (i + 1), "agent_steps": 160.0 * (i + 1),
              "train_s": 2.0 * (i + 1) + 0.1 * seed, "utility": 0.1 + 0.8 * score * (i + 1) / points,
              "quality": 0.5, "delay": 1.0, "energy": 2.0, "score": score * (i + 1) / points} for i in range(points)]
    summary = {"score": score, "utility": curve[-1]["utility"], "quality": 0.5, "delay": 1.0, "energy": 2.0,
               "frames": 40 * points, "agent_steps": 160 * points, "iterations": points,
               "train_s": curve[-1]["train_s"], "wall_s": 10.0, "agent_steps_per_s": 100.0, "peak_rss_mb": 500.0,
               "host": "h", "continuous_actions": False}
    return {"status": "ok", "cell": cell, "attempts": 1, "errors": [], "settings_key": "k", "summary": summary,
            "curve": curve}


def fake_grid(seeds=(0, 1, 2), fail=()):
    # score = 0.3 (+0.2 for mappo) + 0.1 seed (-0.05 on cfis)
    return [fake_record(a, s, seed, 0.3 + 0.2 * (a == "mappo") + 0.1 * seed - 0.05 * (s == "cfis"),
                        status="failed" if (a, s, seed) in fail else "ok")
            for a in ("ippo", "mappo") for s in ("his", "cfis") for seed in seeds]


def spec_for(tmp_path, seeds=(0, 1, 2)):
    return BenchmarkSpec(algorithms=["ippo", "mappo"], schemes=["his", "cfis"], seeds=list(seeds),
                         wandb_mode="disabled", output_dir=str(tmp_path), eval_episodes=4)


# ---------------------------------------------------------------------- marl-eval's layout
def read_marl_eval(raw, env_name):
    """A faithful reader of marl-eval's layout, as id-marl-eval 0.0.4's `data_process_pipeline` and
    `create_matrices_for_rliable` (with no metric to normalise) read it: keys lower-cased; every
    step's metrics averaged into `mean_<metric>`; the runs, steps and algorithms of the first task's
    first algorithm's first run used everywhere; a step whose name holds "absolute" required; no
    comma in an algorithm name. Returns ({mean_<metric>: {algorithm: (runs, tasks)}},
    {mean_<metric>: {algorithm: (runs, tasks, steps)}}, step counts of the first run)."""
    def lower(d):
        return {k.lower(): lower(v) if isinstance(v, dict) else v for k, v in d.items()}

    data = lower(raw)[env_name.lower()]
    tasks = list(data)
    algorithms = list(data[tasks[0]])
    assert not any("," in a for a in algorithms)
    runs = list(data[tasks[0]][algorithms[0]])
    steps = list(data[tasks[0]][algorithms[0]][runs[0]])
    absolute = next(s for s in steps if "absolute" in s)
    steps.remove(absolute)
    metrics = [m for m in data[tasks[0]][algorithms[0]][runs[0]][absolute] if m != "step_count"]
    final, over_steps = {}, {}
    for m in metrics:
        final[f"mean_{m}"] = {a: np.array([[np.mean(data[t][a][r][absolute][m]) for t in tasks] for r in runs])
                              for a in algorithms}
        over_steps[f"mean_{m}"] = {a: np.stack([np.array([[np.mean(data[t][a][r][s][m]) for t in tasks]
                                                          for r in runs]) for s in steps], axis=2)
                                   for a in algorithms}
    counts = [data[tasks[0]][algorithms[0]][runs[0]][s]["step_count"] for s in steps]
    return final, over_steps, counts


def check_export_matches_records(final, over_steps, counts, records):
    by = {(r["cell"]["algorithm"], r["cell"]["scheme"], r["cell"]["seed"]): r for r in records if r["status"] == "ok"}
    assert counts == [40, 80, 120]
    for a in ("ippo", "mappo"):
        assert final["mean_score"][a].shape == (3, 2)
        for i, seed in enumerate((0, 1, 2)):
            for j, s in enumerate(("his", "cfis")):
                r = by[(a, s, seed)]
                assert final["mean_score"][a][i, j] == pytest.approx(r["summary"]["score"])
                assert final["mean_utility"][a][i, j] == pytest.approx(r["summary"]["utility"])
                assert over_steps["mean_score"][a][i, j, :] == pytest.approx([p["score"] for p in r["curve"]])


def test_marl_eval_export_reads_back_with_a_faithful_reader(tmp_path):
    records = fake_grid()
    data, info = marl_eval_data(records, episodes=4)
    raw = json.loads(json.dumps(data))  # as a file holds it
    run = raw["his-marl"]["his"]["ippo"]["seed_0"]
    assert list(run) == ["step_0", "step_1", "step_2", "absolute_metrics"]
    assert run["step_1"]["step_count"] == 80 and run["step_1"]["score"] == [pytest.approx(0.2)]
    final, over_steps, counts = read_marl_eval(raw, "his-marl")
    check_export_matches_records(final, over_steps, counts, records)
    assert info["seeds"] == [0, 1, 2] and info["left_out"] == []


def test_marl_eval_export_reads_back_with_marl_evals_loader(tmp_path):
    mev = pytest.importorskip("marl_eval.utils.data_processing_utils",
                              reason="id-marl-eval is not installed (it pins pandas==1.4.4)")
    records = fake_grid()
    spec = spec_for(tmp_path)
    write_report(records, REFS, spec, tmp_path, log=lambda *_: None, bootstrap_reps=50)
    raw = json.loads((tmp_path / "marl_eval.json").read_text())
    processed = mev.data_process_pipeline(raw_data=raw, metrics_to_normalize=[])
    assert processed["extra"]["number_of_runs"] == 3 and processed["extra"]["number_of_steps"] == 3
    final, over_steps = mev.create_matrices_for_rliable(data_dictionary=processed, environment_name="his-marl",
                                                        metrics_to_normalize=[])
    counts = [raw["his-marl"]["his"]["ippo"]["seed_0"][f"step_{i}"]["step_count"] for i in range(3)]
    check_export_matches_records(final, over_steps, counts, records)


def test_marl_eval_export_keeps_the_runs_finished_everywhere():
    records = fake_grid(fail={("ippo", "his", 1)})
    data, info = marl_eval_data(records, episodes=4)
    assert info["seeds"] == [0, 2]
    assert all(set(runs) == {"seed_0", "seed_2"} for task in data["his-marl"].values() for runs in task.values())
    assert "ippo his seed 1: failed" in info["left_out"]
    assert any(e.startswith("mappo cfis seed 1: seed 1 did not finish everywhere") for e in info["left_out"])


# ---------------------------------------------------------------------- the report
NEW_FILES = ("aggregate_metrics.csv", "aggregate_metrics.png", "performance_profiles.csv", "performance_profiles.png",
             "probability_of_improvement.csv", "probability_of_improvement.png", "sample_efficiency.csv",
             "sample_efficiency.png", "field_metrics.json", "marl_eval.json", "ranking.csv")


def test_report_writes_the_field_metrics_beside_the_report(tmp_path):
    records = fake_grid(seeds=(0, 1, 2))
    spec = spec_for(tmp_path)
    out = write_report(records, REFS, spec, tmp_path, log=lambda *_: None, bootstrap_reps=300)
    for name in NEW_FILES + ("report.md", "summary.csv", "scores.png", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("## Aggregate metrics (rliable)"):]
    for fragment in ("| his | 0.1000 | 0.9000 | 4 | 90000..90003 (4) |", "2 algorithms x 2 tasks (his, cfis)",
                     "3 finished seeds per algorithm and task", "evaluation episodes per evaluation: 4",
                     "300 resamples", "95 % percentile intervals", "seed 0", "### Probability of improvement",
                     "last evaluation at or before"):
        assert fragment in section, fragment
    # across tasks, ippo: scores his 0.3 0.4 0.5, cfis 0.25 0.35 0.45 -> 6 runs, IQM cuts 1 from each end:
    # (0.3 + 0.35 + 0.4 + 0.45) / 4 = 0.375; mappo is ippo + 0.2
    rows = {(r["task"], r["algorithm"]): r for r in csv.DictReader((tmp_path / "aggregate_metrics.csv").open())}
    assert float(rows[("all", "ippo")]["iqm"]) == pytest.approx(0.375)
    assert float(rows[("all", "mappo")]["iqm"]) == pytest.approx(0.575)
    assert float(rows[("his", "ippo")]["mean"]) == pytest.approx(0.4)
    assert "| ippo | 3 x 2 | 0.375 [" in section
    # P(mappo > ippo): his: mappo 0.5 0.6 0.7 vs ippo 0.3 0.4 0.5 -> 8 wins + 1 tie of 9 pairs = 8.5 / 9;
    # cfis the same; P(ippo > mappo) = 0.5 / 9
    poi = {(r["x"], r["y"]): float(r["probability"])
           for r in csv.DictReader((tmp_path / "probability_of_improvement.csv").open())}
    assert poi == {("ippo", "mappo"): pytest.approx(0.5 / 9), ("mappo", "ippo"): pytest.approx(8.5 / 9)}
    # the ranking: mappo (IQM 0.575) above ippo (0.375)
    ranking = list(csv.DictReader((tmp_path / "ranking.csv").open()))
    assert [(r["algorithm"], float(r["rank"])) for r in ranking] == [("mappo", 1.0), ("ippo", 2.0)]
    assert "### Ranking and its stability" in section and "Split-half agreement" in section
    curve = [r for r in csv.DictReader((tmp_path / "sample_efficiency.csv").open())
             if r["axis"] == "frames" and r["task"] == "all" and r["algorithm"] == "ippo"]
    assert [float(r["x"]) for r in curve] == [40, 80, 120]
    assert [float(r["iqm"]) for r in curve] == pytest.approx([0.125, 0.25, 0.375])
    doc = json.loads((tmp_path / "field_metrics.json").read_text())
    assert doc["settings"]["reps"] == 300 and doc["references"]["his"]["search_sweeps"] == 4
    assert out["field_metrics"]["skipped"] == []
    # reproducible: the same report again gives the same intervals
    again = tmp_path / "again"
    again.mkdir()
    write_report(records, REFS, spec, again, log=lambda *_: None, bootstrap_reps=300)
    assert (again / "aggregate_metrics.csv").read_text() == (tmp_path / "aggregate_metrics.csv").read_text()
    # the faithful reader reads the report's marl_eval.json
    final, over_steps, counts = read_marl_eval(json.loads((tmp_path / "marl_eval.json").read_text()), "his-marl")
    check_export_matches_records(final, over_steps, counts, records)


def test_report_with_one_seed_names_the_skipped_metrics(tmp_path):
    spec = spec_for(tmp_path, seeds=(0,))
    write_report(fake_grid(seeds=(0,)), REFS, spec, tmp_path, log=lambda *_: None, bootstrap_reps=50)
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("## Aggregate metrics (rliable)"):]
    assert "1 finished seed per algorithm and task" in section
    assert "- skipped: confidence intervals (IQM, median, mean, optimality gap, performance profiles, curves): " \
           "fewer than 2 seeds for every algorithm and task" in section
    assert "- skipped: probability of improvement: fewer than 2 seeds (ippo: 1, mappo: 1)" in section
    assert "| ippo | 1 x 2 | 0.275 |" in section  # the point estimate, without an interval
    assert not (tmp_path / "probability_of_improvement.png").exists()
    assert (tmp_path / "aggregate_metrics.png").exists() and (tmp_path / "marl_eval.json").exists()


def test_report_names_failed_cells_and_the_runs_left_out(tmp_path):
    write_report(fake_grid(fail={("ippo", "his", 1)}), REFS, spec_for(tmp_path), tmp_path, log=lambda *_: None,
                 bootstrap_reps=50)
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("## Aggregate metrics (rliable)"):]
    assert "- failed cells, excluded from every metric: ippo his seed 1" in section
    assert "- left out of the across-task metrics: ippo seed 1: no finished run on his" in section
    assert "| his | ippo | 2 |" in section
