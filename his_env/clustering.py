"""User clustering (Sec. V): Alg. 1 semantic HAC and the baselines the paper compares against.

Every strategy maps the decision point's personal prompts to labels 0..M'-1 (M' <= M clusters,
all non-empty) and is deterministic given its inputs (and the rng, for the random one). The env
picks one by name from `CLUSTERING_METHODS` (`scheme.clustering`), each called as
`method(prompts: DecisionPrompts, num_clusters, rng) -> labels`:

* `semantic_clustering` — Alg. 1: start from singletons and merge, N - M times, the two clusters
  with the highest average pairwise similarity (Eq. 27), i.e. average-linkage agglomerative
  clustering on the distance 1 - phi_hat, cut at M clusters;
* `entity_clustering` — PPGFIS's task-knowledge-graph grouping: users whose prompts share a main
  entity form one group; more than M groups are merged smallest-first, fewer are split
  (largest-first) so that there are M;
* `random_clustering` — a random balanced assignment to M clusters;
* `single_cluster` — CFIS: everybody in one cluster.

`intra_cluster_similarity` and `public_personal_similarity` are the two similarity metrics of
Fig. 8 and Fig. 14.

Many UEs of a decision point often hold the same prompt (N = 1,000 UEs draw from a few hundred
prompts). Identical prompts are at distance 0, so average linkage merges them first, and from
then on a group of k copies acts as one point of weight k (Eq. 27 averages over all pairs). The
semantic clustering therefore runs average linkage on the distinct prompts with their
multiplicities as initial cluster sizes, which gives the same clusters as on all N UEs at a
fraction of the cost.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.cluster.hierarchy import linkage

from his_common.registry import Registry


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in order of their first member."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


def semantic_clustering(similarity: np.ndarray, num_clusters: int) -> np.ndarray:
    """Alg. 1 on the prompt similarity matrix phi_hat (N, N)."""
    n = similarity.shape[0]
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters={num_clusters}; allowed: 1..{n} (the number of UEs)")
    if num_clusters == n:
        return np.arange(n, dtype=np.int64)
    rows, cols = _upper_triangle(n)
    condensed = 1.0 - similarity[rows, cols]  # average of (1 - phi) = 1 - average of phi (Eq. 27)
    merges = _average_linkage(condensed, n)[: n - num_clusters, :2].astype(np.int64).tolist()
    # Replay the first N - M merges: node n + i is the cluster made by merge i.
    members = {leaf: [leaf] for leaf in range(n)}
    for i, (a, b) in enumerate(merges):
        members[n + i] = members.pop(a) + members.pop(b)
    labels = np.empty(n, dtype=np.int64)
    for label, leaves in enumerate(sorted(members.values(), key=min)):
        labels[leaves] = label
    return labels


def _average_linkage(condensed: np.ndarray, n: int) -> np.ndarray:
    """scipy's average-linkage dendrogram; calls its compiled core directly when it can, since the
    public wrapper's input checks cost more than the clustering itself at N = 50."""
    if _nn_chain is not None:
        return _nn_chain(np.ascontiguousarray(condensed, dtype=np.float64), n, _AVERAGE)
    return linkage(condensed, method="average")


try:  # the compiled routine behind scipy.cluster.hierarchy.linkage(method="average")
    from scipy.cluster import _hierarchy
    from scipy.cluster.hierarchy import _LINKAGE_METHODS

    _nn_chain, _AVERAGE = _hierarchy.nn_chain, _LINKAGE_METHODS["average"]
except (ImportError, AttributeError, KeyError):  # a future scipy: fall back to the public function
    _nn_chain, _AVERAGE = None, None


def semantic_clustering_weighted(similarity: np.ndarray, weights: np.ndarray,
                                 num_clusters: int) -> np.ndarray:
    """Alg. 1 on U distinct prompts, prompt u standing for `weights[u]` UEs with that prompt:
    average linkage (Eq. 27) with initial cluster sizes `weights`, cut at M clusters. Labels per
    distinct prompt, clusters numbered in order of their first member."""
    weights = np.asarray(weights, dtype=np.float64)
    u = len(weights)
    if not 1 <= num_clusters <= u:
        raise ValueError(f"num_clusters={num_clusters}; allowed: 1..{u} (the number of distinct prompts)")
    if np.any(weights <= 0):
        raise ValueError("weights must be > 0")
    left, right, height = _weighted_average_nn_chain(similarity, weights)
    parent = np.arange(u)

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for k in np.argsort(height, kind="mergesort")[: u - num_clusters]:  # the first U - M merges
        parent[root(left[k])] = root(right[k])
    return _canonical(np.array([root(a) for a in range(u)]))


def _weighted_average_nn_chain(similarity: np.ndarray, weights: np.ndarray):
    """The nearest-neighbour chain algorithm of scipy's `nn_chain` (same tie rules: the previous
    chain element wins a tie, then the lowest index), on the distance 1 - phi_hat, with the
    average-linkage update d(k, x+y) = (n_x d(k, x) + n_y d(k, y)) / (n_x + n_y) from initial
    sizes `weights`. Returns the U - 1 merges as (left, right, height), unsorted; each merge
    names one original point of each merged cluster."""
    u = len(weights)
    distance = 1.0 - np.asarray(similarity, dtype=np.float64)
    np.fill_diagonal(distance, np.inf)
    size = weights.astype(np.float64).copy()
    left, right, height = np.empty(u - 1, np.int64), np.empty(u - 1, np.int64), np.empty(u - 1)
    chain: list[int] = []
    first_active = 0
    for k in range(u - 1):
        if not chain:
            while size[first_active] == 0:
                first_active += 1
            chain.append(first_active)
        while True:
            x = chain[-1]
            row = distance[x]
            y = int(row.argmin())
            if len(chain) > 1 and row[chain[-2]] <= row[y]:
                y = chain[-2]
                break
            chain.append(y)
        del chain[-2:]
        x, y = (x, y) if x < y else (y, x)
        nx, ny = size[x], size[y]
        height[k] = distance[x, y]
        merged = (nx * distance[x] + ny * distance[y]) / (nx + ny)
        merged[x] = merged[y] = np.inf
        size[x], size[y] = 0.0, nx + ny
        distance[x, :] = np.inf
        distance[:, x] = np.inf
        distance[y, :] = merged
        distance[:, y] = merged
        left[k], right[k] = x, y
    return left, right, height


@functools.lru_cache(maxsize=16)
def _upper_triangle(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def entity_clustering(entities: list[str] | np.ndarray, num_clusters: int) -> np.ndarray:
    """Group users by their prompt's main entity, then merge or split groups to get M clusters."""
    names, labels = np.unique(np.asarray(entities), return_inverse=True)
    n = len(labels)
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters={num_clusters}; allowed: 1..{n} (the number of UEs)")
    groups = [list(np.flatnonzero(labels == g)) for g in range(len(names))]
    while len(groups) > num_clusters:  # merge the two smallest groups
        groups.sort(key=lambda g: (len(g), g[0]))
        groups = [groups[0] + groups[1]] + groups[2:]
    while len(groups) < num_clusters:  # split the largest group in two halves
        groups.sort(key=lambda g: (-len(g), g[0]))
        big = sorted(groups[0])
        groups = [big[: len(big) // 2], big[len(big) // 2:]] + groups[1:]
    out = np.empty(n, dtype=np.int64)
    for label, members in enumerate(groups):
        out[members] = label
    return _canonical(out)


def random_clustering(num_ues: int, num_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random assignment with cluster sizes as equal as possible."""
    if not 1 <= num_clusters <= num_ues:
        raise ValueError(f"num_clusters={num_clusters}; allowed: 1..{num_ues} (the number of UEs)")
    return _canonical(rng.permutation(np.arange(num_ues) % num_clusters))


def single_cluster(num_ues: int) -> np.ndarray:
    return np.zeros(num_ues, dtype=np.int64)


def intra_cluster_similarity(similarity: np.ndarray, labels: np.ndarray) -> float:
    """Mean over clusters of the average pairwise similarity of distinct members (Sec. V-A 1).

    Singleton clusters have no pairs and are left out (1.0 if every cluster is a singleton).
    """
    membership = np.eye(int(labels.max()) + 1)[labels]
    block_sums = ((similarity @ membership) * membership).sum(axis=0)
    self_pairs = np.diag(similarity) @ membership
    return _mean_pair_similarity(block_sums - self_pairs, membership.sum(axis=0))


def intra_cluster_similarity_of_embeddings(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """`intra_cluster_similarity` of the Gram matrix of `embeddings` (N, d), without forming it:
    the similarities of the pairs of cluster m sum to |sum of its embeddings|^2 minus the sum of
    their squared norms, O(N d) instead of O(N^2 d)."""
    labels = np.asarray(labels, dtype=np.int64)
    embeddings = np.asarray(embeddings)
    num_clusters = int(labels.max()) + 1
    membership = np.zeros((num_clusters, len(labels)), dtype=embeddings.dtype)
    membership[labels, np.arange(len(labels))] = 1
    sums = (membership @ embeddings).astype(np.float64)
    norms = np.bincount(labels, weights=np.einsum("nd,nd->n", embeddings, embeddings),
                        minlength=num_clusters)
    return _mean_pair_similarity(np.einsum("md,md->m", sums, sums) - norms,
                                 np.bincount(labels, minlength=num_clusters))


def _mean_pair_similarity(pair_sums: np.ndarray, sizes: np.ndarray) -> float:
    """Mean over clusters with at least two members of (sum over ordered pairs) / |N_m|(|N_m| - 1)."""
    pairs = sizes * (sizes - 1)
    has_pairs = pairs > 0
    if not has_pairs.any():
        return 1.0
    return float(np.mean(pair_sums[has_pairs] / pairs[has_pairs]))


def public_personal_similarity(phi: np.ndarray, labels: np.ndarray) -> float:
    """Mean over clusters of the average phi_{n,m} of their members (Sec. V-A 2)."""
    return float(np.mean([phi[labels == m].mean() for m in np.unique(labels)]))


def clustering_objective(similarity: np.ndarray, labels: np.ndarray) -> float:
    """Objective (25a) of P_I^(2): sum_m sum_{n, n' in N_m} phi_hat_{n,n'}."""
    same = labels[:, None] == labels[None, :]
    return float(similarity[same].sum())


# ---------------------------------------------------------------------------------------------
# The methods by name
# ---------------------------------------------------------------------------------------------
@dataclass
class DecisionPrompts:
    """The personal prompts of one decision point, as indices into pool-level tables.

    `index` (N,): pool index of each UE's prompt; `embeddings` (P, d): unit-norm embeddings of
    the pool; `entities` (P,): main entity of each pool prompt; `pool_similarity` (P, P) or None:
    the pool's cosine similarities, if precomputed (phi_hat is then a lookup).
    """

    index: np.ndarray
    embeddings: np.ndarray
    entities: np.ndarray
    pool_similarity: np.ndarray | None = None
    _distinct: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def num_ues(self) -> int:
        return len(self.index)

    def distinct(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distinct pool indices, position of each UE's prompt among them, multiplicities)."""
        if self._distinct is None:
            self._distinct = np.unique(self.index, return_inverse=True, return_counts=True)
        return self._distinct

    def similarity(self, rows: np.ndarray) -> np.ndarray:
        """phi_hat between the pool prompts `rows` (Eq. 5)."""
        if self.pool_similarity is not None:
            return self.pool_similarity.take(rows, axis=0).take(rows, axis=1)
        vectors = self.embeddings[rows]
        return vectors @ vectors.T


ClusteringMethod = Callable[[DecisionPrompts, int, np.random.Generator], np.ndarray]
CLUSTERING_METHODS: Registry[ClusteringMethod] = Registry("clustering method")

# Average linkage on U distinct prompts runs in Python (~10 us a merge); scipy's compiled version
# on all N UEs costs ~25 ns x N^2. The distinct-prompt path is taken where it is cheaper.
_PYTHON_MERGE_COST_RATIO = 400


@CLUSTERING_METHODS.register("semantic")
def semantic(prompts: DecisionPrompts, num_clusters: int, rng=None) -> np.ndarray:
    """Alg. 1 on the decision point's prompts (on the distinct ones, weighted, where cheaper)."""
    n = prompts.num_ues
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters={num_clusters}; allowed: 1..{n} (the number of UEs)")
    unique, inverse, counts = prompts.distinct()
    u = len(unique)
    if num_clusters <= u < n and u * _PYTHON_MERGE_COST_RATIO < n * n:
        labels = semantic_clustering_weighted(prompts.similarity(unique), counts, num_clusters)
        return _canonical(labels[inverse])
    return semantic_clustering(prompts.similarity(prompts.index), num_clusters)


@CLUSTERING_METHODS.register("entity")
def entity(prompts: DecisionPrompts, num_clusters: int, rng=None) -> np.ndarray:
    """PPGFIS: by the main entity of each UE's prompt."""
    return entity_clustering(np.asarray(prompts.entities)[prompts.index], num_clusters)


@CLUSTERING_METHODS.register("random")
def random(prompts: DecisionPrompts, num_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """A random balanced assignment."""
    return random_clustering(prompts.num_ues, num_clusters, rng)


@CLUSTERING_METHODS.register("single")
def single(prompts: DecisionPrompts, num_clusters: int = 1, rng=None) -> np.ndarray:
    """CFIS: one cluster."""
    return single_cluster(prompts.num_ues)
