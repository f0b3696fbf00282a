"""Hierarchical pseudo-classes: known two-scale structure recovered, nesting, exact vs scalable, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from monai_cluster.clustering import default_num_centroids, hierarchical_pseudo_classes, relabel_nested


def _assert_nested_and_numbered(labels: np.ndarray, num_clusters: tuple[int, ...]) -> None:
    assert labels.dtype == np.int64 and labels.shape[1] == len(num_clusters)
    for level, k in enumerate(num_clusters):
        assert sorted(np.unique(labels[:, level]).tolist()) == list(range(k))
    for level in range(1, len(num_clusters)):
        for fine in range(num_clusters[level]):
            assert np.unique(labels[labels[:, level] == fine, level - 1]).size == 1


@pytest.mark.parametrize("method", ["exact", "scalable"])
def test_recovers_two_scale_blobs(two_scale_blobs, method):
    x, coarse, fine = two_scale_blobs(n=540)
    labels = hierarchical_pseudo_classes(x, (3, 9), method=method, num_centroids=60)
    assert labels.shape == (540, 2)
    assert normalized_mutual_info_score(coarse, labels[:, 0]) > 0.99
    assert normalized_mutual_info_score(fine, labels[:, 1]) > 0.99
    _assert_nested_and_numbered(labels, (3, 9))


@pytest.mark.parametrize("method", ["exact", "scalable"])
def test_nested_on_unstructured_data(method):
    x = np.random.default_rng(0).standard_normal((400, 6)).astype(np.float32)
    labels = hierarchical_pseudo_classes(x, (2, 5, 23), method=method, num_centroids=80)
    _assert_nested_and_numbered(labels, (2, 5, 23))


def test_exact_and_scalable_agree_on_clear_blobs(two_scale_blobs):
    x, _, _ = two_scale_blobs(n=900, coarse=4, fine_per_coarse=4, seed=1, spread=2.0)
    exact = hierarchical_pseudo_classes(x, (4, 16), method="exact")
    scalable = hierarchical_pseudo_classes(x, (4, 16), method="scalable", num_centroids=100)
    for level in range(2):
        assert adjusted_rand_score(exact[:, level], scalable[:, level]) > 0.9


def test_scalable_with_all_points_as_centroids_equals_exact():
    x = np.random.default_rng(4).standard_normal((150, 4)).astype(np.float32)
    exact = hierarchical_pseudo_classes(x, (3, 10), method="exact")
    np.testing.assert_array_equal(hierarchical_pseudo_classes(x, (3, 10), method="scalable", num_centroids=150), exact)


def test_auto_switches_on_sample_count(two_scale_blobs):
    x = np.random.default_rng(5).standard_normal((300, 4)).astype(np.float32)
    exact = hierarchical_pseudo_classes(x, (2, 6), method="exact")
    scalable = hierarchical_pseudo_classes(x, (2, 6), method="scalable", num_centroids=40)
    np.testing.assert_array_equal(hierarchical_pseudo_classes(x, (2, 6), method="auto", exact_max_samples=300), exact)
    auto = hierarchical_pseudo_classes(x, (2, 6), method="auto", exact_max_samples=299, num_centroids=40)
    np.testing.assert_array_equal(auto, scalable)


def test_single_level_duplicates_and_reproducibility():
    rng = np.random.default_rng(6)
    x = np.repeat(rng.standard_normal((12, 3)), 5, axis=0).astype(np.float32)  # 12 distinct points
    labels = hierarchical_pseudo_classes(x, 12, method="scalable", num_centroids=12)
    assert labels.shape == (60, 1) and np.unique(labels).size == 12
    again = hierarchical_pseudo_classes(x, (12,), method="scalable", num_centroids=12)
    np.testing.assert_array_equal(labels, again)


def test_default_num_centroids():
    assert default_num_centroids(10**6, 64) == 512
    assert default_num_centroids(10**6, 8) == 256
    assert default_num_centroids(10**6, 100) == 800
    assert default_num_centroids(10**6, 1000) == 4096
    assert default_num_centroids(100, 64) == 100
    assert default_num_centroids(10**6, 5000) == 5000


def test_relabel_nested_groups_children_by_parent():
    labels = np.array([[5, 40], [9, 7], [5, 3], [9, 7], [5, 40]])
    np.testing.assert_array_equal(relabel_nested(labels), [[0, 0], [1, 2], [0, 1], [1, 2], [0, 0]])


def test_errors():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((30, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="strictly increasing"):
        hierarchical_pseudo_classes(x, (8, 8))
    with pytest.raises(ValueError, match="strictly increasing"):
        hierarchical_pseudo_classes(x, (8, 4))
    with pytest.raises(ValueError, match="positive ints"):
        hierarchical_pseudo_classes(x, (0, 4))
    with pytest.raises(ValueError, match="at least one level"):
        hierarchical_pseudo_classes(x, ())
    with pytest.raises(TypeError, match="num_clusters"):
        hierarchical_pseudo_classes(x, "8,64")
    with pytest.raises(ValueError, match="method"):
        hierarchical_pseudo_classes(x, (2, 4), method="ward")
    with pytest.raises(ValueError, match="finest level, but features hold 30 samples"):
        hierarchical_pseudo_classes(x, (4, 31))
    with pytest.raises(ValueError, match="num_centroids must be >= the finest level 8"):
        hierarchical_pseudo_classes(x, (4, 8), method="scalable", num_centroids=5)
    with pytest.raises(ValueError, match="exact_max_samples"):
        hierarchical_pseudo_classes(x, (2, 4), exact_max_samples=0)
    dup = np.repeat(x[:5], 6, axis=0)
    for method in ("exact", "scalable"):
        with pytest.raises(ValueError, match=r"only 5 distinct points \(of 30 samples\)"):
            hierarchical_pseudo_classes(dup, (2, 6), method=method)
    bad = x.copy()
    bad[11] = np.inf
    with pytest.raises(ValueError, match="row 11"):
        hierarchical_pseudo_classes(bad, (2, 4))
    with pytest.raises(ValueError, match="2D"):
        hierarchical_pseudo_classes(x[:, 0], (2, 4))


def test_empty_kmeans_clusters_fall_back_then_fail(monkeypatch):
    from monai_cluster.clustering import hierarchy

    x = np.random.default_rng(8).standard_normal((200, 3)).astype(np.float32)
    real = hierarchy.faiss_kmeans
    seen = []

    def random_seeding_collapses(x, m, *args, init="k-means++", gpus=0):
        seen.append(init)
        if init == "random":  # every point in one cluster, as coinciding seeds on repeated points can do
            return np.zeros(len(x), dtype=np.int64), np.zeros((m, x.shape[1]), dtype=np.float32)
        return real(x, m, *args, init=init, gpus=gpus)

    monkeypatch.setattr(hierarchy, "faiss_kmeans", random_seeding_collapses)
    labels = hierarchical_pseudo_classes(x, (2, 8), method="scalable", num_centroids=20)
    assert seen == ["random", "k-means++"]
    _assert_nested_and_numbered(labels, (2, 8))

    def always_collapses(x, m, *args, init="k-means++", gpus=0):
        return np.zeros(len(x), dtype=np.int64), np.zeros((m, x.shape[1]), dtype=np.float32)

    monkeypatch.setattr(hierarchy, "faiss_kmeans", always_collapses)
    with pytest.raises(ValueError, match="k-means left only 1 non-empty clusters of num_centroids=20"):
        hierarchical_pseudo_classes(x, (2, 8), method="scalable", num_centroids=20)
