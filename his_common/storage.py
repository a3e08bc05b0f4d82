"""Where the project caches things on disk, and how it writes files without ever leaving half of one.

Cache root: ``$HIS_MARL_CACHE`` if set, else ``~/.cache/his_marl``. Writes go to a temporary file
in the target's folder and are moved into place with `os.replace`, which is atomic on POSIX: a
reader sees the old file or the new one, never a partial one, even with several writers.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def cache_root() -> Path:
    return Path(os.environ.get("HIS_MARL_CACHE") or Path.home() / ".cache" / "his_marl")


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
