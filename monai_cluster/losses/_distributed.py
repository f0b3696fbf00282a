"""All-gather across ``torch.distributed`` ranks with gradients flowing back to each rank's own rows.

The backward pass sums the gradient of the gathered tensor over ranks (every rank's loss depends on every
rank's rows) and returns this rank's slice. With DDP's gradient averaging this yields the gradient of the
single-process loss on the whole global batch. Ranks may hold different numbers of rows (they are padded
for the collective and trimmed afterwards). Works with gloo (CPU) and NCCL.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["require_process_group", "gather_rows", "gather_rows_with_grad"]


def require_process_group() -> None:
    """Raise a clear error when ``gather_distributed=True`` is used without an initialised process group."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "gather_distributed=True needs an initialised torch.distributed process group; call "
            "torch.distributed.init_process_group(...) first (e.g. run under torchrun) or set gather_distributed=False."
        )


def _row_counts(n: int, device: torch.device) -> list[int]:
    world = dist.get_world_size()
    local = torch.tensor([n], dtype=torch.long, device=device)
    counts = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(counts, local)
    return [int(c.item()) for c in counts]


def _gather_padded(tensor: torch.Tensor, counts: list[int]) -> torch.Tensor:
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, counts: list[int], offset: int) -> torch.Tensor:  # type: ignore[override]
        ctx.offset, ctx.count = offset, tensor.shape[0]
        return _gather_padded(tensor.detach(), counts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.offset : ctx.offset + ctx.count], None, None


def gather_rows_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``tensor`` ``(n_r, ...)`` from every rank along dim 0, differentiably.

    Returns:
        the gathered ``(sum_r n_r, ...)`` tensor (rank 0's rows first) and this rank's row offset in it.
    """
    require_process_group()
    counts = _row_counts(tensor.shape[0], tensor.device)
    offset = sum(counts[: dist.get_rank()])
    return _GatherWithGrad.apply(tensor, counts, offset), offset


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor without gradient (e.g. integer labels ``(n_r, ...)``) from every rank along dim 0."""
    require_process_group()
    return _gather_padded(tensor, _row_counts(tensor.shape[0], tensor.device))
