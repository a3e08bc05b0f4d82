"""The evaluation table (summaries, scores, CSV + Markdown) on rows whose means and standard
deviations are worked out by hand; env-factory checks; the reward mode of a run record."""
import csv
import json
import math

import pytest

from agents.checkpoints import CheckpointError
from agents.evaluation import (EnvFactoryError, add_normalized_scores, check_env_factory, checkpoint_reward_mode,
                               evaluation_markdown, summarize_episodes, write_evaluation_table)


def episodes():
    rows = []
    for policy, mode, utilities in (("trained:ippo", "difference", (2.0, 4.0)), ("random", "none", (1.0, 1.0)),
                                    ("search", "none", (5.0, 7.0))):
        for u in utilities:
            rows.append({"policy": policy, "reward_mode": mode, "variant": "base", "utility": u,
                         "quality": u / 2, "delay": 10.0, "energy": 100.0 * u})
    return rows


def test_summary_means_stds_and_scores_by_hand():
    summary = summarize_episodes(episodes())
    assert [r["policy"] for r in summary] == ["trained:ippo", "random", "search"]
    trained = summary[0]
    assert trained["episodes"] == 2 and trained["reward_mode"] == "difference"
    assert trained["utility"] == 3.0 and trained["utility_std"] == pytest.approx(math.sqrt(2.0))  # ddof 1
    assert trained["energy"] == 300.0 and trained["delay_std"] == 0.0
    assert add_normalized_scores(summary)
    # (3 - 1) / (6 - 1) = 0.4; random 0, search 1
    assert [r["score"] for r in summary] == pytest.approx([0.4, 0.0, 1.0])


def test_no_score_without_both_references():
    summary = summarize_episodes([r for r in episodes() if r["policy"] != "search"])
    assert not add_normalized_scores(summary) and all("score" not in r for r in summary)


def test_markdown_names_the_reward_mode_of_every_trained_row():
    summary = summarize_episodes(episodes())
    add_normalized_scores(summary)
    md = evaluation_markdown(summary)
    lines = md.splitlines()
    assert lines[0] == "| policy | reward mode | U | Q | T (s) | E (J) | score |"  # one variant: no variant column
    assert lines[2] == "| trained:ippo | difference | 3 ± 1.4 | 1.5 ± 0.71 | 10 ± 0 | 300 ± 1.4e+02 | 0.400 |"
    assert lines[3].startswith("| random | none | 1 ± 0 |")


def test_write_evaluation_table_writes_csv_and_markdown(tmp_path):
    summary = summarize_episodes(episodes() + [dict(r, variant="other") for r in episodes()])
    csv_path, md_path = write_evaluation_table(summary, tmp_path, "eval", heading="Heading", notes=["a note"])
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and rows[0]["reward_mode"] == "difference" and float(rows[0]["utility"]) == 3.0
    md = md_path.read_text()
    assert md.startswith("Heading\n\n| policy | variant | reward mode |") and md.endswith("- a note\n")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("spec, needle", [
    ("nonexistent_module_xyz:make", "cannot import module 'nonexistent_module_xyz'"),
    ("his_env:no_such_function", "module 'his_env' has no attribute 'no_such_function'"),
    ("his_env", "allowed: 'module:function'"),
    ("his_env:HIS_DEFAULT:x", "allowed: 'module:function'"),
    ("math:pi", "float object is not callable"),
])
def test_check_env_factory_names_what_is_wrong(spec, needle):
    with pytest.raises(EnvFactoryError, match=needle) as err:
        check_env_factory(spec, "--env-factory")
    assert str(err.value).startswith(f"--env-factory has value {spec!r}")


def test_check_env_factory_accepts_the_default_and_a_real_factory():
    from his_env import parallel_env

    assert check_env_factory(None) is parallel_env
    assert check_env_factory("his_env:parallel_env") is parallel_env


def test_checkpoint_reward_mode_from_the_run_record(tmp_path):
    assert checkpoint_reward_mode({"algorithm_config": {"reward_mode": "team"}}) == "team"
    with pytest.raises(CheckpointError, match="names no reward mode"):
        checkpoint_reward_mode({"algorithm_config": {}})
    # A record written before the algorithm/experiment split is read through read_run_info.
    from agents.checkpoints import RUN_INFO_FILE, read_run_info

    (tmp_path / RUN_INFO_FILE).write_text(json.dumps({"algo": "ippo", "env_config": {}, "iteration": 1,
                                                      "train_config": {"reward_mode": "individual", "seed": 3}}))
    assert checkpoint_reward_mode(read_run_info(tmp_path)) == "individual"


def test_search_with_sweeps_serves_as_the_reference():
    rows = [dict(r, policy="search:2") if r["policy"] == "search" else r for r in episodes()]
    summary = summarize_episodes(rows)
    assert add_normalized_scores(summary)
    assert [r["score"] for r in summary] == pytest.approx([0.4, 0.0, 1.0])
