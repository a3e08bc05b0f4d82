"""Alg. 1 against a literal implementation and brute force; the baselines' invariants."""
import itertools

import numpy as np
import pytest

from his_env import clustering


def literal_alg1(similarity, num_clusters):
    """Alg. 1 as written: merge the two clusters of highest Eq. (27) similarity, N - M times."""
    clusters = [[n] for n in range(len(similarity))]
    while len(clusters) > num_clusters:
        best, pair = -np.inf, None
        for a, b in itertools.combinations(range(len(clusters)), 2):
            ell = np.mean([similarity[i, j] for i in clusters[a] for j in clusters[b]])  # Eq. (27)
            if ell > best:
                best, pair = ell, (a, b)
        a, b = pair
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    return clusters


def partitions(n, m):
    """All partitions of range(n) into exactly m non-empty labelled-canonically groups."""
    for labels in itertools.product(range(m), repeat=n):
        if len(set(labels)) == m and all(labels.index(k) < labels.index(k + 1) for k in range(m - 1)):
            yield np.array(labels)


def as_sets(labels):
    return {frozenset(np.flatnonzero(labels == m)) for m in np.unique(labels)}


def random_similarity(rng, n, groups=None):
    vectors = rng.normal(size=(n, 8))
    if groups is not None:
        centres = rng.normal(size=(groups, 8)) * 4
        vectors += centres[np.arange(n) % groups]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors @ vectors.T


@pytest.mark.parametrize("seed", range(10))
def test_semantic_clustering_is_alg1(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 14))
    m = int(rng.integers(1, n + 1))
    similarity = random_similarity(rng, n)
    ours = clustering.semantic_clustering(similarity, m)
    assert as_sets(ours) == {frozenset(c) for c in literal_alg1(similarity, m)}
    assert len(np.unique(ours)) == m


@pytest.mark.parametrize("seed", range(5))
def test_objective_and_separated_groups_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = 8, 3
    similarity = random_similarity(rng, n, groups=3)
    labels = clustering.semantic_clustering(similarity, m)
    # the objective (25a) summed by hand
    by_hand = sum(similarity[i, j] for i in range(n) for j in range(n) if labels[i] == labels[j])
    assert clustering.clustering_objective(similarity, labels) == pytest.approx(by_hand)
    # on well-separated intents, Alg. 1 finds the partition of highest average association
    # sum_m (sum_{n, n' in N_m} phi_hat) / |N_m| over all partitions into M clusters
    def association(lab):
        return sum(similarity[np.ix_(lab == k, lab == k)].sum() / (lab == k).sum() for k in range(m))

    best = max(partitions(n, m), key=association)
    assert as_sets(labels) == as_sets(best)


def test_entity_clustering_groups_by_entity_and_reaches_m():
    entities = ["cat", "dog", "cat", "car", "dog", "cat", "tree"]
    labels = clustering.entity_clustering(entities, 4)
    assert as_sets(labels) == {frozenset({0, 2, 5}), frozenset({1, 4}), frozenset({3}), frozenset({6})}
    merged = clustering.entity_clustering(entities, 3)  # the two smallest groups (car, tree) merge
    assert as_sets(merged) == {frozenset({0, 2, 5}), frozenset({1, 4}), frozenset({3, 6})}
    split = clustering.entity_clustering(["cat"] * 6, 2)
    assert sorted(np.bincount(split)) == [3, 3]


def test_random_and_single_clusterings():
    labels = clustering.random_clustering(50, 3, np.random.default_rng(0))
    assert sorted(np.bincount(labels)) == [16, 17, 17]
    np.testing.assert_array_equal(clustering.single_cluster(5), np.zeros(5))


def test_similarity_metrics_hand_computed():
    similarity = np.array([[1.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 1.0]])
    labels = np.array([0, 0, 1])
    assert clustering.intra_cluster_similarity(similarity, labels) == pytest.approx(0.5)  # singleton left out
    phi = np.array([0.6, 0.4, 0.9])
    assert clustering.public_personal_similarity(phi, labels) == pytest.approx((0.5 + 0.9) / 2)


# ----------------------------------------------------------------------------- repeated prompts
def scipy_average_linkage_labels(similarity, m):
    """Independent: scipy's public linkage + cut_tree on all UEs."""
    from scipy.cluster.hierarchy import cut_tree, linkage
    rows, cols = np.triu_indices(len(similarity), k=1)
    tree = linkage(np.maximum(1.0 - similarity[rows, cols], 0.0), method="average")
    return cut_tree(tree, n_clusters=m).ravel()


@pytest.mark.parametrize("seed", range(40))
def test_semantic_method_on_repeated_prompts_equals_average_linkage_on_all_ues(seed):
    rng = np.random.default_rng(seed)
    pool_size, n = int(rng.integers(3, 40)), int(rng.integers(2, 160))
    embeddings = rng.normal(size=(pool_size, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    index = rng.integers(0, pool_size, n)  # many UEs share a prompt
    m = int(rng.integers(1, len(np.unique(index)) + 1))
    prompts = clustering.DecisionPrompts(index, embeddings, np.array(["x"] * pool_size))
    similarity = embeddings[index] @ embeddings[index].T
    expected = scipy_average_linkage_labels(similarity, m)
    assert as_sets(clustering.CLUSTERING_METHODS["semantic"](prompts, m, None)) == as_sets(expected)
    unique, inverse, counts = prompts.distinct()
    weighted = clustering.semantic_clustering_weighted(prompts.similarity(unique), counts, m)
    assert as_sets(weighted[inverse]) == as_sets(expected)


def test_weighted_clustering_on_a_hand_made_example():
    # d(A,B) = 0.1 merges first. Then d({A,B}, C) = (w_A 0.2 + w_B 0.5) / (w_A + w_B) against
    # d(C, D) = 0.3: 0.35 with unit weights (C joins D), 0.275 with w_A = 3 (C joins A and B).
    distance = np.array([[0.0, 0.1, 0.2, 0.9], [0.1, 0.0, 0.5, 0.9],
                         [0.2, 0.5, 0.0, 0.3], [0.9, 0.9, 0.3, 0.0]])
    similarity = 1.0 - distance
    unit = clustering.semantic_clustering_weighted(similarity, np.array([1, 1, 1, 1]), 2)
    assert as_sets(unit) == {frozenset({0, 1}), frozenset({2, 3})}
    heavy = clustering.semantic_clustering_weighted(similarity, np.array([3, 1, 1, 1]), 2)
    assert as_sets(heavy) == {frozenset({0, 1, 2}), frozenset({3})}
    with pytest.raises(ValueError, match="num_clusters"):
        clustering.semantic_clustering_weighted(similarity, np.array([1, 1, 1, 1]), 5)


def test_registry_names_and_methods():
    assert set(clustering.CLUSTERING_METHODS.names) == {"semantic", "entity", "random", "single"}
    entities = np.array(["cat", "dog", "car"])
    prompts = clustering.DecisionPrompts(np.array([0, 1, 0, 2, 1]), np.eye(3), entities)
    assert as_sets(clustering.CLUSTERING_METHODS["entity"](prompts, 3, None)) == \
        {frozenset({0, 2}), frozenset({1, 4}), frozenset({3})}
    assert as_sets(clustering.CLUSTERING_METHODS["semantic"](prompts, 3, None)) == \
        {frozenset({0, 2}), frozenset({1, 4}), frozenset({3})}
    labels = clustering.CLUSTERING_METHODS["random"](prompts, 2, np.random.default_rng(0))
    assert sorted(np.bincount(labels)) == [2, 3]
    np.testing.assert_array_equal(clustering.CLUSTERING_METHODS["single"](prompts, 1, None), np.zeros(5))
    with pytest.raises(KeyError, match="allowed: semantic, entity, random, single"):
        clustering.CLUSTERING_METHODS["kmeans"]


def test_intra_cluster_similarity_of_embeddings_equals_the_gram_version():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(30, 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = np.repeat(np.arange(6), 5)
    labels[:1] = 6  # a singleton cluster is left out
    labels = clustering._canonical(labels)
    similarity = embeddings @ embeddings.T
    by_hand = np.mean([np.mean([similarity[i, j] for i in np.flatnonzero(labels == m)
                                for j in np.flatnonzero(labels == m) if i != j])
                       for m in np.unique(labels) if (labels == m).sum() > 1])
    assert clustering.intra_cluster_similarity_of_embeddings(embeddings, labels) == pytest.approx(by_hand)
    assert clustering.intra_cluster_similarity(similarity, labels) == pytest.approx(by_hand)
