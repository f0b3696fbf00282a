"""Up-front checks of the segmentation fine-tune bundles, and the settings that define their outputs.

The bundles ``dermoscopy_segmentation`` (``kind="dermoscopy"``, 2D) and ``heart_ct_segmentation``
(``kind="heart"``, 3D) call, in ``initialize``, before anything is written:

- :func:`check_segmentation_options`: every option against its spec and its relations to the other options
  (``val_fraction`` below 1, ``label_fraction`` in ``(0, 1]`` and not beside ``num_labeled``, ``sw_overlap`` below
  1, ``ct_window`` low < high, ``partial_transfer`` only with ``use_pretrained``);
- :func:`preflight_segmentation`: what needs the listed data or a built network (the validation split leaves
  training items, ``num_classes`` against the labels found, ``roi_size`` against the volumes, the pretrained
  checkpoint fits the network, one labelled item per process);
- :func:`check_trained_network` (evaluate and inference): the model was trained with this run's network
  settings, read from the training run's ``run_settings.json`` beside the checkpoint.

:func:`segmentation_run_settings` gives the defining settings of a training run for
:class:`~monai_cluster.workflows.RunOutputs` (a resume with another seed, data, network or loss setting is refused);
:func:`evaluation_run_settings` those of an evaluate or inference run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_cluster.networks.backbones import BACKBONES, build_backbone

from .common import validate_options
from .run_outputs import RECORD_NAME, as_recorded, data_fingerprint, read_record
from .step_budget import check_eval_curve_every

__all__ = [
    "SEGMENTATION_OPTION_SPECS",
    "check_segmentation_options",
    "check_trained_network",
    "evaluation_run_settings",
    "file_sha1",
    "network_settings",
    "preflight_segmentation",
    "segmentation_run_settings",
]

logger = logging.getLogger(__name__)

KINDS = ("dermoscopy", "heart")

SEGMENTATION_OPTION_SPECS: dict[str, dict[str, str]] = {
    "common": {
        "bundle_root": "path",
        "dataset_dir": "path?",
        "epochs": "int>=1",
        "val_interval": "int>=1",
        "learning_rate": "float>0",
        "batch_size": "int>=1",
        "num_workers": "int>=0",
        "amp": "bool",
        "in_channels": "int>=1",
        "num_classes": "int>=2",
        "val_fraction": "float>=0",
        "label_fraction": "float>=0",
        "num_labeled": "int?>=1",
        "seed": "int>=0",
        "use_pretrained": "bool",
        "partial_transfer": "bool",
        "pretrained_path": "path?",
        "resume": "bool",
        "synthetic_n": "int?>=2",
        "synthetic_size": "ints?>=8",
        "eval_split": "choice:val|all",
        "checkpoint": "path",
        "output_dir": "path",
        "overlays": "bool",
    },
    "dermoscopy": {
        "image_size": "int>=16",
        "datalist": "path?",
        "fov_dir": "path?",
        "crop_size": "int?>=16",
        "eval_every_steps": "int?>=1",
        "eval_last": "int>=1",
        "eval_curve_every": "int?>=1",
    },
    "heart": {
        "roi_size": "ints>=16",
        "num_samples": "int>=1",
        "sw_batch_size": "int>=1",
        "sw_overlap": "float>=0",
        "intensity": "choice:ct|mri",
        "ct_window": "floats",
    },
}
"""Spec (:func:`~monai_cluster.workflows.validate_option`) of each option, shared and per bundle kind."""

_DATA_SETTINGS = ("seed", "dataset_dir", "val_fraction", "label_fraction", "num_labeled", "synthetic_n",
                  "synthetic_size")  # fmt: skip
_INPUT_SETTINGS = {"dermoscopy": ("image_size",), "heart": ("intensity", "ct_window")}
_TRAIN_SETTINGS = {"dermoscopy": ("batch_size", "learning_rate"),
                   "heart": ("batch_size", "learning_rate", "roi_size", "num_samples")}  # fmt: skip


_DEFAULTED_SETTINGS = {"dermoscopy": {
    "datalist": None, "fov_dir": None, "crop_size": None, "pretrained_exclude": None, "eval_every_steps": None,
    "eval_last": 1, "max_steps": None, "warmup_steps": 0, "min_lr_ratio": 0.0, "optimizer_name": "AdamW",
    "weight_decay": 1e-4,
}}  # fmt: skip


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}.")
    return kind


def check_segmentation_options(kind: str, **options: Any) -> dict[str, Any]:
    """Check a segmentation bundle's options (those given) and their relations, before anything runs.

    Args:
        kind: ``"dermoscopy"`` or ``"heart"``: which bundle's options (:data:`SEGMENTATION_OPTION_SPECS`).
        options: the bundle's options by name (any of the specs); each config passes those it uses.

    Returns:
        the checked options; ``roi_size`` as three sizes.

    Raises:
        TypeError/ValueError: naming the option, for a value outside its spec, an unknown option, and when
            ``val_fraction`` is not below 1 (no training item would remain), ``label_fraction`` is 0 (it would
            keep 0 labelled items) or above 1, ``num_labeled`` is given with a ``label_fraction`` below 1 (only one
            of them can decide), ``partial_transfer`` is true while ``use_pretrained`` is false (nothing is
            transferred), ``sw_overlap`` is not below 1 (the sliding window would not advance; refused by MONAI
            only at the first validation, after training), ``ct_window`` is not ``[low, high]`` with low < high,
            ``roi_size`` is not one size or three, ``dataset_dir`` is not an existing folder; for the dermoscopy
            bundle also when ``datalist`` is not an existing file, ``fov_dir`` not an existing folder, ``crop_size``
            exceeds ``image_size``, ``pretrained_exclude`` is not ``None`` or a list of submodule names, or
            ``eval_curve_every`` (further evaluations for a learning curve, never scored) is given without
            ``eval_every_steps``.
    """
    specs = {**SEGMENTATION_OPTION_SPECS["common"], **SEGMENTATION_OPTION_SPECS[_kind(kind)]}
    exclude_given = kind == "dermoscopy" and "pretrained_exclude" in options
    exclude = options.pop("pretrained_exclude", None) if exclude_given else None
    unknown = sorted(set(options) - set(specs))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for the {kind} bundle; known: {sorted(specs)}.")
    checked = validate_options(options, {name: specs[name] for name in options})
    if exclude_given:
        from .segmentation_network import check_pretrained_exclude

        checked["pretrained_exclude"] = check_pretrained_exclude(exclude)
    _check_fixed_split(checked)
    check_eval_curve_every(checked.get("eval_curve_every"), checked.get("eval_every_steps"))
    dataset_dir = checked.get("dataset_dir")
    if dataset_dir is not None and not Path(dataset_dir).is_dir():
        raise ValueError(f"option 'dataset_dir' (--dataset_dir) must be an existing folder, got {dataset_dir!r}.")
    if checked.get("val_fraction", 0) >= 1:
        raise ValueError(
            f"option 'val_fraction' (--val_fraction) must be below 1: it holds that fraction out for validation "
            f"and no training item would remain, got {checked['val_fraction']}."
        )
    if "label_fraction" in checked:
        fraction = checked["label_fraction"]
        if fraction == 0:
            raise ValueError(
                "option 'label_fraction' (--label_fraction) is 0: it would keep 0 labelled training items, so there "
                "would be nothing to train on; use a fraction in (0, 1] or num_labeled."
            )
        if fraction > 1:
            raise ValueError(f"option 'label_fraction' (--label_fraction) must be at most 1, got {fraction}.")
        if checked.get("num_labeled") is not None and fraction < 1:
            raise ValueError(
                f"options 'num_labeled' ({checked['num_labeled']}) and 'label_fraction' ({fraction}) are both given: "
                "num_labeled would silently win; give only one of them (label_fraction 1 with num_labeled)."
            )
    if checked.get("partial_transfer") and checked.get("use_pretrained") is False:
        raise ValueError(
            "option 'partial_transfer' (--partial_transfer) is true but 'use_pretrained' is false: no pretrained "
            "tensor is transferred, partially or not; drop partial_transfer or set use_pretrained true."
        )
    if checked.get("sw_overlap", 0) >= 1:
        raise ValueError(
            f"option 'sw_overlap' (--sw_overlap) must be below 1 (the fraction by which sliding windows overlap; "
            f"at 1 they would never advance), got {checked['sw_overlap']}."
        )
    if "ct_window" in checked:
        window = checked["ct_window"]
        if len(window) != 2 or not window[0] < window[1]:
            raise ValueError(
                f"option 'ct_window' (--ct_window) must be [low, high] in Hounsfield units with low < high, got "
                f"{window}."
            )
    if "roi_size" in checked:
        roi = checked["roi_size"]
        if len(roi) not in (1, 3):
            raise ValueError(f"option 'roi_size' (--roi_size) must be one size or three, got {roi}.")
        checked["roi_size"] = list(roi) * 3 if len(roi) == 1 else list(roi)
    return checked


def _check_fixed_split(checked: Mapping[str, Any]) -> None:
    """The dermoscopy bundle's ``datalist``, ``fov_dir`` and ``crop_size`` against the files and ``image_size``."""
    datalist = checked.get("datalist")
    if datalist is not None and not Path(datalist).is_file():
        raise ValueError(f"option 'datalist' (--datalist) must be an existing JSON file, got {datalist!r}.")
    fov_dir = checked.get("fov_dir")
    if fov_dir is not None and not Path(fov_dir).is_dir():
        raise ValueError(f"option 'fov_dir' (--fov_dir) must be an existing folder of masks, got {fov_dir!r}.")
    crop, size = checked.get("crop_size"), checked.get("image_size")
    if crop is not None and size is not None and crop > size:
        raise ValueError(
            f"option 'crop_size' (--crop_size) {crop} must not exceed 'image_size' {size}: the training crops are "
            "cut from the image resized to image_size."
        )


def _world_size() -> int:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1


def _check_labels(options: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    values = [int(v) for v in summary.get("label_values", [])]
    if not values:
        return
    num_classes = options["num_classes"]
    found = sorted({1 if (num_classes == 2 and v == 255) else v for v in values})
    if max(found) < num_classes - 1:
        raise ValueError(
            f"option 'num_classes' (--num_classes) is {num_classes}, but the labels hold only the classes {found}: "
            f"the network's channels {max(found) + 1} to {num_classes - 1} would never see their class; use "
            f"num_classes {max(found) + 1} or labels with every class."
        )


def _check_roi(options: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    shapes = [tuple(s) for s in summary.get("spatial_shapes", []) if len(s) == 3]
    if not shapes:
        return
    largest = [max(s[axis] for s in shapes) for axis in range(3)]
    roi = options["roi_size"]
    if any(r > 2 * size for r, size in zip(roi, largest)):
        raise ValueError(
            f"option 'roi_size' (--roi_size) {roi} is more than twice the largest volume {largest} on an axis: more "
            "than half of every training crop and sliding window there would be padding; use a roi_size at most "
            "twice the volume size (or resample the volumes)."
        )


def _check_pretrained(options: Mapping[str, Any], network: Mapping[str, Any], spatial_dims: int) -> None:
    """Build a throwaway network (the global random state untouched) and load the pretrained checkpoint into it."""
    from .segmentation_network import initialize_network

    with torch.random.fork_rng(devices=[]):
        net = build_backbone(
            network["backbone"], spatial_dims, options["in_channels"], options["num_classes"],
            features=network["features"], init_filters=network["init_filters"],
            feature_size=network["feature_size"], depths=network["depths"],
        )  # fmt: skip
        initialize_network(
            net, "cpu", True, options["pretrained_path"], exclude=options.get("pretrained_exclude"),
            partial_transfer=options["partial_transfer"],
        )  # fmt: skip


def preflight_segmentation(
    kind: str,
    options: Mapping[str, Any],
    data: Mapping[str, Any],
    network: Mapping[str, Any],
    split: str | None = None,
) -> None:
    """Check, before a run writes anything, what needs the listed data or a built network.

    Args:
        kind: ``"dermoscopy"`` or ``"heart"``.
        options: the checked options (:func:`check_segmentation_options`).
        data: the listings (:func:`~monai_cluster.workflows.segmentation_data.segmentation_splits`).
        network: the checked backbone options (:func:`~monai_cluster.workflows.check_backbone_bundle_options`).
        split: for an evaluate run, the split it evaluates (``eval_split``); ``None`` for training.

    Raises:
        ValueError: naming the option: ``val_fraction`` that as asked would leave no training item (the split
            keeps one by itself), ``num_classes`` above the classes the labels hold, ``roi_size`` more than twice
            the volumes, a ``pretrained_path`` that does not fit the network (before the report is written),
            fewer labelled training items than processes, or an ``eval_split`` without items.
    """
    kind = _kind(kind)
    total = len(data["all"])
    fraction = options.get("val_fraction", 0)
    if fraction > 0 and max(1, round(fraction * total)) >= total:
        raise ValueError(
            f"option 'val_fraction' (--val_fraction) {fraction} holds out {max(1, round(fraction * total))} of the "
            f"{total} items for validation, which leaves no training item; lower val_fraction or add items."
        )
    summary = data.get("summary") or {}
    _check_labels(options, summary)
    if kind == "heart":
        _check_roi(options, summary)
    if split is not None:
        if not data[split]:
            raise ValueError(
                f"option 'eval_split' (--eval_split) {split!r} holds no item (val_fraction "
                f"{options.get('val_fraction')}); evaluate 'all' or train with a validation split."
            )
        return
    world = _world_size()
    if len(data["train"]) < world:
        raise ValueError(
            f"option 'num_labeled'/'label_fraction' keeps {len(data['train'])} labelled training item(s) for "
            f"{world} processes: some process would train on padding copies only; keep at least {world}."
        )
    if options.get("use_pretrained"):
        _check_pretrained(options, network, 2 if kind == "dermoscopy" else 3)


def network_settings(kind: str, options: Mapping[str, Any], network: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a trained model depends on: the backbone and the options it reads, the channels, the classes
    and the input it was trained on (``image_size``; the heart bundle's ``intensity`` and ``ct_window``)."""
    kind = _kind(kind)
    settings = {"backbone": network["backbone"]}
    settings.update({name: network[name] for name in BACKBONES[network["backbone"]].options if name in network})
    settings.update({name: options[name] for name in ("in_channels", "num_classes")})
    settings.update({name: options[name] for name in _INPUT_SETTINGS[kind]})
    return settings


def file_sha1(path: str | os.PathLike | None) -> str | None:
    """The SHA-1 of a file's bytes (hex), or ``None`` for ``None`` or a path that is not a file."""
    if path is None or not os.path.isfile(path):
        return None
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def segmentation_run_settings(
    kind: str,
    options: Mapping[str, Any],
    data: Mapping[str, Any],
    network: Mapping[str, Any],
    semi_supervised: Mapping[str, Any] | None = None,
    unlabeled: Sequence[Mapping[str, Any]] | None = None,
    budget: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The settings that define a training run's outputs, for :class:`~monai_cluster.workflows.RunOutputs`.

    ``train``: the network (:func:`network_settings`), the seed and data (folder, split and subset options, the
    training and validation listings), the loss's crop settings, batch size and learning rate, the start
    (``use_pretrained``, ``partial_transfer``, the pretrained file's SHA-1) and, when given, the checked
    semi-supervised options, one entry each (the method, ``unlabeled_dir``, ``ema_decay``, the consistency and
    copy-paste settings and the ``unlabeled`` listing, see
    :func:`~monai_cluster.workflows.semi_supervised.semi_supervised_settings`), so a resume with another value is
    refused naming it. The dermoscopy bundle's ``datalist``, ``fov_dir``, ``crop_size``, ``pretrained_exclude``,
    scoring steps (``eval_every_steps``, ``eval_last``) and step budget (``budget``: ``max_steps``,
    ``warmup_steps``, ``min_lr_ratio``, ``optimizer_name``, ``weight_decay``) are recorded when not at their
    defaults. Not recorded: epochs, ``val_interval``, workers, AMP, ``resume``.
    """
    from .semi_supervised import semi_supervised_settings  # the semi-supervised module imports the engines

    settings = network_settings(kind, options, network)
    settings.update({name: options[name] for name in _DATA_SETTINGS})
    settings.update({name: options[name] for name in _TRAIN_SETTINGS[_kind(kind)]})
    settings["data"] = {"train": data_fingerprint(data["train"]), "val": data_fingerprint(data["val"])}
    settings["use_pretrained"] = options["use_pretrained"]
    if options["use_pretrained"]:
        settings["partial_transfer"] = options["partial_transfer"]
        settings["pretrained_sha1"] = file_sha1(options["pretrained_path"])
    if semi_supervised is not None:
        settings.update(semi_supervised_settings(semi_supervised, unlabeled))
    for name, default in _DEFAULTED_SETTINGS.get(kind, {}).items():
        value = (budget or {}).get(name, options.get(name, default))
        if value != default:  # recorded when not the default, so that runs from before these options still resume
            settings[name] = value
    return {"train": settings}


def evaluation_run_settings(
    kind: str, options: Mapping[str, Any], network: Mapping[str, Any], checkpoint: str | os.PathLike
) -> dict[str, dict[str, Any]]:
    """The settings of an evaluate or inference run's outputs: the network settings and the checkpoint's SHA-1."""
    return {"evaluate": {**network_settings(kind, options, network), "checkpoint_sha1": file_sha1(checkpoint)}}


def check_trained_network(
    kind: str, options: Mapping[str, Any], network: Mapping[str, Any], checkpoint: str | os.PathLike
) -> dict[str, Any] | None:
    """Refuse to evaluate or run a model trained with other network settings than this run's, naming them.

    The training run's settings are read from ``run_settings.json`` beside ``checkpoint`` (written by the train
    config); without it (a checkpoint from elsewhere) nothing is compared here and the strict load still refuses
    tensors of other shapes.

    Returns:
        the recorded training settings, or ``None`` without a record.

    Raises:
        ValueError: naming each differing setting with the value the model was trained with and this run's.
    """
    folder = Path(checkpoint).parent
    record = read_record(folder / RECORD_NAME)
    if record is None or "train" not in record:
        logger.warning("no %s beside %s: its training settings cannot be compared", RECORD_NAME, checkpoint)
        return None
    trained, wanted = record["train"], network_settings(kind, options, network)
    wanted = as_recorded(wanted)
    problems = [
        f"{name!r}: trained with {trained.get(name)!r}, this run asks for {value!r}"
        for name, value in wanted.items()
        if trained.get(name) != value
    ]
    if problems:
        raise ValueError(
            f"checkpoint {checkpoint} was trained with other network settings ({'; '.join(problems)}); run with the "
            "training's settings, or pass the checkpoint of a model trained with these."
        )
    return trained
