"""Atomic writes (the content lands whole, no temporary file is left, permissions follow the umask) and the cache root."""
import os
import re
import stat
from pathlib import Path

import pytest

from his_common import storage
from his_common.storage import (CacheLocationError, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                cache_root, move_aside, write_cache_file)


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "result.csv"
    atomic_write_text(target, "a,b\n1,2\n")
    atomic_write_text(target, "a,b\n3,4\n")
    assert target.read_text() == "a,b\n3,4\n"
    assert os.listdir(target.parent) == ["result.csv"]
    atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "x.json").read_text().startswith('{\n "a"')


def test_permissions_follow_the_umask_not_mkstemp(tmp_path):
    path = tmp_path / "metrics.csv"
    atomic_write_bytes(path, b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_current_umask()


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "keep.txt"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["keep.txt"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- the cache root


def test_cache_root_follows_the_variable_and_does_not_create_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HIS_MARL_CACHE", str(tmp_path / "new" / "cache"))
    assert cache_root() == tmp_path / "new" / "cache"
    assert not (tmp_path / "new").exists()
    monkeypatch.delenv("HIS_MARL_CACHE")
    assert cache_root() == Path.home() / ".cache" / "his_marl"


@pytest.mark.parametrize("below", ["", "sub/folder"])
def test_cache_root_at_or_under_a_file_names_the_variable_and_the_path(tmp_path, monkeypatch, below):
    regular = tmp_path / "a_file"
    regular.write_text("not a folder")
    value = str(regular / below) if below else str(regular)
    monkeypatch.setenv("HIS_MARL_CACHE", value)
    with pytest.raises(CacheLocationError, match=re.escape(f"HIS_MARL_CACHE={value!r}")) as err:
        cache_root()
    assert str(regular) in str(err.value) and "not a folder" in str(err.value)
    assert isinstance(err.value, OSError)



def test_move_aside_keeps_the_file_under_a_new_name_and_says_where(tmp_path):
    path = tmp_path / "bank.npz"
    path.write_bytes(b"\x00broken")
    with pytest.warns(RuntimeWarning, match="bank.npz.*unusable \\(truncated\\).*moved to .*bank.npz.unusable-"):
        first = move_aside(path, "truncated")
    assert not path.exists() and first.read_bytes() == b"\x00broken"
    assert re.fullmatch(r"bank\.npz\.unusable-\d{8}T\d{6}Z", first.name)
    path.write_bytes(b"again")  # a second unusable file in the same second gets its own name
    with pytest.warns(RuntimeWarning):
        second = move_aside(path, "truncated")
    assert second != first and first.read_bytes() == b"\x00broken" and second.read_bytes() == b"again"


def test_move_aside_of_a_file_already_gone_is_none(tmp_path):
    assert move_aside(tmp_path / "absent.json", "x", warn=lambda m: pytest.fail(m)) is None


def test_write_cache_file_degrades_to_memory_with_one_warning_per_folder(tmp_path, monkeypatch):
    assert write_cache_file(tmp_path / "a" / "x.json", "{}") and (tmp_path / "a" / "x.json").read_text() == "{}"

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(storage, "atomic_write_bytes", refuse)
    monkeypatch.setattr(storage, "_UNWRITABLE", set())
    with pytest.warns(RuntimeWarning, match="cannot write the references .*PermissionError.*stays in memory") as seen:
        assert write_cache_file(tmp_path / "ro" / "r1.json", b"1", "references") is False
        assert write_cache_file(tmp_path / "ro" / "r2.json", b"2", "references") is False
    assert len(seen) == 1 and not (tmp_path / "ro").exists()
