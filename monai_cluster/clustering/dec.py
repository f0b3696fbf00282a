"""Deep embedded clustering (DEC) in pure functions: Student's-t soft assignment, target distribution, label drift.

DEC (Xie et al., section 3.1) measures how likely an embedded point ``z_i`` belongs to cluster ``j`` with a
Student's-t kernel centred on the centroid ``mu_j`` (eq. 1),

    q_ij = (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha + 1) / 2) / sum_j' (1 + ||z_i - mu_j'||^2 / alpha)^(-(alpha + 1) / 2)

and sharpens it into an auxiliary target (eq. 3), with soft cluster frequencies ``f_j = sum_i q_ij``,

    p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j').

Training minimises KL(P || Q) (eq. 2, :class:`monai_cluster.losses.DECClusteringLoss`) and stops when fewer than
``tol`` of the hard assignments change between two refreshes of P (section 3.1.3): that fraction is
:func:`assignment_change_fraction`. DVC (Soleymani et al.) uses the same three pieces on a VAE's latent means.

The functions take and return torch tensors so that gradients flow through the assignment; they are the
single implementation used by :class:`monai_cluster.networks.blocks.StudentTClusterAssignment`.

References:
    - [0] DEC, 2016, https://arxiv.org/abs/1511.06335
    - [1] DVC, 2021, https://arxiv.org/abs/2109.10777
"""

from __future__ import annotations

import numpy as np
import torch

from monai_cluster.utils.precision import float32_forward
from monai_cluster.utils.validation import check_finite, check_positive_float, check_tensor

__all__ = ["student_t_assignment", "target_distribution", "assignment_change_fraction"]


@float32_forward
def student_t_assignment(z: torch.Tensor, centroids: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Soft assignment ``q`` of embeddings to centroids under a Student's-t kernel (DEC eq. 1).

    Computed in log space (``log q = -(alpha+1)/2 * log1p(d^2/alpha)`` normalised by log-sum-exp), so far-away
    points do not underflow to an all-zero row.

    Args:
        z: embeddings ``(B, D)``, floating point.
        centroids: cluster centres ``(K, D)``, same dtype and device as ``z``.
        alpha: degrees of freedom of the Student's-t kernel (``> 0``; DEC uses 1).

    Returns:
        ``q`` of shape ``(B, K)``; every row is a probability vector.

    Raises:
        TypeError: when ``z`` or ``centroids`` is not a floating-point tensor.
        ValueError: for wrong ranks, mismatched ``D``, a non-positive ``alpha``.
    """
    check_tensor(z, "z", ndim=2, floating=True)
    check_tensor(centroids, "centroids", ndim=2, floating=True)
    alpha = check_positive_float(alpha, "alpha")
    if z.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"z and centroids must share the embedding size D, got z {tuple(z.shape)} and centroids "
            f"{tuple(centroids.shape)}."
        )
    # squared distances without a (B, K, D) intermediate; clamp the rounding error below zero
    sq = (z * z).sum(1, keepdim=True) - 2.0 * z @ centroids.t() + (centroids * centroids).sum(1).unsqueeze(0)
    sq = sq.clamp_min(0.0)
    log_kernel = -0.5 * (alpha + 1.0) * torch.log1p(sq / alpha)
    return torch.softmax(log_kernel, dim=1)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """DEC's auxiliary target ``p`` (eq. 3): square ``q``, divide by the soft cluster frequency, renormalise rows.

    Args:
        q: soft assignments ``(N, K)`` over the WHOLE dataset (the frequencies ``f_j`` are sums over rows), rows
            summing to one, non-negative.

    Returns:
        ``p`` of shape ``(N, K)``, rows summing to one, detached from the graph (it is a fixed target).

    Raises:
        TypeError/ValueError: when ``q`` is not a floating ``(N, K)`` tensor of finite non-negative values.
    """
    check_tensor(q, "q", ndim=2, floating=True)
    check_finite(q, "q")
    if bool((q < 0).any()):
        raise ValueError("q must be non-negative (soft assignments), but it holds negative values.")
    q = q.detach()
    frequency = q.sum(0).clamp_min(torch.finfo(q.dtype).tiny)
    weight = q * q / frequency
    return weight / weight.sum(1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)


def assignment_change_fraction(previous: torch.Tensor | np.ndarray, new: torch.Tensor | np.ndarray) -> float:
    """Fraction of samples whose hard cluster label differs between two assignments (DEC's stopping statistic).

    Args:
        previous: integer labels ``(N,)`` from the previous refresh.
        new: integer labels ``(N,)`` from this refresh.

    Returns:
        ``#{i: previous_i != new_i} / N`` as a Python float in ``[0, 1]``.

    Raises:
        TypeError: for non-integer labels or other types.
        ValueError: for shapes other than two equal ``(N,)`` with ``N >= 1``.
    """
    arrays = []
    for value, name in ((previous, "previous"), (new, "new")):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name} must be a torch.Tensor or numpy array of labels, got {type(value).__name__}.")
        if not np.issubdtype(value.dtype, np.integer):
            raise TypeError(f"{name} must hold integer labels, got dtype {value.dtype}.")
        if value.ndim != 1 or value.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty (N,) label vector, got shape {value.shape}.")
        arrays.append(value)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(f"previous and new must have the same length, got {arrays[0].shape} and {arrays[1].shape}.")
    return float(np.mean(arrays[0] != arrays[1]))
