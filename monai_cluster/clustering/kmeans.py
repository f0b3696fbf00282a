"""k-means on numpy features with faiss (CPU): Lloyd iterations on a subsample, then every point assigned.

References:
    - [0] Billion-scale similarity search with GPUs (faiss), 2017, https://arxiv.org/abs/1702.08734
"""

from __future__ import annotations

import logging

import numpy as np

from monai_cluster.clustering._checks import as_feature_matrix
from monai_cluster.utils.validation import check_choice, check_positive_int

__all__ = ["kmeans", "kmeans_assign", "faiss_kmeans", "faiss_gpu_count"]

logger = logging.getLogger(__name__)


def faiss_gpu_count(gpu: bool | None = None) -> int:
    """How many GPUs faiss will use: ``gpu=None`` all that faiss sees (0 with ``faiss-cpu``), ``False`` none,
    ``True`` all of them, and a ValueError when there are none (``faiss-cpu`` installed, or no CUDA device).

    Raises:
        TypeError: when ``gpu`` is not a bool or None.
        ValueError: ``gpu=True`` without a GPU build of faiss and a CUDA device.
    """
    if gpu is not None and not isinstance(gpu, bool):
        raise TypeError(f"gpu must be True, False or None (auto), got {type(gpu).__name__} {gpu!r}.")
    if gpu is False:
        return 0
    import faiss

    count = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    if gpu and count == 0:
        raise ValueError(
            f"gpu=True, but faiss {faiss.__version__} sees no GPU (the faiss-cpu wheel has no GPU support; install a "
            "CUDA build of faiss, e.g. conda's faiss-gpu, on a machine with a CUDA device), or pass gpu=None."
        )
    return count


def kmeans(
    features: np.ndarray,
    num_clusters: int,
    seed: int = 0,
    niter: int = 25,
    nredo: int = 1,
    max_points_per_centroid: int = 256,
    init: str = "k-means++",
    gpu: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``features`` into ``num_clusters`` groups with faiss k-means.

    faiss trains on at most ``num_clusters * max_points_per_centroid`` points drawn at random (with
    ``seed``), then every point is assigned to its nearest centroid, so the cost of the assignment is one
    ``(N, K)`` distance pass done in blocks. k-means++ seeding (faiss >= 1.15) finds well-separated blobs
    that random seeding often splits and merges; with an older faiss it falls back to random seeding.

    Args:
        features: ``(N, F)`` floating-point array, finite.
        num_clusters: ``K``, with ``1 <= K <= N``.
        seed: seed of the subsample and the initial centroids.
        niter: Lloyd iterations.
        nredo: restarts; the run with the lowest objective is kept.
        max_points_per_centroid: training subsample size per centroid.
        init: ``"k-means++"`` or ``"random"`` (faiss's default: ``K`` training points drawn at random).
        gpu: train and assign on every GPU faiss sees (``None``: when there are any; ``True``: required, else
            ValueError; ``False``: CPU). The ``faiss-cpu`` wheel this package installs sees none.

    Returns:
        ``(labels, centroids)``: int64 ``(N,)`` in ``[0, K)`` and float32 ``(K, F)``.

    Raises:
        ValueError: on non-2D or non-finite features, fewer samples than clusters, or ``gpu=True`` without one.
    """
    x = as_feature_matrix(features, "features")
    k = check_positive_int(num_clusters, "num_clusters")
    niter = check_positive_int(niter, "niter")
    nredo = check_positive_int(nredo, "nredo")
    max_points_per_centroid = check_positive_int(max_points_per_centroid, "max_points_per_centroid")
    seed = check_positive_int(seed, "seed", minimum=0)
    init = check_choice(init, "init", ("k-means++", "random"))
    n = x.shape[0]
    if k > n:
        raise ValueError(f"kmeans needs at least as many samples as clusters: got {n} sample(s) for num_clusters={k}.")
    return faiss_kmeans(x, k, seed, niter, nredo, max_points_per_centroid, init, gpus=faiss_gpu_count(gpu))


def faiss_kmeans(
    x: np.ndarray,
    k: int,
    seed: int,
    niter: int,
    nredo: int,
    max_points_per_centroid: int,
    init: str = "k-means++",
    gpus: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kmeans` without the input checks, for callers that already checked a float32 ``(N, F)`` matrix;
    ``gpus`` as :func:`faiss_gpu_count` returns it."""
    import faiss  # deferred: importing faiss costs about a second

    extra = {}
    if init == "k-means++":
        if hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS"):
            extra["init_method"] = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
        else:
            logger.warning("faiss %s has no k-means++ seeding; using random seeding.", faiss.__version__)
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        nredo=nredo,
        seed=seed,
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,  # silences faiss's "please provide more points" warning on small data
        verbose=False,
        **({"gpu": gpus} if gpus else {}),
        **extra,
    )
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    return _assign(x, centroids, gpus), centroids


def kmeans_assign(features: np.ndarray, centroids: np.ndarray, gpu: bool | None = None) -> np.ndarray:
    """Index of the nearest centroid (squared L2) of every row of ``features``.

    Args:
        features: float32 ``(N, F)`` array (a memory map is read chunk by chunk).
        centroids: float32 ``(K, F)`` array.
        gpu: as in :func:`kmeans`.

    Returns:
        int64 ``(N,)``.
    """
    x = as_feature_matrix(features, "features")
    c = as_feature_matrix(centroids, "centroids")
    if c.shape[1] != x.shape[1]:
        raise ValueError(f"centroids must have {x.shape[1]} features like features, got shape {c.shape}.")
    return _assign(x, c, faiss_gpu_count(gpu))


_ASSIGN_CHUNK_ROWS = 1 << 20


def _assign(x: np.ndarray, c: np.ndarray, gpus: int = 0) -> np.ndarray:
    """Nearest centroid of every row, in chunks of about a million rows: the distance results stay small and a
    memory-mapped ``x`` (features streamed to disk) is read once, chunk by chunk; on ``gpus`` GPUs when > 0."""
    import faiss

    index = faiss.IndexFlatL2(c.shape[1])
    if gpus:
        index = faiss.index_cpu_to_all_gpus(index, ngpu=gpus)
    index.add(c)
    labels = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], _ASSIGN_CHUNK_ROWS):
        block = np.ascontiguousarray(x[start : start + _ASSIGN_CHUNK_ROWS], dtype=np.float32)
        labels[start : start + block.shape[0]] = index.search(block, 1)[1][:, 0]
    return labels
