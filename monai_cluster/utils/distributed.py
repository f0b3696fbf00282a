"""Rank helpers of ``torch.distributed`` runs: the main process, barriers, the world size, and data parallelism.

Outside a process group every helper does what one process needs (``is_main_process()`` is True, ``barrier()``
does nothing, ``data_parallel(module)`` returns the module).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["barrier", "broadcast_buffers", "data_parallel", "is_main_process", "world_size"]


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """True outside ``torch.distributed`` or on rank 0."""
    return not _initialized() or dist.get_rank() == 0


def barrier() -> None:
    """``torch.distributed.barrier()`` when a process group is initialised; nothing otherwise."""
    if _initialized():
        dist.barrier()


def world_size() -> int:
    """Processes of the ``torch.distributed`` group (1 outside one)."""
    return dist.get_world_size() if _initialized() else 1


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm statistics, prototypes, ...) to every rank (nothing in one process).

    ``DistributedDataParallel`` broadcasts them at each forward, so after the last training step of an epoch the
    ranks' buffers may differ; call this before a whole-dataset pass in eval mode whose result every rank must share.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}.")
    if world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def data_parallel(module: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` under ``torch.distributed`` (more than one process), else
    ``module`` itself.

    Gradients are averaged over the ranks inside ``backward``; ``find_unused_parameters=True`` because a training
    step may leave parts of a network without a gradient (a projection head in reconstruction-only training, the
    centroids of DVC's pretraining). The wrapper broadcasts rank 0's parameters and buffers when it is built.

    Args:
        module: the network (or a module whose ``forward`` runs one training step's forward passes).
        device: the device the module lives on; a CUDA device becomes DDP's ``device_ids``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}.")
    if world_size() == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    device = torch.device(device) if device is not None else None
    device_ids = [device.index or 0] if device is not None and device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)
