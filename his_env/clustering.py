"""User clustering (Sec. V): Alg. 1 semantic HAC and the baselines the paper compares against.

Every strategy maps the decision point's personal prompts to labels 0..M'-1 (M' <= M clusters,
all non-empty) and is deterministic given its inputs (and the rng, for the random one):

* `semantic_clustering` — Alg. 1: start from singletons and merge, N - M times, the two clusters
  with the highest average pairwise similarity (Eq. 27), i.e. average-linkage agglomerative
  clustering on the distance 1 - phi_hat, cut at M clusters;
* `entity_clustering` — PPGFIS's task-knowledge-graph grouping: users whose prompts share a main
  entity form one group; more than M groups are merged smallest-first, fewer are split
  (largest-first) so that there are M;
* `random_clustering` — a random balanced assignment to M clusters;
* `single_cluster` — CFIS: everybody in one cluster.

`clustering_metrics` gives the two similarity metrics of Fig. 8 and Fig. 14.
"""
from __future__ import annotations

import functools

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
    sizes = membership.sum(axis=0)
    block_sums = ((similarity @ membership) * membership).sum(axis=0)
    self_pairs = np.diag(similarity) @ membership
    pairs = sizes * (sizes - 1)
    has_pairs = pairs > 0
    if not has_pairs.any():
        return 1.0
    return float(np.mean((block_sums - self_pairs)[has_pairs] / pairs[has_pairs]))


def public_personal_similarity(phi: np.ndarray, labels: np.ndarray) -> float:
    """Mean over clusters of the average phi_{n,m} of their members (Sec. V-A 2)."""
    return float(np.mean([phi[labels == m].mean() for m in np.unique(labels)]))


def clustering_objective(similarity: np.ndarray, labels: np.ndarray) -> float:
    """Objective (25a) of P_I^(2): sum_m sum_{n, n' in N_m} phi_hat_{n,n'}."""
    same = labels[:, None] == labels[None, :]
    return float(similarity[same].sum())


# The clustering methods by name: the allowed values of `scheme.clustering`.
CLUSTERING_METHODS: Registry = Registry("clustering method")
CLUSTERING_METHODS.register("semantic", semantic_clustering)
CLUSTERING_METHODS.register("entity", entity_clustering)
CLUSTERING_METHODS.register("random", random_clustering)
CLUSTERING_METHODS.register("single", single_cluster)
