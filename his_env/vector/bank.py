"""A bank of pre-computed decision-point contexts, so the text pipeline stays out of the tensor step.

A decision point's context is what the text pipeline decides: the UEs' prompts (indices into the
prompt pool), their clusters (Alg. 1), the effective cluster count and each UE's public-personal
similarity phi (Eq. 5). Workload sampling, MiniLM embeddings, clustering and public prompts cost
milliseconds per decision point, so `DecisionBank.build` runs them D times ahead, by stepping an
`HISParallelEnv` of the same configuration (the very code the PettingZoo env runs), and the
vectorised env samples contexts from the bank. Resources (ES and UE SMs) and the channel
(distances, fading) are not in the bank: they are drawn afresh per step.

With intent persistence (`dynamics.intent`) the contexts of an episode are not independent: a UE
keeps its intent group and draws its next prompt within it, and the clusters (Alg. 1) and public
prompts (Sec. IV-B) of each slot are functions of all N prompts of that slot, which only the text
pipeline computes. Redrawing prompts per UE inside the tensor step would need that pipeline there,
so the bank stores whole episodes instead: `trajectory_length` = episode_length + 1 consecutive
rows per episode (the reset's decision point and one per step), each episode stepped by the
PettingZoo env with the intent process on. The vectorised env replays an episode from its start,
row after row: its contexts follow the very Markov chain of the PettingZoo env (intent draws
included), sampled from the bank's finite set of episodes as independent contexts are sampled
from its rows. The intent process is independent of the actions and of the other processes,
which is what makes replaying it exact.

Banks are cached on disk (`$HIS_MARL_CACHE/vec_bank/<key>.npz`, written atomically), keyed by
everything the contexts depend on: the configuration sections that reach the text pipeline, the
prompt pool, the embedding model, the source of the simulator's modules, the size and the seed.
A cached file is checked on load (`DecisionBank.problem`: its stored key, D rows of N UEs,
dtypes, phi finite in [-1, 1], cluster labels below the point's cluster count, prompt indices in
the pool); one that cannot be read or fails a check is moved aside (`<name>.unusable-<UTC time>`,
kept, one warning) and rebuilt. Where the cache folder cannot be written, the bank stays in
memory (one warning per folder).
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

from his_common.storage import cache_root, move_aside, write_cache_file
from his_env import schemes
from his_env.config import HISConfig

BANK_FORMAT = 3  # bump when the stored layout changes (2: the key is stored with the contexts; 3: trajectories)
DEFAULT_BANK_SIZE = 4096
_FIELDS = ("prompt_index", "cluster", "num_clusters", "similarity")
_PHI_ROUNDING = 1e-6  # phi of float32 unit embeddings can exceed 1 by a few ulps (1 + 2.4e-7 seen)


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
    out = {
        "num_ues": config.num_ues, "num_clusters": config.num_clusters, "episode_length": config.episode_length,
        "workload": plain["workload"], "semantics_model": config.semantics.model, "prompts": plain["prompts"],
        "clustering": scheme.clustering, "public_prompt": scheme.public_prompt,
    }
    if config.dynamics.intent.enabled:  # the only process the text side depends on
        out["intent"] = plain["dynamics"]["intent"]
    return out


def trajectory_length(config: HISConfig) -> int:
    """Rows per stored episode: episode_length + 1 with intent persistence, 1 (independent rows) without."""
    return config.episode_length + 1 if config.dynamics.intent.enabled else 1


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
    trajectory_length: int = 1  # rows per episode, replayed in order (1: independent contexts)

    @property
    def num_trajectories(self) -> int:
        return len(self) // self.trajectory_length

    def __len__(self) -> int:
        return int(self.cluster.shape[0])

    @property
    def max_clusters(self) -> int:
        return int(self.num_clusters.max())

    def problem(self, num_ues: int, size: int | None = None, pool_size: int | None = None) -> str | None:
        """Why this bank cannot serve a configuration of `num_ues` UEs (with `size` rows and prompt
        indices into a pool of `pool_size`, where given), or None when it can."""
        arrays = {f: getattr(self, f) for f in _FIELDS}
        for field, array in arrays.items():
            if not isinstance(array, np.ndarray) or array.dtype.kind not in ("f" if field == "similarity" else "iu"):
                kind = "floating-point" if field == "similarity" else "integer"
                dtype = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                return f"{field} has dtype {dtype}; allowed: {kind}"
        rows = len(self.num_clusters) if self.num_clusters.ndim == 1 else None
        if rows is None or rows < 1:
            return f"num_clusters has shape {self.num_clusters.shape}; allowed: (D,) with D >= 1"
        for field in ("prompt_index", "cluster", "similarity"):
            if arrays[field].shape != (rows, num_ues):
                return (f"{field} has shape {arrays[field].shape}; allowed: ({rows}, {num_ues}) "
                        f"(D = {rows} contexts of num_ues = {num_ues} UEs)")
        if size is not None and rows != size:
            return f"it holds {rows} contexts; {size} were asked for"
        length = self.trajectory_length
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1 or rows % length:
            return (f"trajectory_length is {length!r} for {rows} contexts; allowed: an integer >= 1 that divides "
                    f"the number of contexts (whole episodes)")
        phi = self.similarity
        bad = ~(np.abs(phi) <= 1.0 + _PHI_ROUNDING)  # NaN fails too
        if bad.any():
            row, ue = (int(i[0]) for i in np.nonzero(bad))
            return f"similarity of context {row}, ue_{ue} is {float(phi[row, ue])}; allowed: finite, in [-1, 1]"
        counts = self.num_clusters
        if not ((counts >= 1) & (counts <= num_ues)).all():
            row = int(np.argmax(~((counts >= 1) & (counts <= num_ues))))
            return f"num_clusters of context {row} is {int(counts[row])}; allowed: 1..{num_ues}"
        bad = (self.cluster < 0) | (self.cluster >= counts[:, None])
        if bad.any():
            row, ue = (int(i[0]) for i in np.nonzero(bad))
            return (f"cluster of context {row}, ue_{ue} is {int(self.cluster[row, ue])}; allowed: "
                    f"0..{int(counts[row]) - 1} (the context's {int(counts[row])} clusters)")
        if pool_size is not None:
            bad = (self.prompt_index < 0) | (self.prompt_index >= pool_size)
            if bad.any():
                row, ue = (int(i[0]) for i in np.nonzero(bad))
                return (f"prompt_index of context {row}, ue_{ue} is {int(self.prompt_index[row, ue])}; allowed: "
                        f"0..{pool_size - 1} (the prompt pool)")
        return None

    @classmethod
    def build(cls, config: HISConfig, size: int = DEFAULT_BANK_SIZE, seed: int = 0, env=None,
              cache: bool = True) -> "DecisionBank":
        """The bank of `size` contexts for `config`, from the disk cache or computed (and cached).

        `env` (an `HISParallelEnv` of this configuration) saves building a second one.
        """
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"bank_size={size!r}; allowed: an integer >= 1")
        length = trajectory_length(config)
        size = -(-int(size) // length) * length  # whole episodes
        if env is None:
            from his_env.dynamics.config import DynamicsConfig
            from his_env.environment import HISParallelEnv

            # only intent reaches the text side: the other processes are left out of the bank's env
            text_only = DynamicsConfig(intent=config.dynamics.intent).to_dict()
            env = HISParallelEnv(config.with_overrides({"oracle.kind": "fitted", "dynamics": text_only}))
        key = bank_key(config, list(env.pool.texts), int(size), int(seed))
        path = cache_root() / "vec_bank" / f"{key}.npz"
        if cache:
            stored, reason = cls._load(path, key, config.num_ues, int(size), len(env.pool.texts), length)
            if stored is not None:
                return stored
            if reason is not None:
                move_aside(path, reason)
        bank = cls._compute(env, int(size), int(seed), length)
        bank.key = key
        if cache:
            buffer = io.BytesIO()
            np.savez(buffer, key=np.array(key), trajectory_length=np.array(length),
                     **{f: getattr(bank, f) for f in _FIELDS})
            write_cache_file(path, buffer.getvalue(), "decision-bank cache")
        return bank

    @classmethod
    def _load(cls, path: Path, key: str, num_ues: int, size: int, pool_size: int,
              length: int = 1) -> tuple["DecisionBank | None", str | None]:
        """(the bank stored at `path`, None) when it passes every check; (None, None) when there is
        no file; (None, why) when the file is unusable."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                missing = [f for f in ("key", *_FIELDS) if f not in stored.files]
                if missing:
                    return None, f"no {', '.join(missing)} stored (fields: {', '.join(stored.files) or 'none'})"
                stored_key = stored["key"]
                # episodes of how many contexts (absent: independent contexts)
                stored_length = stored["trajectory_length"] if "trajectory_length" in stored.files else np.array(1)
                bank = cls(*(np.asarray(stored[f]) for f in _FIELDS), key=key)
        except FileNotFoundError:
            return None, None
        except Exception as exc:  # noqa: BLE001 - zip, zlib, npy-header and OS errors alike: the file is unusable
            return None, f"cannot be read: {type(exc).__name__}: {exc}"
        if stored_key.shape != () or stored_key.dtype.kind != "U" or str(stored_key) != key:
            return None, f"it is stored under key {stored_key.tolist()!r}, not {key!r}"
        if stored_length.shape != () or stored_length.dtype.kind not in "iu" or int(stored_length) != length:
            return None, f"it stores episodes of {stored_length.tolist()!r} contexts, not {length}"
        bank.trajectory_length = int(stored_length)
        problem = bank.problem(num_ues, size, pool_size)
        if problem is not None:
            return None, problem
        for field in _FIELDS:
            setattr(bank, field, getattr(bank, field).astype(np.float64 if field == "similarity" else np.int64,
                                                             copy=False))
        return bank, None

    @classmethod
    def _compute(cls, env, size: int, seed: int, length: int = 1) -> "DecisionBank":
        """`size` contexts: independent ones (length 1), or size / length episodes of `length`
        contexts each (the reset's and one after each step; `length` = the env's episode_length + 1)."""
        start = time.perf_counter()
        n = env.num_ues
        if length > 1 and length != env.config.episode_length + 1:
            raise ValueError(f"episodes of {length} contexts from an env of episode_length "
                             f"{env.config.episode_length}; allowed: episode_length + 1")
        idle = {agent: np.zeros(2, dtype=np.int64) for agent in env.possible_agents}
        rows = {f: [] for f in _FIELDS}
        env.reset(seed=seed)
        for row in range(size):
            context = decision_context(env)
            for f in _FIELDS:
                rows[f].append(context[f])
            if length > 1 and row % length == length - 1:
                env.reset()  # the episode's last context recorded: the next episode
                continue
            env.step(idle)  # draws the next decision point
            if not env.agents and length == 1:
                env.reset()
        bank = cls(np.stack(rows["prompt_index"]).astype(np.int64).reshape(size, n),
                   np.stack(rows["cluster"]).astype(np.int64).reshape(size, n),
                   np.asarray(rows["num_clusters"], dtype=np.int64),
                   np.stack(rows["similarity"]).astype(np.float64).reshape(size, n), trajectory_length=length)
        bank.build_seconds = time.perf_counter() - start
        return bank
