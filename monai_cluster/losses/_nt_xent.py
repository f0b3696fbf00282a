"""Numerically stable pieces shared by the contrastive losses of this package.

One anchor's NT-Xent term against a positive ``p`` and a negative set ``N`` is

    -log( e^{s_p} / (e^{s_p} + sum_{n in N} e^{s_n}) )

with ``s`` cosine similarities over the temperature. Columns that are neither ``p`` nor in ``N`` are filled
with a large finite negative number (never ``-inf``, whose gradient is NaN for an anchor with no negative at
all) and the row goes through a log-softmax (a fused cross-entropy when there is one positive per anchor,
``softplus(logsumexp_N s - s_p)`` when an anchor has several). An anchor without negatives gets loss 0
and a zero gradient.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from monai_cluster.losses._distributed import gather_rows_with_grad
from monai_cluster.utils.validation import check_choice, check_positive_float

__all__ = [
    "REDUCTIONS",
    "check_temperature",
    "check_reduction",
    "check_gather_flag",
    "masked_logsumexp",
    "paired_views",
    "positive_columns",
    "sample_indices",
    "single_positive_nt_xent",
    "nt_xent_terms",
    "reduce_losses",
]

REDUCTIONS = ("mean", "sum", "none")


def check_temperature(temperature: object) -> float:
    """Return ``temperature`` as a finite ``float > 0`` (TypeError for non-numbers, ValueError otherwise)."""
    return check_positive_float(temperature, "temperature")


def check_reduction(reduction: object) -> str:
    """Return ``reduction`` if it is one of ``mean``, ``sum``, ``none``."""
    if not isinstance(reduction, str):
        raise TypeError(f"reduction must be one of {list(REDUCTIONS)}, got {type(reduction).__name__} {reduction!r}.")
    return check_choice(reduction, "reduction", REDUCTIONS)


def check_gather_flag(gather_distributed: object) -> bool:
    """Validate ``gather_distributed`` at construction: a bool, and ``torch.distributed`` present when True."""
    if not isinstance(gather_distributed, (bool, numbers.Integral)) or gather_distributed not in (0, 1):
        raise TypeError(f"gather_distributed must be a bool, got {type(gather_distributed).__name__}.")
    if gather_distributed and not torch.distributed.is_available():
        raise ValueError("gather_distributed=True needs torch.distributed, which this torch build does not provide.")
    return bool(gather_distributed)


def paired_views(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather_distributed: bool
) -> tuple[torch.Tensor, int, int]:
    """Normalise two ``(B, F)`` views and build the similarity logits of every anchor against every view.

    Returns:
        ``logits`` ``(2B, 2N)`` from ONE matrix product (anchors ``z1`` then ``z2``; columns all views of all
        ranks, view 0 first, ``N = B`` without gathering), ``N``, and this rank's sample offset within ``N``.
    """
    dim = z1.shape[1]
    n1, n2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    anchors = torch.cat([n1, n2])
    if gather_distributed:
        pairs, offset = gather_rows_with_grad(torch.cat([n1, n2], dim=1))
        columns = torch.cat([pairs[:, :dim], pairs[:, dim:]])
    else:
        columns, offset = anchors, 0
    logits = (anchors / temperature) @ columns.T  # temperature applied on the (2B, F) side: no (2B, 2N) division
    return logits, columns.shape[0] // 2, offset


def positive_columns(batch: int, total: int, offset: int, device: torch.device) -> torch.Tensor:
    """Column of each anchor's other view in :func:`paired_views` logits, ``(2B,)``."""
    local = torch.arange(offset, offset + batch, device=device)
    return torch.cat([local + total, local])


def sample_indices(batch: int, total: int, offset: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Global sample index of each anchor row ``(2B,)`` and of each column ``(2N,)`` of :func:`paired_views`."""
    rows = torch.arange(offset, offset + batch, device=device).repeat(2)
    return rows, torch.arange(total, device=device).repeat(2)


def masked_logsumexp(logits: torch.Tensor, excluded: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Log-sum-exp over the last dimension of ``logits`` ignoring the ``excluded`` entries.

    Args:
        logits: ``(..., R, M)`` similarities over the temperature.
        excluded: boolean ``(R, M)`` (or broadcastable), True where a column is not a negative of the row.
        inplace: overwrite ``logits`` (allowed when nothing else needs them, e.g. a fresh matmul output).

    Returns:
        ``(..., R)``; a row with every column excluded gets a very negative finite value.
    """
    fill = torch.finfo(logits.dtype).min / 4
    masked = logits.masked_fill_(excluded, fill) if inplace else logits.masked_fill(excluded, fill)
    return torch.logsumexp(masked, dim=-1)


def nt_xent_terms(neg_lse: torch.Tensor, pos_logits: torch.Tensor) -> torch.Tensor:
    """``-log(e^{pos} / (e^{pos} + e^{neg_lse}))`` elementwise, stably (``softplus(neg_lse - pos)``)."""
    return F.softplus(neg_lse - pos_logits)


def single_positive_nt_xent(
    logits: torch.Tensor, excluded: torch.Tensor, positive: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """NT-Xent per row when each row has exactly one positive column.

    Args:
        logits: ``(..., R, M)`` similarities over the temperature.
        excluded: boolean ``(R, M)``, True for columns that are not negatives of the row; the positive
            column may be True (it is unmasked here, in place: pass a mask you own).
        positive: ``(R,)`` column of each row's positive.
        inplace: overwrite ``logits`` (allowed when nothing else needs them, e.g. a fresh matmul output).

    Returns:
        ``(..., R)`` losses ``-log softmax(masked row)[positive]``.
    """
    rows = torch.arange(excluded.shape[0], device=excluded.device)
    excluded[rows, positive] = False
    fill = torch.finfo(logits.dtype).min / 4
    if inplace and logits.requires_grad:
        masked = _FillExcluded.apply(logits, excluded, fill)
    else:
        masked = logits.masked_fill_(excluded, fill) if inplace else logits.masked_fill(excluded, fill)
    lead = masked.shape[:-2]
    flat = masked.reshape(-1, masked.shape[-1])
    target = positive.repeat(flat.shape[0] // positive.shape[0])
    return F.cross_entropy(flat, target, reduction="none").reshape(*lead, -1)


class _FillExcluded(torch.autograd.Function):
    """``logits.masked_fill_(excluded, fill)`` whose backward passes the gradient through unmasked.

    Used only in front of a softmax cross-entropy: there the gradient at a filled column is its softmax
    probability, ``exp(fill - row max)``, which is exactly 0 in every float dtype (``fill`` is a quarter of the
    dtype's lowest value and the row max is a finite similarity over the temperature), so masking it again
    would be a wasted ``(R, M)`` pass. That pass, and the boolean mask kept for it, were what set the masked
    loss apart from a plain NT-Xent (``benchmarks/contrastive_loss.py``).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, excluded: torch.Tensor, fill: float) -> torch.Tensor:
        ctx.mark_dirty(logits)
        return logits.masked_fill_(excluded, fill)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def reduce_losses(per_item: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` (``mean``/``sum``/``none``) to per-anchor losses."""
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    return per_item
