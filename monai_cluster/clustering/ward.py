"""Ward linkage with weights: agglomerate weighted points (e.g. k-means centroids with their cluster sizes).

Ward's merge cost of clusters ``A`` and ``B`` is the rise in the within-cluster sum of squares,
``n_A n_B / (n_A + n_B) * ||mu_A - mu_B||^2``: it depends only on the sizes and the means. Starting Ward from
``M`` k-means clusters (centroid ``c_i``, size ``w_i``) is therefore exactly Ward on the points with those
clusters already formed, and costs ``O(M^2)`` memory instead of ``O(N^2)``. No maintained library offers
Ward with weights, so it is written here: the nearest-neighbour chain algorithm with the Lance-Williams update
(vectorised numpy over one row per merge), giving the same tree as :func:`scipy.cluster.hierarchy.ward` when
every weight is 1.

References:
    - [0] Ward linkage, 1963, https://doi.org/10.1080/01621459.1963.10500845
    - [1] Mullner, Modern hierarchical, agglomerative clustering algorithms, 2011, https://arxiv.org/abs/1109.2378
"""

from __future__ import annotations

import numpy as np

from monai_cluster.clustering._checks import as_feature_matrix
from monai_cluster.utils.validation import check_positive_int

__all__ = ["weighted_ward_linkage", "cut_linkage"]


def weighted_ward_linkage(points: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Ward linkage of ``M`` weighted points, as a scipy linkage matrix.

    The distance stored for a merge follows scipy's convention,
    ``d(A, B) = sqrt(2 n_A n_B / (n_A + n_B)) * ||mu_A - mu_B||`` with ``n`` the summed weights, so that unit
    weights reproduce :func:`scipy.cluster.hierarchy.ward`.

    Args:
        points: ``(M, F)`` floating-point array (e.g. k-means centroids).
        weights: ``(M,)`` positive weights (e.g. cluster sizes); ``None`` means all ones.

    Returns:
        float64 ``(M - 1, 4)`` linkage matrix sorted by merge distance: columns are the two merged cluster ids
        (leaves ``0..M-1``, the cluster formed by row ``i`` is ``M + i``), the distance, and the total weight
        of the new cluster.

    Raises:
        ValueError: when ``weights`` has the wrong length or holds non-positive or non-finite values.
    """
    c = as_feature_matrix(points, "points", dtype=np.float64)
    m = c.shape[0]
    if weights is None:
        w = np.ones(m, dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (m,):
            raise ValueError(f"weights must have shape ({m},) like points, got {w.shape}.")
        if not np.isfinite(w).all() or (w <= 0).any():
            raise ValueError("weights must be finite and > 0.")
    if m == 1:
        return np.zeros((0, 4), dtype=np.float64)
    merges_x, merges_y, merges_d = _nn_chain(c, w)
    order = np.argsort(merges_d, kind="stable")
    return _to_linkage(merges_x[order], merges_y[order], merges_d[order], w)


def _nn_chain(c: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-neighbour chain over squared Ward distances; returns merges (slot x, slot y, distance)."""
    m = c.shape[0]
    sq = np.einsum("ij,ij->i", c, c)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (c @ c.T)
    np.maximum(d2, 0.0, out=d2)
    d2 *= 2.0 * np.outer(w, w) / (w[:, None] + w[None, :])  # squared scipy-Ward distance between singletons
    np.fill_diagonal(d2, np.inf)
    size = w.copy()
    active = np.ones(m, dtype=bool)
    chain = np.empty(m, dtype=np.int64)
    length = 0
    xs = np.empty(m - 1, dtype=np.int64)
    ys = np.empty(m - 1, dtype=np.int64)
    ds = np.empty(m - 1, dtype=np.float64)
    first_active = 0
    for step in range(m - 1):
        if length == 0:
            while not active[first_active]:
                first_active += 1
            chain[0] = first_active
            length = 1
        while True:  # grow the chain until two clusters are each other's nearest neighbours
            x = chain[length - 1]
            row = d2[x]
            if length > 1:
                y = chain[length - 2]
                best = row[y]
            else:
                y, best = -1, np.inf
            z = int(np.argmin(row))
            if row[z] < best:  # strict: on a tie the previous chain element wins, so the chain terminates
                y, best = z, row[z]
            if length > 1 and y == chain[length - 2]:
                break
            chain[length] = y
            length += 1
        length -= 2
        x, y = (x, y) if x < y else (y, x)
        xs[step], ys[step], ds[step] = x, y, best
        nx, ny = size[x], size[y]
        # Lance-Williams for Ward: d(k, x+y)^2 = ((nx+nk) d(k,x)^2 + (ny+nk) d(k,y)^2 - nk d(x,y)^2) / (nx+ny+nk)
        new = ((nx + size) * d2[x] + (ny + size) * d2[y] - size * best) / (nx + ny + size)
        np.maximum(new, 0.0, out=new)
        size[y] = nx + ny
        size[x] = 0.0
        active[x] = False
        new[~active] = np.inf
        new[y] = np.inf
        d2[y, :] = new
        d2[:, y] = new
        d2[x, :] = np.inf
        d2[:, x] = np.inf
    return xs, ys, np.sqrt(ds)


def _to_linkage(xs: np.ndarray, ys: np.ndarray, ds: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Turn merges of slots (sorted by distance) into scipy's cluster-id linkage format with union-find."""
    m = w.shape[0]
    parent = np.arange(2 * m - 1)
    weight = np.concatenate([w, np.zeros(m - 1)])
    z = np.empty((m - 1, 4), dtype=np.float64)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    for i in range(m - 1):
        a, b = find(int(xs[i])), find(int(ys[i]))
        new = m + i
        parent[a] = parent[b] = new
        weight[new] = weight[a] + weight[b]
        z[i] = (min(a, b), max(a, b), ds[i], weight[new])
    return z


def cut_linkage(linkage: np.ndarray, num_clusters: int) -> np.ndarray:
    """Cut a linkage tree into exactly ``num_clusters`` clusters by applying its first ``M - k`` merges.

    Unlike ``fcluster(..., criterion="maxclust")``, which cuts at a distance and returns fewer clusters when
    merge distances tie, this always returns ``k`` clusters; cuts of one tree at several ``k`` are nested.

    Args:
        linkage: ``(M - 1, 4)`` scipy-format linkage matrix, rows sorted by distance.
        num_clusters: ``k`` in ``[1, M]``.

    Returns:
        int64 ``(M,)`` labels of the leaves, in ``[0, k)``, numbered by first appearance.
    """
    z = np.asarray(linkage)
    if z.ndim != 2 or z.shape[1] != 4:
        raise ValueError(f"linkage must be an (M - 1, 4) linkage matrix, got shape {z.shape}.")
    m = z.shape[0] + 1
    k = check_positive_int(num_clusters, "num_clusters")
    if k > m:
        raise ValueError(f"num_clusters must be <= the number of leaves {m}, got {k}.")
    applied = m - k
    top = np.arange(2 * m - 1)
    children = z[:applied, :2].astype(np.int64)
    for i in range(applied - 1, -1, -1):  # parents before children: a child's id is smaller than its parent's
        top[children[i]] = top[m + i]
    _, first, inverse = np.unique(top[:m], return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.ravel()]
