"""Where the project caches things on disk, and how it writes files without ever leaving half of one.

Cache root: ``$HIS_MARL_CACHE`` if set, else ``~/.cache/his_marl``; the folder is created by
whoever first writes into it. A root that is (or lies under) an existing file is refused with a
`CacheLocationError` naming the variable and the path, before anything is computed. A root that
exists but cannot be written is not an error here: every cache degrades to running without its
disk copy, with a warning.

Writes go to a temporary file in the target's folder and are moved into place with `os.replace`,
which is atomic on POSIX: a reader sees the old file or the new one, never a partial one, even
with several writers.

Cache and state files that fail their checks on load are never deleted: `move_aside` renames
them to ``<name>.unusable-<UTC time>`` (kept for inspection) so that they can be rebuilt, and
`write_cache_file` writes a cache file or, where the folder cannot be written (read-only disk,
no permission, disk full), warns once per folder and lets the caller go on with its value in
memory.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Set

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


def unused_stamped_path(base: str | Path) -> Path:
    """``<base>-<UTC time>`` (``-2``, ``-3``, ... appended if that exists): where to keep something
    set aside, never over what an earlier move kept."""
    base = Path(base)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = base.with_name(f"{base.name}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}-{stamp}-{n}")
    return target


SUPERSEDED = "superseded"


def set_aside_attempt(folder: str | Path) -> Optional[Path]:
    """Move everything in `folder` but `superseded/` (the files of an earlier attempt that did not
    finish) to `superseded/attempt-<UTC time>/` (kept, never deleted); returns that folder, or None
    when there was nothing to move."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    leftovers = sorted(p for p in folder.iterdir() if p.name != SUPERSEDED)
    if not leftovers:
        return None
    target = unused_stamped_path(folder / SUPERSEDED / "attempt")
    target.mkdir(parents=True)
    for path in leftovers:
        os.rename(path, target / path.name)
    return target


def move_aside(path: str | Path, reason: str, warn: Optional[Callable[[str], None]] = None) -> Optional[Path]:
    """Rename the unusable file `path` to ``<name>.unusable-<UTC time>`` (kept, never deleted) and
    warn once, naming both paths and `reason`. Returns the new path, or None when the file is gone
    (another process moved it) or cannot be renamed (then the warning says so and the caller
    simply does not use it)."""
    path = Path(path)
    target = unused_stamped_path(path.with_name(f"{path.name}.unusable"))
    say = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        say(f"{str(path)!r} is unusable ({reason}) and cannot be moved aside ({exc}); it is ignored")
        return None
    say(f"{str(path)!r} is unusable ({reason}); moved to {str(target)!r} (kept) and rebuilt")
    return target


_UNWRITABLE: Set[str] = set()  # cache folders already reported as unwritable in this process


def write_cache_file(path: str | Path, data: bytes | str, what: str = "cache file") -> bool:
    """Atomically write a cache file; where its folder cannot be written, warn once per folder and
    return False (the caller keeps the value in memory). A cache is an optimisation: no run stops
    because its disk copy cannot be kept."""
    path = Path(path)
    try:
        atomic_write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)
        return True
    except OSError as exc:
        folder = str(path.parent)
        if folder not in _UNWRITABLE:
            _UNWRITABLE.add(folder)
            warnings.warn(f"cannot write the {what} {str(path)!r} ({type(exc).__name__}: {exc}); the cache stays in "
                          f"memory for this process (is {folder!r} read-only?)", RuntimeWarning, stacklevel=2)
        return False
