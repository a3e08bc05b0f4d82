"""Disk cache of live CLIP scores, so a repeated generation costs no GPU time.

A user's score is determined by the models, its prompts (public, personal, negative), its step
split (x, y, z), the guidance scales, the resolution, the cluster seed and, with EC-Diff, the
approximation settings and the common run's call pattern up to x_n (which depends on the
cluster's largest x only through the forced real call at the end of the common run). `score_key`
hashes exactly these into a key; the cache is an SQLite file (safe for several processes, e.g.
RLlib env runners sharing one cache directory).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

CACHE_VERSION = 1  # bump when the sampler's numerics change


def score_key(fields: Mapping[str, Any]) -> str:
    """A stable hex key of a JSON-able mapping (sorted keys, floats by repr)."""
    payload = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, separators=(",", ":"),
                         default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ScoreCache:
    """key -> float score, in ``<directory>/live_scores.sqlite``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "live_scores.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL, "
                       "meta TEXT, created REAL)")

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
        with self._connect() as db:
            for s in range(0, len(keys), 500):
                chunk = keys[s:s + 500]
                marks = ",".join("?" * len(chunk))
                for key, score in db.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", chunk):
                    found[key] = float(score)
        return found

    def put_many(self, items: Iterable[tuple[str, float, Mapping[str, Any] | None]]) -> None:
        now = time.time()
        rows = [(k, float(s), json.dumps(m, sort_keys=True, default=str) if m else None, now)
                for k, s, m in items]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
