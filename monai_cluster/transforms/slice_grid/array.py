"""The in-plane grid of 2D slices of volumes: a centred square crop, and the way back to the label's grid.

A 2D network trained on the slices of volumes sees each slice on a fixed training grid ``image_size``: the slice
(optionally cropped to a centred square, :class:`CenterFractionCrop`) is resized so that its longer side is
``max(image_size)`` (MONAI ``Resize(size_mode="longest")``) and padded or cropped centrally to ``image_size``
(MONAI ``ResizeWithPadOrCrop``). :func:`slice_grid_geometry` computes where each step put the slice, with MONAI's
own rounding, and :func:`restore_slice_grid` maps a prediction on the training grid back onto the slice's original
grid by nearest neighbour (what was cropped away or padded is background), so that a volume's predictions are
compared with its labels at the labels' own resolution.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Transform

__all__ = ["CenterFractionCrop", "SliceGridGeometry", "center_fraction_box", "restore_slice_grid", "slice_grid_geometry"]


def _check_fraction(fraction: object) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ValueError(f"crop_fraction must be a number in (0, 1], got {fraction!r}.")
    return float(fraction)


def _check_shape(shape: object, name: str) -> tuple[int, int]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != 2:
        raise ValueError(f"{name} must be two sizes (H, W), got {shape!r}.")
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"{name} must be two positive integers, got {shape!r}.")
    return int(shape[0]), int(shape[1])


def center_fraction_box(shape: Sequence[int], crop_fraction: float | None) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the centred square whose side is ``crop_fraction`` of the short side.

    The side is ``max(8, round(crop_fraction * min(H, W)))`` (at most the short side); ``None`` keeps the whole
    ``(H, W)`` plane.

    Raises:
        ValueError: for a ``crop_fraction`` outside ``(0, 1]`` or a bad ``shape``.
    """
    h, w = _check_shape(shape, "shape")
    if crop_fraction is None:
        return 0, 0, h, w
    side = min(h, w, max(8, int(round(_check_fraction(crop_fraction) * min(h, w)))))
    return (h - side) // 2, (w - side) // 2, side, side


class SliceGridGeometry(NamedTuple):
    """Where a slice of in-plane shape ``in_shape`` went on the training grid ``out_shape``.

    ``box`` is the kept ``(top, left, height, width)`` of the slice, ``resized`` the box's size after the
    longest-side resize, and ``offset`` where the resized box starts on the training grid per axis (negative:
    the resized box was cropped centrally by that much).
    """

    in_shape: tuple[int, int]
    box: tuple[int, int, int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    out_shape: tuple[int, int]


def slice_grid_geometry(
    in_shape: Sequence[int], image_size: Sequence[int] | int, crop_fraction: float | None = None
) -> SliceGridGeometry:
    """The geometry of crop (:func:`center_fraction_box`), longest-side resize and central pad/crop of a slice.

    Args:
        in_shape: the slice's in-plane ``(H, W)``.
        image_size: the training grid ``(H', W')`` (or one int for both).
        crop_fraction: the centred square crop's fraction of the short side, or ``None``.

    Raises:
        ValueError: for bad shapes or ``crop_fraction``.
    """
    size = (image_size, image_size) if isinstance(image_size, numbers.Integral) else image_size
    out = _check_shape(tuple(size), "image_size")
    top, left, h, w = center_fraction_box(in_shape, crop_fraction)
    scale = max(out) / max(h, w)  # MONAI Resize(size_mode="longest")
    resized = (int(round(h * scale)), int(round(w * scale)))
    # MONAI ResizeWithPadOrCrop: symmetric padding (floor before), then a centred crop (start r // 2 - s // 2)
    offset = tuple((s - r) // 2 if s >= r else -(r // 2 - s // 2) for r, s in zip(resized, out))
    return SliceGridGeometry(_check_shape(tuple(in_shape), "in_shape"), (top, left, h, w), resized, offset, out)


def restore_slice_grid(pred: torch.Tensor | np.ndarray, geometry: SliceGridGeometry, fill: float = 0) -> torch.Tensor:
    """Map ``pred`` ``(C, H', W')`` on the training grid back to the slice's grid ``(C, H, W)`` by nearest neighbour.

    The part of the training grid that holds the resized slice is resized back to the crop box (PyTorch
    ``nearest-exact``: each original pixel takes the training-grid pixel its centre falls in); the rest of the slice
    (outside the crop box, or cropped away on the training grid) gets ``fill``.

    Args:
        pred: a label map or class scores on the training grid, channel first.
        geometry: the slice's :func:`slice_grid_geometry`.
        fill: value of what the training grid did not see (0: background).

    Raises:
        ValueError: when ``pred`` is not ``(C, *geometry.out_shape)``.
    """
    pred = torch.as_tensor(pred)
    if pred.ndim != 3 or tuple(pred.shape[1:]) != geometry.out_shape:
        raise ValueError(
            f"pred must be (C, {geometry.out_shape[0]}, {geometry.out_shape[1]}) on the training grid, "
            f"got shape {tuple(pred.shape)}."
        )
    resized = torch.full((pred.shape[0], *geometry.resized), fill, dtype=pred.dtype, device=pred.device)
    src, dst = [], []
    for r, s, o in zip(geometry.resized, geometry.out_shape, geometry.offset):
        start = max(o, 0)  # where the resized box starts on the training grid
        skip = max(-o, 0)  # how much of the resized box the training grid cropped away
        length = min(r - skip, s - start)
        src.append(slice(start, start + length))
        dst.append(slice(skip, skip + length))
    resized[:, dst[0], dst[1]] = pred[:, src[0], src[1]]
    top, left, h, w = geometry.box
    back = F.interpolate(resized[None].float(), size=(h, w), mode="nearest-exact")[0].to(pred.dtype)
    out = torch.full((pred.shape[0], *geometry.in_shape), fill, dtype=pred.dtype, device=pred.device)
    out[:, top : top + h, left : left + w] = back
    return out


class CenterFractionCrop(Transform):
    """Crop the plane of spatial axes ``(0, 1)`` of ``(C, H, W[, D])`` to its centred square of ``crop_fraction``.

    The square's side is ``max(8, round(crop_fraction * min(H, W)))`` (:func:`center_fraction_box`); a third
    spatial axis (the slices of a volume) is kept whole, so cropping a volume crops each of its slices alike.

    Args:
        crop_fraction: fraction of the short side, in ``(0, 1]``; ``None`` returns the input unchanged.

    Raises:
        ValueError: for a ``crop_fraction`` outside ``(0, 1]``, or an input without two spatial axes.
    """

    def __init__(self, crop_fraction: float | None) -> None:
        self.crop_fraction = None if crop_fraction is None else _check_fraction(crop_fraction)

    def __call__(self, img: Any) -> Any:
        """Return the crop of ``img`` (same type: numpy array or tensor)."""
        if self.crop_fraction is None:
            return img
        if img.ndim not in (3, 4):
            raise ValueError(f"CenterFractionCrop needs a (C, H, W) or (C, H, W, D) image, got shape {tuple(img.shape)}.")
        top, left, h, w = center_fraction_box(tuple(int(s) for s in img.shape[1:3]), self.crop_fraction)
        return img[:, top : top + h, left : left + w]
