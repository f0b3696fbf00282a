"""Slice partitions of a volume (Chaitanya et al., 2020) and random 2D slices of 3D volumes (array transforms)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable, SqueezeDim, Transform

from monai_cluster.utils import check_positive_int

__all__ = ["SlicePartition", "RandSlice", "check_slice_axis", "choose_slice", "take_slice", "slice_count"]


def _as_int(value: Any, name: str) -> int:
    """Return an integer given as a Python/numpy integer or a one-element integer array/tensor."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and tuple(value.shape) in ((), (1,)):
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.dtype == torch.bool):
            raise TypeError(f"{name} must be an integer, got a tensor of dtype {value.dtype}.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}.")
    return int(value)


def check_slice_axis(axis: object) -> int:
    """Normalise a spatial axis of a 3D volume (``-3 .. 2``) to ``0 .. 2``."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -3 <= axis <= 2:
        raise ValueError(f"axis must be a spatial axis of a (C, H, W, D) volume in -3..2, got {axis!r}.")
    return int(axis) % 3


def slice_count(img: Any, axis: int, name: str = "img") -> int:
    """Number of slices of a channel-first 3D volume ``(C, H, W, D)`` along spatial ``axis``.

    Raises:
        ValueError: when ``img`` is not a 4-dimensional ``(C, H, W, D)`` array or tensor.
    """
    shape = getattr(img, "shape", None)
    if shape is None or len(shape) != 4:
        got = "no shape" if shape is None else f"shape {tuple(shape)}"
        raise ValueError(f"{name} must be a channel-first 3D volume (C, H, W, D), got {got}.")
    return int(shape[check_slice_axis(axis) + 1])


def choose_slice(rng: np.random.RandomState, num_slices: int, fixed_index: int | None, axis: int) -> int:
    """Return ``fixed_index`` (checked to lie in ``[0, num_slices)``) or, when it is ``None``, a uniform draw."""
    if fixed_index is None:
        return int(rng.randint(num_slices))
    if not 0 <= fixed_index < num_slices:
        raise ValueError(
            f"slice_index must lie in [0, {num_slices}) for {num_slices} slices along axis {axis}, got {fixed_index}."
        )
    return int(fixed_index)


def take_slice(img: Any, axis: int, index: int) -> Any:
    """Return slice ``index`` of a channel-first volume ``(C, H, W, D)`` along spatial ``axis`` as ``(C, *2D)``.

    The slice is a copy (the volume can be freed). A ``MetaTensor`` keeps its metadata; its affine is moved to the
    slice's origin and reduced to 2D (MONAI's ``SqueezeDim`` convention).

    Raises:
        ValueError: when ``img`` is not 4-dimensional or ``index`` is out of range.
    """
    axis = check_slice_axis(axis)
    n = slice_count(img, axis)
    index = _as_int(index, "slice_index")
    if not 0 <= index < n:
        raise ValueError(f"slice_index must lie in [0, {n}) for {n} slices along axis {axis}, got {index}.")
    dim = axis + 1
    if isinstance(img, MetaTensor):
        out = img[(slice(None),) * dim + (slice(index, index + 1),)].clone()
        affine = out.affine.clone()
        affine[:-1, -1] = affine[:-1, -1] + affine[:-1, axis] * index
        out.affine = affine
        return SqueezeDim(dim=dim, update_meta=True)(out)
    if isinstance(img, torch.Tensor):
        return img.select(dim, index).clone()
    return np.take(np.asarray(img), index, axis=dim).copy()


class SlicePartition(Transform):
    """Partition of a slice within its volume: ``floor(slice_index * num_partitions / num_slices)``.

    Chaitanya et al. split each volume into ``num_partitions`` equal ranges of slices; slices from the same partition
    of different volumes show similar anatomy and are positives for the partition-aware global contrastive loss.

    Args:
        num_partitions: number of partitions per volume, at least 1.

    Example:
        >>> SlicePartition(4)(slice_index=5, num_slices=10)
        2

    References:
        - [0] Chaitanya et al., global and local contrastive learning, 2020, https://arxiv.org/abs/2006.10511
    """

    def __init__(self, num_partitions: int) -> None:
        self.num_partitions = check_positive_int(num_partitions, "num_partitions")

    def __call__(self, slice_index: Any, num_slices: Any) -> int:
        """Return the partition index in ``[0, num_partitions)``.

        Raises:
            ValueError: when ``num_slices < num_partitions`` or ``slice_index`` is outside ``[0, num_slices)``.
            TypeError: when an argument is not an integer.
        """
        num_slices = check_positive_int(_as_int(num_slices, "num_slices"), "num_slices")
        slice_index = _as_int(slice_index, "slice_index")
        if self.num_partitions > num_slices:
            raise ValueError(
                f"num_partitions ({self.num_partitions}) must not exceed num_slices ({num_slices}): "
                "every partition needs at least one slice."
            )
        if not 0 <= slice_index < num_slices:
            raise ValueError(f"slice_index must lie in [0, num_slices={num_slices}), got {slice_index}.")
        return slice_index * self.num_partitions // num_slices


class RandSlice(Randomizable, Transform):
    """Take one random (or fixed) 2D slice of a channel-first 3D volume: ``(C, H, W, D) -> (C, H, W)``.

    Args:
        axis: spatial axis to slice along (``-1``: the last, D).
        slice_index: a fixed slice index instead of a random one.

    After a call, ``self.slice_index`` and ``self.num_slices`` hold the slice taken and the count along ``axis``.
    """

    def __init__(self, axis: int = -1, slice_index: int | None = None) -> None:
        self.axis = check_slice_axis(axis)
        self.fixed_index = None if slice_index is None else check_positive_int(slice_index, "slice_index", minimum=0)
        self.slice_index: int | None = None
        self.num_slices: int | None = None

    def randomize(self, num_slices: int) -> None:
        """Choose the slice: the fixed index if given (checked against ``num_slices``), else uniform from ``self.R``."""
        self.slice_index = choose_slice(self.R, num_slices, self.fixed_index, self.axis)
        self.num_slices = int(num_slices)

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        """Return the chosen slice ``(C, H, W)`` (or ``(C, H, D)``/``(C, W, D)`` for other axes)."""
        n = slice_count(img, self.axis)
        if randomize or self.slice_index is None:
            self.randomize(n)
        return take_slice(img, self.axis, self.slice_index)
