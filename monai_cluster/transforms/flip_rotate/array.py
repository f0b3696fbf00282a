"""Random flips and 90-degree rotations that record what they did, and the exact inverse on batched feature maps.

Local discrimination (Chen et al.) compares the embedding of a pixel in one view with the embedding of the same
pixel in a second view that was flipped and/or rotated by a multiple of 90 degrees. Such operations only permute
voxels, so they can be undone exactly on the network's output: :class:`RandFlipRot90` applies one to a
channel-first image and keeps a *record* of it, and :func:`undo_flip_rot90` maps a batched feature map
``(B, C, *spatial)`` of the transformed images back onto the original voxel grid, one record per sample.

A record is an ``int64`` vector of length ``spatial_dims + 3``::

    [flip_0, ..., flip_{d-1}, k, axis_a, axis_b]

``flip_i`` is 1 when spatial axis ``i`` (0-based, channel excluded) was flipped; then the image was rotated by
``k`` quarter turns (``0..3``) in the plane of spatial axes ``(axis_a, axis_b)``, in the direction of
:func:`torch.rot90` (from ``axis_a`` towards ``axis_b``). Flips come first, the rotation second. A record of
fixed length collates into a ``(B, spatial_dims + 3)`` tensor with MONAI's default collate.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data.meta_obj import get_track_meta
from monai.transforms import Flip, RandomizableTransform, Rotate90
from monai.utils import convert_to_tensor

from monai_cluster.utils.validation import check_probability, check_spatial_dims

__all__ = [
    "RandFlipRot90",
    "apply_flip_rot90",
    "check_flip_rot90_record",
    "flip_rot90_record",
    "identity_flip_rot90_record",
    "undo_flip_rot90",
]


def flip_rot90_record(
    spatial_dims: int, flip_axes: Sequence[int] = (), k: int = 0, plane: Sequence[int] = (0, 1)
) -> np.ndarray:
    """Build a record (see the module docstring) from its parts.

    Args:
        spatial_dims: 2 or 3.
        flip_axes: spatial axes that are flipped.
        k: quarter turns, any integer (taken modulo 4).
        plane: the two spatial axes of the rotation plane.

    Returns:
        ``int64`` array of length ``spatial_dims + 3``.
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    record = np.zeros(spatial_dims + 3, dtype=np.int64)
    for axis in flip_axes:
        record[int(axis)] = 1
    record[spatial_dims] = int(k) % 4
    record[spatial_dims + 1 :] = [int(plane[0]), int(plane[1])]
    return check_flip_rot90_record(record, spatial_dims)


def identity_flip_rot90_record(spatial_dims: int) -> np.ndarray:
    """The record of no flip and no rotation."""
    return flip_rot90_record(spatial_dims)


def check_flip_rot90_record(record: Any, spatial_dims: int, name: str = "record") -> np.ndarray:
    """Return ``record`` as an ``int64`` array ``(spatial_dims + 3,)`` after checking every entry.

    Raises:
        TypeError: when ``record`` is not an integer array/tensor/sequence.
        ValueError: when its length, flips (0/1), ``k`` (0..3) or plane axes (two distinct axes in
            ``[0, spatial_dims)``) are wrong.
    """
    if isinstance(record, torch.Tensor):
        record = record.detach().cpu().numpy()
    arr = np.asarray(record)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers (a flip/rot90 record), got dtype {arr.dtype}.")
    length = spatial_dims + 3
    if arr.shape != (length,):
        raise ValueError(
            f"{name} must be a flip/rot90 record of length spatial_dims + 3 = {length} "
            f"([flips x{spatial_dims}, k, axis_a, axis_b]), got shape {arr.shape}."
        )
    flips, k, a, b = arr[:spatial_dims], int(arr[spatial_dims]), int(arr[-2]), int(arr[-1])
    if not np.isin(flips, (0, 1)).all():
        raise ValueError(f"{name} flips (first {spatial_dims} entries) must be 0 or 1, got {flips.tolist()}.")
    if not 0 <= k <= 3:
        raise ValueError(f"{name} rotation k (entry {spatial_dims}) must lie in 0..3, got {k}.")
    if a == b or not (0 <= a < spatial_dims and 0 <= b < spatial_dims):
        raise ValueError(
            f"{name} rotation plane (last two entries) must be two distinct spatial axes in [0, {spatial_dims}), "
            f"got ({a}, {b})."
        )
    return arr.astype(np.int64)


def _parts(record: np.ndarray, spatial_dims: int) -> tuple[list[int], int, tuple[int, int]]:
    flips = [i for i in range(spatial_dims) if record[i]]
    return flips, int(record[spatial_dims]), (int(record[-2]), int(record[-1]))


def apply_flip_rot90(img: Any, record: Any) -> Any:
    """Apply a recorded flip/rotation to one channel-first image ``(C, *spatial)``.

    Uses MONAI's :class:`~monai.transforms.Flip` and :class:`~monai.transforms.Rotate90`, so numpy arrays,
    tensors and ``MetaTensor``\\ s work; the result is always what those transforms return (a ``MetaTensor``
    while MONAI tracks metadata, else a tensor), also for the identity, so views of one batch share a type.

    Args:
        img: ``(C, H, W)`` or ``(C, H, W, D)``.
        record: a record for ``img.ndim - 1`` spatial dimensions.
    """
    ndim = getattr(img, "ndim", None)
    if ndim not in (3, 4):
        shape = tuple(getattr(img, "shape", ()))
        raise ValueError(f"img must be channel-first (C, H, W) or (C, H, W, D), got shape {shape}.")
    spatial_dims = ndim - 1
    flips, k, plane = _parts(check_flip_rot90_record(record, spatial_dims), spatial_dims)
    out = Flip(spatial_axis=flips)(img) if flips else convert_to_tensor(img, track_meta=get_track_meta())
    if k:
        out = Rotate90(k=k, spatial_axes=plane)(out)
    return out


def _batch_records(record: Any, batch: int, spatial_dims: int, name: str) -> list[np.ndarray]:
    if isinstance(record, (list, tuple)) and record and not isinstance(record[0], (int, np.integer)):
        rows = list(record)
    else:
        if isinstance(record, torch.Tensor):
            record = record.detach().cpu().numpy()
        arr = np.asarray(record)
        rows = [arr] * batch if arr.ndim == 1 else list(arr) if arr.ndim == 2 else None
        if rows is None:
            raise ValueError(f"{name} must be one record (L,) or one per sample (B, L), got shape {arr.shape}.")
    if len(rows) != batch:
        raise ValueError(f"{name} must hold one record per sample (B={batch}), got {len(rows)}.")
    return [check_flip_rot90_record(r, spatial_dims, f"{name}[{i}]") for i, r in enumerate(rows)]


def undo_flip_rot90(feature_map: torch.Tensor, record: Any) -> torch.Tensor:
    """Map a batched feature map of flipped/rotated images back onto the original grids.

    For each sample ``b`` the rotation of ``record[b]`` is undone (``-k`` quarter turns in its plane), then its
    flips; the result equals the feature map the un-transformed image would have at the same voxels whenever
    the network is equivariant, and ``undo_flip_rot90(stack(apply_flip_rot90(x_b, r_b)), r) == x`` exactly.
    Samples that share a record are processed together. Autograd flows through.

    Args:
        feature_map: ``(B, C, H, W)`` or ``(B, C, H, W, D)``, e.g. the embedding map of view 1; also works on
            an average-pooled map when the pooling grid divides every spatial size evenly.
        record: one record ``(L,)`` for the whole batch, or ``(B, L)`` (tensor/array) or a sequence of ``B``
            records, ``L = spatial_dims + 3``.

    Returns:
        a tensor of the un-transformed shape; it differs from ``feature_map.shape`` only when a record rotates
        a non-square plane by an odd ``k`` (which requires ``B == 1`` or identical records).

    Raises:
        ValueError: for a ``feature_map`` that is not 4D/5D, a record of the wrong length or content, or
            records whose inverses give samples of different shapes.
    """
    if not isinstance(feature_map, torch.Tensor):
        raise TypeError(f"feature_map must be a torch.Tensor, got {type(feature_map).__name__}.")
    if feature_map.ndim not in (4, 5):
        raise ValueError(
            f"feature_map must be batched (B, C, H, W) or (B, C, H, W, D), got shape {tuple(feature_map.shape)}."
        )
    spatial_dims = feature_map.ndim - 2
    records = _batch_records(record, feature_map.shape[0], spatial_dims, "record")
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, rec in enumerate(records):
        groups.setdefault(tuple(rec.tolist()), []).append(index)
    if len(groups) == 1:
        return _undo(feature_map, records[0], spatial_dims)
    pieces, order = [], []
    for key, indices in groups.items():
        pieces.append(_undo(feature_map[indices], np.asarray(key), spatial_dims))
        order.extend(indices)
    shapes = {tuple(p.shape[2:]) for p in pieces}
    if len(shapes) > 1:
        raise ValueError(
            "record rotates non-square planes differently per sample, so the undone maps have shapes "
            f"{sorted(shapes)}; use square planes or identical records within a batch."
        )
    stacked = torch.cat(pieces, dim=0)
    inverse = torch.empty(len(order), dtype=torch.long, device=feature_map.device)
    inverse[torch.tensor(order, device=feature_map.device)] = torch.arange(len(order), device=feature_map.device)
    return stacked[inverse]


def _undo(x: torch.Tensor, record: np.ndarray, spatial_dims: int) -> torch.Tensor:
    flips, k, (a, b) = _parts(record, spatial_dims)
    if k:
        x = torch.rot90(x, -k, dims=(a + 2, b + 2))
    if flips:
        x = torch.flip(x, dims=[axis + 2 for axis in flips])
    return x


class RandFlipRot90(RandomizableTransform):
    """Randomly flip and rotate a channel-first image by multiples of 90 degrees, and record what was done.

    With probability ``prob`` a draw happens: each axis of ``flip_axes`` is flipped with probability
    ``flip_prob``, then one plane of ``rot_planes`` is chosen uniformly and the image is rotated by ``k``
    quarter turns, ``k`` uniform in ``{0, 1, 2, 3}`` (in ``{0, 2}`` when the plane is not square, so the
    shape never changes and views of one batch still collate). Otherwise nothing changes and the record is
    the identity. The last record is :attr:`last_record` (see the module docstring for its layout); invert a
    batch of them on network outputs with :func:`undo_flip_rot90`. Randomness comes only from ``self.R``.

    Args:
        prob: probability of drawing a flip/rotation at all.
        flip_prob: probability of flipping each axis in ``flip_axes``.
        flip_axes: spatial axes that may be flipped (0-based, channel excluded); ``None`` means all.
        rot_planes: planes ``(axis_a, axis_b)`` that may be rotated; ``None`` means ``[(0, 1)]`` in 2D and all
            three planes in 3D; an empty sequence disables rotations.

    Example:
        >>> t = RandFlipRot90().set_random_state(0)
        >>> out = t(np.zeros((1, 8, 8)))
        >>> t.last_record.shape
        (5,)
    """

    def __init__(
        self,
        prob: float = 1.0,
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] | None = None,
        rot_planes: Sequence[Sequence[int]] | None = None,
    ) -> None:
        RandomizableTransform.__init__(self, check_probability(prob, "prob"))
        self.flip_prob = check_probability(flip_prob, "flip_prob")
        self.flip_axes = None if flip_axes is None else _int_tuple(flip_axes, "flip_axes")
        if rot_planes is None:
            self.rot_planes = None
        else:
            if isinstance(rot_planes, (str, bytes)) or not isinstance(rot_planes, Sequence):
                raise TypeError(f"rot_planes must be a sequence of axis pairs, got {type(rot_planes).__name__}.")
            self.rot_planes = tuple(_int_tuple(p, f"rot_planes[{i}]", length=2) for i, p in enumerate(rot_planes))
        self.last_record: np.ndarray | None = None

    def _axes_for(self, spatial_dims: int) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        flip_axes = tuple(range(spatial_dims)) if self.flip_axes is None else self.flip_axes
        if self.rot_planes is None:
            planes = tuple(itertools.combinations(range(spatial_dims), 2))
        else:
            planes = self.rot_planes
        for axis in flip_axes:
            if not 0 <= axis < spatial_dims:
                raise ValueError(f"flip_axes must be spatial axes in [0, {spatial_dims}), got {list(flip_axes)}.")
        for plane in planes:
            if plane[0] == plane[1] or not all(0 <= a < spatial_dims for a in plane):
                raise ValueError(
                    f"rot_planes must hold pairs of distinct spatial axes in [0, {spatial_dims}), got {list(planes)}."
                )
        return flip_axes, planes

    def randomize(self, data: Any = None) -> None:
        """Draw the next operation for an image of ``data.shape`` (channel first) into :attr:`last_record`."""
        shape = tuple(data.shape[1:])
        spatial_dims = check_spatial_dims(len(shape), "the image's number of spatial dimensions")
        flip_axes, planes = self._axes_for(spatial_dims)
        super().randomize(None)
        if not self._do_transform:
            self.last_record = identity_flip_rot90_record(spatial_dims)
            return
        flips = [axis for axis in flip_axes if self.R.rand() < self.flip_prob]
        k, plane = 0, (0, 1)
        if planes:
            plane = planes[self.R.randint(len(planes))]
            square = shape[plane[0]] == shape[plane[1]]
            k = int(self.R.randint(4)) if square else 2 * int(self.R.randint(2))
        self.last_record = flip_rot90_record(spatial_dims, flips, k, plane)

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        """Flip/rotate ``img`` ``(C, H, W)`` or ``(C, H, W, D)``; the operation is kept in :attr:`last_record`.

        Args:
            img: channel-first numpy array, tensor or ``MetaTensor``.
            randomize: draw a new operation (``False`` repeats the last one).
        """
        ndim = getattr(img, "ndim", None)
        if ndim not in (3, 4):
            shape = tuple(getattr(img, "shape", ()))
            raise ValueError(f"img must be channel-first (C, H, W) or (C, H, W, D), got shape {shape}.")
        if randomize or self.last_record is None:
            self.randomize(img)
        return apply_flip_rot90(img, self.last_record)


def _int_tuple(values: Any, name: str, length: int | None = None) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of integers, got {type(values).__name__} {values!r}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must hold integers, got {values!r}.")
        out.append(int(v))
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must hold {length} integers, got {values!r}.")
    return tuple(out)
