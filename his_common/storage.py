"""Where the project caches things on disk, and how it writes files without ever leaving half of one.

Cache root: ``$HIS_MARL_CACHE`` if set, else ``~/.cache/his_marl``; the folder is created by
whoever first writes into it. A root that is (or lies under) an existing file is refused with a
`CacheLocationError` naming the variable and the path, before anything is computed. A root that
exists but cannot be written is not an error here: every cache degrades to running without its
disk copy, with a warning.

Writes go to a temporary file in the target's folder and are moved into place with `os.replace`,
which is atomic on POSIX: a reader sees the old file or the new one, never a partial one, even
with several writers.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "HIS_MARL_CACHE"

_UMASK = os.umask(0o022)
os.umask(_UMASK)


class CacheLocationError(NotADirectoryError):
    """The cache root names a file (or a path under one), so no cache folder can exist there."""


def cache_root() -> Path:
    """``$HIS_MARL_CACHE`` if set, else ``~/.cache/his_marl``; refused if it is, or lies under, a file."""
    value = os.environ.get(CACHE_ENV)
    root = Path(value).expanduser() if value else Path.home() / ".cache" / "his_marl"
    source = f"{CACHE_ENV}={value!r}" if value else f"the default cache folder (no {CACHE_ENV} set)"
    for folder in (root, *root.parents):  # the nearest part of the path that exists must be a folder
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == root else f"lies under {str(folder)!r}, which is a file"
                raise CacheLocationError(
                    f"{source}: {str(root)!r} {where}, not a folder; set {CACHE_ENV} to a folder "
                    f"(created if missing), or unset it to use ~/.cache/his_marl")
            break
    return root


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))
