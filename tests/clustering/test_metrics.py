"""Cluster accuracy against a brute-force search over label mappings; NMI/ARI; input errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from monai_cluster.clustering import cluster_accuracy, clustering_scores, contingency_matrix


def _brute_force_accuracy(y_true, y_pred) -> float:
    """Best accuracy over every one-to-one mapping of clusters to classes, by enumeration."""
    classes, clusters = sorted(set(y_true)), sorted(set(y_pred))
    best = 0
    for chosen in itertools.permutations(classes, min(len(classes), len(clusters))):
        for matched in itertools.permutations(clusters, len(chosen)):
            mapping = dict(zip(matched, chosen))
            best = max(best, sum(mapping.get(p) == t for t, p in zip(y_true, y_pred)))
    return best / len(y_true)


@pytest.mark.parametrize("num_classes, num_clusters", [(3, 3), (3, 5), (4, 2), (1, 3), (5, 5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(num_classes, num_clusters, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, size=40)
    y_pred = np.where(rng.random(40) < 0.6, y_true % num_clusters, rng.integers(0, num_clusters, size=40))
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(_brute_force_accuracy(y_true.tolist(), y_pred.tolist()))


def test_permuted_labels_and_strings():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(y_true, np.array([7, 7, 3, 3, 5, 5])) == 1.0
    names = ["Melanoma", "Melanoma", "Common Nevus", "Atypical Nevus", "Atypical Nevus", "Common Nevus"]
    assert cluster_accuracy(names, [1, 1, 0, 2, 2, 2]) == pytest.approx(5 / 6)
    assert cluster_accuracy(torch.tensor([0, 1, 1]), torch.tensor([1, 0, 0])) == 1.0


def test_contingency_matrix():
    table = contingency_matrix(["b", "a", "a", "b"], [2, 2, 0, 2])
    np.testing.assert_array_equal(table, [[1, 1], [0, 2]])


def test_clustering_scores():
    y_true = np.array([0, 0, 0, 1, 1, 1])
    perfect = clustering_scores(y_true, [4, 4, 4, 9, 9, 9])
    assert perfect == {"accuracy": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    mixed = clustering_scores(y_true, [0, 1, 0, 1, 0, 1])
    assert mixed["accuracy"] == pytest.approx(4 / 6)
    # by hand: contingency [[2, 1], [1, 2]]; MI = 2/3 log(4/3) + 1/3 log(2/3), both entropies log 2
    assert mixed["nmi"] == pytest.approx((2 / 3 * np.log(4 / 3) + 1 / 3 * np.log(2 / 3)) / np.log(2))
    # ARI = (sum C(n_ij, 2) - expected) / (max - expected) = (2 - 36/15) / (6 - 36/15)
    assert mixed["ari"] == pytest.approx(-1 / 9)
    assert set(perfect) == {"accuracy", "nmi", "ari"}


def test_errors():
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        cluster_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="y_true must not be empty"):
        clustering_scores([], [])
    with pytest.raises(ValueError, match="y_pred must be a 1D"):
        cluster_accuracy([0, 1], [[0, 1]])
    with pytest.raises(ValueError, match="y_true must not hold NaN"):
        cluster_accuracy([0.0, np.nan], [0, 1])
