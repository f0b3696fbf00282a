"""Batch preparation for multi-view pretraining with MONAI's ``SupervisedTrainer`` (contract 2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor

from monai_cluster.transforms.geometry.array import check_geometry
from monai_cluster.transforms.geometry.dictionary import geometry_key
from monai_cluster.transforms.multiview.dictionary import view_key
from monai_cluster.utils import check_labels, check_positive_int

__all__ = ["MultiViewPrepareBatch"]


def _as_plain_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, MetaTensor):
        return value.as_tensor()
    if isinstance(value, torch.Tensor):
        return value
    raise TypeError(f"batch[{name!r}] must be a torch.Tensor, got {type(value).__name__}.")


class MultiViewPrepareBatch:
    """Turn a collated multi-view batch into ``(inputs, targets)`` for ``SupervisedTrainer(prepare_batch=...)``.

    ``inputs = torch.cat([batch[image], batch[image_1], ...], 0)`` of shape ``(V*B, C, *spatial)`` (view-major:
    rows ``v*B .. (v+1)*B-1`` are view ``v``), moved to ``device``, as a plain tensor (the views' metadata does not
    survive concatenation). ``targets = {"pseudo_class": (B, L) long, "partition": (B,) long, "volume_id": (B,)
    long}``, each ``None`` when the batch lacks that key; ``volume_id`` (an integer volume index per slice, e.g.
    written into the listing) lets the partition-aware global loss treat slices of one volume as the same volume.
    When every view carries the geometry of its random resized crop (``image_geometry``, ``image_geometry_1``,
    ... as :class:`~monai_cluster.transforms.RandResizedCropd` inside ``MultiViewd`` writes them), ``targets``
    also holds ``"geometry"``: ``(V, B, D+1, D+1)``, which the local loss uses to match locations between views
    of different geometry; otherwise ``"geometry"`` is None (views aligned voxel by voxel).
    Pass it to the trainer with ``decollate=False``: the targets are a dict, not a per-sample tensor.

    Args:
        num_views: views per sample, at least 1 (``image`` is view 0, ``image_i`` view ``i``).
        image_key: batch key of view 0.
        pseudo_class_key: batch key of the pseudo-classes (written by ``PseudoClassd``).
        partition_key: batch key of the slice partitions (written by ``SlicePartitiond``).
        volume_id_key: batch key of the volume index of each slice, or ``None`` to never pass one.

    Raises:
        ValueError: when view keys are missing (all named), views differ in shape, or targets have the wrong shape.
        TypeError: when a view is not a tensor or targets are not integer tensors.

    Example:
        >>> trainer = SupervisedTrainer(..., prepare_batch=MultiViewPrepareBatch(num_views=2), decollate=False)
    """

    def __init__(
        self,
        num_views: int = 2,
        image_key: str = "image",
        pseudo_class_key: str = "pseudo_class",
        partition_key: str = "partition",
        volume_id_key: str | None = "volume_id",
    ) -> None:
        self.num_views = check_positive_int(num_views, "num_views")
        self.image_key = image_key
        self.pseudo_class_key = pseudo_class_key
        self.partition_key = partition_key
        self.volume_id_key = volume_id_key
        self.view_keys = [view_key(image_key, i) for i in range(self.num_views)]
        self.geometry_keys = [view_key(geometry_key(image_key), i) for i in range(self.num_views)]
        self._target_specs = (
            ("pseudo_class", pseudo_class_key, "(B, levels)", 2),
            ("partition", partition_key, "(B,)", 1),
            ("volume_id", volume_id_key, "(B,)", 1),
        )

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        """Return ``(inputs (V*B, C, *spatial), targets)``.

        ``targets``: ``{"pseudo_class": (B, L), "partition": (B,), "volume_id": (B,), "geometry": (V, B, D+1, D+1)}``,
        each None when absent.

        Args:
            batchdata: a collated batch dictionary.
            device: where to move the tensors (``None``: leave them where they are).
            non_blocking: passed to ``Tensor.to``.
            kwargs: further ``Tensor.to`` arguments (the trainer's ``to_kwargs``).
        """
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"batchdata must be a dictionary of batched tensors, got {type(batchdata).__name__}.")
        missing = [k for k in self.view_keys if k not in batchdata]
        if missing:
            raise ValueError(
                f"MultiViewPrepareBatch(num_views={self.num_views}): the batch lacks view key(s) {missing} "
                f"(it has {list(batchdata)}); apply MultiViewd with num_views={self.num_views}."
            )
        views = [_as_plain_tensor(batchdata[k], k) for k in self.view_keys]
        shapes = {k: tuple(v.shape) for k, v in zip(self.view_keys, views)}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"MultiViewPrepareBatch: all views must have the same shape, got {shapes}.")
        if views[0].ndim not in (4, 5):
            raise ValueError(
                f"batch[{self.image_key!r}] must be (B, C, H, W) or (B, C, H, W, D), "
                f"got shape {shapes[self.image_key]}."
            )
        batch_size = views[0].shape[0]
        inputs = torch.cat(views, dim=0).to(device=device, non_blocking=non_blocking, **kwargs)

        targets: dict[str, torch.Tensor | None] = {}
        for name, key, layout, ndim in self._target_specs:
            if key is None or key not in batchdata:
                targets[name] = None
                continue
            value = check_labels(_as_plain_tensor(batchdata[key], key), f"batch[{key!r}]", length=batch_size)
            if value.ndim != ndim:
                raise ValueError(f"batch[{key!r}] must be {layout}, got shape {tuple(value.shape)}.")
            targets[name] = value.to(device=device, non_blocking=non_blocking)
        targets["geometry"] = self._geometry(batchdata, views[0].ndim - 2, batch_size, device, non_blocking)
        return inputs, targets

    def _geometry(
        self, batchdata: Mapping[str, Any], spatial_dims: int, batch_size: int, device: Any, non_blocking: bool
    ) -> torch.Tensor | None:
        present = [k for k in self.geometry_keys if k in batchdata]
        if not present:
            return None
        if len(present) != len(self.geometry_keys):
            missing = [k for k in self.geometry_keys if k not in batchdata]
            raise ValueError(
                f"MultiViewPrepareBatch: the batch has view geometries {present} but lacks {missing}; every view "
                "must carry its geometry (put the RandResizedCropd in the per-view chain) or none."
            )
        stacked = []
        for k in self.geometry_keys:
            g = check_geometry(_as_plain_tensor(batchdata[k], k), f"batch[{k!r}]", spatial_dims=spatial_dims)
            if g.ndim != 3 or g.shape[0] != batch_size:
                raise ValueError(
                    f"batch[{k!r}] must be (B, {spatial_dims + 1}, {spatial_dims + 1}) with B={batch_size}, "
                    f"got shape {tuple(g.shape)}."
                )
            stacked.append(g)
        return torch.stack(stacked).to(device=device, non_blocking=non_blocking)
