"""A bank of pre-computed decision-point contexts, so the text pipeline stays out of the tensor step.

A decision point's context is what the text pipeline decides: the UEs' prompts (indices into the
prompt pool), their clusters (Alg. 1), the effective cluster count and each UE's public-personal
similarity phi (Eq. 5). Workload sampling, MiniLM embeddings, clustering and public prompts cost
milliseconds per decision point, so `DecisionBank.build` runs them D times ahead, by stepping an
`HISParallelEnv` of the same configuration (the very code the PettingZoo env runs), and the
vectorised env samples contexts from the bank. Resources (ES and UE SMs) and the channel
(distances, fading) are not in the bank: they are drawn afresh per step.

Banks are cached on disk (`$HIS_MARL_CACHE/vec_bank/<key>.npz`, written atomically), keyed by
everything the contexts depend on: the configuration sections that reach the text pipeline, the
prompt pool, the embedding model, the source of the simulator's modules, the size and the seed.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from his_common.storage import atomic_write_bytes, cache_root
from his_env import schemes
from his_env.config import HISConfig

BANK_FORMAT = 1  # bump when the stored layout changes
DEFAULT_BANK_SIZE = 4096
_FIELDS = ("prompt_index", "cluster", "num_clusters", "similarity")


def decision_context(env) -> dict[str, Any]:
    """The current decision point of an `HISParallelEnv` (after reset or step), as plain arrays:
    prompt_index, cluster, num_clusters, similarity, es_sm_budget, ue_sms, distance_m, downlink_rate_bps."""
    return env.decision_context()


def _source_digest() -> str:
    """Digest of the simulator's own modules (his_env/**/*.py): a code change invalidates the banks."""
    digest = hashlib.sha1()
    for path in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def context_config(config: HISConfig) -> dict[str, Any]:
    """The parts of a configuration that decide the contexts (not steps, devices, channel, reward...)."""
    scheme = schemes.resolve(config.scheme)
    plain = config.to_dict()
    return {
        "num_ues": config.num_ues, "num_clusters": config.num_clusters, "episode_length": config.episode_length,
        "workload": plain["workload"], "semantics_model": config.semantics.model, "prompts": plain["prompts"],
        "clustering": scheme.clustering, "public_prompt": scheme.public_prompt,
    }


def bank_key(config: HISConfig, pool_texts: list[str], size: int, seed: int) -> str:
    pool_digest = hashlib.sha1("\n".join(pool_texts).encode("utf-8")).hexdigest()
    blob = json.dumps({"format": BANK_FORMAT, "config": context_config(config), "pool": pool_digest,
                       "code": _source_digest(), "size": size, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:20]


@dataclass
class DecisionBank:
    """D decision-point contexts of one configuration (numpy arrays, rows are contexts)."""

    prompt_index: np.ndarray  # int64 (D, N)
    cluster: np.ndarray  # int64 (D, N)
    num_clusters: np.ndarray  # int64 (D,)
    similarity: np.ndarray  # float64 (D, N), phi_{n,m(n)}
    build_seconds: float = 0.0  # time the contexts took to compute (0 when loaded from disk)
    key: str = ""

    def __len__(self) -> int:
        return int(self.cluster.shape[0])

    @property
    def max_clusters(self) -> int:
        return int(self.num_clusters.max())

    @classmethod
    def build(cls, config: HISConfig, size: int = DEFAULT_BANK_SIZE, seed: int = 0, env=None,
              cache: bool = True) -> "DecisionBank":
        """The bank of `size` contexts for `config`, from the disk cache or computed (and cached).

        `env` (an `HISParallelEnv` of this configuration) saves building a second one.
        """
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"bank_size={size!r}; allowed: an integer >= 1")
        if env is None:
            from his_env.environment import HISParallelEnv

            env = HISParallelEnv(config.with_overrides({"oracle.kind": "fitted"}))
        key = bank_key(config, list(env.pool.texts), int(size), int(seed))
        path = cache_root() / "vec_bank" / f"{key}.npz"
        if cache:
            try:
                with np.load(path) as stored:
                    return cls(*(np.asarray(stored[f]) for f in _FIELDS), key=key)
            except (OSError, KeyError, ValueError):
                pass  # absent or unreadable: build it
        bank = cls._compute(env, int(size), int(seed))
        bank.key = key
        if cache:
            buffer = io.BytesIO()
            np.savez(buffer, **{f: getattr(bank, f) for f in _FIELDS})
            try:
                atomic_write_bytes(path, buffer.getvalue())
            except OSError:
                pass  # a read-only cache is no reason to fail: the bank is in memory
        return bank

    @classmethod
    def _compute(cls, env, size: int, seed: int) -> "DecisionBank":
        start = time.perf_counter()
        n = env.num_ues
        idle = {agent: np.zeros(2, dtype=np.int64) for agent in env.possible_agents}
        rows = {f: [] for f in _FIELDS}
        env.reset(seed=seed)
        for _ in range(size):
            context = decision_context(env)
            for f in _FIELDS:
                rows[f].append(context[f])
            env.step(idle)  # draws the next decision point
            if not env.agents:
                env.reset()
        bank = cls(np.stack(rows["prompt_index"]).astype(np.int64).reshape(size, n),
                   np.stack(rows["cluster"]).astype(np.int64).reshape(size, n),
                   np.asarray(rows["num_clusters"], dtype=np.int64),
                   np.stack(rows["similarity"]).astype(np.float64).reshape(size, n))
        bank.build_seconds = time.perf_counter() - start
        return bank
