"""Feature extraction sharded over the ranks of ``torch.distributed`` (``torchrun``), gathered on one rank.

Stage 2 of cluster-guided pretraining (autoencoder features -> pseudo-classes) is a forward pass over every
unlabeled image. Under ``torchrun`` each rank runs :func:`~monai_cluster.clustering.extract_features` on its own
contiguous shard of the images on its own device, and one rank (``dst``) receives all features in the order of
the listing, so the clustering that follows sees exactly what one process would have extracted.

A failure on any rank (a bad image, non-finite features) is shared with every rank before the gather, so all
ranks raise the same error instead of waiting on each other forever.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from monai_cluster.clustering.features import extract_features

__all__ = ["extract_features_sharded", "shard_bounds"]


def shard_bounds(num_items: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous shard: ``ceil(N / world)`` items per rank, the last ones fewer
    (possibly none)."""
    per = math.ceil(num_items / world_size)
    start = min(num_items, rank * per)
    return start, min(num_items, start + per)


def _comm_device() -> torch.device:
    """Where collective tensors must live: the current CUDA device for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def extract_features_sharded(
    model: torch.nn.Module,
    data: Sequence[dict] | Dataset,
    dst: int = 0,
    **kwargs: Any,
) -> tuple[np.ndarray | None, list[str] | None]:
    """:func:`~monai_cluster.clustering.extract_features` with the images split over the ``torch.distributed`` ranks.

    Without an initialised process group (or with one rank) this is ``extract_features(model, data, **kwargs)``.
    Otherwise rank ``r`` extracts the items of :func:`shard_bounds` ``(len(data), r, world_size)`` and rank ``dst``
    gathers every rank's rows, in rank order, which is the order of ``data``. Every rank must call it (a
    collective), with the same ``data``; the model must hold the same weights on every rank.

    Args:
        model: the encoder, on every rank.
        data: a list of dicts or an indexable ``Dataset`` of known length (a ``DataLoader`` cannot be sharded).
        dst: the rank that receives the features.
        kwargs: passed to ``extract_features`` (``transform``, ``batch_size``, ``device`` of this rank, ...);
            ``out_path`` is not supported here (the gathered features are held in ``dst``'s memory).

    Returns:
        ``(features (N, F) float32, keys)`` on ``dst``; ``(None, None)`` on the other ranks.

    Raises:
        ValueError: on every rank, when extraction failed on any rank (the message names the ranks and their
            errors), when ``dst`` is not a rank, or when ``out_path`` is passed.
        TypeError: when ``data`` has no length or cannot be indexed.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return extract_features(model, data, **kwargs)
    if "out_path" in kwargs:
        raise ValueError("extract_features_sharded gathers features in memory; out_path is not supported.")
    if not isinstance(data, (Sequence, Dataset)) or isinstance(data, (str, bytes)) or not hasattr(data, "__len__"):
        raise TypeError(f"data must be a list of dicts or a Dataset of known length, got {type(data).__name__}.")
    rank, world = dist.get_rank(), dist.get_world_size()
    if isinstance(dst, bool) or not isinstance(dst, int) or not 0 <= dst < world:
        raise ValueError(f"dst must be a rank in [0, {world - 1}], got {dst!r}.")
    start, stop = shard_bounds(len(data), rank, world)
    shard = data[start:stop] if isinstance(data, Sequence) else Subset(data, range(start, stop))
    features, keys, error = None, [], None
    if stop > start:
        try:
            features, keys = extract_features(model, shard, **kwargs)
        except (ValueError, TypeError, RuntimeError) as err:  # shared below, so that no rank waits forever
            error = f"{type(err).__name__}: {err}"
    errors = [None] * world
    dist.all_gather_object(errors, error)
    failed = {r: e for r, e in enumerate(errors) if e is not None}
    if failed:
        raise ValueError(
            "feature extraction failed on rank(s) "
            + "; ".join(f"{r} (items {shard_bounds(len(data), r, world)[0]}..): {e}" for r, e in failed.items())
        )
    device = _comm_device()
    width = torch.tensor([0 if features is None else features.shape[1]], device=device)
    dist.all_reduce(width, op=dist.ReduceOp.MAX)
    per = math.ceil(len(data) / world)
    block = torch.zeros(per, int(width.item()), dtype=torch.float32, device=device)
    if features is not None:
        block[: features.shape[0]] = torch.from_numpy(np.ascontiguousarray(features)).to(device)
    blocks = [torch.empty_like(block) for _ in range(world)] if rank == dst else None
    dist.gather(block, blocks, dst=dst)
    gathered_keys = [None] * world if rank == dst else None
    dist.gather_object(keys, gathered_keys, dst=dst)
    if rank != dst:
        return None, None
    rows = [b[: shard_bounds(len(data), r, world)[1] - shard_bounds(len(data), r, world)[0]]
            for r, b in enumerate(blocks)]  # fmt: skip
    return torch.cat(rows).cpu().numpy(), [k for part in gathered_keys for k in part]
