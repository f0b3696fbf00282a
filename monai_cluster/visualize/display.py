"""Turning images, volumes and label maps into 2D arrays matplotlib can show, and saving figures atomically.

Accepted image layouts (numpy arrays or torch tensors, MetaTensors included):

- 2D: ``(H, W)`` grey, or channel-first ``(C, H, W)`` with ``C`` in {1, 3};
- 3D: ``(H, W, D)`` or channel-first ``(C, H, W, D)``; the middle slice of the last axis is shown, or
  ``slice_index``.

A rank-3 array is read as 2D channel-first when its first dimension is 1 or 3, else as a volume; pass
``spatial_dims`` to decide explicitly. Three channels show as RGB; other channel counts show channel 0.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from monai_cluster.utils.io import atomic_write_bytes
from monai_cluster.utils.validation import check_spatial_dims

__all__ = ["as_numpy", "check_png_path", "image_slice", "to_display_image", "to_label_slice", "save_figure"]


def as_numpy(x: object, name: str) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or nested sequence) as a numpy array, detached and on CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        try:
            return np.asarray(x)
        except ValueError as err:
            raise ValueError(f"{name} must be a rectangular array, got a ragged sequence ({err}).") from err
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}.")


def _split_channels(arr: np.ndarray, name: str, spatial_dims: int | None) -> tuple[np.ndarray, int]:
    """Return ``(array as (C, *spatial), spatial_dims)`` after reading the layout rules of this module."""
    if spatial_dims is not None:
        spatial_dims = check_spatial_dims(spatial_dims)
        if arr.ndim == spatial_dims:
            return arr[None], spatial_dims
        if arr.ndim == spatial_dims + 1:
            return arr, spatial_dims
        raise ValueError(
            f"{name} must have {spatial_dims} or {spatial_dims + 1} dimensions for spatial_dims={spatial_dims}, "
            f"got shape {arr.shape}."
        )
    if arr.ndim == 2:
        return arr[None], 2
    if arr.ndim == 3:
        return (arr, 2) if arr.shape[0] in (1, 3) else (arr[None], 3)
    if arr.ndim == 4:
        return arr, 3
    raise ValueError(
        f"{name} must be (H, W), (C, H, W), (H, W, D) or (C, H, W, D), got shape {arr.shape} ({arr.ndim} dimensions)."
    )


def _take_slice(arr: np.ndarray, name: str, slice_index: int | None) -> np.ndarray:
    """Slice ``(C, H, W, D)`` at ``slice_index`` (default: middle) of the last axis."""
    depth = arr.shape[-1]
    index = depth // 2 if slice_index is None else slice_index
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -depth <= index < depth:
        raise ValueError(
            f"slice_index must be an int in [-{depth}, {depth}) for {name} of shape {arr.shape}, got {index!r}."
        )
    return arr[..., index]


def image_slice(
    x: object, name: str = "image", spatial_dims: int | None = None, slice_index: int | None = None
) -> tuple[np.ndarray, int]:
    """Return ``(array (C, H, W), spatial_dims of the input)``: the image itself, or one slice of a volume.

    Raises:
        ValueError: when ``x`` is empty or has a layout this module does not accept.
    """
    arr = as_numpy(x, name)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}.")
    arr, dims = _split_channels(arr, name, spatial_dims)
    if dims == 3:
        arr = _take_slice(arr, name, slice_index)
    return arr, dims


def to_display_image(
    image: object, name: str = "image", spatial_dims: int | None = None, slice_index: int | None = None
) -> np.ndarray:
    """Return ``image`` as a float array in [0, 1]: ``(H, W)`` grey or ``(H, W, 3)`` RGB.

    ``uint8``-range RGB keeps its colours (divided by 255); anything else is stretched between its 0.5th
    and 99.5th percentiles, which suits CT in Hounsfield units and MRI alike.

    Raises:
        ValueError: when ``image`` has a layout this module does not accept, is empty, or is not finite.
    """
    arr, _ = image_slice(image, name, spatial_dims, slice_index)
    arr = arr[:3] if arr.shape[0] == 3 else arr[:1]
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite to be shown, but it holds NaN or Inf.")
    lo, hi = float(arr.min()), float(arr.max())
    if arr.shape[0] == 3 and lo >= 0 and hi <= 1:
        out = arr
    elif arr.shape[0] == 3 and lo >= 0 and hi <= 255 and np.all(arr == np.round(arr)):
        out = arr / 255.0
    else:
        lo, hi = np.percentile(arr, [0.5, 99.5])
        out = np.clip((arr - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(arr)
    return np.moveaxis(out, 0, -1) if out.shape[0] == 3 else out[0]


def to_label_slice(
    label: object,
    name: str,
    spatial_shape: tuple[int, int],
    spatial_dims: int,
    slice_index: int | None = None,
) -> np.ndarray:
    """Return a label map as an int ``(H, W)`` array matching an image's displayed slice.

    Accepts ``(*spatial)`` or ``(1, *spatial)`` class indices (a 0/255 binary mask becomes 0/1, float
    probabilities are thresholded at 0.5) or ``(C, *spatial)`` one-hot/probabilities (argmax over C).

    Raises:
        ValueError: when the label's spatial shape differs from the image's.
    """
    arr = as_numpy(label, name)
    if arr.ndim == spatial_dims:
        arr = arr[None]
    elif arr.ndim != spatial_dims + 1:
        raise ValueError(
            f"{name} must be (*spatial) or (C, *spatial) with {spatial_dims} spatial dimensions like the image, "
            f"got shape {arr.shape}."
        )
    if spatial_dims == 3:
        arr = _take_slice(arr, name, slice_index)
    if tuple(arr.shape[1:]) != tuple(spatial_shape):
        raise ValueError(
            f"{name} must have the image's spatial shape {tuple(spatial_shape)}, got {tuple(arr.shape[1:])}."
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, but it holds NaN or Inf.")
    if arr.shape[0] > 1:
        return arr.argmax(0).astype(np.int64)
    arr = arr[0]
    values = np.unique(arr)
    if set(values.tolist()) <= {0.0, 255.0}:
        return (arr > 0).astype(np.int64)
    if not np.all(values == np.round(values)):
        return (arr >= 0.5).astype(np.int64)
    return arr.astype(np.int64)


def check_png_path(path: object) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` if it names a ``.png`` file, else raise."""
    if path is None or not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise ValueError(f"path must name the .png file to write, got {path!r}.")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end with .png, got {str(path)!r}.")
    return path


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Render a matplotlib ``Figure`` to PNG in memory and write it to ``path`` atomically.

    Raises:
        ValueError: when ``path`` does not end with ``.png``.
    """
    path = check_png_path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(buffer.getvalue(), path)
    return path
