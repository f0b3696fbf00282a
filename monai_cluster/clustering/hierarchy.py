"""Hierarchical pseudo-classes: nested cluster labels at several granularities, coarse to fine.

Zhang et al. train an autoencoder on the unlabeled images, cluster its features hierarchically, and use the
clusters of every level as pseudo-classes whose members are not pushed apart by the contrastive loss. Two
ways to build the hierarchy:

- ``"exact"``: Ward linkage on all points (fastcluster when installed, else scipy), ``O(N^2)`` memory for
  the condensed distance matrix: 20,000 x 128 points take about 1 minute and 3.5 GB on 2 cores, 100,000
  would need 40 GB.
- ``"scalable"``: faiss k-means to ``M`` fine centroids (trained on a subsample, then every point
  assigned), then Ward over the centroids weighted by their cluster sizes
  (:func:`~monai_cluster.clustering.ward.weighted_ward_linkage`), which is exactly Ward started from the
  k-means partition; labels go back to the points through their centroid. 1,000,000 x 128 features take
  about 2 s (10 s on a busy machine) and 0.9 GB of peak memory, features included.

Every level is a cut of one tree, so the levels are nested: each fine cluster lies inside exactly one
coarse cluster.

References:
    - [0] Cluster-guided contrastive pretraining (Zhang et al., BIBM), 2022, https://arxiv.org/abs/2211.08557
    - [1] Ward linkage, 1963, https://doi.org/10.1080/01621459.1963.10500845
"""

from __future__ import annotations

import logging

import numpy as np

from monai_cluster.clustering._checks import as_feature_matrix, check_num_clusters, count_distinct_rows_at_least
from monai_cluster.clustering.kmeans import faiss_gpu_count, faiss_kmeans
from monai_cluster.clustering.ward import cut_linkage, weighted_ward_linkage
from monai_cluster.utils.validation import check_choice, check_positive_int

__all__ = [
    "hierarchical_pseudo_classes",
    "ward_linkage",
    "relabel_nested",
    "default_num_centroids",
    "EXACT_MAX_SAMPLES",
]

logger = logging.getLogger(__name__)

EXACT_MAX_SAMPLES = 5000
"""``method="auto"`` runs exact Ward up to this many samples (about 1 s and 0.2 GB with fastcluster on 2 cores)."""

_CENTROIDS_PER_CLUSTER = 8
_MIN_CENTROIDS = 256
_MAX_CENTROIDS = 4096
_TRAIN_POINTS_PER_CENTROID = 64
_KMEANS_ITERATIONS = 20


def default_num_centroids(num_samples: int, finest_clusters: int) -> int:
    """Number of k-means centroids ``M`` of the scalable method: 8 per cluster of the finest level, at least 256,
    at most 4096, at most ``num_samples`` and never fewer than the finest level.

    Measured with levels (8, 64) (``benchmarks/pseudo_classes.py``): on 20,000 points from overlapping
    Gaussians, ``M`` = 128, 256, 512, 1024 reach 0.984, 0.984, 0.988, 0.994 of exact Ward's objective at the
    fine level (lower is better; the coarse level is identical); on 64 separated Gaussians, ``M = 256`` now
    and then lets one k-means cluster straddle two components (fine-level NMI 0.993) where ``M = 512`` never
    did. k-means time grows as ``M^2`` (its subsample holds 64 points per centroid).
    """
    wanted = max(_MIN_CENTROIDS, _CENTROIDS_PER_CLUSTER * finest_clusters)
    return int(min(num_samples, max(finest_clusters, min(wanted, _MAX_CENTROIDS))))


def ward_linkage(features: np.ndarray) -> np.ndarray:
    """Exact Ward linkage of all rows of ``features`` (fastcluster when installed, else scipy).

    Args:
        features: ``(N, F)`` floating-point array.

    Returns:
        float64 ``(N - 1, 4)`` scipy-format linkage matrix.
    """
    x = as_feature_matrix(features, "features")
    if x.shape[0] == 1:
        return np.zeros((0, 4), dtype=np.float64)
    try:
        import fastcluster
    except ImportError:
        from scipy.cluster.hierarchy import linkage

        return linkage(x, method="ward")
    return fastcluster.linkage(x, method="ward", preserve_input=True)


def relabel_nested(labels: np.ndarray) -> np.ndarray:
    """Renumber each level of nested labels ``(N, L)`` to ``0..k-1``, grouping fine clusters by their parent.

    Level 0 is numbered by first appearance; at each finer level the clusters are numbered by their parent's
    label, then by first appearance, so the children of coarse cluster 0 come first.
    """
    labels = np.asarray(labels)
    out = np.empty(labels.shape, dtype=np.int64)
    parent = np.zeros(labels.shape[0], dtype=np.int64)
    for level in range(labels.shape[1]):
        _, first, inverse = np.unique(labels[:, level], return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        order = np.lexsort((first, parent[first]))
        rank = np.empty(first.size, dtype=np.int64)
        rank[order] = np.arange(first.size)
        out[:, level] = rank[inverse]
        parent = out[:, level]
    return out


def hierarchical_pseudo_classes(
    features: np.ndarray,
    num_clusters: tuple[int, ...] = (8, 64),
    method: str = "auto",
    exact_max_samples: int = EXACT_MAX_SAMPLES,
    num_centroids: int | None = None,
    seed: int = 0,
    gpu: bool | None = None,
) -> np.ndarray:
    """Nested pseudo-class labels of ``N`` samples at several levels, coarse to fine.

    Args:
        features: ``(N, F)`` floating-point array (e.g. pooled autoencoder features), finite.
        num_clusters: strictly increasing cluster counts, coarse to fine, e.g. ``(8, 64)``.
        method: ``"exact"`` (Ward on all points), ``"scalable"`` (k-means centroids, then Ward over them
            weighted by cluster size) or ``"auto"`` (exact up to ``exact_max_samples`` samples).
        exact_max_samples: the ``"auto"`` switch point.
        num_centroids: ``M``, the k-means centroids of the scalable method, ``>=`` the finest level;
            ``None`` picks :func:`default_num_centroids`. With ``M >= N`` every point is its own centroid and
            the result equals the exact method.
        seed: seed of the k-means subsample and initialisation.
        gpu: run the scalable method's k-means on the GPUs faiss sees (``None``: when there are any, i.e. with a
            CUDA build of faiss; ``True``: required; ``False``: CPU), see :func:`~monai_cluster.clustering.kmeans`.

    ``features`` may be a memory-mapped array (:func:`~monai_cluster.clustering.extract_features` with
    ``out_path``): it is not copied; k-means trains on a subsample and every row is assigned in chunks.
    10,000,000 x 128 float32 features on disk (5.1 GB) take 13 s and 6.4 GB of peak memory (the mapped file
    included) on 2 CPU cores (``benchmarks/pseudo_classes.py --part disk``).

    Returns:
        int64 ``(N, L)``: column ``l`` holds labels in ``[0, num_clusters[l])``, each value used; every fine
        cluster lies inside one coarse cluster.

    Raises:
        ValueError: on bad features or ``num_clusters``, or when the features hold fewer distinct points than
            the finest level asks.
    """
    x = as_feature_matrix(features, "features")
    levels = check_num_clusters(num_clusters)
    method = check_choice(method, "method", ("auto", "exact", "scalable"))
    exact_max_samples = check_positive_int(exact_max_samples, "exact_max_samples")
    seed = check_positive_int(seed, "seed", minimum=0)
    if gpu is not None and not isinstance(gpu, bool):
        raise TypeError(f"gpu must be True, False or None (auto), got {type(gpu).__name__} {gpu!r}.")
    n, finest = x.shape[0], levels[-1]
    if finest > n:
        raise ValueError(f"num_clusters asks for {finest} clusters at its finest level, but features hold {n} samples.")
    distinct = count_distinct_rows_at_least(x, finest, seed=seed)
    if distinct < finest:
        raise ValueError(
            f"num_clusters asks for {finest} clusters at its finest level, but features hold only {distinct} "
            f"distinct points (of {n} samples); lower num_clusters or check the feature extractor."
        )
    if method == "auto":
        method = "exact" if n <= exact_max_samples else "scalable"
    if num_centroids is None:
        m = default_num_centroids(n, finest)
    else:
        m = check_positive_int(num_centroids, "num_centroids")
        if m < finest:
            raise ValueError(f"num_centroids must be >= the finest level {finest} of num_clusters, got {m}.")
    if method == "exact" or m >= n:
        tree, assignment = ward_linkage(x), None
    else:
        tree, assignment = _centroid_tree(x, m, finest, seed, faiss_gpu_count(gpu))
    labels = np.stack([cut_linkage(tree, k) for k in levels], axis=1)
    if assignment is not None:
        labels = labels[assignment]
    return relabel_nested(labels)


def _centroid_tree(x: np.ndarray, m: int, finest: int, seed: int, gpus: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means to ``m`` centroids, then size-weighted Ward over the non-empty ones; returns (tree, assignment)."""
    # random seeding: with M well above the finest level, Ward repairs what k-means++ would, and k-means++ runs
    # M sequential passes (slow on a busy machine). Random seeds can coincide on repeated points and leave
    # clusters empty; k-means++ never seeds a point twice, so it is the fallback.
    for init in ("random", "k-means++"):
        assignment, centroids = faiss_kmeans(
            x, m, seed, _KMEANS_ITERATIONS, 1, _TRAIN_POINTS_PER_CENTROID, init=init, gpus=gpus
        )
        counts = np.bincount(assignment, minlength=m)
        used = np.flatnonzero(counts)
        if used.size >= finest:
            break
        logger.info("k-means (%s seeding) left %d of %d clusters empty.", init, m - used.size, m)
    else:
        raise ValueError(
            f"k-means left only {used.size} non-empty clusters of num_centroids={m}, fewer than the finest level "
            f"{finest} of num_clusters; raise num_centroids or use method='exact'."
        )
    if used.size < m:
        logger.info("k-means left %d of %d centroids empty; they are dropped.", m - used.size, m)
        remap = np.full(m, -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        assignment = remap[assignment]
    tree = weighted_ward_linkage(centroids[used], counts[used].astype(np.float64))
    return tree, assignment
