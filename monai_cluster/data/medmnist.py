"""Read MedMNIST ``.npz`` archives into channel-first float arrays.

A MedMNIST archive holds ``{split}_images`` and ``{split}_labels`` for ``split`` in ``train``, ``val``, ``test``:
images ``uint8`` ``(N, H, W)`` (grey 2D), ``(N, H, W, 3)`` (RGB 2D) or ``(N, H, W, D)`` (3D volumes), labels
``(N, 1)`` (or ``(N, L)`` for multi-label sets). Nothing is downloaded: the caller passes the file, e.g.
``get_data_root() / "chest_xray" / "pneumoniamnist_balanced.npz"``.

Label encodings and what they mean:

- ``(N,)`` or ``(N, 1)`` non-negative integers: one class id per image (returned as ``(N,)``);
- ``(N, L)``, ``L > 1``, of 0/1 (integer or boolean): an indicator matrix, returned as is; it is *one-hot* when
  every row has exactly one 1 (:func:`medmnist_class_ids` turns it into class ids) and *multi-label* otherwise
  (ChestMNIST: an image may have several findings or none, so there is no single class id);
- anything else (negative ids, non-integer values, an ``(N, L)`` matrix with values other than 0/1, another
  rank or length) is refused with the file and key named.

Image layouts: ``(N, H, W)`` grey 2D; ``(N, H, W, 1)`` grey 2D with a channel axis; ``(N, H, W, 3)`` RGB 2D;
``(N, H, W, D)`` 3D volumes otherwise (``D`` other than 1 and 3; with ``spatial_dims=None`` a last axis of 2 or 4,
which could be grey-alpha / RGBA images or thin volumes, is refused as ambiguous); ``(N, H, W, D, C)``
multi-channel volumes. ``uint8`` intensities are divided by 255, floats must already lie in ``[0, 1]``.

References:
    - [0] MedMNIST v2, 2023, https://arxiv.org/abs/2110.14795
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from monai_cluster.utils.validation import check_choice

__all__ = ["MEDMNIST_SPLITS", "load_medmnist_npz", "medmnist_class_ids"]

MEDMNIST_SPLITS = ("train", "val", "test")


def _channel_first(images: np.ndarray, key: str, spatial_dims: int | None) -> np.ndarray:
    if images.ndim == 3 and spatial_dims in (None, 2):
        return images[:, None]
    if images.ndim == 4 and spatial_dims in (None, 2) and images.shape[-1] in (1, 3):
        return np.moveaxis(images, -1, 1)
    if images.ndim == 4 and spatial_dims is None and images.shape[-1] in (2, 4):
        raise ValueError(
            f"{key} has shape {images.shape}: (N, H, W, {images.shape[-1]}) may be grey-alpha/RGBA images or volumes "
            f"of depth {images.shape[-1]}; pass spatial_dims=3 for volumes, or store images as (N, H, W) or "
            "(N, H, W, 3)."
        )
    if images.ndim == 4 and spatial_dims in (None, 3):
        return images[:, None]
    if images.ndim == 5 and spatial_dims in (None, 3):
        return np.moveaxis(images, -1, 1)
    raise ValueError(
        f"{key} has shape {images.shape}, which is not a MedMNIST image array (N, H, W), (N, H, W, 1), "
        f"(N, H, W, 3), (N, H, W, D) or (N, H, W, D, C) for spatial_dims={spatial_dims}."
    )


def _scale(images: np.ndarray, key: str) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if np.issubdtype(images.dtype, np.floating):
        out = images.astype(np.float32)
        if out.size and (not np.isfinite(out).all() or out.min() < 0 or out.max() > 1):
            raise ValueError(f"{key} holds floating-point values outside [0, 1] (or NaN); expected uint8 or [0, 1].")
        return out
    if np.issubdtype(images.dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"{key} holds integers outside [0, 255]; expected 8-bit intensities.")
        return images.astype(np.float32) / 255.0
    raise TypeError(f"{key} must hold numbers, got dtype {images.dtype}.")


def _check_labels(labels: np.ndarray, key: str, n: int) -> np.ndarray:
    """Class ids ``(N,)`` or a 0/1 indicator matrix ``(N, L)``, int64; anything else refused naming ``key``."""
    if labels.dtype == np.bool_:
        labels = labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{key} must hold integers (class ids or 0/1 indicators), got dtype {labels.dtype}.")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2) or labels.shape[0] != n:
        raise ValueError(f"{key} must be (N,), (N, 1) or (N, L) with N = {n} images, got shape {labels.shape}.")
    if labels.ndim == 1 and labels.size and labels.min() < 0:
        raise ValueError(f"{key} must hold class ids >= 0, found {sorted(set(labels[labels < 0].tolist()))[:5]}.")
    if labels.ndim == 2:
        other = sorted(set(np.unique(labels).tolist()) - {0, 1})
        if other:
            raise ValueError(
                f"{key} has shape {labels.shape}, so it must be a 0/1 indicator matrix (one-hot or multi-label), "
                f"found the values {other[:5]}."
            )
    return labels.astype(np.int64)


def medmnist_class_ids(labels: np.ndarray, name: str = "labels") -> tuple[np.ndarray | None, str]:
    """One class id per image from the labels :func:`load_medmnist_npz` returns, and how they were encoded.

    Args:
        labels: ``(N,)`` class ids or an ``(N, L)`` 0/1 indicator matrix.
        name: what ``labels`` are, for messages (e.g. the file and split).

    Returns:
        ``(ids, encoding)``: ``(N,)`` int64 ids and ``"class ids"`` for ``(N,)``; the argmax of each row and
        ``"one-hot"`` when every row of an ``(N, L)`` matrix has exactly one 1; ``None`` and ``"multi-label"``
        otherwise (some image has several classes or none).

    Raises:
        ValueError: for labels of another rank, naming ``name``.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64), "class ids"
    if labels.ndim != 2:
        raise ValueError(f"{name} must be (N,) class ids or an (N, L) indicator matrix, got shape {labels.shape}.")
    if labels.shape[1] == 1:
        return labels[:, 0].astype(np.int64), "class ids"
    if labels.shape[0] and bool((labels.sum(axis=1) == 1).all()) and bool(np.isin(labels, (0, 1)).all()):
        return labels.argmax(axis=1).astype(np.int64), "one-hot"
    return None, "multi-label"


def load_medmnist_npz(
    path: str | os.PathLike, split: str = "train", spatial_dims: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split (or all) of a MedMNIST ``.npz`` as float32 images in ``[0, 1]`` and integer labels.

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (the three concatenated in that order).
        spatial_dims: ``None`` infers the layout (``(N, H, W, 3)`` is read as RGB 2D, other 4D arrays as 3D
            volumes); 2 or 3 forces it.

    Returns:
        ``(images, labels)``: images ``(N, C, H, W)`` or ``(N, C, H, W, D)`` float32 in ``[0, 1]``; labels
        ``(N,)`` int64 class ids, or an ``(N, L)`` int64 0/1 indicator matrix for one-hot and multi-label
        archives (:func:`medmnist_class_ids` tells them apart).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: for an unknown ``split`` or ``spatial_dims``, an unreadable archive, a missing
            ``{split}_images``/``{split}_labels`` key (the message lists the keys present), mismatched lengths,
            labels that are not class ids or a 0/1 indicator matrix (see the module docstring), or an image array
            that is not MedMNIST-shaped or is ambiguous; every message names the file and key.
    """
    split = check_choice(split, "split", (*MEDMNIST_SPLITS, "all"))
    if spatial_dims not in (None, 2, 3):
        raise ValueError(f"spatial_dims must be None, 2 or 3, got {spatial_dims!r}.")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"path {str(file)!r} does not exist or is not a file (expected a MedMNIST .npz).")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"path {str(file)!r} is not a readable .npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"path {str(file)!r} holds a single array, not a .npz archive with named splits.")
    images_out, labels_out = [], []
    with archive:
        for name in MEDMNIST_SPLITS if split == "all" else (split,):
            for key in (f"{name}_images", f"{name}_labels"):
                if key not in archive.files:
                    raise ValueError(
                        f"{str(file)!r} has no key {key!r} for split={name!r}; keys: {sorted(archive.files)}."
                    )
            key = f"{str(file)!r} {name}_images"
            images = _scale(_channel_first(archive[f"{name}_images"], key, spatial_dims), key)
            labels = _check_labels(archive[f"{name}_labels"], f"{str(file)!r} {name}_labels", images.shape[0])
            images_out.append(images)
            labels_out.append(labels)
    if len(labels_out) > 1 and len({lab.shape[1:] for lab in labels_out}) != 1:
        raise ValueError(f"the splits of {str(file)!r} have different label shapes: {[lab.shape for lab in labels_out]}.")
    if len(images_out) > 1 and len({im.shape[1:] for im in images_out}) != 1:
        raise ValueError(f"the splits of {str(file)!r} have different image shapes: {[im.shape for im in images_out]}.")
    return np.concatenate(images_out), np.concatenate(labels_out)
