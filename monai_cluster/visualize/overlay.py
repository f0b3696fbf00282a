"""Segmentation overlays and image montages written as PNG (matplotlib, Agg, no global pyplot state)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from monai_cluster.utils.validation import check_positive_int, check_probability

from .display import as_numpy, check_png_path, image_slice, save_figure, to_display_image, to_label_slice

__all__ = ["save_overlay", "save_montage", "label_colour", "dice_per_class"]

_PALETTE = (  # ten well-separated colours for classes 1..10
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4"
)


def label_colour(value: int) -> tuple[float, float, float, float]:
    """RGBA colour of class ``value`` (classes 1..10 get distinct colours, then they repeat)."""
    return to_rgba(_PALETTE[(int(value) - 1) % len(_PALETTE)])


def dice_per_class(reference: np.ndarray, prediction: np.ndarray) -> dict[int, float]:
    """Dice of each foreground class present in either int label map (same shape)."""
    classes = sorted((set(np.unique(reference).tolist()) | set(np.unique(prediction).tolist())) - {0})
    scores = {}
    for c in classes:
        a, b = reference == c, prediction == c
        scores[int(c)] = float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))
    return scores


def _fill(ax, label: np.ndarray, alpha: float) -> None:
    overlay = np.zeros((*label.shape, 4))
    for c in np.unique(label):
        if c != 0:
            overlay[label == c] = (*label_colour(c)[:3], alpha)
    ax.imshow(overlay, interpolation="nearest")


def _contours(ax, label: np.ndarray, linestyle: str = "solid") -> None:
    for c in np.unique(label):
        if c != 0 and 0 < (label == c).sum() < label.size:
            ax.contour((label == c).astype(float), levels=[0.5], colors=[label_colour(c)], linewidths=1.2,
                       linestyles=linestyle)


def _show(ax, image: np.ndarray, title: str | None) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def save_overlay(
    image: object,
    mask: object | None = None,
    prediction: object | None = None,
    path: str | os.PathLike | None = None,
    alpha: float = 0.4,
    slice_index: int | None = None,
    title: str | None = None,
    spatial_dims: int | None = None,
    dpi: int = 100,
) -> Path:
    """Save an image with its ground truth and/or prediction overlaid, side by side, as a PNG.

    Panels: the image; the image with the ground truth filled (and outlined); the image with the
    prediction filled and the ground truth outlined, titled with the Dice per class when both are given.

    Args:
        image: ``(H, W)``, ``(C, H, W)``, ``(H, W, D)`` or ``(C, H, W, D)`` (see
            :mod:`monai_cluster.visualize.display` for the rules); numpy or torch.
        mask: ground-truth label map ``(*spatial)``, ``(1, *spatial)`` or one-hot ``(C, *spatial)``.
        prediction: predicted label map, probabilities or one-hot, same layouts as ``mask``.
        path: the ``.png`` file to write (required).
        alpha: opacity of the filled overlays.
        slice_index: slice of the last axis shown for 3D input (default: the middle one).
        title: title of the first panel.
        spatial_dims: 2 or 3 to decide how a rank-3 ``image`` is read (default: guessed).
        dpi: resolution of the PNG.

    Returns:
        the written path.

    Raises:
        ValueError: for a missing or non-PNG path, an image of the wrong rank, or a mask/prediction whose
            spatial shape differs from the image's (the message names the argument).
    """
    path = check_png_path(path)
    alpha = check_probability(alpha, "alpha")
    arr, dims = image_slice(image, "image", spatial_dims, slice_index)
    shown = to_display_image(arr, "image", spatial_dims=2)
    shape = shown.shape[:2]
    gt = None if mask is None else to_label_slice(mask, "mask", shape, dims, slice_index)
    pred = None if prediction is None else to_label_slice(prediction, "prediction", shape, dims, slice_index)

    panels = 1 + (gt is not None) + (pred is not None)
    height = 3.0 * shape[0] / shape[1]
    fig = Figure(figsize=(3.0 * panels, height + 0.5))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if title is None and dims == 3:
        depth = as_numpy(image, "image").shape[-1]
        title = f"image (slice {(depth // 2 if slice_index is None else slice_index) % depth} of {depth})"
    _show(axes[0], shown, title or "image")
    k = 1
    if gt is not None:
        _show(axes[k], shown, "ground truth")
        _fill(axes[k], gt, alpha)
        _contours(axes[k], gt)
        k += 1
    if pred is not None:
        name = "prediction"
        if gt is not None:
            scores = dice_per_class(gt, pred)
            if len(scores) == 1:
                name += f" (Dice {next(iter(scores.values())):.2f})"
            elif scores:
                name += f" (mean Dice {np.mean(list(scores.values())):.2f}, {len(scores)} classes)"
            _show(axes[k], shown, name)
            _fill(axes[k], pred, alpha)
            _contours(axes[k], gt)
        else:
            _show(axes[k], shown, name)
            _fill(axes[k], pred, alpha)
            _contours(axes[k], pred, linestyle="dashed")
    return save_figure(fig, path, dpi=dpi)


def save_montage(
    images: object,
    path: str | os.PathLike,
    nrow: int | None = None,
    titles: Sequence[str] | None = None,
    spatial_dims: int | None = None,
    slice_index: int | None = None,
    dpi: int = 100,
) -> Path:
    """Save a grid of images (middle slices for volumes) as one PNG.

    Args:
        images: a sequence of images in any layout :func:`save_overlay` accepts, or a batch array/tensor
            ``(B, C, H, W)`` / ``(B, C, H, W, D)`` (iterated over its first dimension).
        path: the ``.png`` file to write.
        nrow: images per row (like ``torchvision.utils.make_grid``); default ``ceil(sqrt(N))``.
        titles: one title per image, or ``None``.
        spatial_dims: 2 or 3 to decide how rank-3 images are read (default: guessed per image).
        slice_index: slice of the last axis shown for volumes (default: the middle one).
        dpi: resolution of the PNG.

    Returns:
        the written path.

    Raises:
        ValueError: for no images, a length mismatch between ``titles`` and ``images``, an image of the
            wrong rank (named by its index), or a bad ``nrow``/``path``.
    """
    path = check_png_path(path)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        batch = as_numpy(images, "images")
        if batch.ndim < 3:
            raise ValueError(
                f"images as one array must be a batch (B, C, H, W) or (B, C, H, W, D), got shape {batch.shape}."
            )
        images = list(batch)
    if not isinstance(images, Sequence) or isinstance(images, str):
        raise TypeError(f"images must be a sequence of arrays or a batch array, got {type(images).__name__}.")
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got none.")
    if titles is not None and (isinstance(titles, str) or len(titles) != len(images)):
        got = "a string" if isinstance(titles, str) else f"{len(titles)} titles"
        raise ValueError(f"titles must give one title per image ({len(images)}), got {got}.")
    n = len(images)
    ncol = math.ceil(math.sqrt(n)) if nrow is None else check_positive_int(nrow, "nrow")
    ncol = min(ncol, n)
    rows = math.ceil(n / ncol)
    shown = [to_display_image(img, f"images[{i}]", spatial_dims, slice_index) for i, img in enumerate(images)]
    aspect = max(s.shape[0] / s.shape[1] for s in shown)
    fig = Figure(figsize=(2.2 * ncol, (2.2 * aspect + (0.3 if titles else 0.0)) * rows))
    axes = fig.subplots(rows, ncol, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i < n:
            _show(ax, shown[i], None if titles is None else str(titles[i]))
        else:
            ax.set_axis_off()
    return save_figure(fig, path, dpi=dpi)
