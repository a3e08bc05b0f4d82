"""Disk cache of live CLIP scores, so a repeated generation costs no GPU time.

A user's score is determined by the models, its prompts (public, personal, negative), its step
split (x, y, z), the guidance scales, the resolution, the cluster seed and, with EC-Diff, the
approximation settings and the common run's call pattern up to x_n (which depends on the
cluster's largest x only through the forced real call at the end of the common run). `score_key`
hashes exactly these into a key; the cache is an SQLite file (safe for several processes, e.g.
RLlib env runners sharing one cache directory).

The cache is an optimisation, so its faults never stop a run and never go unsaid:

* a file SQLite cannot use (truncated, corrupt, not a database) or whose ``scores`` table has
  other columns is moved aside, never deleted, to ``live_scores.sqlite.unusable-<UTC time>``
  (with its ``-wal`` and ``-shm`` files), with a warning naming both paths, and a new cache is
  started in its place;
* a folder that cannot be created or written (read-only disk or mount, no permission) leaves the
  cache off, with one warning: every score is then generated;
* an error while reading or writing later (the disk turned read-only, full, or the file damaged
  under a running process) switches the cache off for this process, with one warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

from his_common.storage import unused_stamped_path

CACHE_VERSION = 1  # bump when the sampler's numerics change
FILE_NAME = "live_scores.sqlite"
COLUMNS = ("key", "score", "meta", "created")
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB: the file's content is the problem
_SIDE_FILES = ("-wal", "-shm")


def score_key(fields: Mapping[str, Any]) -> str:
    """A stable hex key of a JSON-able mapping (sorted keys, floats by repr)."""
    payload = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, separators=(",", ":"),
                         default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class ScoreCache:
    """key -> float score, in ``<directory>/live_scores.sqlite``; `enabled` is False once it is off."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()
        self.path = self.directory / FILE_NAME
        self.enabled = True
        self.moved_aside: Path | None = None  # where an unusable file went
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._switch_off(f"its folder cannot be created ({exc})")
            return
        reason, inode = self._unusable()
        if not self.enabled or (reason and not self._move_aside(reason, inode)):
            return
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL, "
                           "meta TEXT, created REAL)")
        except (sqlite3.Error, OSError) as exc:
            self._switch_off(f"it cannot be written ({type(exc).__name__}: {exc}); is the folder read-only?")

    # ------------------------------------------------------------------ faults
    def _unusable(self) -> tuple[str | None, int | None]:
        """Why the existing file cannot serve as this cache (None if it can, or is absent), and its inode."""
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            self._switch_off(f"it cannot be read ({exc})")
            return None, None
        try:
            db = sqlite3.connect(self.path, timeout=60.0)
            try:
                (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
                columns = tuple(row[1] for row in db.execute("PRAGMA table_info(scores)"))
            finally:
                db.close()
        except sqlite3.Error as exc:
            if _is_corruption(exc):
                return f"SQLite cannot read it ({exc})", inode
            return None, inode  # locked, or a folder problem: the write check below says which
        if verdict != "ok":
            return f"SQLite's integrity check fails ({verdict})", inode
        if columns and columns != COLUMNS:
            return f"its scores table has the columns {list(columns)}, not {list(COLUMNS)}", inode
        return None, inode

    def _move_aside(self, reason: str, inode: int | None) -> bool:
        """Rename the unusable file (and its -wal, -shm) out of the way; False if the cache is off."""
        target = unused_stamped_path(self.path.with_name(f"{FILE_NAME}.unusable"))
        try:
            if self.path.stat().st_ino != inode:
                return True  # another process already replaced it with a new cache
            os.rename(self.path, target)
        except FileNotFoundError:
            return True  # another process moved it first
        except OSError as exc:
            self._switch_off(f"{reason}, and it cannot be moved aside ({exc})")
            return False
        for suffix in _SIDE_FILES:
            try:
                os.rename(f"{self.path}{suffix}", f"{target}{suffix}")
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._switch_off(f"{reason}; it was moved to {str(target)!r} but its {suffix} file "
                                 f"cannot be ({exc})")
                return False
        self.moved_aside = target
        warnings.warn(f"live score cache {str(self.path)!r}: {reason}; moved it to {str(target)!r} and "
                      "started a new cache", RuntimeWarning, stacklevel=3)
        return True

    def _switch_off(self, reason: str) -> bool:
        if self.enabled:
            self.enabled = False
            warnings.warn(f"live score cache {str(self.path)!r}: {reason}; running without a score cache "
                          "(every score is generated)", RuntimeWarning, stacklevel=3)
        return False

    # ------------------------------------------------------------------ use
    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=60.0)
        try:
            with db:  # commit on success, roll back on error
                yield db
        finally:
            db.close()

    def get_many(self, keys: Iterable[str]) -> dict[str, float]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, float] = {}
        if not self.enabled:
            return found
        try:
            with self._connect() as db:
                for s in range(0, len(keys), 500):
                    chunk = keys[s:s + 500]
                    marks = ",".join("?" * len(chunk))
                    for key, score in db.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", chunk):
                        found[key] = float(score)
        except (sqlite3.Error, OSError) as exc:
            self._switch_off(f"reading failed ({type(exc).__name__}: {exc})")
            return {}
        return found

    def put_many(self, items: Iterable[tuple[str, float, Mapping[str, Any] | None]]) -> None:
        if not self.enabled:
            return
        now = time.time()
        rows = [(k, float(s), json.dumps(m, sort_keys=True, default=str) if m else None, now)
                for k, s, m in items]
        try:
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", rows)
        except (sqlite3.Error, OSError) as exc:
            self._switch_off(f"writing failed ({type(exc).__name__}: {exc})")

    def __len__(self) -> int:
        if not self.enabled:
            return 0
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
