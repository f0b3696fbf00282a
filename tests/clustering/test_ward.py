"""Weighted Ward over points: equal to scipy's Ward with unit weights, and to Ward on repeated points."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, ward
from sklearn.metrics import adjusted_rand_score

from monai_cluster.clustering import cut_linkage, weighted_ward_linkage


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two labelings are equal up to renaming the labels (a bijection between them)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_unit_weights_equal_scipy_ward():
    x = np.random.default_rng(1).standard_normal((120, 5)).astype(np.float32)
    ours = weighted_ward_linkage(x)
    ref = ward(x.astype(np.float64))
    np.testing.assert_allclose(ours[:, 2], ref[:, 2], rtol=1e-9)
    np.testing.assert_array_equal(ours[:, [0, 1, 3]], ref[:, [0, 1, 3]])
    for k in (1, 2, 5, 17, 60, 120):
        labels = cut_linkage(ours, k)
        assert np.unique(labels).size == k
        assert _same_partition(labels, fcluster(ref, k, criterion="maxclust"))


def test_weights_equal_repeated_points():
    rng = np.random.default_rng(2)
    points = rng.standard_normal((30, 4))
    counts = rng.integers(1, 5, size=30)
    expanded = np.repeat(points, counts, axis=0)
    first_copy = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ref = ward(expanded)
    ours = weighted_ward_linkage(points, counts)
    # the last 29 merges of Ward on the repeated points are exactly the merges of the weighted points
    np.testing.assert_allclose(ours[:, 2], ref[-29:, 2], rtol=1e-9)
    np.testing.assert_allclose(ours[:, 3], ref[-29:, 3])
    for k in (2, 4, 9):
        assert _same_partition(cut_linkage(ours, k), cut_linkage(ref, k)[first_copy])


def test_cut_is_nested_and_numbered_by_first_appearance():
    x = np.random.default_rng(3).standard_normal((50, 3))
    tree = weighted_ward_linkage(x, np.arange(1, 51))
    coarse, fine = cut_linkage(tree, 4), cut_linkage(tree, 12)
    for f in np.unique(fine):
        assert np.unique(coarse[fine == f]).size == 1
    first = [int(np.argmax(fine == f)) for f in range(12)]
    assert first == sorted(first)


def test_ties_still_give_exactly_k_clusters():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0]])  # four merges at distance 1
    tree = weighted_ward_linkage(x)
    for k in range(1, 7):
        assert np.unique(cut_linkage(tree, k)).size == k
    assert adjusted_rand_score(cut_linkage(tree, 2), [0, 0, 0, 0, 1, 1]) == 1.0


def test_single_point_and_errors():
    assert weighted_ward_linkage(np.ones((1, 3))).shape == (0, 4)
    np.testing.assert_array_equal(cut_linkage(np.zeros((0, 4)), 1), [0])
    x = np.random.default_rng(0).standard_normal((4, 2))
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\)"):
        weighted_ward_linkage(x, np.ones(3))
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        weighted_ward_linkage(x, np.array([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="points must be finite"):
        weighted_ward_linkage(np.full((3, 2), np.inf))
    tree = weighted_ward_linkage(x)
    with pytest.raises(ValueError, match="num_clusters must be <= the number of leaves 4"):
        cut_linkage(tree, 5)
    with pytest.raises(ValueError, match="linkage must be"):
        cut_linkage(tree[:, :3], 2)
