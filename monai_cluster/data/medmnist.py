"""Read MedMNIST ``.npz`` archives into channel-first float arrays.

A MedMNIST archive holds ``{split}_images`` and ``{split}_labels`` for ``split`` in ``train``, ``val``, ``test``:
images ``uint8`` ``(N, H, W)`` (grey 2D), ``(N, H, W, 3)`` (RGB 2D) or ``(N, H, W, D)`` (3D volumes), labels
``(N, 1)`` (or ``(N, L)`` for multi-label sets). Nothing is downloaded: the caller passes the file, e.g.
``get_data_root() / "chest_xray" / "pneumoniamnist_balanced.npz"``.

References:
    - [0] MedMNIST v2, 2023, https://arxiv.org/abs/2110.14795
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from monai_cluster.utils.validation import check_choice

__all__ = ["MEDMNIST_SPLITS", "load_medmnist_npz"]

MEDMNIST_SPLITS = ("train", "val", "test")


def _channel_first(images: np.ndarray, key: str, spatial_dims: int | None) -> np.ndarray:
    if images.ndim == 3 and spatial_dims in (None, 2):
        return images[:, None]
    if images.ndim == 4 and spatial_dims in (None, 2) and images.shape[-1] == 3:
        return np.moveaxis(images, -1, 1)
    if images.ndim == 4 and spatial_dims in (None, 3):
        return images[:, None]
    if images.ndim == 5 and spatial_dims in (None, 3):
        return np.moveaxis(images, -1, 1)
    raise ValueError(
        f"{key} has shape {images.shape}, which is not a MedMNIST image array (N, H, W), (N, H, W, 3) or "
        f"(N, H, W, D) for spatial_dims={spatial_dims}."
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
        ``(N,)`` int64 (``(N, L)`` for multi-label archives).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: for an unknown ``split`` or ``spatial_dims``, an unreadable archive, a missing
            ``{split}_images``/``{split}_labels`` key (the message lists the keys present), mismatched lengths or
            an image array that is not MedMNIST-shaped.
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
            images = _scale(_channel_first(archive[f"{name}_images"], f"{name}_images", spatial_dims), f"{name}_images")
            labels = archive[f"{name}_labels"]
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"{name}_labels must hold integers, got dtype {labels.dtype}.")
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim not in (1, 2) or labels.shape[0] != images.shape[0]:
                raise ValueError(
                    f"{name}_labels must be (N,) or (N, L) with N = {images.shape[0]} images, got shape {labels.shape}."
                )
            images_out.append(images)
            labels_out.append(labels.astype(np.int64))
    if len(images_out) > 1 and len({im.shape[1:] for im in images_out}) != 1:
        raise ValueError(f"the splits of {str(file)!r} have different image shapes: {[im.shape for im in images_out]}.")
    return np.concatenate(images_out), np.concatenate(labels_out)
