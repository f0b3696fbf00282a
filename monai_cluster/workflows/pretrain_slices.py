"""Pretraining a 2D network on the slices of 3D volumes: the pieces of ``train_slices.json``.

The overlay is ``bundles/cluster_contrastive_pretrain/configs/train_slices.json``.

Chaitanya et al. pretrain a 2D U-Net on the 2D slices of cardiac MRI volumes. Each volume is split into
``num_partitions`` ranges of consecutive slices; slices of the same partition of different volumes show
similar anatomy, which the partition-aware global loss (:class:`~monai_cluster.losses.GlobalContrastiveLoss`,
strategies ``"G_D"`` / ``"G_D-"``) uses instead of pseudo-classes. The pieces the overlay calls:

- :func:`list_volume_slices`: one listing item per slice of each volume, counted from the NIfTI header only, with
  its slice index, partition and volume id; :func:`prepare_volume_slices` lists (or generates) the volumes first.
- :func:`slice_base_transforms`: the deterministic chain that loads a volume, normalises its intensities, takes
  the sample's slice (:class:`~monai_cluster.transforms.TakeSliced`; it and
  :class:`~monai_cluster.transforms.ScalePercentilesd` are re-exported here from their former home) and brings it
  to ``image_size`` (the overlay's ``train#base_transforms``, cached once;
  :func:`~monai_cluster.workflows.pretrain_transforms` takes it as ``base_chain``).
- :data:`SLICE_OPTION_SPECS` / :func:`check_slice_options`: the overlay's own options, checked before anything runs.

The overlay runs the three stages of ``train.json`` on the slices: with ``use_pseudo_classes`` the autoencoder
trains on the slices and their pooled features give the pseudo-class table keyed by the slice keys
(``<volume key>#sNN``), which removes same-pseudo-class negatives from the partition-aware global loss (with
``"G_R"``: Zhang et al.'s cluster-guided loss); without it the run skips stages 1 and 2
(:func:`require_pseudo_classes` refuses them when asked for by ``--run_id``).

References:
    - [0] Chaitanya et al., global and local contrastive learning, NeurIPS 2020, https://arxiv.org/abs/2006.10511
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import (
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
)

from monai_cluster.losses.global_contrastive import GLOBAL_STRATEGIES
from monai_cluster.transforms.intensity import ScalePercentilesd
from monai_cluster.transforms.partition import SlicePartition, TakeSliceD, TakeSliced, TakeSliceDict, check_slice_axis
from monai_cluster.transforms.slice_grid import CenterFractionCropd

from .common import validate_option, validate_options
from .pretrain_data import check_image_size, prepare_unlabeled

__all__ = [
    "SLICE_OPTION_SPECS",
    "ScalePercentilesd",
    "TakeSliceD",
    "TakeSliceDict",
    "TakeSliced",
    "check_slice_options",
    "list_volume_slices",
    "prepare_volume_slices",
    "require_pseudo_classes",
    "slice_base_transforms",
]

SLICE_OPTION_SPECS: dict[str, str] = {
    "global_strategy": "choice:" + "|".join(GLOBAL_STRATEGIES),
    "num_partitions": "int>=1",
    "intensity_range": "floats?",
    "intensity_percentiles": "floats>=0",
    "use_pseudo_classes": "bool",
    "crop_fraction": "float?>0",
    "spatial_dims": "int>=2",
    "in_channels": "int>=1",
}
"""Spec (see :func:`~monai_cluster.workflows.validate_option`) of the options ``train_slices.json`` adds or pins."""


def _check_pair(name: str, values: Sequence[float], upper: float | None = None) -> list[float]:
    if len(values) != 2 or values[1] <= values[0] or (upper is not None and values[1] > upper):
        bound = f" within [0, {upper:g}]" if upper is not None else ""
        raise ValueError(f"option {name!r} (--{name}) must be [low, high] with low < high{bound}, got {list(values)}.")
    return [float(v) for v in values]


def check_slice_options(**options: Any) -> dict[str, Any]:
    """Check the options of the slice overlay (:data:`SLICE_OPTION_SPECS`) and their combinations.

    Args:
        options: ``global_strategy`` (``"G_D"``, ``"G_D-"`` or ``"G_R"``), ``num_partitions`` (partitions per
            volume), ``intensity_range`` (``None`` for percentile normalisation, or a fixed ``[low, high]`` window
            such as a CT Hounsfield window), ``intensity_percentiles`` (``[low, high]`` percentiles in 0..100),
            ``use_pseudo_classes`` (cluster the slices and mask the global loss's negatives), ``crop_fraction``
            (``None``, or the centred square crop of each slice as a fraction of its short side, in ``(0, 1]``),
            ``spatial_dims`` (must be 2), ``in_channels`` (must be 1).

    Returns:
        the options normalised (``intensity_range`` a two-float list or None).

    Raises:
        TypeError/ValueError: naming the option, e.g. ``option 'global_strategy' (--global_strategy) must be one of
            ['G_D', 'G_D-', 'G_R'], got str 'G_X'.``
    """
    checked = validate_options(options, SLICE_OPTION_SPECS)
    if checked["spatial_dims"] != 2:
        raise ValueError(
            f"option 'spatial_dims' must be 2 with train_slices.json (a 2D network on the slices of 3D volumes), "
            f"got {checked['spatial_dims']}; use train_3d.json for 3D pretraining."
        )
    if checked["in_channels"] != 1:
        raise ValueError(
            f"option 'in_channels' must be 1 with train_slices.json (slices of single-channel volumes), "
            f"got {checked['in_channels']}."
        )
    if checked["crop_fraction"] is not None and checked["crop_fraction"] > 1:
        raise ValueError(
            f"option 'crop_fraction' (--crop_fraction) must lie in (0, 1] (a fraction of each slice's short side) "
            f"or be null, got {checked['crop_fraction']}."
        )
    if checked["num_partitions"] < 2 and checked["global_strategy"] != "G_R":
        raise ValueError(
            f"option 'num_partitions' (--num_partitions) must be at least 2 with global_strategy "
            f"{checked['global_strategy']!r}: only slices of another partition are negatives, so with "
            f"{checked['num_partitions']} partition the global loss would have none; use global_strategy 'G_R' "
            "for SimCLR on slices."
        )
    if checked["intensity_range"] is not None:
        checked["intensity_range"] = _check_pair("intensity_range", checked["intensity_range"])
    checked["intensity_percentiles"] = _check_pair("intensity_percentiles", checked["intensity_percentiles"], 100.0)
    return checked


def _header_shape(path: str, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in nib.load(path).shape)  # reads the header only; the voxels stay on disk
    except (OSError, nib.filebasedimages.ImageFileError, ValueError) as err:
        raise ValueError(f"volume {path} (key {key!r}) could not be read as NIfTI: {err}") from err


def list_volume_slices(
    items: Sequence[Mapping[str, Any]],
    num_partitions: int = 4,
    axis: int = -1,
    image_key: str = "image",
) -> list[dict]:
    """Expand a listing of 3D volumes into one item per slice along ``axis``.

    Each volume item (``{"image": path, "key": relpath}``, as :func:`~monai_cluster.workflows.list_unlabeled`
    returns) becomes ``num_slices`` items::

        {"image": path, "key": "images/patient001_frame01.nii.gz#s03",
         "volume_key": "images/patient001_frame01.nii.gz", "slice": 3, "num_slices": 10, "volume_id": 0,
         "partition": 1}

    ``volume_id`` is the volume's position in ``items``; ``partition`` is
    ``floor(slice * num_partitions / num_slices)`` (:class:`~monai_cluster.transforms.SlicePartition`). The slice
    count comes from the NIfTI header alone; no voxel is read.

    Args:
        items: volume items with ``image_key`` (a NIfTI path) and ``"key"`` (unique).
        num_partitions: partitions per volume, at least 1 and at most each volume's slice count.
        axis: spatial axis of the ``(H, W, D)`` volume to slice along (``-1``: the last).
        image_key: the item entry holding the volume path.

    Returns:
        the slice items, volume by volume, slices in order.

    Raises:
        TypeError: when ``items`` is not a list of dicts.
        ValueError: naming the file, when a volume cannot be read, is not 3D, or has fewer slices than
            ``num_partitions``; also for an empty listing, a missing entry or duplicate keys.
    """
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise TypeError(f"items must be a list of volume dicts, got {type(items).__name__}.")
    if not items:
        raise ValueError("items must hold at least one volume, got an empty listing.")
    axis = check_slice_axis(axis)
    partitioner = SlicePartition(num_partitions)
    seen: set[str] = set()
    out: list[dict] = []
    for volume_id, item in enumerate(items):
        if not isinstance(item, Mapping):
            kind = type(item).__name__
            raise TypeError(f"items[{volume_id}] must be a dict with {image_key!r} and 'key', got {kind}.")
        missing = [k for k in (image_key, "key") if k not in item]
        if missing:
            raise ValueError(f"items[{volume_id}] lacks {missing} (it has {sorted(item)}).")
        path, key = str(item[image_key]), str(item["key"])
        if key in seen:
            raise ValueError(f"items[{volume_id}] repeats the key {key!r}; volume keys must be unique.")
        seen.add(key)
        shape = _header_shape(path, key)
        if len(shape) != 3:
            raise ValueError(
                f"volume {path} (key {key!r}) must be a 3D volume (H, W, D) to be sliced, got shape {shape}."
            )
        num_slices = shape[axis]
        if num_slices < partitioner.num_partitions:
            raise ValueError(
                f"volume {path} (key {key!r}) has {num_slices} slices along axis {axis}, fewer than "
                f"num_partitions={partitioner.num_partitions}; lower num_partitions."
            )
        width = max(2, len(str(num_slices - 1)))
        for index in range(num_slices):
            out.append(
                {
                    **item,
                    image_key: path,
                    "key": f"{key}#s{index:0{width}d}",
                    "volume_key": key,
                    "slice": index,
                    "num_slices": num_slices,
                    "volume_id": volume_id,
                    "partition": partitioner(index, num_slices),
                }
            )
    return out


def prepare_volume_slices(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    num_partitions: int = 4,
    kind: str = "heart",
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    axis: int = -1,
    check: bool = True,
) -> list[dict]:
    """The 3D volumes of ``dataset_dir`` (or a generated synthetic set), checked, then expanded into slices.

    Volumes are listed by :func:`~monai_cluster.workflows.prepare_unlabeled` (recursively, mask folders such as
    ACDC's ``labels/`` left out; without ``dataset_dir`` a synthetic ``kind`` set is generated under
    ``<bundle_root>/synthetic_data``), decoded and checked to be one-channel 3D images when ``check``, and passed
    to :func:`list_volume_slices`.

    Raises:
        ValueError: naming the file, for an unreadable or non-3D volume or one with fewer slices than
            ``num_partitions``.
    """
    volumes = prepare_unlabeled(
        dataset_dir=dataset_dir, bundle_root=bundle_root, kind=kind, n=n, size=size, seed=seed,
        channels=1, spatial_dims=3, check=check,
    )  # fmt: skip
    return list_volume_slices(volumes, num_partitions=num_partitions, axis=axis)


def slice_base_transforms(
    image_size: int | Sequence[int],
    intensity_range: Sequence[float] | None = None,
    percentiles: Sequence[float] = (0.5, 99.5),
    image_key: str = "image",
    slice_key: str = "slice",
    axis: int = -1,
    crop_fraction: float | None = None,
    label_key: str | None = None,
) -> list:
    """Deterministic chain from a slice item to a ``(1, *image_size)`` float32 tensor in ``[0, 1]``.

    Load the volume, add a channel, optionally crop every slice to its centred square of ``crop_fraction``
    (:class:`~monai_cluster.transforms.CenterFractionCropd`), scale intensities over the whole volume (so that the
    slices of one volume keep their relative brightness), take the sample's slice (:class:`TakeSliced`), resize it
    so that its longer side is ``max(image_size)`` (aspect ratio kept; area averaging), pad or crop it centrally to
    ``image_size`` (padding 0, the background after scaling) and end with a plain float32 tensor. The other sample
    entries (``partition``, ``volume_id``, ...) pass through unchanged. With ``label_key`` the label volume takes
    the same geometry (nearest neighbour, ``nearest-exact``) and stays integer-valued:
    :func:`~monai_cluster.transforms.slice_grid_geometry` describes the geometry and
    :func:`~monai_cluster.transforms.restore_slice_grid` inverts it.

    Args:
        image_size: output ``(H, W)`` (one int for both), multiples of 16.
        intensity_range: ``None`` for MRI: the ``percentiles`` of each volume are mapped to 0 and 1 and clipped;
            or a fixed ``(low, high)`` window mapped to ``(0, 1)`` and clipped, e.g. ``(-300, 500)`` Hounsfield
            units for CT.
        percentiles: ``(low, high)`` percentiles in ``[0, 100]`` used when ``intensity_range`` is None.
        image_key: the sample entry holding the volume path.
        slice_key: the sample entry holding the slice index.
        axis: spatial axis of the volume the slice is taken along.
        crop_fraction: the centred square crop of each slice as a fraction of its short side, or ``None``.
        label_key: the sample entry holding the label volume's path, or ``None`` for images alone.

    Returns:
        a list of MONAI dictionary transforms, for a ``CacheDataset`` (``Compose``) or
        ``pretrain_transforms(..., base_chain=...)``.

    Raises:
        ValueError/TypeError: naming ``image_size``, ``intensity_range`` or ``percentiles``.
    """
    size = check_image_size(image_size, 2)
    if intensity_range is None:
        values = validate_option("intensity_percentiles", percentiles, "floats>=0")
        low, high = _check_pair("intensity_percentiles", values, 100.0)
        scale = ScalePercentilesd(keys=image_key, lower=low, upper=high)
    else:
        low, high = _check_pair("intensity_range", validate_option("intensity_range", intensity_range, "floats"))
        scale = ScaleIntensityRanged(keys=image_key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    keys = [image_key] if label_key is None else [image_key, label_key]
    if crop_fraction is not None and axis % 3 != 2:
        raise ValueError(f"crop_fraction crops the plane of spatial axes (0, 1): it needs axis -1 (or 2), got {axis}.")
    return [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        EnsureTyped(keys=keys, data_type="numpy", dtype=np.float32, track_meta=False),  # numpy percentiles
        CenterFractionCropd(keys=keys, crop_fraction=crop_fraction),
        scale,
        TakeSliced(keys=keys, slice_key=slice_key, axis=axis),
        EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),  # torch resizing (numpy: 10x slower)
        Resized(
            keys=keys, spatial_size=max(size), size_mode="longest", mode=["area", "nearest-exact"][: len(keys)]
        ),
        ResizeWithPadOrCropd(keys=keys, spatial_size=size, mode="constant"),
        EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
    ]


def require_pseudo_classes(use_pseudo_classes: bool, stage: str, overlay: str = "train_slices.json") -> None:
    """Refuse a clustering stage that a run without pseudo-classes does not have (``--run_id run_cluster``).

    Args:
        use_pseudo_classes: the checked option.
        stage: the stage asked for (``"run_autoencoder"`` or ``"run_cluster"``).
        overlay: the config named in the message.

    Raises:
        ValueError: when ``use_pseudo_classes`` is false, naming the option and the stage.
    """
    if not validate_option("use_pseudo_classes", use_pseudo_classes, "bool"):
        raise ValueError(
            f"stage {stage!r} of {overlay} needs option 'use_pseudo_classes' (--use_pseudo_classes) true: without "
            "pseudo-classes there is no autoencoder or clustering stage; run the default 'run' (or --run_id "
            "run_pretrain), or set --use_pseudo_classes true."
        )
