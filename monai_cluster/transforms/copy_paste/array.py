"""Bidirectional copy-paste of one random box between two batches (BCP), for images and their labels alike.

Bidirectional copy-paste (Bai et al., CVPR 2023) mixes a labelled and an unlabelled batch with one binary box mask
``M`` over the spatial axes (1 inside the box, 0 outside) and makes both mixes::

    mix_ab = a * M + b * (1 - M)      # a's content inside the box, b's outside
    mix_ba = b * M + a * (1 - M)      # b's content inside the box, a's outside

The same ``M`` mixes the images and the (pseudo-)labels, so every mixed voxel keeps the label of the image it came
from. The box covers ``round(fraction * side)`` voxels of each spatial side (at least 1) at a position drawn
uniformly from the positions that fit; one mask serves a whole call (all samples and channels of the batch), as in
the authors' code. Works on channel-first samples ``(C, *spatial)`` and batches ``(B, C, *spatial)``, numpy arrays
and tensors, 2D and 3D.

References:
    - [0] Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation, Bai et al., CVPR 2023,
      https://arxiv.org/abs/2305.00673
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from monai.utils import convert_to_dst_type

from monai_cluster.utils.validation import check_spatial_dims

__all__ = ["RandCopyPaste", "box_mask", "check_box_fraction", "copy_paste"]


def check_box_fraction(fraction: object, spatial_dims: int, name: str = "fraction") -> tuple[float, ...]:
    """``fraction`` as one number per spatial axis, each in ``(0, 1]``.

    Raises:
        TypeError: when ``fraction`` is not a number or a sequence of numbers.
        ValueError: when a value lies outside ``(0, 1]`` or the sequence has not ``spatial_dims`` entries.
    """
    values = fraction
    if isinstance(values, (int, float, np.integer, np.floating)) and not isinstance(values, bool):
        values = (values,) * spatial_dims
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a number or {spatial_dims} numbers in (0, 1], got {fraction!r}.")
    if len(values) != spatial_dims:
        raise ValueError(f"{name} must hold one value per spatial axis ({spatial_dims}), got {list(values)}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must hold numbers in (0, 1], got {fraction!r}.")
        if not 0.0 < float(v) <= 1.0:
            raise ValueError(f"{name} values must lie in (0, 1], got {fraction!r}.")
        out.append(float(v))
    return tuple(out)


def _box_size(spatial_shape: Sequence[int], fraction: Sequence[float]) -> tuple[int, ...]:
    return tuple(min(int(s), max(1, int(round(f * int(s))))) for s, f in zip(spatial_shape, fraction))


def box_mask(spatial_shape: Sequence[int], start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """A ``float32`` mask of ``spatial_shape``: 1 in the box ``[start, start + size)`` of each axis, 0 elsewhere.

    Raises:
        ValueError: when the three sequences differ in length or the box does not lie inside the shape.
    """
    shape, start, size = tuple(int(s) for s in spatial_shape), tuple(start), tuple(size)
    if not len(shape) == len(start) == len(size):
        raise ValueError(f"spatial_shape {shape}, start {start} and size {size} must have one entry per axis.")
    if any(s < 1 or b < 0 or b + z > s for s, b, z in zip(shape, start, size)):
        raise ValueError(f"the box at start {start} of size {size} must lie inside spatial_shape {shape}.")
    mask = np.zeros(shape, dtype=np.float32)
    mask[tuple(slice(int(b), int(b) + int(z)) for b, z in zip(start, size))] = 1.0
    return mask


def _spatial_shape(x: Any, spatial_dims: int, name: str) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}.")
    if len(shape) not in (spatial_dims + 1, spatial_dims + 2):
        raise ValueError(
            f"{name} must be channel-first (C, *spatial) or batched (B, C, *spatial) with {spatial_dims} spatial "
            f"axes, got shape {tuple(shape)}."
        )
    return tuple(int(s) for s in shape[-spatial_dims:])


def copy_paste(a: Any, b: Any, mask: Any) -> tuple[Any, Any]:
    """Both mixes of ``a`` and ``b`` under ``mask``: ``(a * M + b * (1 - M), b * M + a * (1 - M))``.

    Args:
        a: ``(C, *spatial)`` or ``(B, C, *spatial)``, array or tensor.
        b: same shape as ``a``.
        mask: ``(*spatial)`` of 0/1 (broadcast over the leading axes); converted to ``a``'s type, device and dtype.

    Raises:
        ValueError: when ``a`` and ``b`` differ in shape, or ``mask`` does not match their trailing axes.
    """
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"copy_paste needs a and b of one shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    m_shape = tuple(mask.shape)
    if tuple(a.shape[len(a.shape) - len(m_shape) :]) != m_shape or len(m_shape) >= len(a.shape):
        raise ValueError(f"mask of shape {m_shape} must match the spatial axes of a {tuple(a.shape)}.")
    m = convert_to_dst_type(mask, a, dtype=a.dtype)[0]
    return a * m + b * (1 - m), b * m + a * (1 - m)


class RandCopyPaste(Randomizable):
    """Mix two images (and optionally their labels) both ways with one random box mask (BCP).

    Each call draws one box (unless ``randomize=False``, which reuses the last) from ``self.R`` and returns
    ``(img_ab, img_ba)``, or ``(img_ab, img_ba, label_ab, label_ba)`` when labels are given, with
    ``x_ab = x_a * M + x_b * (1 - M)`` and ``x_ba = x_b * M + x_a * (1 - M)`` (see the module docstring). Images
    and labels may differ in channels (``(B, 3, H, W)`` images, ``(B, 1, H, W)`` class maps or ``(B, K, H, W)``
    probabilities) but share the spatial shape. The mask of the last call is :attr:`last_mask` (``float32``
    ``(*spatial)``), its box :attr:`last_box` (``(start, size)``).

    Args:
        spatial_dims: 2 or 3.
        fraction: the box side as a fraction of each spatial side, one number or one per axis, in ``(0, 1]``;
            BCP uses 2/3.

    Example:
        >>> t = RandCopyPaste(2, fraction=0.5).set_random_state(0)
        >>> mixed_ab, mixed_ba = t(np.zeros((2, 1, 8, 8)), np.ones((2, 1, 8, 8)))
        >>> float(t.last_mask.sum())
        16.0
    """

    def __init__(self, spatial_dims: int, fraction: float | Sequence[float] = 2.0 / 3.0) -> None:
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.fraction = check_box_fraction(fraction, self.spatial_dims)
        self.last_mask: np.ndarray | None = None
        self.last_box: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        """Draw the box for ``spatial_shape`` from ``self.R`` and store its mask in :attr:`last_mask`."""
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != self.spatial_dims or any(s < 1 for s in shape):
            raise ValueError(f"spatial_shape must hold {self.spatial_dims} positive sizes, got {list(spatial_shape)}.")
        size = _box_size(shape, self.fraction)
        start = tuple(int(self.R.randint(0, s - z + 1)) for s, z in zip(shape, size))
        self.last_box = (start, size)
        self.last_mask = box_mask(shape, start, size)

    def __call__(
        self, img_a: Any, img_b: Any, label_a: Any = None, label_b: Any = None, randomize: bool = True
    ) -> tuple[Any, ...]:
        """Mix ``img_a``/``img_b`` (and ``label_a``/``label_b`` when given) with one box mask.

        Args:
            img_a: ``(C, *spatial)`` or ``(B, C, *spatial)``, e.g. the labelled images.
            img_b: same shape as ``img_a``, e.g. the unlabelled images.
            label_a: labels of ``img_a`` with the same spatial shape, or ``None``.
            label_b: labels of ``img_b`` (e.g. the teacher's pseudo-labels), same shape as ``label_a``, or ``None``.
            randomize: draw a new box; ``False`` reuses the last one (e.g. to mix more keys alike).

        Returns:
            ``(img_ab, img_ba)`` or ``(img_ab, img_ba, label_ab, label_ba)``.

        Raises:
            ValueError: for shapes that do not match, only one of the labels, or ``randomize=False`` before any
                box was drawn or with another spatial shape than the last box's.
        """
        shape = _spatial_shape(img_a, self.spatial_dims, "img_a")
        if (label_a is None) != (label_b is None):
            raise ValueError("RandCopyPaste needs both label_a and label_b, or neither.")
        if label_a is not None:
            label_shape = _spatial_shape(label_a, self.spatial_dims, "label_a")
            if label_shape != shape:
                raise ValueError(f"label_a must have the spatial shape {shape} of img_a, got {label_shape}.")
        if randomize:
            self.randomize(shape)
        elif self.last_mask is None or tuple(self.last_mask.shape) != shape:
            last = None if self.last_mask is None else tuple(self.last_mask.shape)
            raise ValueError(f"randomize=False needs a previous box of spatial shape {shape}, the last is {last}.")
        out = copy_paste(img_a, img_b, self.last_mask)
        if label_a is not None:
            out = out + copy_paste(label_a, label_b, self.last_mask)
        return out
