"""Per-volume evaluation of a 2D network trained on slices, at the resolution of the original labels.

Each held-out volume is cut into its slices, each slice goes through the same deterministic chain as in training
(:func:`~monai_cluster.workflows.segmentation_slices.slice_segmentation_transforms`, ``"val"``), the network's
argmax on the training grid is mapped back onto the slice's own grid by nearest neighbour
(:func:`~monai_cluster.transforms.restore_slice_grid`: what the crop or the padding left out is background), and
the slices are stacked into a prediction on the label volume's grid. The volume is then scored against its label
file: Dice per structure (MONAI ``compute_dice``) and the 95th-percentile Hausdorff distance (MONAI
``compute_hausdorff_distance``) in millimetres from the label's voxel spacing, or in voxels where the file gives no
spacing (an identity affine, as the ACDC copies under ``../shared/data``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.networks.utils import one_hot
from torch import nn

from monai_cluster.transforms.slice_grid import restore_slice_grid, slice_grid_geometry
from monai_cluster.utils.io import atomic_write_json

from .common import is_main_process, resolve_device
from .segmentation_slices import slice_segmentation_transforms

__all__ = ["evaluate_volumes", "label_spacing", "predict_volume", "volume_metrics"]

logger = logging.getLogger(__name__)


def label_spacing(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """The label volume of ``path`` as an integer ``(H, W, D)`` array and its voxel spacing in mm, or ``None``.

    The spacing is the header's voxel size, and ``None`` when the affine is the identity (the file carries no
    spacing: distances are then in voxels).

    Raises:
        ValueError: naming the file, when it cannot be read or is not 3D.
    """
    try:
        image = nib.load(os.fspath(path))
        array = np.rint(np.asarray(image.dataobj, dtype=np.float32)).astype(np.int64)
    except Exception as err:  # nibabel fails in many ways on a damaged file
        raise ValueError(f"label volume {path} could not be read: {err}") from err
    if array.ndim != 3:
        raise ValueError(f"label volume {path} must be 3D (H, W, D), got shape {array.shape}.")
    if np.allclose(image.affine, np.eye(4)):
        return array, None
    return array, tuple(float(z) for z in image.header.get_zooms()[:3])


def predict_volume(
    network: nn.Module,
    slices: Sequence[Mapping[str, Any]],
    transform: Any,
    image_size: Sequence[int],
    label_shape: Sequence[int],
    crop_fraction: float | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> torch.Tensor:
    """Predict every slice of one volume and stack them on the label's grid: ``(H, W, D)`` int64 class indices.

    Args:
        network: the 2D segmentation network (``(B, 1, *image_size)`` -> ``(B, C, *image_size)`` scores).
        slices: the volume's slice items, one per slice in slice order (``"slice"`` ``0 .. D-1``).
        transform: the deterministic chain giving ``image`` ``(1, *image_size)`` from a slice item.
        image_size: the training grid.
        label_shape: the label volume's ``(H, W, D)``; slices are taken along the last axis.
        crop_fraction: the crop of the chain, or ``None``.
        device: where the network runs.
        batch_size: slices per forward pass.

    Raises:
        ValueError: when the slice items do not cover ``0 .. D-1`` in order.
    """
    restored, _, _ = _predict_slices(network, slices, transform, image_size, label_shape, crop_fraction, device,
                                     batch_size)  # fmt: skip
    return restored


def _predict_slices(
    network: nn.Module,
    slices: Sequence[Mapping[str, Any]],
    transform: Any,
    image_size: Sequence[int],
    label_shape: Sequence[int],
    crop_fraction: float | None,
    device: str | torch.device,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`predict_volume`'s prediction on the label's grid, plus the prediction ``(h, w, D)`` on the training
    grid and the label as the chain gives it on that grid (``None`` when the items carry no label)."""
    height, width, depth = (int(s) for s in label_shape)
    if [int(item["slice"]) for item in slices] != list(range(depth)):
        raise ValueError(f"slices must be the {depth} slices of one volume in order, got {len(slices)} items.")
    geometry = slice_grid_geometry((height, width), tuple(image_size), crop_fraction)
    samples = [transform(dict(item)) for item in slices]
    images = torch.stack([torch.as_tensor(sample["image"]) for sample in samples])
    labels = None
    if all("label" in sample for sample in samples):
        labels = torch.stack([torch.as_tensor(sample["label"])[0] for sample in samples], dim=-1).long()
    was_training = network.training
    network.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, depth, batch_size):
            logits = network(images[start : start + batch_size].to(device))
            preds.append(torch.argmax(logits, dim=1, keepdim=True).cpu())
    network.train(was_training)
    grid = torch.cat(preds)
    restored = [restore_slice_grid(p, geometry)[0] for p in grid]
    return torch.stack(restored, dim=-1).long(), torch.stack([p[0] for p in grid], dim=-1).long(), labels


def volume_metrics(
    pred: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
) -> dict[str, list[float]]:
    """Dice and HD95 of each foreground class of one volume.

    Args:
        pred: ``(H, W, D)`` predicted class indices.
        label: ``(H, W, D)`` true class indices, same grid.
        num_classes: classes including background.
        spacing: voxel size per axis for HD95 in mm, or ``None`` for voxels.

    Returns:
        ``{"dice": [...], "hd95": [...]}``, one value per class ``1 .. num_classes - 1``; NaN where the class is
        absent from the label (Dice) or from the label or the prediction (HD95).

    Raises:
        ValueError: when the shapes differ.
    """
    y_pred, y = _one_hot_pair(pred, label, num_classes)
    dice = compute_dice(y_pred, y, include_background=False, ignore_empty=True)[0]
    present = (y_pred[0, 1:].flatten(1).any(1)) & (y[0, 1:].flatten(1).any(1))
    hd95 = torch.full((num_classes - 1,), float("nan"))
    if present.any():
        with warnings.catch_warnings():  # absent classes are NaN here, MONAI's warning about them is noise
            warnings.simplefilter("ignore", UserWarning)
            hd = compute_hausdorff_distance(
                y_pred, y, include_background=False, percentile=95, spacing=None if spacing is None else list(spacing)
            )[0]
        hd95 = torch.where(present & torch.isfinite(hd), hd.float(), hd95)
    return {"dice": [float(v) for v in dice], "hd95": [float(v) for v in hd95]}


def _one_hot_pair(pred, label, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    pred, label = torch.as_tensor(pred).long(), torch.as_tensor(label).long()
    if pred.shape != label.shape or pred.ndim != 3:
        raise ValueError(f"pred and label must be (H, W, D) on one grid, got {tuple(pred.shape)} and {tuple(label.shape)}.")
    return one_hot(pred[None, None], num_classes), one_hot(label[None, None], num_classes)


def _volume_dice(pred, label, num_classes: int) -> list[float]:
    """:func:`volume_metrics`' Dice alone (no Hausdorff distance), for the training-grid score."""
    y_pred, y = _one_hot_pair(pred, label, num_classes)
    return [float(v) for v in compute_dice(y_pred, y, include_background=False, ignore_empty=True)[0]]


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _nanmean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def evaluate_volumes(
    network: nn.Module,
    volumes: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
    image_size: Sequence[int],
    num_classes: int,
    output_path: str | os.PathLike | None = None,
    intensity_range: Sequence[float] | None = None,
    percentiles: Sequence[float] = (0.5, 99.5),
    crop_fraction: float | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    class_names: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``network`` on whole volumes at the labels' resolution and write the metrics as JSON.

    Args:
        network: the fine-tuned 2D network.
        volumes: ``{"image", "label", "key"}`` volume items (``"patient"`` is reported when present).
        slices: their slice items (``"volume_key"`` = the volume's key), as the overlay's data lists them.
        image_size: the training grid.
        num_classes: classes including background.
        output_path: where the JSON goes (``eval_slices/metrics.json``), or ``None``.
        intensity_range, percentiles, crop_fraction: the chain of training (see
            :func:`~monai_cluster.workflows.segmentation_slices.slice_segmentation_transforms`).
        device: where the network runs.
        batch_size: slices per forward pass.
        class_names: names of classes ``1 .. num_classes - 1`` (default ``class1``, ...).
        extra: entries added to the JSON (checkpoint, split, ...).

    Returns:
        ``{"num_volumes", "mean_dice", "dice": {class: mean}, "mean_hd95", "hd95": {class: mean}, "hd95_unit",
        "mean_dice_training_grid", "dice_training_grid": {class: mean}, "volumes": [{"key", "patient", "dice":
        {...}, "hd95": {...}, "dice_training_grid": {...}, "spacing"}], ...extra}``. The ``training_grid`` Dice scores
        the same prediction on the training grid against the label as the chain resamples it there (nearest
        neighbour), the way the in-memory benchmark scored (for comparison with its records only: the labels' own
        grid is the score). A volume's value is
        ``None`` where it is not defined (NaN in :func:`volume_metrics`), the per-class means average the volumes
        where it is defined, the means average the classes.

    Raises:
        ValueError: when there is no volume, ``class_names`` has another length, a label volume cannot be read, or
            a volume's slices are missing.
    """
    if not volumes:
        raise ValueError("volumes must hold at least one volume to evaluate (no held-out patient?); set "
                         "--val_fraction or --num_val_patients, or --eval_split all.")  # fmt: skip
    names = list(class_names) if class_names is not None else [f"class{c}" for c in range(1, num_classes)]
    if len(names) != num_classes - 1:
        raise ValueError(f"class_names must name the {num_classes - 1} foreground classes, got {len(names)}: {names}.")
    device = resolve_device(device)
    network.to(device)
    transform = slice_segmentation_transforms("val", image_size, intensity_range, percentiles, crop_fraction)
    by_volume: dict[str, list[Mapping[str, Any]]] = {}
    for item in slices:
        by_volume.setdefault(str(item["volume_key"]), []).append(item)
    records, units = [], set()
    for volume in volumes:
        label, spacing = label_spacing(volume["label"])
        units.add("voxel" if spacing is None else "mm")
        items = sorted(by_volume.get(str(volume["key"]), []), key=lambda it: int(it["slice"]))
        pred, grid_pred, grid_label = _predict_slices(
            network, items, transform, image_size, label.shape, crop_fraction, device, batch_size
        )
        scores = volume_metrics(pred, label, num_classes, spacing)
        grid_dice = _volume_dice(grid_pred, grid_label, num_classes) if grid_label is not None else []
        records.append({
            "key": volume["key"], "patient": volume.get("patient"), "spacing": spacing,
            "dice": {n: _finite_or_none(v) for n, v in zip(names, scores["dice"])},
            "hd95": {n: _finite_or_none(v) for n, v in zip(names, scores["hd95"])},
            "dice_training_grid": {n: _finite_or_none(v) for n, v in zip(names, grid_dice)},
        })  # fmt: skip
    dice = {n: _nanmean([r["dice"][n] for r in records]) for n in names}
    hd95 = {n: _nanmean([r["hd95"][n] for r in records]) for n in names}
    grid = {n: _nanmean([r["dice_training_grid"].get(n) for r in records]) for n in names}
    summary = {
        "num_volumes": len(records),
        "mean_dice": _nanmean(list(dice.values())),
        "dice": dice,
        "mean_hd95": _nanmean(list(hd95.values())),
        "hd95": hd95,
        "hd95_unit": "mm" if units == {"mm"} else ("voxel" if units == {"voxel"} else "mixed"),
        "mean_dice_training_grid": _nanmean(list(grid.values())),
        "dice_training_grid": grid,
        "volumes": records,
        **dict(extra or {}),
    }
    logger.info(
        "evaluated %d volumes at the labels' resolution: mean Dice %s, mean HD95 %s %s", len(records),
        summary["mean_dice"], summary["mean_hd95"], summary["hd95_unit"],
    )  # fmt: skip
    if output_path is not None and is_main_process():
        atomic_write_json(summary, output_path)
    return summary
