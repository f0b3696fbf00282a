"""Agreement between a clustering and reference classes: Hungarian-matched accuracy, NMI and ARI.

References:
    - [0] DEC (cluster accuracy with the Hungarian algorithm), 2016, https://arxiv.org/abs/1511.06335
"""

from __future__ import annotations

import numpy as np

__all__ = ["cluster_accuracy", "clustering_scores", "contingency_matrix"]


def _as_label_vector(labels: object, name: str) -> np.ndarray:
    if hasattr(labels, "detach") and hasattr(labels, "cpu"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1D sequence of labels, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty.")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} must not hold NaN or Inf.")
    return arr


def _check_pair(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    a = _as_label_vector(y_true, "y_true")
    b = _as_label_vector(y_pred, "y_pred")
    if a.shape != b.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {a.size} and {b.size}.")
    return a, b


def contingency_matrix(y_true: object, y_pred: object) -> np.ndarray:
    """Counts ``C[i, j]`` of samples with the ``i``-th distinct true label and the ``j``-th distinct prediction.

    Labels may be any sortable values (ints, strings); rows and columns follow their sorted order.

    Returns:
        int64 ``(num_classes, num_clusters)``.
    """
    a, b = _check_pair(y_true, y_pred)
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    ia, ib = ia.ravel(), ib.ravel()
    table = np.zeros((int(ia.max()) + 1, int(ib.max()) + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def cluster_accuracy(y_true: object, y_pred: object) -> float:
    """Fraction of samples correctly labelled under the best one-to-one matching of clusters to classes.

    The matching maximises the matched counts of the contingency table (Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`). When the numbers of clusters and classes differ, only
    ``min(num_classes, num_clusters)`` pairs are matched and samples in unmatched clusters count as wrong.

    Args:
        y_true: ``(N,)`` reference labels (any sortable values).
        y_pred: ``(N,)`` cluster labels.

    Returns:
        accuracy in ``[0, 1]``.

    Raises:
        ValueError: when the inputs are empty, not 1D, or differ in length.
    """
    from scipy.optimize import linear_sum_assignment

    table = contingency_matrix(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def clustering_scores(y_true: object, y_pred: object) -> dict[str, float]:
    """Hungarian accuracy, normalised mutual information and adjusted Rand index of a clustering.

    Args:
        y_true: ``(N,)`` reference labels.
        y_pred: ``(N,)`` cluster labels.

    Returns:
        ``{"accuracy": float, "nmi": float, "ari": float}``.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    a, b = _check_pair(y_true, y_pred)
    return {
        "accuracy": cluster_accuracy(a, b),
        "nmi": float(normalized_mutual_info_score(a, b)),
        "ari": float(adjusted_rand_score(a, b)),
    }
