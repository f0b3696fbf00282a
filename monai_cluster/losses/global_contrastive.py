"""Partition-aware global contrastive loss of Chaitanya et al. (strategies G_R, G_D^- and G_D).

Chaitanya et al. split each volume into partitions of consecutive slices and compare three ways of choosing a
2D slice's positives and negatives for the global (encoder) loss; their reference code's
``global_loss_exp_no`` 0, 1, 2 are:

- ``"G_R"``: random batches, plain SimCLR; partitions are ignored.
- ``"G_D-"`` (the paper's G_D^-): the positive is the slice's own other view only; slices of the same
  partition (from any volume) are removed from its negatives.
- ``"G_D"``: slices of the same partition from other volumes are further positives.

Cluster guidance (Zhang et al.) combines with any strategy: with ``pseudo_classes``, views of a sample that shares
the anchor's pseudo-class leave its negatives too (they stay positives where the strategy makes them positives).

References:
    - [0] Global and local contrastive learning, Chaitanya et al., NeurIPS 2020, https://arxiv.org/abs/2006.10511
    - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
    - [2] Cluster-guided contrastive learning, Zhang et al., BIBM 2022, https://arxiv.org/abs/2211.08557
"""

from __future__ import annotations

import numbers

import torch
from torch.nn.modules.loss import _Loss

from monai_cluster.losses._distributed import gather_rows
from monai_cluster.losses.cluster_contrastive import _select_levels
from monai_cluster.losses._nt_xent import (
    check_gather_flag,
    check_reduction,
    check_temperature,
    masked_logsumexp,
    nt_xent_terms,
    paired_views,
    reduce_losses,
    sample_indices,
)
from monai_cluster.utils.validation import check_embeddings, check_labels
from monai_cluster.utils.precision import float32_forward

__all__ = ["GLOBAL_STRATEGIES", "GlobalContrastiveLoss", "check_global_strategy", "global_contrastive_loss"]

GLOBAL_STRATEGIES = ("G_D", "G_D-", "G_R")
"""Chaitanya et al.'s global-loss strategies: partition-aware positives, partition-aware exclusion, SimCLR."""


def check_global_strategy(strategy: object) -> str:
    """Return ``strategy`` if it is one of :data:`GLOBAL_STRATEGIES` (``"G_D"``, ``"G_D-"``, ``"G_R"``).

    Raises:
        TypeError: when ``strategy`` is not a string.
        ValueError: when it is not one of the choices (all listed in the message).
    """
    if not isinstance(strategy, str):
        raise TypeError(
            f"strategy must be one of {list(GLOBAL_STRATEGIES)}, got {type(strategy).__name__} {strategy!r}."
        )
    if strategy not in GLOBAL_STRATEGIES:
        raise ValueError(
            f"strategy must be one of {list(GLOBAL_STRATEGIES)} (G_D: same-partition slices of other volumes are "
            f"positives; G_D-: they are neither positives nor negatives; G_R: SimCLR), got {strategy!r}."
        )
    return strategy


def _check_ids(ids: object, name: str, batch: int, device: torch.device) -> torch.Tensor | None:
    if ids is None:
        return None
    t = check_labels(ids, name, length=batch)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a (B,) integer tensor, got shape {tuple(t.shape)}.")
    return t.to(device)


def _check_int_level(level: object) -> int:
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(
            f"level must be an integer column index of pseudo_classes, got {type(level).__name__} {level!r}."
        )
    return int(level)


@float32_forward
def global_contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    partitions: torch.Tensor | None = None,
    volume_ids: torch.Tensor | None = None,
    temperature: float = 0.1,
    reduction: str = "mean",
    gather_distributed: bool = False,
    strategy: str = "G_D",
    pseudo_classes: torch.Tensor | None = None,
    level: int = 0,
) -> torch.Tensor:
    """Chaitanya et al.'s global loss (strategy ``"G_D"``, ``"G_D-"`` or ``"G_R"``), averaged per anchor.

    Views ``v_1 .. v_2B`` are ``z1`` then ``z2``; ``s(u, v) = <u, v> / (|u| |v| temperature)``. For an
    anchor view ``a`` of sample ``i`` (partition ``q(i)``, volume ``m(i)``) every other view ``k`` of a sample
    ``j`` is a positive, a negative or excluded (neither):

    - the anchor's other view (``j = i``): positive in every strategy;
    - a view of another partition (``q(j) != q(i)``, same volume or not): negative in every strategy;
    - a view of the same partition from another volume (``q(j) = q(i)``, ``m(j) != m(i)``): positive in
      ``"G_D"``, excluded in ``"G_D-"``, negative in ``"G_R"``;
    - a view of another slice of the same partition and the same volume (``q(j) = q(i)``, ``m(j) = m(i)``,
      ``j != i``): excluded in ``"G_D"`` and ``"G_D-"``, negative in ``"G_R"``;
    - the anchor itself (``k = a``): excluded;
    - with ``pseudo_classes``: a view of another sample with the anchor's pseudo-class (column ``level``) is
      excluded where it would be a negative (Zhang et al.'s cluster guidance on top of the strategy).

    With ``P(a)`` the positives and ``N(a)`` the negatives of ``a``::

        l(a, p) = -log( e^{s(a, p)} / (e^{s(a, p)} + sum_{n in N(a)} e^{s(a, n)}) )
        L(a)    = 1 / |P(a)| * sum_{p in P(a)} l(a, p)
        loss    = 1 / 2B * sum_a L(a)

    ``"G_D-"`` thus has exactly one positive per anchor and equals SimCLR's NT-Xent when every sample has its
    own partition. In ``"G_D"`` each positive is scored against the anchor's shared negative set; the paper
    averages ``l`` over all positive pairs, and with a batch of one slice per partition per volume (their
    sampling) every anchor has the same number of positives, so the two averages coincide. Without
    ``volume_ids`` two different samples count as different volumes; without ``partitions`` every strategy is
    plain SimCLR (``"G_R"`` ignores ``partitions`` and ``volume_ids``, which are still checked). An anchor
    without negatives (a batch of a single partition) gets loss 0.

    Args:
        z1: ``(B, F)`` embeddings of the first view, ``B >= 2``.
        z2: ``(B, F)`` embeddings of the second view.
        partitions: ``(B,)`` integer partition index of each slice, or None.
        volume_ids: ``(B,)`` integer volume of each slice, or None (needs ``partitions``).
        temperature: softmax temperature ``> 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-view ``(2B,)``, ``z1`` anchors first).
        gather_distributed: contrast local anchors against the views (and partitions, volumes) of every
            ``torch.distributed`` rank.
        strategy: ``"G_D"`` (default), ``"G_D-"`` or ``"G_R"``, see the table.
        pseudo_classes: ``(B,)`` or ``(B, levels)`` integer pseudo-classes (columns coarse to fine), or None.
        level: the column of ``pseudo_classes`` that removes negatives (negative indices count from the finest).

    Returns:
        a scalar, or ``(2B,)`` with ``reduction="none"``.

    Raises:
        ValueError: for a bad ``strategy`` (the choices are listed), mismatched embeddings, ``partitions``,
            ``volume_ids`` or ``pseudo_classes`` of the wrong shape, a ``level`` outside the columns, or
            ``volume_ids`` without ``partitions``.
        TypeError: for non-integer ``partitions``/``volume_ids``/``pseudo_classes`` or ``level``.
    """
    strategy = check_global_strategy(strategy)
    temperature = check_temperature(temperature)
    reduction = check_reduction(reduction)
    check_embeddings(z1, z2)
    batch = z1.shape[0]
    device = z1.device
    if partitions is None and volume_ids is not None:
        raise ValueError("volume_ids needs partitions: without partitions the loss is plain SimCLR.")
    part = _check_ids(partitions, "partitions", batch, device)
    vol = _check_ids(volume_ids, "volume_ids", batch, device)
    level = _check_int_level(level)
    pseudo = None if pseudo_classes is None else _select_levels(pseudo_classes, level, batch, device)[:, 0]
    if strategy == "G_R":
        part = vol = None

    logits, total, offset = paired_views(z1, z2, temperature, gather_distributed)
    ids = None if part is None else torch.stack([part, part if vol is None else vol], dim=1)
    if gather_distributed and ids is not None:
        ids = gather_rows(ids)

    sample_rows, sample_cols = sample_indices(batch, total, offset, device)
    same_sample = sample_rows[:, None] == sample_cols[None, :]
    view_rows = sample_rows + total * torch.arange(2, device=device).repeat_interleave(batch)
    is_self = view_rows[:, None] == torch.arange(2 * total, device=device)[None, :]
    positives = same_sample & ~is_self  # the anchor's other view, in every strategy
    if part is None:
        same_part = same_sample
    else:
        same_part = part.repeat(2)[:, None] == ids[:, 0].repeat(2)[None, :]
        if strategy == "G_D":
            if vol is None:
                other_volume = ~same_sample
            else:
                other_volume = vol.repeat(2)[:, None] != ids[:, 1].repeat(2)[None, :]
            positives = positives | (same_part & other_volume)

    not_negative = same_part
    if pseudo is not None:
        pseudo_all = gather_rows(pseudo) if gather_distributed else pseudo
        not_negative = not_negative | (pseudo.repeat(2)[:, None] == pseudo_all.repeat(2)[None, :])
    neg_lse = masked_logsumexp(logits, not_negative)  # negatives: views of other partitions (and pseudo-classes)
    terms = torch.where(positives, nt_xent_terms(neg_lse[:, None], logits), logits.new_zeros(()))
    per_view = terms.sum(dim=1) / positives.sum(dim=1)
    return reduce_losses(per_view, reduction)


class GlobalContrastiveLoss(_Loss):
    """Chaitanya et al.'s partition-aware global contrastive loss; see :func:`global_contrastive_loss`.

    Args:
        temperature: softmax temperature ``> 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        gather_distributed: contrast against the views of every ``torch.distributed`` rank.
        strategy: ``"G_D"`` (same-partition slices of other volumes are positives, default), ``"G_D-"``
            (they are removed from the negatives only) or ``"G_R"`` (SimCLR, partitions ignored).
        level: the column of the ``pseudo_classes`` given to :meth:`forward` whose same-class samples leave the
            negatives (cluster guidance; ``0`` = coarsest, ``-1`` = finest).

    Raises:
        ValueError: for a ``strategy`` that is not one of :data:`GLOBAL_STRATEGIES`, or a bad temperature or
            reduction.

    Example:
        >>> loss = GlobalContrastiveLoss(temperature=0.1, strategy="G_D-")
        >>> z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
        >>> loss(z1, z2, partitions=torch.tensor([0, 1, 0, 1]), volume_ids=torch.tensor([0, 0, 1, 1])).shape
        torch.Size([])

    References:
        - [0] Global and local contrastive learning, Chaitanya et al., NeurIPS 2020, https://arxiv.org/abs/2006.10511
        - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
    """

    def __init__(
        self,
        temperature: float = 0.1,
        reduction: str = "mean",
        gather_distributed: bool = False,
        strategy: str = "G_D",
        level: int = 0,
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.temperature = check_temperature(temperature)
        self.gather_distributed = check_gather_flag(gather_distributed)
        self.strategy = check_global_strategy(strategy)
        self.level = _check_int_level(level)

    @float32_forward
    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        partitions: torch.Tensor | None = None,
        volume_ids: torch.Tensor | None = None,
        pseudo_classes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            z1: ``(B, F)`` first-view embeddings.
            z2: ``(B, F)`` second-view embeddings.
            partitions: ``(B,)`` integer partition of each slice, or None for plain SimCLR.
            volume_ids: ``(B,)`` integer volume of each slice, or None (every sample its own volume).
            pseudo_classes: ``(B,)`` or ``(B, levels)`` integer pseudo-classes, or None (no cluster guidance).

        Returns:
            a scalar, or ``(2B,)`` per-view losses with ``reduction="none"``.
        """
        return global_contrastive_loss(
            z1, z2, partitions, volume_ids, self.temperature, self.reduction, self.gather_distributed, self.strategy,
            pseudo_classes, self.level,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"strategy={self.strategy!r}, temperature={self.temperature}, level={self.level}, "
            f"reduction={self.reduction!r}"
        )
