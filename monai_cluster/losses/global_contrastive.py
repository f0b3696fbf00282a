"""Partition-aware global contrastive loss of Chaitanya et al. (their strategy G_D^-).

References:
    - [0] Global and local contrastive learning, Chaitanya et al., NeurIPS 2020, https://arxiv.org/abs/2006.10511
    - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from monai_cluster.losses._distributed import gather_rows
from monai_cluster.losses._nt_xent import (
    check_gather_flag,
    check_reduction,
    check_temperature,
    masked_logsumexp,
    nt_xent_terms,
    paired_views,
    sample_indices,
    reduce_losses,
)
from monai_cluster.utils.validation import check_embeddings, check_labels

__all__ = ["GlobalContrastiveLoss", "global_contrastive_loss"]


def _check_ids(ids: object, name: str, batch: int, device: torch.device) -> torch.Tensor | None:
    if ids is None:
        return None
    t = check_labels(ids, name, length=batch)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a (B,) integer tensor, got shape {tuple(t.shape)}.")
    return t.to(device)


def global_contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    partitions: torch.Tensor | None = None,
    volume_ids: torch.Tensor | None = None,
    temperature: float = 0.1,
    reduction: str = "mean",
    gather_distributed: bool = False,
) -> torch.Tensor:
    """Chaitanya et al.'s global loss with partition-aware positives (G_D^-), averaged per anchor.

    Views ``v_1 .. v_2B`` are ``z1`` then ``z2``; ``s(u, v) = <u, v> / (|u| |v| temperature)``. For an
    anchor view ``a`` of sample ``i`` with partition ``q(i)`` and volume ``m(i)``:

    - positives ``P(a)``: the other view of sample ``i``, and both views of every sample ``j`` with
      ``q(j) = q(i)`` from another volume ``m(j) != m(i)``;
    - negatives ``N(a)``: every view of a sample with another partition ``q(j) != q(i)`` (same volume or not);
    - neither: ``a`` itself and other samples of the same partition and the same volume.

    ::

        l(a, p) = -log( e^{s(a, p)} / (e^{s(a, p)} + sum_{n in N(a)} e^{s(a, n)}) )
        L(a)    = 1 / |P(a)| * sum_{p in P(a)} l(a, p)
        loss    = 1 / 2B * sum_a L(a)

    Each positive is scored against the anchor's shared negative set. The paper averages ``l`` over all
    positive pairs; with a batch of one image per partition per volume (their sampling) every anchor has
    the same number of positives and the two averages coincide. Without ``volume_ids`` two different samples
    of the same partition count as different volumes; without ``partitions`` the loss is plain SimCLR
    NT-Xent. An anchor without negatives (a batch of a single partition) gets loss 0.

    Args:
        z1: ``(B, F)`` embeddings of the first view, ``B >= 2``.
        z2: ``(B, F)`` embeddings of the second view.
        partitions: ``(B,)`` integer partition index of each slice, or None.
        volume_ids: ``(B,)`` integer volume of each slice, or None (needs ``partitions``).
        temperature: softmax temperature ``> 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-view ``(2B,)``, ``z1`` anchors first).
        gather_distributed: contrast local anchors against the views of every ``torch.distributed`` rank.

    Returns:
        a scalar, or ``(2B,)`` with ``reduction="none"``.
    """
    temperature = check_temperature(temperature)
    reduction = check_reduction(reduction)
    check_embeddings(z1, z2)
    batch = z1.shape[0]
    device = z1.device
    if partitions is None and volume_ids is not None:
        raise ValueError("volume_ids needs partitions: without partitions the loss is plain SimCLR.")
    part = _check_ids(partitions, "partitions", batch, device)
    vol = _check_ids(volume_ids, "volume_ids", batch, device)

    logits, total, offset = paired_views(z1, z2, temperature, gather_distributed)
    ids = None if part is None else torch.stack([part, part if vol is None else vol], dim=1)
    if gather_distributed and ids is not None:
        ids = gather_rows(ids)

    sample_rows, sample_cols = sample_indices(batch, total, offset, device)
    same_sample = sample_rows[:, None] == sample_cols[None, :]
    view_rows = sample_rows + total * torch.arange(2, device=device).repeat_interleave(batch)
    is_self = view_rows[:, None] == torch.arange(2 * total, device=device)[None, :]
    if part is None:
        same_part = same_sample
        other_volume = ~same_sample
    else:
        part_cols = ids[:, 0].repeat(2)
        same_part = part.repeat(2)[:, None] == part_cols[None, :]
        if vol is None:
            other_volume = ~same_sample
        else:
            other_volume = vol.repeat(2)[:, None] != ids[:, 1].repeat(2)[None, :]
    positives = same_part & ~is_self & (same_sample | other_volume)

    neg_lse = masked_logsumexp(logits, same_part)  # negatives: every other partition
    terms = torch.where(positives, nt_xent_terms(neg_lse[:, None], logits), logits.new_zeros(()))
    per_view = terms.sum(dim=1) / positives.sum(dim=1)
    return reduce_losses(per_view, reduction)


class GlobalContrastiveLoss(_Loss):
    """Partition-aware global contrastive loss (Chaitanya et al.'s G_D^-); see :func:`global_contrastive_loss`.

    Args:
        temperature: softmax temperature ``> 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        gather_distributed: contrast against the views of every ``torch.distributed`` rank.

    References:
        - [0] Global and local contrastive learning, Chaitanya et al., NeurIPS 2020, https://arxiv.org/abs/2006.10511
        - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
    """

    def __init__(self, temperature: float = 0.1, reduction: str = "mean", gather_distributed: bool = False) -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.temperature = check_temperature(temperature)
        self.gather_distributed = check_gather_flag(gather_distributed)

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        partitions: torch.Tensor | None = None,
        volume_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            z1: ``(B, F)`` first-view embeddings.
            z2: ``(B, F)`` second-view embeddings.
            partitions: ``(B,)`` integer partition of each slice, or None for plain SimCLR.
            volume_ids: ``(B,)`` integer volume of each slice, or None (every sample its own volume).

        Returns:
            a scalar, or ``(2B,)`` per-view losses with ``reduction="none"``.
        """
        return global_contrastive_loss(
            z1, z2, partitions, volume_ids, self.temperature, self.reduction, self.gather_distributed
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"
