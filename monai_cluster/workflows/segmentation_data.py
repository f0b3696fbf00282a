"""Data for the segmentation fine-tune bundles: held-out split, few-label subsets, inference listings.

The fine-tune bundles (``bundles/dermoscopy_segmentation``, ``bundles/heart_ct_segmentation``) call
:func:`segmentation_splits` once per run: it lists (or generates) the dataset, checks every file before
training (:func:`monai_cluster.data.check_dataset`, so a bad file stops the run with its name), splits off a
deterministic validation set and keeps a deterministic labelled subset of the rest (``label_fraction`` or
``num_labeled``, drawn by ``seed``), so that runs with few labels are reproducible and comparable.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_cluster.data import IMAGE_EXTENSIONS, check_dataset, list_image_mask_pairs, split_extension
from monai_cluster.utils.validation import check_choice, check_positive_int

from .common import barrier, images_outside_mask_folders, is_main_process, resolve_dataset
from .datalist import load_datalist

__all__ = ["attach_fov_masks", "inference_items", "labeled_subset", "segmentation_splits", "split_train_val"]

logger = logging.getLogger(__name__)



def _check_fraction(value: object, name: str, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1 and math.isfinite(value)):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}.")
    return float(value)


def _check_items(items: object, name: str) -> list[dict]:
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise TypeError(f"{name} must be a list of sample dicts, got {type(items).__name__}.")
    if not all(isinstance(item, dict) and "key" in item for item in items):
        raise ValueError(f"{name} must hold dicts with a 'key' entry (the image path relative to the dataset root).")
    return list(items)


def split_train_val(items: Sequence[dict], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split a listing into training and validation samples, deterministically.

    The items are ordered by ``key`` and permuted by ``numpy.random.default_rng(seed)``; the first
    ``round(val_fraction * n)`` (at least 1 when ``val_fraction > 0``, and at most ``n - 1``) are the
    validation set. The split depends only on the keys, ``val_fraction`` and ``seed``, never on the order of
    ``items``.

    Args:
        items: sample dicts with a ``"key"`` entry.
        val_fraction: fraction of samples held out, in ``[0, 1)``; 0 gives an empty validation set.
        seed: permutation seed.

    Returns:
        ``(train, val)``, each sorted by key.

    Raises:
        ValueError: when ``val_fraction`` is outside ``[0, 1)`` or fewer than 2 items are given with
            ``val_fraction > 0``.
    """
    items = sorted(_check_items(items, "items"), key=lambda item: item["key"])
    val_fraction = _check_fraction(val_fraction, "val_fraction", allow_zero=True)
    if val_fraction >= 1:
        raise ValueError(f"val_fraction must be below 1 (some samples must remain for training), got {val_fraction}.")
    if val_fraction == 0:
        return items, []
    if len(items) < 2:
        raise ValueError(f"items must hold at least 2 samples to split off a validation set, got {len(items)}.")
    n_val = min(max(1, round(val_fraction * len(items))), len(items) - 1)
    order = np.random.default_rng(seed).permutation(len(items))
    val_idx = set(order[:n_val].tolist())
    train = [item for i, item in enumerate(items) if i not in val_idx]
    val = [item for i, item in enumerate(items) if i in val_idx]
    return train, val


def labeled_subset(
    items: Sequence[dict], label_fraction: float = 1.0, num_labeled: int | None = None, seed: int = 0
) -> list[dict]:
    """Keep a deterministic subset of the labelled training samples (training with few labels).

    ``num_labeled`` (when given) wins over ``label_fraction``; otherwise ``ceil(label_fraction * n)``
    samples are kept (at least 1). The subset is drawn by ``numpy.random.default_rng(seed)`` from the items
    ordered by key, and a larger subset with the same seed contains every smaller one (nested subsets).

    Args:
        items: training sample dicts with a ``"key"`` entry.
        label_fraction: fraction of ``items`` to keep, in ``(0, 1]``.
        num_labeled: number of samples to keep, ``1 <= num_labeled <= len(items)``, or ``None``.
        seed: selection seed.

    Returns:
        the kept samples, sorted by key.

    Raises:
        ValueError: for a fraction outside ``(0, 1]``, or ``num_labeled`` below 1 or above ``len(items)``.
    """
    items = sorted(_check_items(items, "items"), key=lambda item: item["key"])
    if not items:
        raise ValueError("items must hold at least one labelled training sample, got none.")
    label_fraction = _check_fraction(label_fraction, "label_fraction", allow_zero=False)
    if num_labeled is None:
        count = max(1, math.ceil(label_fraction * len(items) - 1e-9))
    else:
        count = check_positive_int(num_labeled, "num_labeled")
        if count > len(items):
            raise ValueError(f"num_labeled must be at most the {len(items)} training samples, got {count}.")
    order = np.random.default_rng(seed).permutation(len(items))[:count]
    kept = [items[i] for i in sorted(order.tolist())]
    return kept


def _datalist_splits(
    datalist: str | os.PathLike,
    dataset_dir: str | os.PathLike | None,
    kind: str,
    num_classes: int,
    channels: int,
    label_fraction: float,
    num_labeled: int | None,
    seed: int,
    check: bool,
) -> dict:
    """:func:`segmentation_splits` of a datalist: its ``"validation"`` list held out, a labelled subset of its
    ``"training"`` list; the two must not share an image."""
    pool = load_datalist(datalist, "training", dataset_dir)
    val = load_datalist(datalist, "validation", dataset_dir)
    shared = sorted({item["key"] for item in pool} & {item["key"] for item in val})
    if shared:
        raise ValueError(
            f"datalist {datalist} lists {len(shared)} image(s) in both 'training' and 'validation' "
            f"(e.g. {shared[0]!r}): the held-out set must be disjoint from the training pool."
        )
    items = sorted(pool + val, key=lambda item: item["key"])
    summary = None
    if check:
        spatial_dims = 2 if kind == "dermoscopy" else 3
        summary = check_dataset(items, num_classes=num_classes, channels=channels, spatial_dims=spatial_dims)
    train = labeled_subset(pool, label_fraction, num_labeled, seed)
    logger.info(
        "%s data from datalist %s: %d held out, %d of %d training samples labelled (seed %d)",
        kind, datalist, len(val), len(train), len(pool), seed,
    )  # fmt: skip
    return {"train": train, "val": val, "all": items, "summary": summary}


def segmentation_splits(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    kind: str,
    num_classes: int,
    channels: int,
    val_fraction: float = 0.2,
    label_fraction: float = 1.0,
    num_labeled: int | None = None,
    seed: int = 0,
    synthetic_n: int | None = None,
    synthetic_size: int | Sequence[int] | None = None,
    synthetic_seed: int = 0,
    check: bool = True,
    datalist: str | os.PathLike | None = None,
) -> dict[str, list[dict]]:
    """The samples a fine-tune run trains and validates on, checked before anything is trained.

    Args:
        dataset_dir: a real dataset folder (layouts of :func:`monai_cluster.data.list_image_mask_pairs`), or
            ``None`` for the synthetic set generated once under ``<bundle_root>/synthetic_data``.
        bundle_root: the bundle root.
        kind: ``"dermoscopy"`` (2D) or ``"heart"`` (3D); selects the synthetic generator and spatial rank.
        num_classes: classes including background; mask values must lie in ``[0, num_classes)`` (binary
            masks stored as 0/255 are accepted for ``num_classes=2``).
        channels: image channels (3 for RGB dermoscopy, 1 for CT/MRI).
        val_fraction: held-out fraction (:func:`split_train_val`).
        label_fraction: labelled fraction of the training part (:func:`labeled_subset`).
        num_labeled: number of labelled training samples (wins over ``label_fraction``), or ``None``.
        seed: seed of the split and of the subset.
        synthetic_n: number of synthetic samples (``None``: the generator's default).
        synthetic_size: synthetic image size.
        synthetic_seed: seed of the synthetic generator (kept apart from ``seed`` so that another split or
            subset reuses the same generated images).
        check: decode every file and check shapes and labels first.
        datalist: a fixed split instead of ``val_fraction``: a MONAI datalist JSON
            (:func:`~monai_cluster.workflows.datalist.load_datalist`; relative paths under ``dataset_dir``) whose
            ``"validation"`` list is the held-out set and whose ``"training"`` list is the pool the labelled
            subset is drawn from (``label_fraction`` / ``num_labeled`` and ``seed`` as without it);
            ``val_fraction`` is not used. ``None`` (default): split ``dataset_dir`` by ``val_fraction``.

    Returns:
        ``{"train": [...], "val": [...], "all": [...], "summary": {...}}``: ``train`` is the labelled subset, ``val``
        the held-out set, ``all`` every listed sample, ``summary`` what the check saw
        (:func:`~monai_cluster.data.check_dataset`: spatial shapes, channels, label values; ``None`` without
        ``check``), which the bundles' pre-flight compares with ``num_classes`` and the crop size.

    Raises:
        ValueError: naming a bad file (unreadable, mask of another size, label outside ``num_classes``), or a
            bad option.
    """
    kind = check_choice(kind, "kind", ["dermoscopy", "heart"])
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    if datalist is not None and str(datalist) != "":
        return _datalist_splits(
            datalist, dataset_dir, kind, num_classes, channels, label_fraction, num_labeled, seed, check
        )
    main = is_main_process()
    if not main:  # under torchrun, rank 0 generates the synthetic data first and the other ranks then list it
        barrier()
    try:
        items = resolve_dataset(
            dataset_dir, bundle_root, kind=kind, n=synthetic_n, size=synthetic_size, seed=synthetic_seed, check=False
        )
    finally:
        if main:
            barrier()
    summary = None
    if check:
        spatial_dims = 2 if kind == "dermoscopy" else 3
        summary = check_dataset(items, num_classes=num_classes, channels=channels, spatial_dims=spatial_dims)
    train_all, val = split_train_val(items, val_fraction, seed)
    train = labeled_subset(train_all, label_fraction, num_labeled, seed)
    logger.info(
        "%s data: %d samples, %d held out for validation, %d of %d training samples labelled (seed %d)",
        kind,
        len(items),
        len(val),
        len(train),
        len(train_all),
        seed,
    )
    return {"train": train, "val": val, "all": items, "summary": summary}


def inference_items(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    kind: str,
    channels: int,
    synthetic_n: int | None = None,
    synthetic_size: int | Sequence[int] | None = None,
    synthetic_seed: int = 0,
) -> list[dict]:
    """Images to segment: the pairs of a dataset folder, or every image under a folder without masks.

    A folder with a known paired layout gives ``{"image", "label", "key"}`` items (overlays then show the
    ground truth too); any other folder is searched recursively for images (mask folders skipped) and gives
    ``{"image", "key"}``. ``None`` segments the synthetic set under ``<bundle_root>/synthetic_data``. Every
    image is decoded and checked before inference.

    Raises:
        ValueError: when the folder is missing or holds no image, or an image is unreadable (named).
    """
    kind = check_choice(kind, "kind", ["dermoscopy", "heart"])
    spatial_dims = 2 if kind == "dermoscopy" else 3
    if dataset_dir is None or str(dataset_dir) == "":
        items = resolve_dataset(
            None, bundle_root, kind=kind, n=synthetic_n, size=synthetic_size, seed=synthetic_seed, check=False
        )
    else:
        root = Path(os.path.abspath(dataset_dir))
        if not root.is_dir():
            raise ValueError(f"dataset_dir {root} does not exist or is not a folder.")
        try:
            items = list_image_mask_pairs(root)
        except ValueError as err:
            logger.info("no image/mask layout in %s (%s); segmenting every image found there", root, err)
            items = images_outside_mask_folders(root)
            if not items:
                raise ValueError(f"dataset_dir {root} holds no images outside mask folders.") from err
    check_dataset(items, channels=channels, spatial_dims=spatial_dims, label_key="label")
    return items


def attach_fov_masks(data: dict, fov_dir: str | os.PathLike | None, key: str = "fov") -> dict:
    """Give every validation item of ``data`` (:func:`segmentation_splits`) the field-of-view mask it is scored in.

    The mask of ``images/21_training.tif`` is the image file in ``fov_dir`` named ``21_training`` or
    ``21_training_mask`` (DRIVE's ``mask/`` folder), any image extension; non-zero pixels are the field of view.

    Args:
        data: the splits; ``data["val"]`` items gain ``key``.
        fov_dir: the folder of masks, or ``None`` (``data`` is returned unchanged).
        key: the entry the mask path goes to.

    Returns:
        ``data`` with the validation items copied and given their mask.

    Raises:
        ValueError: naming ``fov_dir`` and the first validation image without a mask there.
    """
    if fov_dir is None or str(fov_dir) == "":
        return data
    folder = Path(os.path.abspath(fov_dir))
    if not folder.is_dir():
        raise ValueError(f"option 'fov_dir' (--fov_dir) must be an existing folder of masks, got {str(fov_dir)!r}.")
    by_stem = {}
    for path in sorted(folder.iterdir()):
        stem, ext = split_extension(path.name)
        if path.is_file() and ext.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(stem, path)
    val = []
    for item in data["val"]:
        stem = split_extension(Path(item["image"]).name)[0]
        mask = by_stem.get(stem) or by_stem.get(f"{stem}_mask")
        if mask is None:
            raise ValueError(
                f"option 'fov_dir' (--fov_dir) {folder} holds no field-of-view mask for the validation image "
                f"{item['image']} (looked for {stem}.* and {stem}_mask.*)."
            )
        val.append({**item, key: str(mask)})
    return {**data, "val": val}
