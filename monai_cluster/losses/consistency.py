"""Pseudo-label consistency of semi-supervised segmentation (FixMatch / UniMatch style) and its ramp-up weight.

The teacher (an EMA of the student, or the student itself without gradients) sees the weak view of an unlabelled
image; its class probabilities ``q`` give pseudo-labels ``argmax q`` kept only where ``max q >= threshold``. The
student sees the strong view and is trained with the cross-entropy of its logits to the kept pseudo-labels (plus,
optionally, a soft Dice on the kept voxels), averaged over the kept voxels only: voxels below the threshold carry
neither loss nor gradient, and a batch without a kept voxel gives 0. :func:`sigmoid_rampup` is the usual
``exp(-5 (1 - t)^2)`` ramp of the consistency weight (Laine & Aila; Tarvainen & Valpola).

References:
    - [0] FixMatch: Simplifying semi-supervised learning with consistency and confidence, Sohn et al., NeurIPS 2020,
      https://arxiv.org/abs/2001.07685
    - [1] Revisiting weak-to-strong consistency in semi-supervised semantic segmentation (UniMatch), Yang et al.,
      CVPR 2023, https://arxiv.org/abs/2208.09910
    - [2] Temporal ensembling for semi-supervised learning, Laine & Aila, ICLR 2017, https://arxiv.org/abs/1610.02242
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from monai_cluster.losses._nt_xent import check_reduction
from monai_cluster.utils.precision import float32_forward
from monai_cluster.utils.validation import check_spatial_tensor

__all__ = [
    "PseudoLabelConsistencyLoss",
    "confident_pseudo_labels",
    "pseudo_label_consistency_loss",
    "sigmoid_rampup",
]

_SMOOTH = 1e-5


def _check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}.")
    return float(threshold)


def _check_weight(weight: object, name: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (weight >= 0 and math.isfinite(weight)):
        raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}.")
    return float(weight)


def confident_pseudo_labels(teacher_probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels ``argmax`` over classes and where the teacher is confident (``max >= threshold``).

    Args:
        teacher_probs: class probabilities ``(B, K, *spatial)`` (softmax of the teacher's logits), 2D or 3D.
        threshold: confidence threshold in ``[0, 1]``.

    Returns:
        ``(labels, keep)``: ``int64`` class indices and a ``bool`` mask, both ``(B, *spatial)``; no gradient.
    """
    probs = check_spatial_tensor(teacher_probs, "teacher_probs")
    if not probs.is_floating_point():
        raise TypeError(f"teacher_probs must be a floating tensor of probabilities, got dtype {probs.dtype}.")
    confidence, labels = probs.detach().max(dim=1)
    return labels, confidence >= _check_threshold(threshold)


@float32_forward
def pseudo_label_consistency_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    threshold: float = 0.95,
    dice_weight: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy (+ ``dice_weight`` x soft Dice) of the student's logits to the teacher's confident pseudo-labels.

    With ``keep`` and ``labels`` from :func:`confident_pseudo_labels` and ``n = sum(keep)``::

        CE   = sum_{keep} -log softmax(student)[label] / max(n, 1)
        Dice = mean_k (1 - (2 sum_keep p_k y_k + s) / (sum_keep p_k + sum_keep y_k + s))    (batch Dice, s = 1e-5)

    Voxels outside ``keep`` take no part in either term (their logits get a zero gradient); with ``n = 0`` the loss
    is 0 (still attached to the graph). Runs in float32 under autocast.

    Args:
        student_logits: ``(B, K, *spatial)`` logits of the strong view, 2D or 3D.
        teacher_probs: ``(B, K, *spatial)`` probabilities of the weak view (no gradient flows to them).
        threshold: confidence threshold in ``[0, 1]``.
        dice_weight: weight of the Dice term (only with ``reduction="mean"``).
        reduction: ``"mean"`` over kept voxels, ``"sum"`` over kept voxels, or ``"none"``: the per-voxel
            cross-entropy ``(B, *spatial)``, 0 outside ``keep``.

    Raises:
        ValueError: for shapes that differ or are not 4D/5D, a threshold outside ``[0, 1]``, a negative
            ``dice_weight``, or a Dice term with another reduction than ``"mean"``.
        TypeError: for non-floating inputs or a bad ``reduction``.
    """
    logits = check_spatial_tensor(student_logits, "student_logits")
    if not logits.is_floating_point():
        raise TypeError(f"student_logits must be a floating tensor, got dtype {logits.dtype}.")
    if tuple(teacher_probs.shape) != tuple(logits.shape):
        raise ValueError(
            f"teacher_probs must have the shape of student_logits {tuple(logits.shape)}, "
            f"got {tuple(teacher_probs.shape)}."
        )
    reduction = check_reduction(reduction)
    dice_weight = _check_weight(dice_weight, "dice_weight")
    if dice_weight > 0 and reduction != "mean":
        raise ValueError(f"dice_weight > 0 needs reduction='mean' (a Dice has no per-voxel value), got {reduction!r}.")
    labels, keep = confident_pseudo_labels(teacher_probs, threshold)
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, labels.unsqueeze(1)).squeeze(1)
    ce = torch.where(keep, nll, torch.zeros_like(nll))
    if reduction == "none":
        return ce
    if reduction == "sum":
        return ce.sum()
    count = keep.sum()
    loss = ce.sum() / count.clamp(min=1)
    if dice_weight > 0:
        m = keep.unsqueeze(1).to(log_p.dtype)
        p = log_p.exp() * m
        y = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(log_p.dtype) * m
        axes = [0, *range(2, logits.ndim)]
        inter, denom = (p * y).sum(axes), p.sum(axes) + y.sum(axes)
        dice = (1.0 - (2.0 * inter + _SMOOTH) / (denom + _SMOOTH)).mean()
        loss = loss + dice_weight * dice
    return loss


class PseudoLabelConsistencyLoss(torch.nn.Module):
    """Module form of :func:`pseudo_label_consistency_loss`.

    Args:
        threshold: confidence threshold in ``[0, 1]`` (FixMatch 0.95; UniMatch 0.95 on ACDC).
        dice_weight: weight of the soft Dice on the kept voxels (0: cross-entropy only).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (see the function).

    Attributes:
        last_kept_fraction: detached 0-dim tensor, the fraction of voxels kept by the last call (for logging).

    Example:
        >>> loss = PseudoLabelConsistencyLoss(threshold=0.9)
        >>> value = loss(student(strong), torch.softmax(teacher(weak), dim=1))
    """

    def __init__(self, threshold: float = 0.95, dice_weight: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        self.threshold = _check_threshold(threshold)
        self.dice_weight = _check_weight(dice_weight, "dice_weight")
        self.reduction = check_reduction(reduction)
        if self.dice_weight > 0 and self.reduction != "mean":
            raise ValueError(f"dice_weight > 0 needs reduction='mean', got {reduction!r}.")
        self.last_kept_fraction: torch.Tensor | None = None

    @float32_forward
    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """Loss of ``student_logits`` ``(B, K, *spatial)`` against ``teacher_probs`` of the same shape."""
        _, keep = confident_pseudo_labels(teacher_probs, self.threshold)
        self.last_kept_fraction = keep.float().mean().detach()
        return pseudo_label_consistency_loss(
            student_logits, teacher_probs, self.threshold, self.dice_weight, self.reduction
        )


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(current / rampup_length, 0, 1)``; 1 when ``rampup_length == 0``.

    Args:
        current: the step (iteration or epoch) now, >= 0.
        rampup_length: steps until the weight reaches 1, >= 0.

    Raises:
        ValueError: for a negative or non-finite argument.
    """
    current = _check_weight(current, "current")
    rampup_length = _check_weight(rampup_length, "rampup_length")
    if rampup_length == 0:
        return 1.0
    t = min(current, rampup_length) / rampup_length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))
