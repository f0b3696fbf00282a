"""MONAI transform chains of the segmentation fine-tune bundles (2D dermoscopy and 3D heart).

- :func:`dermoscopy_transforms`: RGB images and 0/255 (or 0/1) lesion masks, read in their natural
  ``(H, W)`` orientation, scaled to ``[0, 1]``, resized to ``image_size``; flips, 90-degree rotations and
  intensity jitter for training.
- :func:`heart_transforms`: one-channel volumes with integer label maps on their own voxel grid (no
  resampling, so predictions keep the input's affine), CT windowing (``intensity="ct"``) or MRI percentile
  normalisation (``intensity="mri"``); for training, padding to ``roi_size`` and class-balanced random
  crops of ``roi_size``.

The dermoscopy bundle's configs spell out :func:`dermoscopy_transforms`' chains step by step as ``_target_`` entries
(and :func:`~monai_cluster.workflows.semi_supervised.unlabeled_transforms`' dermoscopy chain);
``tests/bundles/test_dermoscopy_config_transforms.py`` holds them to the same tensors and random draws, so a change
here goes into ``bundles/dermoscopy_segmentation/configs`` too. Likewise the heart bundle's 3D configs spell out
:func:`heart_transforms`' chains (and ``unlabeled_transforms``' heart chain), held to them by
``tests/bundles/test_heart_config_transforms.py``: a change here goes into ``bundles/heart_ct_segmentation/configs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import PILReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Lambdad,
    LoadImaged,
    RandCropByLabelClassesd,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    Resized,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
)

from monai_cluster.utils.validation import check_choice, check_positive_int

__all__ = ["INTENSITY_MODES", "binarize_mask", "dermoscopy_transforms", "heart_transforms", "restrict_to_fov"]

INTENSITY_MODES = ("ct", "mri")
"""Intensity options of :func:`heart_transforms`: CT windowing or MRI percentile normalisation."""

_MODES = ("train", "val", "infer")
_KEYS = ("image", "label")


def binarize_mask(mask: torch.Tensor) -> torch.Tensor:
    """Map a lesion mask stored as 0/255 or 0/1 (any non-zero value is lesion) to float 0/1, same shape."""
    return (mask > 0).to(torch.float32)


def _check_size(value: object, name: str, spatial_dims: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * spatial_dims
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != spatial_dims:
        raise ValueError(f"{name} must be an int or {spatial_dims} ints, got {value!r}.")
    return tuple(check_positive_int(v, f"{name}[{i}]", minimum=16) for i, v in enumerate(value))


def restrict_to_fov(data: dict, keys: Sequence[str] = ("pred", "label"), fov_key: str = "fov") -> dict:
    """Zero ``keys`` (``(C, H, W)`` one-hot prediction and label) outside the field of view ``data[fov_key]``
    (``(1, H, W)``, non-zero inside), so that a Dice counts only pixels inside it; without ``fov_key``, ``data``
    is returned unchanged."""
    if fov_key not in data:
        return data
    inside = torch.as_tensor(data[fov_key]) > 0
    return {**data, **{key: data[key] * inside.to(torch.as_tensor(data[key]).dtype) for key in keys}}


def dermoscopy_transforms(
    mode: str, image_size: int | Sequence[int] = 96, crop_size: int | None = None, fov: bool = False
) -> Compose:
    """Transforms for 2D RGB dermoscopy (or fundus) images with binary masks.

    Args:
        mode: ``"train"`` (with random augmentation), ``"val"`` or ``"infer"`` (deterministic; ``"label"`` is
            optional in both).
        image_size: the ``(H, W)`` (or one int) every image and mask is resized to; at least 16 per axis
            (BasicUNet pools four times).
        crop_size: ``"train"`` only: a random ``crop_size`` x ``crop_size`` crop of the resized image and mask
            before the augmentation (``None``: the whole image).
        fov: ``"val"``/``"infer"``: also load a field-of-view mask under ``"fov"`` (optional per item), resized
            and binarised like the label (see :func:`restrict_to_fov`).

    Returns:
        a ``Compose`` mapping ``{"image": path, "label": path}`` to ``image`` ``(3, H, W)`` float in
        ``[0, 1]`` and ``label`` ``(1, H, W)`` float 0/1 (``(1, crop, crop)`` with ``crop_size``).
    """
    mode = check_choice(mode, "mode", _MODES)
    size = _check_size(image_size, "image_size", 2)
    optional = mode != "train"
    masks = ("label", "fov") if fov and optional else ("label",)
    keys = ("image", *masks)
    xforms = [
        LoadImaged(keys, reader=PILReader(reverse_indexing=False), image_only=True, allow_missing_keys=optional),
        EnsureChannelFirstd(keys, allow_missing_keys=optional),
        ScaleIntensityRanged("image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        Lambdad(masks, binarize_mask, allow_missing_keys=optional),
        Resized(keys, spatial_size=size, mode=("bilinear",) + ("nearest",) * len(masks), allow_missing_keys=optional),
    ]
    if mode == "train" and crop_size is not None:
        crop = _check_size(crop_size, "crop_size", 2)
        if any(c > s for c, s in zip(crop, size)):
            raise ValueError(f"crop_size {list(crop)} must not exceed image_size {list(size)}.")
        xforms.append(RandSpatialCropd(_KEYS, roi_size=crop, random_size=False))
    if mode == "train":
        xforms += [
            RandFlipd(_KEYS, prob=0.5, spatial_axis=0),
            RandFlipd(_KEYS, prob=0.5, spatial_axis=1),
            RandRotate90d(_KEYS, prob=0.5, max_k=3),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        ]
    xforms.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False, allow_missing_keys=optional))
    return Compose(xforms)


def heart_transforms(
    mode: str,
    roi_size: int | Sequence[int] = 48,
    num_classes: int = 8,
    intensity: str = "ct",
    ct_window: Sequence[float] = (-300.0, 500.0),
    num_samples: int = 2,
) -> Compose:
    """Transforms for 3D one-channel heart volumes with integer label maps.

    Args:
        mode: ``"train"`` (pad to ``roi_size``, ``num_samples`` class-balanced random crops, intensity jitter),
            ``"val"`` or ``"infer"`` (whole volume on its own grid; ``"label"`` optional).
        roi_size: training crop (and sliding-window) size, at least 16 per axis.
        num_classes: classes including background, for the class-balanced crops.
        intensity: ``"ct"``: window ``ct_window`` (Hounsfield units) scaled to ``[0, 1]`` and clipped;
            ``"mri"``: the 1st-99th percentile range scaled to ``[0, 1]`` and clipped, per volume.
        ct_window: ``(low, high)`` HU of the CT window.
        num_samples: crops per volume per training step.

    Returns:
        a ``Compose`` mapping ``{"image": path, "label": path}`` to ``image`` ``(1, X, Y, Z)`` float and
        ``label`` ``(1, X, Y, Z)`` float class indices (``roi_size`` crops in training).
    """
    mode = check_choice(mode, "mode", _MODES)
    roi = _check_size(roi_size, "roi_size", 3)
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    intensity = check_choice(intensity, "intensity", INTENSITY_MODES)
    num_samples = check_positive_int(num_samples, "num_samples")
    if isinstance(ct_window, (str, bytes)) or not isinstance(ct_window, Sequence) or len(ct_window) != 2:
        raise ValueError(f"ct_window must be (low, high) in Hounsfield units, got {ct_window!r}.")
    low, high = float(ct_window[0]), float(ct_window[1])
    if not low < high:
        raise ValueError(f"ct_window must have low < high, got {ct_window!r}.")
    optional = mode != "train"
    xforms = [
        LoadImaged(_KEYS, image_only=True, allow_missing_keys=optional),
        EnsureChannelFirstd(_KEYS, allow_missing_keys=optional),
    ]
    if intensity == "ct":
        xforms.append(ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    else:
        xforms.append(
            ScaleIntensityRangePercentilesd("image", lower=1, upper=99, b_min=0.0, b_max=1.0, clip=True)
        )
    if mode == "train":
        xforms += [
            SpatialPadd(_KEYS, spatial_size=roi),
            RandCropByLabelClassesd(
                _KEYS, label_key="label", spatial_size=roi, num_classes=num_classes, num_samples=num_samples
            ),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        ]
    xforms.append(EnsureTyped(_KEYS, dtype=torch.float32, track_meta=False, allow_missing_keys=optional))
    return Compose(xforms)
