"""The live score cache under faults: a damaged or foreign file is moved aside and rebuilt, an unwritable
folder runs without cache after one warning, and a bad cache location is named.

The oracle is built with model folders that only pass its source checks: models load lazily, so
building it touches the cache and nothing else.
"""
from __future__ import annotations

import sqlite3
import warnings

import pytest

pytest.importorskip("torch")

from his_common.storage import CacheLocationError
from quality_oracle.live import cache as cache_module
from quality_oracle.live.cache import FILE_NAME, ScoreCache
from quality_oracle.live.oracle import LiveDiffusionOracle, LiveOracleError


@pytest.fixture
def model_folders(tmp_path):
    (tmp_path / "sd3").mkdir()
    (tmp_path / "sd3" / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    return {"es_model": str(tmp_path / "sd3"), "clip_model": str(tmp_path / "clip"), "device": "cpu"}


def filled_cache(folder, rows=2000) -> dict[str, float]:
    """A real cache with enough rows to span many pages; returns what it holds."""
    scores = {f"key{i:05d}": i / rows for i in range(rows)}
    cache = ScoreCache(folder)
    cache.put_many((k, v, {"pad": "x" * 40}) for k, v in scores.items())
    with sqlite3.connect(cache.path) as db:  # fold the WAL into the file, as a finished run leaves it
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return scores


def build(model_folders, folder, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        oracle = LiveDiffusionOracle({**model_folders, "cache_dir": str(folder), **options})
    return oracle, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def assert_works(cache: ScoreCache):
    assert cache.enabled
    cache.put_many([("new", 0.25, None)])
    assert cache.get_many(["new", "absent"]) == {"new": 0.25}


def assert_moved_aside(folder, original: bytes, messages: list[str], cause: str):
    kept = sorted(folder.glob(f"{FILE_NAME}.unusable-*"))
    assert [p.suffix for p in kept if not p.name.endswith(("-wal", "-shm"))] != []
    main = [p for p in kept if not p.name.endswith(("-wal", "-shm"))]
    assert len(main) == 1 and main[0].read_bytes() == original  # kept byte for byte, never deleted
    assert len(messages) == 1 and cause in messages[0] and str(main[0]) in messages[0], messages


def test_truncated_file_is_moved_aside_and_rebuilt(model_folders, tmp_path):
    folder = tmp_path / "cache"
    filled_cache(folder)
    path = folder / FILE_NAME
    original = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(original)
    oracle, messages = build(model_folders, folder)
    assert_moved_aside(folder, original, messages, "SQLite")
    assert oracle.cache.path == path and len(oracle.cache) == 0
    assert_works(oracle.cache)


def test_file_that_is_not_a_database_is_moved_aside(model_folders, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    original = b"these are not the scores you are looking for\n" * 100
    (folder / FILE_NAME).write_bytes(original)
    oracle, messages = build(model_folders, folder)
    assert_moved_aside(folder, original, messages, "file is not a database")
    assert_works(oracle.cache)


def test_wrong_schema_is_moved_aside_and_rebuilt(model_folders, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    with sqlite3.connect(folder / FILE_NAME) as db:
        db.execute("CREATE TABLE scores (k TEXT, v REAL)")
        db.execute("INSERT INTO scores VALUES ('a', 1.0)")
    db.close()
    original = (folder / FILE_NAME).read_bytes()
    oracle, messages = build(model_folders, folder)
    assert_moved_aside(folder, original, messages, "columns ['k', 'v']")
    assert_works(oracle.cache)


def test_a_sound_cache_is_kept_with_its_scores(model_folders, tmp_path):
    folder = tmp_path / "cache"
    scores = filled_cache(folder, rows=50)
    oracle, messages = build(model_folders, folder)
    assert messages == [] and not list(folder.glob("*.unusable-*"))
    assert oracle.cache.get_many(scores) == scores


def test_unwritable_folder_runs_without_cache_after_one_warning(model_folders, unwritable_folder):
    oracle, messages = build(model_folders, unwritable_folder)
    assert len(messages) == 1 and "running without a score cache" in messages[0]
    assert str(unwritable_folder) in messages[0]
    cache = oracle.cache
    assert not cache.enabled and len(cache) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        cache.put_many([("k", 0.5, None)])
        assert cache.get_many(["k"]) == {}


def test_read_only_database_switches_the_cache_off_once(tmp_path, monkeypatch):
    cache = ScoreCache(tmp_path / "cache")
    real_connect = sqlite3.connect

    class ReadOnly:
        def __init__(self, db):
            self.db = db

        def __getattr__(self, name):
            return getattr(self.db, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.db.__exit__(*exc)

        def executemany(self, *args):
            raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(cache_module.sqlite3, "connect", lambda *a, **k: ReadOnly(real_connect(*a, **k)))
    with pytest.warns(RuntimeWarning, match="writing failed .*readonly database.*running without a score cache"):
        cache.put_many([("k", 0.5, None)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.put_many([("k", 0.5, None)])
        assert cache.get_many(["k"]) == {} and not cache.enabled


def test_cache_variable_naming_a_file_is_a_clear_error(model_folders, tmp_path, monkeypatch):
    regular = tmp_path / "cache_file"
    regular.write_text("")
    monkeypatch.setenv("HIS_MARL_CACHE", str(regular))
    with pytest.raises(CacheLocationError, match=f"HIS_MARL_CACHE='{regular}'.* is a file, not a folder"):
        LiveDiffusionOracle(model_folders)
    oracle = LiveDiffusionOracle({**model_folders, "cache": False})  # no cache wanted: no cache folder needed
    assert oracle.cache is None


def test_cache_dir_option_naming_a_file_is_a_clear_error(model_folders, tmp_path):
    regular = tmp_path / "cache_file"
    regular.write_text("")
    with pytest.raises(LiveOracleError, match="oracle.live.cache_dir=.*is a file, not a folder"):
        LiveDiffusionOracle({**model_folders, "cache_dir": str(regular / "sub")})
