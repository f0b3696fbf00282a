"""2D segmentation of the slices of volumes: the pieces of the heart bundle's ``train_slices.json`` overlay.

The overlay (``bundles/heart_ct_segmentation/configs/train_slices.json``, evaluated by ``evaluate_slices.json``)
fine-tunes a 2D network on the slices of image/label volume pairs (ACDC's ``images/`` + ``labels/``, or the
synthetic phantoms), initialised from the weights of the pretraining bundle's ``train_slices.json``
(``models_slices/model.pt``). It follows the ACDC protocol of ``BENCHMARKS.md``:

- the labeled unit is a **patient** (:func:`~monai_cluster.data.patients.patient_id`: both ACDC frames of a
  patient are one unit), ``num_labeled`` counts patients and ``label_fraction`` is a fraction of them;
- the validation patients are held out by group (:func:`~monai_cluster.data.patients.stratified_split`, the ACDC
  pathology group; one group when the names carry none) with ``split_seed``, and the labeled patients are drawn
  round the groups by ``seed`` (:func:`~monai_cluster.data.patients.stratified_draw`), the same draws as
  ``benchmarks/label_efficiency.py``;
- every slice of a selected volume is a training sample on the grid ``image_size``
  (:func:`slice_segmentation_transforms`, the pretraining overlay's slice chain with the label alongside; the
  overlay spells its chains out step by step, held to this function's tensors and random draws by
  ``tests/bundles/test_heart_slice_config_transforms.py``, so a change here goes into the overlay too);
- evaluation (:func:`~monai_cluster.workflows.segmentation_slices_eval.evaluate_volumes`) predicts each slice,
  maps it back to the label's own grid and scores whole volumes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from monai_cluster.data.patients import pathology_group, patient_id, stratified_draw, stratified_split
from monai_cluster.networks.backbones import BACKBONES
from monai_cluster.utils.io import atomic_write_json

from .common import barrier, is_main_process, resolve_dataset, validate_options
from .pretrain_data import check_image_size
from .pretrain_slices import _check_pair, list_volume_slices, slice_base_transforms
from .run_outputs import data_fingerprint
from .segmentation_network import check_pretrained_exclude as _check_exclude
from .step_budget import check_eval_curve_every

__all__ = [
    "SEGMENTATION_SLICE_OPTION_SPECS",
    "check_segmentation_slice_options",
    "patient_table",
    "select_patients",
    "slice_segmentation_run_settings",
    "slice_segmentation_splits",
    "slice_segmentation_transforms",
    "write_selection",
]

logger = logging.getLogger(__name__)

SEGMENTATION_SLICE_OPTION_SPECS: dict[str, str] = {
    "epochs": "int>=1",
    "val_interval": "int>=1",
    "learning_rate": "float>0",
    "batch_size": "int>=1",
    "image_size": "ints>=16",
    "intensity_range": "floats?",
    "intensity_percentiles": "floats>=0",
    "crop_fraction": "float?>0",
    "num_classes": "int>=2",
    "val_fraction": "float>0",
    "num_val_patients": "int?>=1",
    "label_fraction": "float>0",
    "num_labeled": "int?>=1",
    "seed": "int>=0",
    "split_seed": "int>=0",
    "augment": "bool",
    "eval_every_steps": "int?>=1",
    "eval_last": "int>=1",
    "eval_curve_every": "int?>=1",
    "use_pretrained": "bool",
    "partial_transfer": "bool",
    "resume": "bool",
    "dataset_dir": "path?",
    "bundle_root": "path",
}
"""Spec (see :func:`~monai_cluster.workflows.validate_option`) of the options of the heart ``train_slices.json``."""


def check_segmentation_slice_options(**options: Any) -> dict[str, Any]:
    """Check the options of the heart bundle's slice overlay (:data:`SEGMENTATION_SLICE_OPTION_SPECS`).

    Beyond each option's type and range: ``image_size`` is two sizes, multiples of 16; ``intensity_range`` and
    ``intensity_percentiles`` are ``[low, high]`` with ``low < high`` (percentiles within 100); ``crop_fraction``
    and ``label_fraction`` lie in ``(0, 1]``; ``val_fraction`` lies in ``(0, 1)`` (the run validates on held-out
    patients); ``pretrained_exclude`` is ``None`` (only the task head starts fresh) or a list of submodule names
    that start at the seed's initialisation instead of the pretrained weights (what the pretraining did not train:
    the decoder after a SimCLR run, the blocks below ``decoder_layer`` after a local loss); ``eval_curve_every``
    (further evaluations for a learning curve, not scored) needs ``eval_every_steps``.

    Returns:
        the options normalised.

    Raises:
        TypeError/ValueError: naming the option, e.g. ``option 'num_labeled' (--num_labeled) must be an integer
            >= 1 or None, got int 0.``
    """
    exclude = options.pop("pretrained_exclude", None)
    checked = validate_options(options, SEGMENTATION_SLICE_OPTION_SPECS)
    checked["pretrained_exclude"] = _check_exclude(exclude)
    checked["image_size"] = check_image_size(checked["image_size"], 2)
    if checked["intensity_range"] is not None:
        checked["intensity_range"] = _check_pair("intensity_range", checked["intensity_range"])
    checked["intensity_percentiles"] = _check_pair("intensity_percentiles", checked["intensity_percentiles"], 100.0)
    for name in ("crop_fraction", "label_fraction"):
        if checked[name] is not None and checked[name] > 1:
            raise ValueError(f"option {name!r} (--{name}) must lie in (0, 1], got {checked[name]}.")
    check_eval_curve_every(checked["eval_curve_every"], checked["eval_every_steps"])
    if checked["val_fraction"] >= 1:
        raise ValueError(
            f"option 'val_fraction' (--val_fraction) must lie in (0, 1) (patients must remain to label), "
            f"got {checked['val_fraction']}."
        )
    return checked


def patient_table(volumes: Sequence[Mapping[str, Any]], image_key: str = "image") -> dict[str, Any]:
    """The patients of a volume listing, sorted by name, with their group and volumes.

    Args:
        volumes: ``{"image", "label", "key"}`` volume items.
        image_key: the entry whose file name names the patient (:func:`~monai_cluster.data.patients.patient_id`).

    Returns:
        ``{"names": [patient, ...], "groups": (P,) int array, "grouped": bool, "volumes": {patient: [item, ...]}}``;
        ``groups`` are the ACDC pathology groups when every name carries an ACDC training number (``grouped``),
        else all 0.

    Raises:
        ValueError: for an empty listing.
    """
    if not volumes:
        raise ValueError("volumes must hold at least one volume, got an empty listing.")
    by_patient: dict[str, list[dict]] = {}
    for item in volumes:
        by_patient.setdefault(patient_id(str(item[image_key])), []).append(dict(item))
    names = sorted(by_patient)
    groups = [pathology_group(name) for name in names]
    grouped = all(g is not None for g in groups)
    return {
        "names": names,
        "groups": np.asarray(groups if grouped else [0] * len(names), dtype=int),
        "grouped": grouped,
        "volumes": {name: sorted(by_patient[name], key=lambda it: it["key"]) for name in names},
    }


def select_patients(
    table: Mapping[str, Any],
    val_fraction: float = 0.2,
    num_val_patients: int | None = None,
    label_fraction: float = 1.0,
    num_labeled: int | None = None,
    seed: int = 0,
    split_seed: int = 0,
) -> dict[str, list[str]]:
    """Held-out and labeled patients: a group-stratified split by ``split_seed``, a draw round the groups by ``seed``.

    Args:
        table: :func:`patient_table`'s output.
        val_fraction: fraction of the patients held out (``round``, at least 1 when above 0, at most all but one).
        num_val_patients: held-out patients, winning over ``val_fraction`` (0: none), or ``None``.
        label_fraction: fraction of the remaining patients labeled (``ceil``, at least 1).
        num_labeled: labeled patients, winning over ``label_fraction``, or ``None``.
        seed: the labeled draw's seed (changing it keeps the held-out patients).
        split_seed: the held-out split's seed.

    Returns:
        ``{"val": [...], "pool": [...], "labeled": [...]}`` patient names, each sorted.

    Raises:
        ValueError: naming ``num_val_patients`` or ``num_labeled`` when there are not enough patients.
    """
    names, groups = list(table["names"]), np.asarray(table["groups"])
    count = len(names)
    if num_val_patients is None:
        num_val = 0 if val_fraction == 0 else min(max(1, round(val_fraction * count)), count - 1)
    else:
        num_val = int(num_val_patients)
    if not 0 <= num_val < count:
        raise ValueError(
            f"option 'num_val_patients' (--num_val_patients) must leave a patient to train on: got {num_val} of "
            f"{count} patients (val_fraction {val_fraction})."
        )
    if num_val:
        pool_idx, val_idx = stratified_split(groups, num_val, split_seed)
    else:
        pool_idx, val_idx = np.arange(count), np.zeros(0, dtype=int)
    if num_labeled is None:
        wanted = max(1, math.ceil(label_fraction * len(pool_idx) - 1e-9))
    else:
        wanted = int(num_labeled)
    if wanted > len(pool_idx):
        raise ValueError(
            f"option 'num_labeled' (--num_labeled) counts patients: {wanted} asked, but only {len(pool_idx)} of the "
            f"{count} patients are left after holding out {num_val} for validation."
        )
    labeled = stratified_draw(pool_idx, wanted, seed, groups)
    return {
        "val": [names[i] for i in val_idx],
        "pool": [names[i] for i in pool_idx],
        "labeled": [names[i] for i in labeled],
    }


def _slices_of(table: Mapping[str, Any], patients: Sequence[str]) -> tuple[list[dict], list[dict]]:
    volumes = [dict(item, patient=name) for name in patients for item in table["volumes"][name]]
    return volumes, (list_volume_slices(volumes, num_partitions=1) if volumes else [])


def slice_segmentation_splits(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    num_classes: int,
    val_fraction: float = 0.2,
    num_val_patients: int | None = None,
    label_fraction: float = 1.0,
    num_labeled: int | None = None,
    seed: int = 0,
    split_seed: int = 0,
    synthetic_n: int | None = None,
    synthetic_size: int | Sequence[int] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """The slices a slice fine-tune run trains and validates on, selected by patient.

    The volume pairs are listed (or the synthetic heart phantoms generated once under
    ``<bundle_root>/synthetic_data``) and checked (every file decoded, labels in ``[0, num_classes)``), grouped
    into patients (:func:`patient_table`), split and drawn (:func:`select_patients`) and expanded into one item per
    slice (``{"image", "label", "key": "<volume key>#sNN", "slice", "num_slices", "patient", ...}``).

    Returns:
        ``{"train": labeled slices, "val": held-out slices, "val_volumes": held-out volumes, "all_volumes": every
        volume, "selection": {"labeled", "val", "pool", "groups", "grouped", "seed", "split_seed"}}``.

    Raises:
        ValueError: naming a bad file or option.
    """
    main = is_main_process()
    if not main:  # under torchrun, rank 0 generates the synthetic data first and the other ranks then list it
        barrier()
    try:
        volumes = resolve_dataset(
            dataset_dir, bundle_root, kind="heart", n=synthetic_n, size=synthetic_size, seed=0, check=check,
            num_classes=num_classes, channels=1, spatial_dims=3,
        )  # fmt: skip
    finally:
        if main:
            barrier()
    table = patient_table(volumes)
    chosen = select_patients(table, val_fraction, num_val_patients, label_fraction, num_labeled, seed, split_seed)
    _, train = _slices_of(table, chosen["labeled"])
    val_volumes, val = _slices_of(table, chosen["val"])
    all_volumes, _ = _slices_of(table, table["names"])
    groups = dict(zip(table["names"], table["groups"].tolist()))
    logger.info(
        "slice data: %d patients (%s), %d held out, %d of %d labeled (seed %d): %d training slices, %d held-out slices",
        len(table["names"]), "ACDC pathology groups" if table["grouped"] else "one group", len(chosen["val"]),
        len(chosen["labeled"]), len(chosen["pool"]), seed, len(train), len(val),
    )  # fmt: skip
    selection = {**chosen, "groups": groups, "grouped": table["grouped"], "seed": seed, "split_seed": split_seed}
    return {"train": train, "val": val, "val_volumes": val_volumes, "all_volumes": all_volumes, "selection": selection}


_SLICE_RUN_SETTINGS = (
    "num_classes", "image_size", "intensity_range", "intensity_percentiles", "crop_fraction", "seed", "split_seed",
    "dataset_dir", "val_fraction", "num_val_patients", "label_fraction", "num_labeled", "augment", "batch_size",
    "learning_rate", "eval_every_steps", "eval_last", "use_pretrained",
)  # fmt: skip
_BUDGET_RUN_SETTINGS = ("max_steps", "warmup_steps", "min_lr_ratio", "optimizer_name", "weight_decay")


def slice_segmentation_run_settings(
    options: Mapping[str, Any],
    data: Mapping[str, Any],
    network: Mapping[str, Any],
    budget: Mapping[str, Any],
    pretrained_path: str | os.PathLike | None = None,
    semi_supervised: Mapping[str, Any] | None = None,
    unlabeled: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The settings that define a slice fine-tuning run's outputs (``models_slices/run_settings.json``).

    For :class:`~monai_cluster.workflows.RunOutputs`, so that ``--resume true`` continues only the same run and
    refuses another, naming each setting and both values. ``train``: the network (backbone and its options,
    ``num_classes``), the slice grid and intensity options, the seeds and the patient selection options, the
    labeled and held-out slice listings (count and keys' SHA-1), ``augment``, ``batch_size``, ``learning_rate``,
    the step budget (``max_steps``, ``warmup_steps``, ``min_lr_ratio``, ``optimizer_name``, ``weight_decay``),
    the scoring during training (``eval_every_steps``, ``eval_last``), the start (``use_pretrained`` and with it
    ``partial_transfer``, ``pretrained_exclude`` and the pretrained file's SHA-1) and the semi-supervised options
    (:func:`~monai_cluster.workflows.semi_supervised.semi_supervised_settings`). Not recorded: ``epochs``,
    ``val_interval``, workers, AMP, ``resume``.

    Args:
        options: :func:`check_segmentation_slice_options`'s result.
        data: :func:`slice_segmentation_splits`'s result.
        network: the checked backbone options (``check_backbone_bundle_options``).
        budget: :func:`~monai_cluster.workflows.step_budget.check_step_budget_options`'s result.
        pretrained_path: the pretrained weights (hashed when ``use_pretrained``).
        semi_supervised: ``check_semi_supervised_options``' result, or ``None``.
        unlabeled: the unlabelled slices, or ``None``.

    Raises:
        KeyError: when ``options``, ``network`` or ``budget`` lacks a recorded setting.
    """
    from .segmentation_checks import file_sha1
    from .semi_supervised import semi_supervised_settings

    settings: dict[str, Any] = {"backbone": network["backbone"]}
    settings.update({name: network[name] for name in BACKBONES[network["backbone"]].options if name in network})
    settings.update({name: options[name] for name in _SLICE_RUN_SETTINGS})
    settings.update({name: budget[name] for name in _BUDGET_RUN_SETTINGS})
    settings["data"] = {name: data_fingerprint(data[name]) for name in ("train", "val")}
    if options["use_pretrained"]:
        settings["partial_transfer"] = options["partial_transfer"]
        settings["pretrained_exclude"] = options["pretrained_exclude"]
        settings["pretrained_sha1"] = file_sha1(pretrained_path)
    if semi_supervised is not None:
        settings.update(semi_supervised_settings(semi_supervised, unlabeled))
    return {"train": settings}


def write_selection(selection: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the patient selection of :func:`slice_segmentation_splits` as JSON (main process, atomically).

    The record (``models_slices/selection.json``) names the held-out, pool and labeled patients, each patient's
    group and the seeds, so a run's labeled patients can be read back and compared across methods.
    """
    if is_main_process():
        atomic_write_json(dict(selection), path)


def slice_segmentation_transforms(
    mode: str,
    image_size: Sequence[int] | int,
    intensity_range: Sequence[float] | None = None,
    percentiles: Sequence[float] = (0.5, 99.5),
    crop_fraction: float | None = None,
    augment: bool = True,
) -> Compose:
    """Slice items to ``image`` ``(1, *image_size)`` in ``[0, 1]`` and ``label`` ``(1, *image_size)`` class indices.

    The deterministic part is the pretraining overlay's slice chain
    (:func:`~monai_cluster.workflows.slice_base_transforms` with the label: same intensity scaling, crop and grid,
    so pretrained weights see the slices they were trained on). ``"train"`` with ``augment`` adds the ACDC
    protocol's augmentation: flips of both axes, an affine (rotation up to 15 degrees, scale 0.85-1.15 drawn for
    each axis, shift up to 5% of the side; labels nearest neighbour, background brought in), gamma 0.7-1.5,
    intensity scale and shift, and Gaussian noise. ``"unlabeled"`` is the weak view of the unlabelled slices of semi-supervised fine-tuning
    (:mod:`~monai_cluster.workflows.segmentation_slices_semi`): the same chain without a label and, with
    ``augment``, random flips of both axes (the trainer makes the strong view from it, voxel-aligned).

    Args:
        mode: ``"train"``, ``"val"`` or ``"unlabeled"``.
        image_size: the training grid ``(H, W)``.
        intensity_range: ``None`` (percentiles per volume) or a fixed window, as the pretraining overlay.
        percentiles: ``(low, high)`` percentiles used without ``intensity_range``.
        crop_fraction: centred square crop of each slice (fraction of its short side), or ``None``.
        augment: add the random augmentation in ``"train"`` mode, the flips in ``"unlabeled"`` mode.

    Raises:
        ValueError: for an unknown ``mode`` or bad sizes.
    """
    if mode not in ("train", "val", "unlabeled"):
        raise ValueError(f"mode must be 'train', 'val' or 'unlabeled', got {mode!r}.")
    size = check_image_size(image_size, 2)
    keys = ["image"] if mode == "unlabeled" else ["image", "label"]
    label = None if mode == "unlabeled" else "label"
    chain = slice_base_transforms(size, intensity_range, percentiles, crop_fraction=crop_fraction, label_key=label)
    if mode == "unlabeled" and augment:
        chain += [RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)]
    if mode == "train" and augment:
        chain += [
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandAffined(
                keys, prob=1.0, rotate_range=math.pi / 12, scale_range=(0.15, 0.15),
                translate_range=[0.05 * s for s in size], mode=["bilinear", "nearest"], padding_mode="zeros",
            ),  # fmt: skip
            RandAdjustContrastd("image", prob=1.0, gamma=(0.7, 1.5)),
            RandScaleIntensityd("image", factors=0.15, prob=1.0),
            RandShiftIntensityd("image", offsets=0.1, prob=1.0),
            RandGaussianNoised("image", prob=1.0, std=0.03),
        ]
    return Compose(chain + [EnsureTyped(keys, dtype=torch.float32, track_meta=False)])

