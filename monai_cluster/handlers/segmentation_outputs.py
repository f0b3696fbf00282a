"""Ignite handlers that turn a segmentation evaluator's outputs into files: a metrics JSON, masks and overlays.

- :class:`SegmentationMetricsWriter` (``evaluate.json``): Dice, Jaccard, 95% Hausdorff distance and average
  surface distance per image and per class with MONAI's :class:`~monai.metrics.DiceMetric`,
  :class:`~monai.metrics.MeanIoU`, :class:`~monai.metrics.HausdorffDistanceMetric` and
  :class:`~monai.metrics.SurfaceDistanceMetric` (distances in voxels, or in mm given the voxel spacing), written
  atomically as JSON when the evaluator completes.
- :class:`SegmentationOutputWriter` (``inference.json``): one predicted mask per input, in the input's own
  size and orientation (PNG for 2D; NIfTI with the input's affine for 3D), and an overlay PNG of image,
  prediction and, when the listing has one, ground truth.

Both read the evaluator's decollated ``engine.state.output`` (``pred`` and ``label``) and the matching
``engine.state.batch`` entries ``key``, ``image_path`` and ``label_path`` (see
:func:`add_source_paths`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDistanceMetric
from monai.networks.utils import one_hot

from monai_cluster.data import read_image, split_extension, write_nifti, write_png
from monai_cluster.utils.io import atomic_write_json
from monai_cluster.utils.validation import check_positive_int, check_spatial_dims
from monai_cluster.visualize import save_overlay

__all__ = ["SegmentationMetricsWriter", "SegmentationOutputWriter", "add_source_paths", "summarize_metric"]

logger = logging.getLogger(__name__)


def add_source_paths(items: Sequence[dict]) -> list[dict]:
    """Copy each item's ``image`` (and ``label``) path to ``image_path`` (``label_path``) so outputs can name them.

    Loading transforms replace ``image``/``label`` by arrays; the copies travel through the data loader as
    strings.
    """
    out = []
    for item in items:
        extra = {"image_path": str(item["image"])}
        if item.get("label") is not None:
            extra["label_path"] = str(item["label"])
        out.append({**item, **extra})
    return out


def _as_list(output: object, name: str) -> list[dict]:
    if isinstance(output, Mapping):  # a batch that was not decollated: split it
        raise TypeError(f"{name} must be decollated (the evaluator's decollate=True), got one dict for the batch.")
    if not isinstance(output, Sequence):
        raise TypeError(f"{name} must be a list of per-sample dicts, got {type(output).__name__}.")
    return list(output)


def summarize_metric(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n", "undefined"}`` of the finite values (``undefined``: NaN/Inf ones, e.g. HD95 of an
    empty prediction); ``mean``/``std`` are ``None`` when no value is finite."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return {
        "mean": float(np.mean(finite)) if finite else None,
        "std": float(np.std(finite)) if finite else None,
        "n": len(finite),
        "undefined": len(values) - len(finite),
    }


def _finite_mean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def _check_spacing(spacing: object) -> tuple[float, ...] | None:
    """``None``, or the voxel size as a tuple of positive finite floats (one number becomes a 1-tuple)."""
    if spacing is None:
        return None
    values = [spacing] if isinstance(spacing, (int, float)) and not isinstance(spacing, bool) else spacing
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence) or not values:
        raise TypeError(f"spacing must be a number or a list of numbers (mm per voxel), got {type(spacing).__name__}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"spacing must hold positive finite voxel sizes in mm, got {spacing!r}.")
        out.append(float(v))
    return tuple(out)


def _to_onehot(t: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, *spatial)`` probabilities/one-hot or ``(1, *spatial)`` indices to a ``(1, C, *spatial)`` one-hot."""
    if t.shape[0] == num_classes and num_classes > 1:
        t = t.argmax(dim=0, keepdim=True)
    return one_hot(t[None].long(), num_classes, dim=1)


class SegmentationMetricsWriter:
    """Collect Dice, Jaccard, HD95 and ASD per image and class during an evaluation, and write them as JSON.

    The JSON holds ``mean_dice``, ``mean_jaccard``, ``mean_hd95`` and ``mean_asd`` (means over images of the
    per-image mean over foreground classes; for the distances over the classes where they are defined),
    ``per_class`` (``{"dice", "jaccard", "hd95", "asd"}`` summaries per class name, see :func:`summarize_metric`),
    ``per_image`` (``key`` and the four per-class lists), ``distance_unit`` and the ``extra`` entries. HD95 is the
    95th percentile of the symmetric surface distances, ASD (average surface distance) their mean over both
    surfaces, the figures left-atrium papers report; both are in voxels of the evaluation grid, or in mm when
    ``spacing`` gives the voxel size, and undefined (``null``) for a class absent from the prediction or the ground
    truth. Jaccard is ``|P & G| / |P | G|`` (1 when both are empty, like Dice).

    Args:
        output_path: the ``.json`` file to write (atomically).
        num_classes: classes including background.
        class_names: names of the foreground classes (``num_classes - 1``); default ``class_1``, ...
        extra: more entries for the JSON (checkpoint, dataset, split).
        spacing: voxel size of the evaluation grid in mm (one number, or one per spatial axis) for HD95 and ASD
            in mm; ``None`` (default) reports them in voxels.
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        extra: Mapping | None = None,
        spacing: float | Sequence[float] | None = None,
    ) -> None:
        self.output_path = Path(output_path)
        if self.output_path.suffix.lower() != ".json":
            raise ValueError(f"output_path must end with .json, got {str(output_path)!r}.")
        self.num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
        names = [f"class_{i}" for i in range(1, self.num_classes)] if class_names is None else list(class_names)
        if len(names) != self.num_classes - 1:
            raise ValueError(
                f"class_names must name the {self.num_classes - 1} foreground classes, got {len(names)}: {names}."
            )
        self.class_names = [str(n) for n in names]
        self.extra = dict(extra or {})
        self.dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
        self.hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
        self.jaccard = MeanIoU(include_background=False, reduction="none", ignore_empty=False)
        self.asd = SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")
        self.spacing = _check_spacing(spacing)
        self.records: list[dict] = []
        self.summary: dict | None = None

    def attach(self, engine: Engine) -> None:
        """Reset on ``STARTED``, collect on ``ITERATION_COMPLETED``, write on ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the images collected so far."""
        self.records = []
        self.summary = None

    def collect(self, engine: Engine) -> None:
        """Compute the metrics of every sample of the current batch."""
        outputs = _as_list(engine.state.output, "engine.state.output")
        batch = _as_list(engine.state.batch, "engine.state.batch")
        for index, (out, item) in enumerate(zip(outputs, batch)):
            if out.get("label") is None:
                raise ValueError(f"batch sample {index} has no 'label': evaluation needs ground-truth masks.")
            pred = _to_onehot(out["pred"].detach().cpu(), self.num_classes)
            label = _to_onehot(out["label"].detach().cpu(), self.num_classes)
            dice = self.dice(pred, label)[0].tolist()
            jaccard = self.jaccard(pred, label)[0].tolist()
            spacing = self.spacing
            if spacing is not None and len(spacing) == 1:
                spacing = spacing * (pred.ndim - 2)
            elif spacing is not None and len(spacing) != pred.ndim - 2:
                raise ValueError(
                    f"spacing must give one voxel size or one per spatial axis ({pred.ndim - 2}), got {list(spacing)}."
                )
            with np.errstate(all="ignore"):
                hd = self.hd95(pred, label, spacing=spacing)[0].tolist()
                asd = self.asd(pred, label, spacing=spacing)[0].tolist()
            key = str(item.get("key", len(self.records)))
            self.records.append({"key": key, "dice": dice, "jaccard": jaccard, "hd95": hd, "asd": asd})

    def write(self, engine: Engine | None = None) -> dict:
        """Write (and return) the summary JSON of the collected images."""
        if not self.records:
            raise ValueError("no image was evaluated: the evaluation listing is empty.")
        names = ("dice", "jaccard", "hd95", "asd")
        per_class = {
            name: {m: summarize_metric([r[m][c] for r in self.records]) for m in names}
            for c, name in enumerate(self.class_names)
        }
        image_dice = [float(np.nanmean(r["dice"])) for r in self.records]
        image_jaccard = [float(np.nanmean(r["jaccard"])) for r in self.records]
        image_hd = [_finite_mean(r["hd95"]) for r in self.records]  # over the classes where HD95 is defined
        image_asd = [_finite_mean(r["asd"]) for r in self.records]
        per_image = [
            {
                "key": r["key"],
                **{m: [float(v) if math.isfinite(v) else None for v in r[m]] for m in names},
            }
            for r in self.records
        ]
        dice_summary, hd_summary = summarize_metric(image_dice), summarize_metric(image_hd)
        jaccard_summary, asd_summary = summarize_metric(image_jaccard), summarize_metric(image_asd)
        self.summary = {
            "num_images": len(self.records),
            "num_classes": self.num_classes,
            "mean_dice": dice_summary["mean"],
            "std_dice": dice_summary["std"],
            "mean_jaccard": jaccard_summary["mean"],
            "std_jaccard": jaccard_summary["std"],
            "mean_hd95": hd_summary["mean"],
            "std_hd95": hd_summary["std"],
            "hd95_undefined_images": hd_summary["undefined"],
            "mean_asd": asd_summary["mean"],
            "std_asd": asd_summary["std"],
            "asd_undefined_images": asd_summary["undefined"],
            "distance_unit": "voxel" if self.spacing is None else "mm",
            "spacing": None if self.spacing is None else list(self.spacing),
            "per_class": per_class,
            "per_image": per_image,
            **self.extra,
        }
        atomic_write_json(self.summary, self.output_path)
        hd_text = "undefined" if hd_summary["mean"] is None else f"{hd_summary['mean']:.2f}"
        asd_text = "undefined" if asd_summary["mean"] is None else f"{asd_summary['mean']:.2f}"
        logger.info(
            "evaluated %d image(s): mean Dice %.4f, Jaccard %.4f, HD95 %s, ASD %s %s; written to %s",
            len(self.records),
            dice_summary["mean"],
            jaccard_summary["mean"],
            hd_text,
            asd_text,
            self.summary["distance_unit"],
            self.output_path,
        )
        return self.summary


def _volume_affine(path: str) -> np.ndarray:
    """The voxel-to-world matrix of a 3D file (NIfTI header; MONAI's reader for other formats)."""
    if split_extension(path)[1].lower() in (".nii", ".nii.gz"):
        import nibabel as nib

        return np.asarray(nib.load(path).affine, dtype=np.float64)
    from monai.transforms import LoadImage

    return np.asarray(LoadImage(image_only=True)(path).affine, dtype=np.float64)


class SegmentationOutputWriter:
    """Write a predicted mask and an overlay PNG for every sample an inference evaluator processes.

    Predictions (probabilities ``(C, *spatial)`` or class indices ``(1, *spatial)``) are brought back to the
    input file's own grid: 2D probabilities are resized bilinearly to the original ``(H, W)`` before the
    argmax (indices by nearest neighbour); 3D predictions must already be on the input's grid (sliding-window
    inference without resampling). Masks: ``<output_dir>/masks/<stem>.png`` (2D; 0/255 for two classes,
    class indices otherwise) or ``<stem>.nii.gz`` (3D, uint8, the input's affine). Overlays:
    ``<output_dir>/overlays/<stem>.png``, with the ground truth outlined when the sample has ``label_path``.
    Stems are the sample ``key`` without extension, ``/`` replaced by ``__``.

    Args:
        output_dir: folder of ``masks/`` and ``overlays/``.
        spatial_dims: 2 or 3.
        num_classes: classes including background.
        overlays: also write overlay PNGs.

    Attributes:
        written: ``[(mask_path, overlay_path or None), ...]`` of the current run.
    """

    def __init__(
        self, output_dir: str | os.PathLike, spatial_dims: int, num_classes: int = 2, overlays: bool = True
    ) -> None:
        self.output_dir = Path(output_dir)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
        if not isinstance(overlays, bool):
            raise TypeError(f"overlays must be a bool, got {type(overlays).__name__} {overlays!r}.")
        self.overlays = overlays
        self.written: list[tuple[Path, Path | None]] = []

    def attach(self, engine: Engine) -> None:
        """Reset on ``STARTED``, write on ``ITERATION_COMPLETED``."""
        engine.add_event_handler(Events.STARTED, lambda _: self.written.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _labels(self, pred: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
        pred = pred.detach().float().cpu()
        if tuple(pred.shape[1:]) != shape:
            if self.spatial_dims == 3:
                raise ValueError(
                    f"3D prediction of spatial shape {tuple(pred.shape[1:])} is not on its input's grid {shape}; "
                    "inference must not resample volumes."
                )
            soft = pred.shape[0] > 1
            pred = F.interpolate(pred[None], size=shape, mode="bilinear" if soft else "nearest")[0]
        labels = pred.argmax(dim=0) if pred.shape[0] > 1 else pred[0].round()
        return labels.numpy().astype(np.uint8)

    def __call__(self, engine: Engine) -> None:
        """Write the masks and overlays of the current batch."""
        outputs = _as_list(engine.state.output, "engine.state.output")
        batch = _as_list(engine.state.batch, "engine.state.batch")
        for out, item in zip(outputs, batch):
            if "image_path" not in item:
                raise ValueError("batch samples need 'image_path' (add_source_paths) to name their outputs.")
            path = str(item["image_path"])
            key = str(item.get("key", Path(path).name))
            stem = key[: len(key) - len(split_extension(key)[1])].replace("/", "__").replace("\\", "__")
            original = read_image(path)
            labels = self._labels(out["pred"], tuple(original.spatial_shape))
            if self.spatial_dims == 2:
                mask_path = self.output_dir / "masks" / f"{stem}.png"
                write_png(labels * 255 if self.num_classes == 2 else labels, mask_path)
                image = np.moveaxis(original.array, -1, 0) if original.array.ndim == 3 else original.array
            else:
                mask_path = self.output_dir / "masks" / f"{stem}.nii.gz"
                write_nifti(labels, _volume_affine(path), mask_path)
                image = original.array
            overlay_path = None
            if self.overlays:
                truth = None
                if item.get("label_path"):
                    truth = read_image(str(item["label_path"])).array
                    truth = (truth > 0).astype(np.uint8) if self.num_classes == 2 else truth.astype(np.int64)
                overlay_path = save_overlay(
                    image,
                    mask=truth,
                    prediction=labels,
                    path=self.output_dir / "overlays" / f"{stem}.png",
                    title=key,
                    spatial_dims=self.spatial_dims,
                )
            self.written.append((mask_path, overlay_path))
        logger.info("inference: %d mask(s) written under %s", len(self.written), self.output_dir)
