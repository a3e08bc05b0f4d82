"""Tests of his_env.workload: the template pool, the shipped and user prompt files, and the
distribution and speed of the per-decision-point prompt draw."""
from __future__ import annotations

import csv
import itertools
import json
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare

from his_env.workload import REFERENCE_CSV, PromptPool, Workload, build_pool


@pytest.fixture(scope="module")
def pool():
    return PromptPool.from_templates()


# ----------------------------------------------------------------------------- templates
def test_template_pool_is_large_distinct_and_covers_many_subjects(pool):
    assert len(pool) == 1200
    assert len(set(pool.texts)) == len(pool.texts) >= 1000
    assert pool.num_subjects >= 8
    counts = np.bincount(pool.subject, minlength=pool.num_subjects)
    assert counts.min() >= 100 and counts.max() - counts.min() <= 1
    for text, s, entity in zip(pool.texts, pool.subject, pool.entity):
        name = pool.subject_names[s]
        assert entity == name
        assert f" {name} " in f" {text} ".replace(",", " ")  # the subject noun is in the prompt
        assert text[0].isupper() and text.endswith(".")


def test_template_pool_is_deterministic_and_seeded(pool):
    assert PromptPool.from_templates().texts == pool.texts
    other = PromptPool.from_templates(seed=1)
    assert other.texts != pool.texts
    assert len(set(other.texts) & set(pool.texts)) < 100
    small = PromptPool.from_templates(size=37, subjects=["cat", "car"])
    assert len(small) == 37 and small.subject_names == ("cat", "car")
    assert np.bincount(small.subject).tolist() == [19, 18]


def test_same_subject_prompts_differ(pool):
    cats = [pool.texts[i] for i in pool.indices_of("cat")]
    for slot_words in (["white", "black", "gray", "orange"], ["windowsill", "garden", "library"],
                       ["sitting", "sleeping", "playing"]):
        assert all(sum(w in t for t in cats) >= 5 for w in slot_words)


def test_template_errors():
    with pytest.raises(ValueError, match="unicorn"):
        PromptPool.from_templates(subjects=["cat", "unicorn"])
    with pytest.raises(ValueError, match="pool_size"):
        PromptPool.from_templates(size=3)
    with pytest.raises(ValueError, match="distinct"):
        PromptPool.from_templates(size=10_000_000, subjects=["castle"])


def test_pool_is_immutable(pool):
    with pytest.raises((AttributeError, TypeError)):
        pool.texts = ()
    with pytest.raises(ValueError):
        pool.subject[0] = 3
    with pytest.raises(ValueError):
        pool.indices_of("cat")[0] = 0
    assert isinstance(pool.texts, tuple)


# ----------------------------------------------------------------------------- reference
def test_reference_pool_matches_the_csv():
    with open(REFERENCE_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    ref = PromptPool.from_reference()
    assert list(ref.texts) == [r["personal_prompt"] for r in rows]
    assert [ref.subject_names[s] for s in ref.subject] == [r["group"] for r in rows]
    assert set(ref.subject_names) == {"cat", "dog", "tiger", "panda"}
    assert sum(n is not None for n in ref.negative) == sum(bool(r["negative_prompt"]) for r in rows)
    assert sum(p is not None for p in ref.public) == 20
    sharing = PromptPool.from_reference(source="inference_sharing")
    assert len(sharing) == 20 and all(sharing.public)
    with pytest.raises(ValueError, match="inference_sharing"):
        PromptPool.from_reference(source="nope")


# ----------------------------------------------------------------------------- user files
def test_txt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\nA red fox in the snow.\n\n  Two dogs play on a beach.  \n"
                    "   # indented comment\nA castle on a hill.\n")
    got = PromptPool.from_file(path)
    assert got.texts == ("A red fox in the snow.", "Two dogs play on a beach.", "A castle on a hill.")
    assert got.entity == ("fox", "dog", "castle")
    assert sorted(got.subject_names) == ["castle", "dog", "fox"]  # subject = main entity


def test_csv_file_with_and_without_group(tmp_path):
    grouped = tmp_path / "g.csv"
    grouped.write_text("prompt,group\nA red fox in the snow.,wild\nA cat on a sofa.,pets\n"
                       "A dog on a sofa.,pets\n")
    got = PromptPool.from_file(grouped)
    assert [got.subject_names[s] for s in got.subject] == ["wild", "pets", "pets"]
    assert got.entity == ("fox", "cat", "dog")
    plain = tmp_path / "p.csv"
    plain.write_text('id,personal_prompt\n1,"A cat, sleeping."\n2,A horse galloping.\n')
    got = PromptPool.from_file(plain)
    assert got.texts == ("A cat, sleeping.", "A horse galloping.")
    assert [got.subject_names[s] for s in got.subject] == ["cat", "horse"]


def test_jsonl_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "A fox.", "subject": "animals"}) + "\n\n"
                    + json.dumps({"prompt": "A car.", "subject": "vehicles"}) + "\n")
    got = PromptPool.from_file(path)
    assert [got.subject_names[s] for s in got.subject] == ["animals", "vehicles"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "", "holds no prompts"),
    ("comments.txt", "# only\n\n# comments\n", "holds no prompts"),
    ("empty.csv", "", "is empty"),
    ("header.csv", "prompt,group\n", "no rows"),
    ("cols.csv", "text,label\nA cat.,x\n", r"columns found: \['text', 'label'\]"),
    ("bad.jsonl", '{"prompt": "A cat."}\n{"prompt": oops}\n', "line 2"),
    ("nokey.jsonl", '{"text": "A cat."}\n', "line 1 has no \"prompt\""),
    ("prompts.yaml", "- A cat.\n", "unsupported"),
])
def test_file_errors_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        PromptPool.from_file(path)
    assert name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        PromptPool.from_file(tmp_path / "nothere.txt")


def test_build_pool_sources(tmp_path):
    assert len(build_pool("templates", pool_size=50, seed=3)) == 50
    assert build_pool("reference", subjects=["cat"]).subject_names == ("cat",)
    path = tmp_path / "p.txt"
    path.write_text("A cat.\nA dog.\n")
    assert len(build_pool("file", path=str(path))) == 2
    with pytest.raises(ValueError, match="workload.path"):
        build_pool("file")
    with pytest.raises(ValueError, match="templates"):
        build_pool("internet")
    with pytest.raises(ValueError, match="unicorn"):
        build_pool("reference", subjects=["unicorn"])


# ----------------------------------------------------------------------------- sampling
def test_sample_distribution_matches_the_intent_group_model(pool):
    workload = Workload(pool, num_intent_groups=3)
    rng = np.random.default_rng(123)
    draws, num_ues, S = 6000, 60, pool.num_subjects
    triples, per_draw = Counter(), []
    cat_prompts = Counter()
    cat_indices = set(pool.indices_of("cat").tolist())
    for _ in range(draws):
        prompts = workload.sample(num_ues, rng)
        assert prompts.shape == (num_ues,) and prompts.dtype.kind == "i"
        subjects = np.unique(pool.subject[prompts])
        assert len(subjects) == 3  # P(an active group is missed) = 3 (2/3)^60 ~ 1e-10
        triples[tuple(subjects)] += 1
        per_draw.append(np.bincount(pool.subject[prompts], minlength=S))
        cat_prompts.update(p for p in prompts.tolist() if p in cat_indices)
    # each draw activates a uniform 3-subset of the S subjects: C(10, 3) = 120 equally likely
    all_triples = list(itertools.combinations(range(S), 3))
    assert chisquare([triples[t] for t in all_triples]).pvalue > 1e-3
    # so each subject gets N/S UEs per draw on average (draws are iid; UEs within one are not)
    per_draw = np.array(per_draw)
    standard_error = per_draw.std(axis=0, ddof=1) / np.sqrt(draws)
    assert np.all(np.abs(per_draw.mean(axis=0) - num_ues / S) < 4 * standard_error)
    # and within a subject, prompts are uniform
    assert chisquare([cat_prompts[i] for i in sorted(cat_indices)]).pvalue > 1e-3


def test_ue_choice_among_active_groups_is_uniform(pool):
    workload = Workload(pool, num_intent_groups=3)
    rng = np.random.default_rng(7)
    largest = []
    for _ in range(3000):
        prompts = workload.sample(30, rng)
        largest.append(np.bincount(pool.subject[prompts]).max())
    # the counts of the three active groups are Multinomial(30; 1/3, 1/3, 1/3); the mean of
    # the largest one, by exact enumeration:
    from math import comb
    exact = sum(comb(30, a) * comb(30 - a, b) * max(a, b, 30 - a - b)
                for a in range(31) for b in range(31 - a)) / 3 ** 30
    assert abs(np.mean(largest) - exact) < 0.15  # ~4 standard errors


def test_fewer_subjects_than_groups_uses_all(tmp_path):
    two = PromptPool.from_templates(size=20, subjects=["cat", "dog"])
    workload = Workload(two, num_intent_groups=3)
    assert workload.num_intent_groups == 2
    rng = np.random.default_rng(0)
    assert all(len(np.unique(two.subject[workload.sample(40, rng)])) == 2 for _ in range(50))
    one = Workload(two, num_intent_groups=1)
    assert all(len(np.unique(two.subject[one.sample(40, rng)])) == 1 for _ in range(50))
    with pytest.raises(ValueError):
        Workload(two, num_intent_groups=0)


def test_sample_is_reproducible(pool):
    # its speed is a benchmark line (benchmarks/bench_prompts.py: workload.sample(50)), not a timed test
    workload = Workload(pool)
    a = [workload.sample(50, np.random.default_rng(5)) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
