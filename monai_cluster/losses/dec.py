"""DEC clustering loss: KL(P || Q) between a sharpened target distribution and the soft assignments.

References:
    - [0] DEC, 2016, https://arxiv.org/abs/1511.06335
    - [1] DVC, 2021, https://arxiv.org/abs/2109.10777
"""

from __future__ import annotations

import torch
from torch import nn

from monai_cluster.losses._nt_xent import check_reduction, reduce_losses
from monai_cluster.utils.validation import check_finite, check_positive_float, check_tensor
from monai_cluster.utils.precision import float32_forward

__all__ = ["DECClusteringLoss", "dec_kl_divergence"]


@float32_forward
def dec_kl_divergence(q: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample ``KL(P_i || Q_i) = sum_j p_ij log(p_ij / q_ij)`` (DEC eq. 2), numerically safe.

    ``p log p`` uses :func:`torch.xlogy` (``0 log 0 = 0``), and ``log q`` is taken of ``q`` clamped to ``eps`` so
    a vanishing assignment gives a large finite loss rather than ``inf``. Gradients flow into ``q`` only.

    Args:
        q: soft assignments ``(B, K)``, non-negative rows summing to one (checked: logits are rejected).
        target: target distribution ``P`` ``(B, K)`` (e.g. :func:`monai_cluster.clustering.dec.target_distribution`).
        eps: floor of ``q`` inside the log.

    Returns:
        ``(B,)`` per-sample divergences.
    """
    check_tensor(q, "q", ndim=2, floating=True)
    check_tensor(target, "target", ndim=2, floating=True)
    if q.shape != target.shape:
        raise ValueError(
            f"q and target must have the same (B, K) shape, got {tuple(q.shape)} and {tuple(target.shape)}."
        )
    check_finite(q, "q")
    check_finite(target, "target")
    target = target.detach().to(q.dtype)
    if bool((target < 0).any()):
        raise ValueError("target must be a non-negative distribution, but it holds negative values.")
    detached = q.detach()
    sums = detached.sum(1)
    # 1e-2: a q rounded to bfloat16/float16 (then cast to float32 by the precision guard) sums to 1 within 2^-8;
    # logits are still refused
    if bool((detached < 0).any()) or not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-2)):
        raise ValueError(
            "q must hold soft assignments: non-negative rows that sum to 1 (a softmax or Student's-t assignment, "
            f"not logits), got values in [{float(detached.min()):.4g}, {float(detached.max()):.4g}] and row sums in "
            f"[{float(sums.min()):.4g}, {float(sums.max()):.4g}]."
        )
    return (torch.xlogy(target, target) - target * torch.log(q.clamp_min(eps))).sum(1)


class DECClusteringLoss(nn.Module):
    """``KL(P || Q)`` of DEC, reduced over the batch (``"mean"`` is ``kl_div``'s ``"batchmean"``).

    With ``reduction="mean"`` this equals
    ``torch.nn.functional.kl_div(q.log(), p, reduction="batchmean")``: the per-sample sums over clusters,
    averaged over the batch (the mathematically correct KL; ``kl_div``'s elementwise ``"mean"`` divides by
    ``B * K`` instead). The target ``P`` is a constant: no gradient flows into it.

    Args:
        reduction: ``"mean"`` (batch mean), ``"sum"`` or ``"none"`` (per-sample ``(B,)``).
        eps: floor of ``q`` inside the log (``> 0``).

    Shapes:
        ``forward(q, target)`` with ``q`` and ``target`` both ``(B, K)``.
    """

    def __init__(self, reduction: str = "mean", eps: float = 1e-12) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.eps = check_positive_float(eps, "eps")

    @float32_forward
    def forward(self, q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return ``KL(target || q)`` reduced as configured."""
        return reduce_losses(dec_kl_divergence(q, target, self.eps), self.reduction)
