"""Validate a dataset listing before training: every file decodes, masks fit their images, labels are in range."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from monai_cluster.utils.validation import check_positive_int, check_spatial_dims

from .image_io import read_image

__all__ = ["check_dataset"]

logger = logging.getLogger(__name__)

_MAX_REPORTED = 10
_PROGRESS_FROM = 50  # show a progress bar for listings at least this long


def _label_values(mask: np.ndarray, path: str) -> np.ndarray:
    """Distinct values of a mask; raises when they are not finite integers."""
    if np.issubdtype(mask.dtype, np.bool_):
        return np.unique(mask).astype(np.int64)
    if np.issubdtype(mask.dtype, np.integer):
        if mask.dtype.itemsize <= 2 and mask.min() >= 0:
            counts = np.bincount(mask.ravel().astype(np.int64))
            return np.flatnonzero(counts)
        return np.unique(mask)
    values = np.unique(mask)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"label {path}: must hold finite integer class values, found NaN or Inf.")
    if not np.all(values == np.round(values)):
        bad = values[values != np.round(values)][:5].tolist()
        raise ValueError(f"label {path}: must hold integer class values, found non-integers such as {bad}.")
    return values.astype(np.int64)


_MODE_HINTS = {
    "P": "its values are palette indices, not intensities: convert it to RGB (or L)",
    "PA": "its values are palette indices, not intensities: convert it to RGB (or L)",
    "LA": "grey with an alpha channel: drop the alpha (save it as L), or convert it to RGB",
    "RGBA": "RGB with an alpha channel: drop the alpha (save it as RGB)",
    "L": "a grey image: convert it to RGB, or set the bundle's channels to 1",
    "RGB": "a colour image: convert it to grey (L), or set the bundle's channels to 3",
    "CMYK": "convert it to RGB",
}


def _mode_hint(mode: str) -> str:
    """``" (PIL mode 'P': ...)"`` for a 2D file whose mode explains a wrong channel count, else ``""``."""
    hint = _MODE_HINTS.get(mode)
    return f" (PIL mode {mode!r}: {hint})" if hint else (f" (PIL mode {mode!r})" if mode else "")


def _read(item: dict, key: str, index: int):
    try:
        return read_image(item[key])
    except FileNotFoundError as err:
        raise ValueError(f"items[{index}][{key!r}]: file not found: {item[key]}") from err


def _check_item(
    index: int,
    item: object,
    image_key: str,
    label_key: str,
    num_classes: int | None,
    channels: int | None,
    spatial_dims: int | None,
    summary: dict,
) -> None:
    if not isinstance(item, dict):
        raise TypeError(f"items[{index}] must be a dict, got {type(item).__name__}.")
    if image_key not in item:
        raise ValueError(f"items[{index}] has no {image_key!r} entry (keys: {sorted(item)}).")
    image_path = str(item[image_key])
    image = _read(item, image_key, index)
    if spatial_dims is not None and image.spatial_dims != spatial_dims:
        raise ValueError(
            f"image {image_path}: expected {spatial_dims} spatial dimensions, got spatial shape {image.spatial_shape}."
        )
    if channels is not None and image.channels != channels:
        raise ValueError(
            f"image {image_path}: expected {channels} channel(s), got {image.channels} (shape {image.array.shape})"
            f"{_mode_hint(image.mode)}."
        )
    if np.issubdtype(image.array.dtype, np.inexact) and not np.all(np.isfinite(image.array)):
        bad = int((~np.isfinite(image.array)).sum())
        raise ValueError(f"image {image_path}: must be finite, but {bad} of {image.array.size} values are NaN or Inf.")
    summary["spatial_shapes"].add(image.spatial_shape)
    summary["channels"].add(image.channels)
    summary["spatial_dims"].add(image.spatial_dims)

    if label_key not in item or item[label_key] is None:
        return
    label_path = str(item[label_key])
    label = _read(item, label_key, index)
    if label.spatial_shape != image.spatial_shape:
        raise ValueError(
            f"label {label_path}: expected the spatial shape {image.spatial_shape} of its image {image_path}, "
            f"got {label.spatial_shape}."
        )
    if label.channels != 1:
        raise ValueError(f"label {label_path}: expected a single-channel mask, got {label.channels} channels.")
    values = _label_values(label.array, label_path)
    if num_classes is not None:
        allowed = set(range(num_classes))
        binary_255 = num_classes == 2 and set(values.tolist()) <= {0, 255}
        outside = sorted(set(values.tolist()) - allowed)
        if outside and not binary_255:
            extra = " (or {0, 255} for a binary mask)" if num_classes == 2 else ""
            raise ValueError(
                f"label {label_path}: values must lie in [0, {num_classes}){extra}, found {outside[:_MAX_REPORTED]}."
            )
    summary["label_values"].update(values.tolist())
    summary["num_labelled"] += 1


def check_dataset(
    items: Sequence[dict],
    num_classes: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
    channels: int | None = None,
    spatial_dims: int | None = None,
) -> dict:
    """Check a listing before training, decoding every file.

    Checks, per item: the image exists and decodes completely (truncated PNG/JPEG and corrupt NIfTI are
    caught), its values are finite, it has ``channels`` channels and ``spatial_dims`` spatial dimensions
    when those are given (channels as MONAI's loader reads them: a palette ``P`` PNG is one channel of palette
    indices and an ``RGBA`` or ``LA`` file keeps its alpha, so they are refused for 3-channel and 1-channel
    networks with the mode and the conversion named; a 4D NIfTI ``(X, Y, Z, C)`` has ``C`` channels); the mask (when the item has ``label_key``) decodes, has one channel and the
    image's spatial shape, and holds integer values in ``[0, num_classes)`` (integer or float dtype, but whole
    values; with ``num_classes=2``, masks stored as 0/255 are accepted too and read as background/foreground,
    while 0/255 with more classes, or 0/1/255 mixed, is refused; a palette ``P`` mask's indices are its class
    values). Every item is checked; the error lists the first ten problems.

    Args:
        items: the listing, e.g. from :func:`list_image_mask_pairs` or :func:`list_images`.
        num_classes: number of classes including background, or ``None`` to skip the range check.
        image_key: the entry holding the image path.
        label_key: the entry holding the mask path; items without it are checked as unlabeled images.
        channels: required image channel count (1 grey, 3 RGB), or ``None``.
        spatial_dims: required spatial rank (2 or 3), or ``None``.

    Returns:
        a summary: ``{"num_items", "num_labelled", "spatial_shapes", "channels", "spatial_dims",
        "label_values"}`` (the last four sorted lists of what was seen).

    Raises:
        ValueError: naming each bad file and what was expected; also for an empty listing.
        TypeError: when ``items`` is not a sequence of dicts.
    """
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise TypeError(f"items must be a list of dicts, got {type(items).__name__}.")
    if len(items) == 0:
        raise ValueError("items must hold at least one sample, got an empty listing.")
    if num_classes is not None:
        num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    if channels is not None:
        channels = check_positive_int(channels, "channels")
    if spatial_dims is not None:
        spatial_dims = check_spatial_dims(spatial_dims)

    summary: dict = {"spatial_shapes": set(), "channels": set(), "spatial_dims": set(), "label_values": set()}
    summary["num_labelled"] = 0
    problems: list[str] = []
    progress = tqdm(items, desc="check_dataset", unit="item", disable=len(items) < _PROGRESS_FROM, leave=False)
    for index, item in enumerate(progress):
        try:
            _check_item(index, item, image_key, label_key, num_classes, channels, spatial_dims, summary)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        raise ValueError(f"check_dataset found {len(problems)} problem(s) in {len(items)} item(s):\n  {shown}{more}")
    result = {
        "num_items": len(items),
        "num_labelled": summary["num_labelled"],
        "spatial_shapes": sorted(summary["spatial_shapes"]),
        "channels": sorted(summary["channels"]),
        "spatial_dims": sorted(summary["spatial_dims"]),
        "label_values": sorted(summary["label_values"]),
    }
    logger.info("check_dataset: %d item(s) passed (%d labelled)", len(items), result["num_labelled"])
    return result
