"""Data for cluster-guided contrastive pretraining: unlabeled listings and the transform chains of each stage.

Every stage starts from the same deterministic chain (:func:`base_transforms`: load, channel first, intensity
scaling to ``[0, 1]`` (a fixed range such as 0..255 for RGB, or a Hounsfield window for CT), resize to
``image_size``, plain float tensor). The autoencoder adds flips (:func:`autoencoder_transforms`), feature
extraction uses the base chain alone, and pretraining builds two views per image (:func:`pretrain_view_transform`,
:func:`pretrain_transforms`) in one of two modes (:data:`VIEW_MODES`):

- ``"geometric"``: each view gets its own random resized crop and flips
  (:class:`~monai_cluster.transforms.RandResizedCropd`, which records the view's geometry) and its own intensity
  augmentation, as SimCLR and Chaitanya et al.'s global loss need; the local loss matches locations through the
  recorded geometries.
- ``"intensity"``: flips, 90-degree rotations and a zoom shared by both views, and an intensity augmentation per
  view, so that a pixel of one view is the same pixel of the other (the local stage of Chaitanya et al.'s
  staged schedule).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    RandZoomd,
    Resized,
    ScaleIntensityRanged,
)

from monai_cluster.clustering import read_pseudo_class_table
from monai_cluster.data import check_dataset
from monai_cluster.transforms import MultiViewd, NoMetaCompose, PseudoClassd, RandResizedCropd

from .common import barrier, is_main_process, list_unlabeled, validate_option
from .datalist import load_datalist

__all__ = [
    "VIEW_MODES",
    "autoencoder_augmentation",
    "check_batch_fits",
    "autoencoder_transforms",
    "base_transforms",
    "check_image_size",
    "feature_transforms",
    "make_pseudo_class_transform",
    "prepare_unlabeled",
    "pretrain_augmentation",
    "pretrain_transforms",
    "pretrain_view_transform",
]

VIEW_MODES = ("geometric", "intensity")
"""How the two pretraining views of an image differ: own crop, flips and intensity, or intensity only."""

_SIZE_DIVISOR = 16  # BasicUNet pools four times by 2; the default autoencoder has strides (2, 2, 2, 2)


def check_image_size(image_size: object, spatial_dims: int, name: str = "image_size") -> list[int]:
    """``image_size`` as one int per spatial axis, each a positive multiple of 16 (BasicUNet pools 4 times).

    Raises:
        TypeError/ValueError: naming ``image_size`` and what was expected.
    """
    sizes = validate_option(name, image_size, "ints>=16")
    if len(sizes) == 1:
        sizes = sizes * spatial_dims
    if len(sizes) != spatial_dims:
        raise ValueError(f"option {name!r} must give 1 or {spatial_dims} sizes for {spatial_dims}D data, got {sizes}.")
    bad = [s for s in sizes if s % _SIZE_DIVISOR]
    if bad:
        raise ValueError(
            f"option {name!r} must be a multiple of {_SIZE_DIVISOR} on every axis (BasicUNet and the autoencoder "
            f"downsample 4 times by 2), got {sizes}."
        )
    return sizes


def prepare_unlabeled(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    kind: str = "dermoscopy",
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    channels: int | None = None,
    spatial_dims: int | None = None,
    check: bool = True,
    datalist: str | os.PathLike | None = None,
) -> list[dict]:
    """The unlabeled training images (:func:`~monai_cluster.workflows.list_unlabeled`), checked before training.

    Under ``torch.distributed`` rank 0 lists (and, for synthetic data, generates) first and the other ranks
    follow after a barrier, so only one process writes the synthetic files.

    With ``datalist`` (the bundle's ``datalist`` option: a MONAI datalist JSON, see
    :func:`~monai_cluster.workflows.datalist.load_datalist`) only the images of its ``"training"`` list are used
    (relative paths under ``dataset_dir``; labels ignored), so that a split's held-out ``"validation"`` images stay
    out of pretraining; every listed image is checked the same way.
    """
    if datalist is not None and str(datalist) != "":
        items = [
            {"image": item["image"], "key": item["key"]}
            for item in load_datalist(datalist, "training", dataset_dir, require_label=False)
        ]
        if check and is_main_process():
            check_dataset(items, channels=channels, spatial_dims=spatial_dims)
        return items
    kwargs: dict[str, Any] = {
        "kind": kind,
        "n": n,
        "size": size,
        "seed": seed,
        "channels": channels,
        "spatial_dims": spatial_dims,
    }
    if is_main_process():
        items = list_unlabeled(dataset_dir, bundle_root, check=check, **kwargs)
        barrier()
        return items
    barrier()
    return list_unlabeled(dataset_dir, bundle_root, check=False, **kwargs)


def check_batch_fits(items: Sequence[dict], batch_size: int) -> int:
    """Check before any stage runs that an epoch of pretraining has at least one full batch on every process.

    Args:
        items: the unlabeled items (:func:`prepare_unlabeled`).
        batch_size: images per batch and process (the last incomplete batch is dropped).

    Returns:
        The number of full batches per epoch and process.

    Raises:
        ValueError: when ``batch_size`` is larger than the images each process gets.
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if distributed else 1
    per_process = len(items) // world
    if batch_size > per_process:
        raise ValueError(
            f"option 'batch_size' (--batch_size) must be at most the number of unlabeled images per process "
            f"({len(items)} images over {world} process(es) = {per_process}), got {batch_size}: an epoch would "
            "have no batch (the last incomplete batch is dropped); lower batch_size or add images."
        )
    return per_process // batch_size


def base_transforms(
    spatial_dims: int,
    image_size: int | Sequence[int],
    intensity_range: Sequence[float] = (0.0, 255.0),
    image_key: str = "image",
) -> list:
    """Deterministic loading chain: ``(C, *image_size)`` float32 tensors scaled to ``[0, 1]``.

    Args:
        spatial_dims: 2 or 3.
        image_size: output spatial size (one int for every axis, or one per axis; multiples of 16).
        intensity_range: ``(low, high)`` mapped to ``(0, 1)`` and clipped: ``(0, 255)`` for 8-bit images,
            a Hounsfield window such as ``(-200, 500)`` for CT.
        image_key: the sample entry holding the image path.
    """
    size = check_image_size(image_size, spatial_dims)
    low, high = validate_option("intensity_range", intensity_range, "floats")
    if high <= low:
        raise ValueError(f"option 'intensity_range' must be (low, high) with high > low, got {[low, high]}.")
    return [
        LoadImaged(keys=image_key, image_only=True),
        EnsureChannelFirstd(keys=image_key),
        ScaleIntensityRanged(keys=image_key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        Resized(keys=image_key, spatial_size=size, mode="area"),
        EnsureTyped(keys=image_key, dtype="float32", track_meta=False),
    ]


def _flips(spatial_dims: int, image_key: str, size: Sequence[int] | None = None) -> list:
    """Flips of every axis, and 90-degree rotations in the first two axes unless ``size`` says they differ in
    length (a rotation would then change the image's shape, and a batch could not be stacked)."""
    flips = [RandFlipd(keys=image_key, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if size is not None and int(size[0]) != int(size[1]):
        return flips
    return flips + [RandRotate90d(keys=image_key, prob=0.5, spatial_axes=(0, 1))]


def autoencoder_augmentation(
    spatial_dims: int, image_key: str = "image", image_size: int | Sequence[int] | None = None
) -> Compose:
    """The random part of :func:`autoencoder_transforms` alone: flips of every axis and 90-degree rotations in the
    first two axes (without the rotations when ``image_size`` gives those two axes different lengths, e.g.
    ``[64, 48, 32]``: a rotated image would not stack with an unrotated one)."""
    size = None if image_size is None else check_image_size(image_size, spatial_dims)
    return Compose(_flips(spatial_dims, image_key, size))


def autoencoder_transforms(
    spatial_dims: int,
    image_size: int | Sequence[int],
    intensity_range: Sequence[float] = (0.0, 255.0),
    image_key: str = "image",
) -> Compose:
    """The base chain plus random flips and 90-degree rotations, for training the autoencoder."""
    chain = base_transforms(spatial_dims, image_size, intensity_range, image_key)
    return Compose(chain + list(autoencoder_augmentation(spatial_dims, image_key, image_size).transforms))


def feature_transforms(
    spatial_dims: int,
    image_size: int | Sequence[int],
    intensity_range: Sequence[float] = (0.0, 255.0),
    image_key: str = "image",
) -> Compose:
    """The base chain alone, for feature extraction and clustering (no randomness)."""
    return Compose(base_transforms(spatial_dims, image_size, intensity_range, image_key))


def _intensity_views(image_key: str) -> list:
    return [
        RandScaleIntensityd(keys=image_key, factors=0.3, prob=0.8, channel_wise=True),
        RandShiftIntensityd(keys=image_key, offsets=0.1, prob=0.8),
        RandAdjustContrastd(keys=image_key, gamma=(0.6, 1.6), prob=0.8),
        RandGaussianSmoothd(keys=image_key, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0), prob=0.3),
        RandGaussianNoised(keys=image_key, std=0.03, prob=0.5),
    ]


def pretrain_view_transform(
    spatial_dims: int,
    image_size: int | Sequence[int],
    views: str = "geometric",
    num_views: int = 2,
    image_key: str = "image",
    crop_scale: Sequence[float] = (0.35, 1.0),
) -> MultiViewd:
    """The random part of pretraining: ``num_views`` views (``image``, ``image_1``, ...) of a base-chain sample.

    Args:
        spatial_dims: 2 or 3.
        image_size: the views' spatial size (the base chain's output size; multiples of 16).
        views: ``"geometric"`` (each view its own :class:`~monai_cluster.transforms.RandResizedCropd` with area
            or volume fraction in ``crop_scale``, flips, and intensity augmentation; the geometries are written
            to ``image_geometry``, ``image_geometry_1``, ... for the local loss) or ``"intensity"`` (flips,
            90-degree rotations and zoom shared by all views, intensity augmentation per view: voxel
            correspondence without geometry).
        num_views: views per image (>= 2).
        image_key: the sample entry holding the image.
        crop_scale: ``(low, high)`` fraction of the image each geometric view crops.

    Raises:
        ValueError: for an unknown ``views`` mode (the choices are listed) or bad sizes.
    """
    if views not in VIEW_MODES:
        raise ValueError(f"option 'views' must be one of {list(VIEW_MODES)}, got {views!r}.")
    size = check_image_size(image_size, spatial_dims)
    per_view = _intensity_views(image_key)
    if views == "geometric":
        crop = RandResizedCropd(image_key, size, scale=crop_scale, flip_prob=0.5)
        return MultiViewd(keys=image_key, transform=[crop, *per_view], num_views=num_views)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    zoom = RandZoomd(keys=image_key, min_zoom=0.85, max_zoom=1.25, prob=0.5, keep_size=True, mode=mode)
    return MultiViewd(
        keys=image_key,
        transform=per_view,
        num_views=num_views,
        shared_transform=_flips(spatial_dims, image_key, size) + [zoom],
        intensity_only=True,
    )


def pretrain_transforms(
    spatial_dims: int,
    image_size: int | Sequence[int],
    intensity_range: Sequence[float] = (0.0, 255.0),
    views: str = "geometric",
    pseudo_class_transform: PseudoClassd | None = None,
    num_views: int = 2,
    image_key: str = "image",
    base_chain: Sequence | None = None,
) -> Compose:
    """Base chain, then ``num_views`` augmented views (``image``, ``image_1``, ...) and the pseudo-classes.

    Args:
        spatial_dims: 2 or 3.
        image_size: output spatial size (multiples of 16).
        intensity_range: see :func:`base_transforms`.
        views: ``"geometric"`` or ``"intensity"`` (see :func:`pretrain_view_transform`).
        pseudo_class_transform: a :class:`~monai_cluster.transforms.PseudoClassd` appended after the views
            (so a re-clustering handler's ``set_table`` is seen), or ``None`` for SimCLR without pseudo-classes.
        num_views: views per image (>= 2).
        image_key: the sample entry holding the image path.
        base_chain: the deterministic transforms that run before the views, replacing
            :func:`base_transforms` (e.g. loading a volume and taking one 2D slice); they must end with a
            ``(C, *image_size)`` float tensor under ``image_key``.
    """
    if base_chain is None:
        chain = base_transforms(spatial_dims, image_size, intensity_range, image_key)
    else:
        chain = list(base_chain)
    augmentation = pretrain_augmentation(spatial_dims, image_size, views, pseudo_class_transform, num_views, image_key)
    return Compose(chain + list(augmentation.transforms))


def pretrain_augmentation(
    spatial_dims: int,
    image_size: int | Sequence[int],
    views: str = "geometric",
    pseudo_class_transform: PseudoClassd | None = None,
    num_views: int = 2,
    image_key: str = "image",
    crop_scale: Sequence[float] = (0.35, 1.0),
    track_meta: bool = False,
    crop_size: int | Sequence[int] | None = None,
) -> Compose:
    """The random part of :func:`pretrain_transforms` alone: the views, then the pseudo-class lookup.

    A bundle caches the deterministic base chain once (``CacheDataset``) and applies this on top
    (``Dataset(data=cache, transform=...)``), so the two stages of the staged schedule share one cache.

    With ``track_meta=False`` (the default) the chain is a :class:`~monai_cluster.transforms.NoMetaCompose`: the
    views come out as plain tensors with the same values, and the metadata bookkeeping that
    :class:`~monai_cluster.engines.MultiViewPrepareBatch` would drop anyway is skipped (a third of the data time of
    the 2D bundle, ``benchmarks/pretrain_step.py``). ``True`` keeps MONAI's ``MetaTensor`` outputs.

    With ``crop_size`` (multiples of 16, within ``image_size``) a random crop of that size is cut from the image
    first, and the views are views of the crop, of size ``crop_size`` (at the resolution of ``image_size``).
    """
    chain = []
    if crop_size is not None:
        crop = check_image_size(crop_size, spatial_dims, name="crop_size")
        chain.append(RandSpatialCropd(keys=image_key, roi_size=crop, random_size=False))
        image_size = crop
    chain.append(pretrain_view_transform(spatial_dims, image_size, views, num_views, image_key, crop_scale))
    if pseudo_class_transform is not None:
        if not isinstance(pseudo_class_transform, PseudoClassd):
            raise TypeError(
                f"pseudo_class_transform must be a PseudoClassd or None, got {type(pseudo_class_transform).__name__}."
            )
        chain.append(pseudo_class_transform)
    if not isinstance(track_meta, bool):
        raise TypeError(f"track_meta must be a bool, got {type(track_meta).__name__} {track_meta!r}.")
    return Compose(chain) if track_meta else NoMetaCompose(chain)


def make_pseudo_class_transform(
    table_path: str | os.PathLike,
    use_pseudo_classes: bool = True,
    items: Sequence[dict] | None = None,
) -> PseudoClassd | None:
    """A :class:`~monai_cluster.transforms.PseudoClassd` reading ``table_path``, or ``None`` when not used.

    Args:
        table_path: the pseudo-class table written by the clustering stage.
        use_pseudo_classes: ``False`` returns ``None`` (plain SimCLR negatives).
        items: the training listing; when given, every key must be in the table.

    Raises:
        ValueError: when the table is missing (run the clustering stage first), malformed, or lacks keys of
            ``items`` (a table from another dataset); the file is named.
    """
    if not validate_option("use_pseudo_classes", use_pseudo_classes, "bool"):
        return None
    if not os.path.isfile(table_path):
        raise ValueError(
            f"pseudo-class table {table_path} does not exist; run the clustering stage first (--run_id run_cluster) "
            "or set use_pseudo_classes=false."
        )
    keys = None if items is None else [item["key"] for item in items]
    return PseudoClassd(read_pseudo_class_table(table_path, expected_keys=keys))
