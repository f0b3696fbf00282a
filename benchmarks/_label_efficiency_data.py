"""Data for the label-efficiency benchmark: real folders decoded once into small in-memory arrays.

Every image is resized to ``size x size`` (dermoscopy: the whole image, squashed; heart: a centred square crop of
each short-axis slice, then resized), so the benchmark's training loops never touch the disk. The arrays are
cached in an ``.npz`` beside the results; the cache key holds the folders, the size and the split seed.

A :class:`BenchData` holds
- ``pretrain``: ``(N, C, S, S)`` float32 unlabeled pool (unlabeled images + training images, never test images),
  with ``pretrain_keys`` and, for slices, ``pretrain_slice`` / ``pretrain_num_slices`` / ``pretrain_volume``;
- ``train_x`` / ``train_y``: ``(M, C, S, S)`` float32 and ``(M, S, S)`` int64 labeled training samples, with
  ``train_group`` (the labeled unit a sample belongs to: an image, or a patient for slices) and, for ACDC,
  ``train_strata`` (the pathology group of each unit, so that labeled draws can be stratified);
- ``test_x`` / ``test_y`` / ``test_volume``: held-out samples and the volume each slice belongs to (per-image
  evaluation uses one "volume" per image).

ACDC patients are split by patient and stratified by pathology group: the group is given by the patient number
(001-020 group 0, ..., 081-100 group 4), and :func:`stratified_split` takes the same number of test patients
from every group where it can.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from monai_cluster.data import list_image_mask_pairs, list_images, read_image
from monai_cluster.data.patients import pathology_group, stratified_draw, stratified_split
from monai_cluster.utils.io import atomic_write

__all__ = [
    "BenchData",
    "labeled_subset",
    "load_dataset",
    "load_dermoscopy",
    "load_heart",
    "pathology_group",
    "stratified_split",
]

_PATIENT = re.compile(r"(patient(\d+))")
_CACHE_VERSION = 2  # 2: stratified ACDC split, train_strata, class names, crop statistics
HEART_CLASS_NAMES = ("RV", "Myo", "LV")


@dataclass
class BenchData:
    """In-memory arrays of one benchmark dataset (see the module docstring)."""

    name: str
    num_classes: int
    pretrain: np.ndarray
    pretrain_keys: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    train_group: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_volume: np.ndarray
    pretrain_slice: np.ndarray | None = None
    pretrain_num_slices: np.ndarray | None = None
    pretrain_volume: np.ndarray | None = None
    train_strata: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_groups(self) -> int:
        """Number of labeled training units (images, or patients for slices)."""
        return int(self.train_group.max()) + 1

    @property
    def class_names(self) -> list[str]:
        """Names of the foreground classes ``1 .. num_classes - 1`` (``info["class_names"]`` or ``class<c>``)."""
        names = self.info.get("class_names")
        if names and len(names) == self.num_classes - 1:
            return list(names)
        return [f"class{c}" for c in range(1, self.num_classes)]


def _resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize ``(C, H, W)`` to ``(C, size, size)``; ``mode`` ``"image"`` (bilinear, antialiased) or ``"label"``."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if mode == "image":
        return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].numpy()
    return F.interpolate(t, size=(size, size), mode="nearest-exact")[0].numpy()


def _rgb(path: str, size: int) -> np.ndarray:
    arr = read_image(path).array
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] != 3:
        raise ValueError(f"{path}: expected an RGB or grey image, got shape {arr.shape}.")
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    return _resize(np.moveaxis(arr[..., :3].astype(np.float32) / scale, 2, 0), size, "image")


def _mask(path: str, size: int) -> np.ndarray:
    arr = read_image(path).array
    if arr.ndim == 3:
        arr = arr[..., 0]
    binary = (arr > arr.max() / 2).astype(np.float32)[None]
    return (_resize(binary, size, "image")[0] > 0.5).astype(np.int64)


def split_indices(n: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of ``range(n)`` cut into ``(train, test)`` index arrays, both sorted."""
    if not 0 < num_test < n:
        raise ValueError(f"num_test must lie in [1, {n - 1}] for {n} samples, got {num_test}.")
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def labeled_subset(
    groups: np.ndarray, num_units: int, seed: int, strata: np.ndarray | None = None
) -> tuple[np.ndarray, list[int]]:
    """Sample indices of ``num_units`` labeled units (images or patients) drawn by ``seed``, and the units.

    Args:
        groups: ``(M,)`` unit id of every sample.
        num_units: how many units to label.
        seed: the draw's seed; the same seed gives the same units whatever the method.
        strata: ``(U,)`` stratum of each unit id ``0 .. U-1`` (ACDC pathology group), or ``None``. With it the
            draw goes round the strata in a seeded order, one unit at a time, so 2 patients come from two
            groups and 8 patients from all five.

    Raises:
        ValueError: when ``num_units`` is not in ``[1, number of units]`` or ``strata`` does not cover the units.
    """
    chosen = stratified_draw(groups, num_units, seed, strata)
    return np.flatnonzero(np.isin(groups, chosen)), [int(u) for u in chosen]


def _cache_path(cache_dir: Path, spec: dict) -> Path:
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"{spec['dataset']}_{spec['size']}_{digest}.npz"


def _save(path: Path, data: BenchData) -> None:
    arrays = {k: v for k, v in vars(data).items() if isinstance(v, np.ndarray)}
    meta = {"name": data.name, "num_classes": data.num_classes, "pretrain_keys": data.pretrain_keys, "info": data.info}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)


def _load(path: Path) -> BenchData:
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        arrays = {k: npz[k] for k in npz.files if k != "meta"}
    return BenchData(
        meta["name"], meta["num_classes"], pretrain_keys=meta["pretrain_keys"], info=meta["info"], **arrays
    )


def load_dermoscopy(
    train_dirs: list[str], test_dirs: list[str] | None, unlabeled_dirs: list[str], size: int, num_test: int, seed: int
) -> BenchData:
    """Dermoscopy pairs (binary lesion masks) and unlabeled images at ``size x size``.

    Args:
        train_dirs: folders of image/mask pairs (any layout :func:`list_image_mask_pairs` detects).
        test_dirs: held-out pair folders, or ``None`` to hold out ``num_test`` of the train pairs (split by ``seed``).
        unlabeled_dirs: folders of unlabeled images, added to the pretraining pool.
        size: output side in pixels.
        num_test: held-out pairs when ``test_dirs`` is ``None``.
        seed: split seed.
    """
    pairs = [p for d in train_dirs for p in list_image_mask_pairs(d)]
    if test_dirs:
        test = [p for d in test_dirs for p in list_image_mask_pairs(d)]
        train = pairs
    else:
        tr, te = split_indices(len(pairs), num_test, seed)
        train, test = [pairs[i] for i in tr], [pairs[i] for i in te]
    unlabeled = [p for d in unlabeled_dirs for p in list_images(d)]
    train_x = np.stack([_rgb(p["image"], size) for p in train])
    pool = np.concatenate([np.stack([_rgb(p["image"], size) for p in unlabeled]), train_x]) if unlabeled else train_x
    keys = [f"unlabeled/{os.path.basename(p['image'])}" for p in unlabeled]
    keys += [f"train/{os.path.basename(p['image'])}" for p in train]
    return BenchData(
        name="dermoscopy",
        num_classes=2,
        pretrain=pool.astype(np.float32),
        pretrain_keys=keys,
        train_x=train_x.astype(np.float32),
        train_y=np.stack([_mask(p["label"], size) for p in train]),
        train_group=np.arange(len(train)),
        test_x=np.stack([_rgb(p["image"], size) for p in test]).astype(np.float32),
        test_y=np.stack([_mask(p["label"], size) for p in test]),
        test_volume=np.arange(len(test)),
        info={
            "train": [p["image"] for p in train],
            "test": [p["image"] for p in test],
            "unlabeled": len(unlabeled),
            "class_names": ["lesion"],
        },
    )


def _volume_slices(pair: dict, size: int, crop: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(D, 1, S, S)`` image slices, ``(D, S, S)`` labels and the fraction of label voxels inside the crop."""
    img = read_image(pair["image"]).array.astype(np.float32)
    lab = np.rint(read_image(pair["label"]).array).astype(np.int64)
    if img.ndim != 3 or img.shape != lab.shape:
        raise ValueError(
            f"{pair['image']}: expected a 3D volume with a label of the same shape, got {img.shape}, {lab.shape}."
        )
    h, w, _ = img.shape
    side = max(8, int(round(crop * min(h, w))))
    top, left = (h - side) // 2, (w - side) // 2
    kept = float((lab[top : top + side, left : left + side] > 0).sum() / max(1, (lab > 0).sum()))
    img, lab = img[top : top + side, left : left + side], lab[top : top + side, left : left + side]
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    xs = np.stack([_resize(img[None, :, :, k], size, "image") for k in range(img.shape[2])])
    ys = np.stack([_resize(lab[None, :, :, k].astype(np.float32), size, "label")[0] for k in range(img.shape[2])])
    return xs, ys.astype(np.int64), kept


def _by_patient(pairs: list[dict]) -> dict[str, list[dict]]:
    """Pairs grouped by patient name (``patientNNN`` in the file name, else the file name itself)."""
    out: dict[str, list[dict]] = {}
    for p in pairs:
        m = _PATIENT.search(os.path.basename(p["image"]))
        out.setdefault(m.group(1) if m else os.path.basename(p["image"]), []).append(p)
    return out


def _strata(names: list[str]) -> np.ndarray:
    """Pathology group per patient, or all zeros when any name carries no ACDC training number."""
    groups = [pathology_group(n) for n in names]
    if any(g is None for g in groups):
        return np.zeros(len(names), dtype=int)
    return np.asarray(groups, dtype=int)


def _slices_of(patients: dict[str, list[dict]], size: int, crop: float) -> dict[str, list[np.ndarray]]:
    """Slices of every volume of ``patients`` (sorted by name): images, labels, unit, slice, count, volume."""
    out: dict[str, list] = {k: [] for k in ("x", "y", "unit", "slice", "count", "volume", "kept")}
    v = 0
    for g, name in enumerate(sorted(patients)):
        for pair in patients[name]:
            xs, ys, kept = _volume_slices(pair, size, crop)
            d = len(xs)
            for key, value in (("x", xs), ("y", ys), ("unit", np.full(d, g)), ("slice", np.arange(d)),
                               ("count", np.full(d, d)), ("volume", np.full(d, v))):
                out[key].append(value)
            out["kept"].append(kept)
            v += 1
    return out


def load_heart(
    train_dir: str, test_dir: str | None, size: int, num_test: int, seed: int, crop: float = 0.75
) -> BenchData:
    """ACDC-style volumes (``images/`` + ``labels/``) as 2D short-axis slices, split by patient.

    Without ``test_dir``, ``num_test`` patients are held out by :func:`stratified_split` over the pathology
    groups (both frames of a patient stay on one side); the other patients are the pretraining pool (every
    slice of every frame) and the pool the labeled patients are drawn from. With ``test_dir``, every patient of
    ``train_dir`` is in the pool. Pretraining keeps each slice's index, slice count and volume index (for the
    partition-aware global loss).

    Args:
        train_dir: folder with ``images/`` and ``labels/`` (``patientNNN_frameXX.nii.gz``).
        test_dir: held-out folder of the same layout, or ``None``.
        size: output side in pixels.
        num_test: held-out patients when ``test_dir`` is ``None``.
        seed: split seed.
        crop: centred square crop as a fraction of the short side of each slice, in ``(0, 1]``.

    Raises:
        ValueError: when ``crop`` is outside ``(0, 1]`` or a volume and its label disagree.
    """
    if not 0 < crop <= 1:
        raise ValueError(f"crop must lie in (0, 1], got {crop}.")
    train_p = _by_patient(list_image_mask_pairs(train_dir))
    if test_dir:
        test_p = _by_patient(list_image_mask_pairs(test_dir))
    else:
        names = sorted(train_p)
        tr, te = stratified_split(_strata(names), num_test, seed)
        test_p = {names[i]: train_p[names[i]] for i in te}
        train_p = {names[i]: train_p[names[i]] for i in tr}
    tr_s, te_s = _slices_of(train_p, size, crop), _slices_of(test_p, size, crop)
    train_x, train_y, test_y = np.concatenate(tr_s["x"]), np.concatenate(tr_s["y"]), np.concatenate(te_s["y"])
    volumes, slices = np.concatenate(tr_s["volume"]), np.concatenate(tr_s["slice"])
    kept = tr_s["kept"] + te_s["kept"]
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    train_names, test_names = sorted(train_p), sorted(test_p)
    return BenchData(
        name="heart",
        num_classes=num_classes,
        pretrain=train_x,
        pretrain_keys=[f"volume{a}/slice{b}" for a, b in zip(volumes, slices)],
        train_x=train_x,
        train_y=train_y,
        train_group=np.concatenate(tr_s["unit"]),
        test_x=np.concatenate(te_s["x"]),
        test_y=test_y,
        test_volume=np.concatenate(te_s["volume"]),
        pretrain_slice=slices,
        pretrain_num_slices=np.concatenate(tr_s["count"]),
        pretrain_volume=volumes,
        train_strata=_strata(train_names),
        info={
            "train": train_names,
            "test": test_names,
            "test_groups": _strata(test_names).tolist(),
            "crop": crop,
            "class_names": list(HEART_CLASS_NAMES) if num_classes == 4 else None,
            "mean_label_fraction_in_crop": float(np.mean(kept)),
            "min_label_fraction_in_crop": float(min(kept)),
        },
    )


def load_dataset(args, cache_dir: Path) -> BenchData:
    """Load (or read from the cache) the dataset the command-line ``args`` describe."""
    spec = {
        "dataset": args.dataset,
        "size": args.image_size,
        "train": args.train_dir,
        "test": args.test_dir,
        "unlabeled": args.unlabeled_dir,
        "num_test": args.num_test,
        "split_seed": args.split_seed,
        "crop": args.heart_crop,
        "version": _CACHE_VERSION,
    }
    path = _cache_path(cache_dir, spec)
    if path.is_file():
        return _load(path)
    if args.dataset == "dermoscopy":
        data = load_dermoscopy(
            args.train_dir, args.test_dir, args.unlabeled_dir, args.image_size, args.num_test, args.split_seed
        )
    else:
        data = load_heart(
            args.train_dir[0], args.test_dir[0] if args.test_dir else None, args.image_size, args.num_test,
            args.split_seed, args.heart_crop,
        )
    _save(path, data)
    return data
