"""Cluster-guided NT-Xent: SimCLR's loss with the anchor's own pseudo-class removed from its negatives.

References:
    - [0] Cluster-guided contrastive learning, Zhang et al., BIBM 2022, https://arxiv.org/abs/2211.08557
    - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import numbers

import torch
from torch.nn.modules.loss import _Loss

from monai_cluster.losses._distributed import gather_rows
from monai_cluster.losses._nt_xent import (
    check_gather_flag,
    check_reduction,
    check_temperature,
    paired_views,
    positive_columns,
    single_positive_nt_xent,
    reduce_losses,
)
from monai_cluster.utils.validation import check_embeddings, check_labels
from monai_cluster.utils.precision import float32_forward

__all__ = ["ClusterGuidedContrastiveLoss", "cluster_guided_nt_xent"]


def _check_level(level: object) -> int | str:
    if isinstance(level, str) and level == "all":
        return "all"
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"level must be an integer column index or 'all', got {type(level).__name__} {level!r}.")
    return int(level)


def _select_levels(pseudo_classes: object, level: int | str, batch: int, device: torch.device) -> torch.Tensor:
    """Return the pseudo-class columns used as masks, ``(B, k)`` int64 (k = 1, or all levels for 'all')."""
    labels = check_labels(pseudo_classes, "pseudo_classes", length=batch).to(device)
    if labels.ndim == 1:
        labels = labels[:, None]
    num_levels = labels.shape[1]
    if num_levels == 0:
        raise ValueError(f"pseudo_classes must hold at least one level, got shape {tuple(labels.shape)}.")
    if level == "all":
        return labels
    if not -num_levels <= level < num_levels:
        raise ValueError(
            f"level must lie in [{-num_levels}, {num_levels - 1}] for pseudo_classes with {num_levels} level(s), "
            f"got {level}."
        )
    return labels[:, [level % num_levels]]


@float32_forward
def cluster_guided_nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    pseudo_classes: torch.Tensor | None = None,
    temperature: float = 0.1,
    level: int | str = 0,
    reduction: str = "mean",
    gather_distributed: bool = False,
) -> torch.Tensor:
    """NT-Xent over the ``2B`` views where samples of the anchor's pseudo-class are not negatives.

    With ``s(u, v) = <u, v> / (|u| |v| temperature)``, views ``v_1 .. v_2B`` (``z1`` then ``z2``), ``p(a)`` the
    other view of anchor ``a``'s sample and ``c`` the pseudo-class of a view's sample at the chosen level::

        l(a) = -log( e^{s(a, p(a))} / (e^{s(a, p(a))} + sum_{n : c(n) != c(a)} e^{s(a, n)}) )

    Views whose sample shares the anchor's pseudo-class (other than ``p(a)``) are neither positives nor
    negatives: they leave the denominator. With ``pseudo_classes=None`` every other view is a negative
    (plain SimCLR NT-Xent). An anchor whose every other sample shares its pseudo-class has no negative; its
    loss is ``0`` with zero gradient (finite), so a batch drawn from a single pseudo-class gives loss 0.

    Similarities are one matrix product of L2-normalised embeddings; excluded entries are masked with a
    large negative number before a log-softmax (a fused cross-entropy, i.e. a log-sum-exp), so the loss is
    finite at any temperature > 0. Memory is ``O(B^2)``, never ``(B, B, F)``.

    Args:
        z1: ``(B, F)`` embeddings of the first view, ``B >= 2``.
        z2: ``(B, F)`` embeddings of the second view of the same samples, same order.
        pseudo_classes: ``(B,)`` or ``(B, levels)`` integer pseudo-classes (columns coarse to fine), or None.
        temperature: softmax temperature ``> 0``.
        level: column of ``pseudo_classes`` that masks negatives (negative indices count from the finest),
            or ``"all"`` to average the per-view losses computed with each level's mask.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-view losses ``(2B,)``: ``z1`` anchors first).
        gather_distributed: gather views and pseudo-classes from every ``torch.distributed`` rank; local
            anchors contrast against all gathered views, gradients flow to the local rows.

    Returns:
        a scalar, or ``(2B,)`` for ``reduction="none"``.
    """
    temperature = check_temperature(temperature)
    reduction = check_reduction(reduction)
    level = _check_level(level)
    check_embeddings(z1, z2)
    batch = z1.shape[0]
    labels = None if pseudo_classes is None else _select_levels(pseudo_classes, level, batch, z1.device)

    logits, total, offset = paired_views(z1, z2, temperature, gather_distributed)
    positive = positive_columns(batch, total, offset, z1.device)
    if labels is None:  # sample indices as labels: only the anchor itself is excluded (plain SimCLR)
        labels = torch.arange(offset, offset + batch, device=z1.device)[:, None]
        all_labels = torch.arange(total, device=z1.device)[:, None]
    else:
        all_labels = gather_rows(labels) if gather_distributed else labels
    rows, cols = labels.repeat(2, 1), all_labels.repeat(2, 1)
    num = labels.shape[1]
    per_level = [
        single_positive_nt_xent(logits, rows[:, j, None] == cols[None, :, j], positive, inplace=num == 1)
        for j in range(num)
    ]
    per_view = per_level[0] if num == 1 else torch.stack(per_level).mean(dim=0)
    return reduce_losses(per_view, reduction)


class ClusterGuidedContrastiveLoss(_Loss):
    """Cluster-guided contrastive loss (NT-Xent without same-pseudo-class negatives), see
    :func:`cluster_guided_nt_xent` for the exact formula.

    Args:
        temperature: softmax temperature ``> 0``; finite even at 0.005.
        level: pseudo-class column that masks negatives (``0`` = coarsest, ``-1`` = finest) or ``"all"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        gather_distributed: contrast against the views of every ``torch.distributed`` rank.

    Example:
        >>> loss = ClusterGuidedContrastiveLoss(temperature=0.1, level=-1)
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        >>> value = loss(z1, z2, pseudo_classes=torch.tensor([[0, 0], [0, 1]] * 4))

    References:
        - [0] Cluster-guided contrastive learning, Zhang et al., BIBM 2022, https://arxiv.org/abs/2211.08557
        - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
    """

    def __init__(
        self, temperature: float = 0.1, level: int | str = 0, reduction: str = "mean", gather_distributed: bool = False
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.temperature = check_temperature(temperature)
        self.level = _check_level(level)
        self.gather_distributed = check_gather_flag(gather_distributed)

    @float32_forward
    def forward(
        self, z1: torch.Tensor, z2: torch.Tensor, pseudo_classes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            z1: ``(B, F)`` first-view embeddings.
            z2: ``(B, F)`` second-view embeddings.
            pseudo_classes: ``(B,)`` or ``(B, levels)`` integers, or None for plain SimCLR.

        Returns:
            a scalar, or ``(2B,)`` per-view losses with ``reduction="none"``.
        """
        return cluster_guided_nt_xent(
            z1, z2, pseudo_classes, self.temperature, self.level, self.reduction, self.gather_distributed
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, level={self.level!r}, reduction={self.reduction!r}"
