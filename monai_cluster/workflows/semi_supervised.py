"""Semi-supervised fine-tuning in the segmentation bundles: the ``semi_supervised`` option and what it builds.

``bundles/dermoscopy_segmentation`` and ``bundles/heart_ct_segmentation`` take ``semi_supervised: none |
mean_teacher | copy_paste`` (default ``none``: MONAI's ``SupervisedTrainer`` on the labelled images, as before).
With a method, their ``train.json`` builds from these functions:

- :func:`check_semi_supervised_options`: every semi-supervised option checked up front (``initialize``);
- :func:`unlabeled_items`: the unlabelled images, from ``unlabeled_dir`` or, by default, the pool's images that the
  few-label selection (``label_fraction`` / ``num_labeled``) left without a label; validation images never;
- :func:`unlabeled_transforms`: their weak view (the labelled chain's geometry, without labels);
- :func:`with_teacher`: the checkpointer's objects plus the EMA teacher, so a resume restores it;
- :func:`semi_supervised_settings`: what the run record (``run_settings.json``) keeps of them, so a resume with
  other values is refused naming both;
- :func:`segmentation_trainer`: ``SupervisedTrainer`` for ``none``, else
  :class:`~monai_cluster.engines.SemiSupervisedTrainer` with the unlabelled loader and the EMA teacher.

``use_pretrained`` combines with either method: the teacher is a copy of the network after the pretrained weights
are loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.engines import SupervisedTrainer
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropSamplesd,
    SpatialPadd,
)

from monai_cluster.engines.semi_supervised import SemiSupervisedTrainer
from monai_cluster.utils.validation import check_choice

from .common import list_unlabeled, validate_options
from .run_outputs import data_fingerprint
from .segmentation_transforms import dermoscopy_transforms, heart_transforms

__all__ = [
    "SEMI_SUPERVISED_CHOICES",
    "check_semi_supervised_options",
    "segmentation_trainer",
    "semi_supervised_settings",
    "unlabeled_items",
    "unlabeled_transforms",
    "with_teacher",
]

logger = logging.getLogger(__name__)

SEMI_SUPERVISED_CHOICES = ("none", "mean_teacher", "copy_paste")
"""Values of the bundles' ``semi_supervised`` option."""

_RECORDED_WHEN_ON = ("consistency_cutmix",)

_SPECS = {
    "semi_supervised": "choice:" + "|".join(SEMI_SUPERVISED_CHOICES),
    "unlabeled_dir": "path?",
    "ema_decay": "float>=0",
    "consistency_threshold": "float>=0",
    "consistency_weight": "float>=0",
    "consistency_rampup": "int>=0",
    "copy_paste_fraction": "float>0",
    "seed": "int>=0",
    "consistency_cutmix": "bool",
}


def check_semi_supervised_options(
    semi_supervised: str = "none",
    unlabeled_dir: str | os.PathLike | None = None,
    ema_decay: float = 0.99,
    consistency_threshold: float = 0.95,
    consistency_weight: float = 1.0,
    consistency_rampup: int = 0,
    copy_paste_fraction: float = 2.0 / 3.0,
    seed: int = 0,
    consistency_cutmix: bool = False,
) -> dict[str, Any]:
    """Check the semi-supervised options of a segmentation bundle before anything is built.

    Args:
        semi_supervised: ``"none"``, ``"mean_teacher"`` or ``"copy_paste"``.
        unlabeled_dir: folder of unlabelled images, or ``None`` for the pool's images without a label.
        ema_decay: EMA decay of the teacher, in ``[0, 1]``.
        consistency_threshold: confidence threshold of the pseudo-labels, in ``[0, 1]`` (``mean_teacher``).
        consistency_weight: weight of the consistency term, >= 0 (``mean_teacher``).
        consistency_rampup: iterations of its sigmoid ramp-up, >= 0 (``mean_teacher``).
        copy_paste_fraction: box side as a fraction of each image side, in ``(0, 1]`` (``copy_paste``, and the
            CutMix box of ``consistency_cutmix``).
        seed: the run's seed (strong views and boxes are drawn from it).
        consistency_cutmix: ``mean_teacher``: CutMix the student's strong views in pairs and the teacher's
            probabilities with the same box (UniMatch's strong view); ``False``: intensity perturbation alone.

    Returns:
        the options, normalised, under the names above.

    Raises:
        TypeError/ValueError: naming the option (``--semi_supervised``, ``--ema_decay``, ...) and what was expected;
            ``unlabeled_dir`` must be an existing folder.
    """
    options = validate_options(
        {
            "semi_supervised": semi_supervised,
            "unlabeled_dir": unlabeled_dir,
            "ema_decay": ema_decay,
            "consistency_threshold": consistency_threshold,
            "consistency_weight": consistency_weight,
            "consistency_rampup": consistency_rampup,
            "copy_paste_fraction": copy_paste_fraction,
            "seed": seed,
            "consistency_cutmix": consistency_cutmix,
        },
        _SPECS,
    )
    for name in ("ema_decay", "consistency_threshold", "copy_paste_fraction"):
        if options[name] > 1:
            raise ValueError(f"option {name!r} (--{name}) must lie in [0, 1], got {options[name]!r}.")
    folder = options["unlabeled_dir"]
    if folder is not None and not Path(folder).is_dir():
        raise ValueError(f"option 'unlabeled_dir' (--unlabeled_dir) must be an existing folder, got {folder!r}.")
    if folder is not None and options["semi_supervised"] == "none":
        logger.warning("unlabeled_dir %s is ignored: semi_supervised is 'none'", folder)
    if options["consistency_cutmix"] and options["semi_supervised"] != "mean_teacher":
        logger.warning("consistency_cutmix is ignored: it mixes mean_teacher's strong views, semi_supervised is %r",
                       options["semi_supervised"])  # fmt: skip
    return options


def unlabeled_items(
    semi_supervised: str,
    unlabeled_dir: str | os.PathLike | None,
    data: Mapping[str, Sequence[dict]],
    kind: str,
    channels: int,
) -> list[dict]:
    """The unlabelled images a semi-supervised run trains on, as ``{"image", "key"}``; ``[]`` for ``"none"``.

    Args:
        semi_supervised: the method (``"none"`` lists nothing).
        unlabeled_dir: a folder searched recursively for images (mask folders skipped, see
            :func:`~monai_cluster.workflows.list_unlabeled`), or ``None``: the training pool's images that the
            few-label selection left without a label (``data["all"]`` minus ``data["train"]`` and ``data["val"]``).
        data: the bundle's splits (:func:`~monai_cluster.workflows.segmentation_data.segmentation_splits`).
        kind: ``"dermoscopy"`` (2D) or ``"heart"`` (3D).
        channels: image channels, checked for every image of ``unlabeled_dir``.

    Validation images are never used as unlabelled images, also when ``unlabeled_dir`` holds them.

    Raises:
        ValueError: when no unlabelled image is left (every training image labelled and no ``unlabeled_dir``), or an
            image of ``unlabeled_dir`` is unreadable or has the wrong channels or rank (named).
    """
    semi_supervised = check_choice(semi_supervised, "semi_supervised", SEMI_SUPERVISED_CHOICES)
    kind = check_choice(kind, "kind", ["dermoscopy", "heart"])
    if semi_supervised == "none":
        return []
    for split in ("all", "train", "val"):
        if split not in data:
            raise ValueError(f"data must hold the bundle's splits 'all', 'train' and 'val', it has {sorted(data)}.")
    held = {os.path.abspath(item["image"]) for split in ("train", "val") for item in data[split]}
    if unlabeled_dir is None or str(unlabeled_dir) == "":
        pool = [{"image": item["image"], "key": item["key"]} for item in data["all"]]
        source = "the training images left without a label"
    else:
        spatial_dims = 2 if kind == "dermoscopy" else 3
        pool = list_unlabeled(unlabeled_dir, ".", check=True, channels=channels, spatial_dims=spatial_dims)
        source = f"unlabeled_dir {os.path.abspath(unlabeled_dir)}"
    items = [item for item in pool if os.path.abspath(item["image"]) not in held]
    if not items:
        raise ValueError(
            f"semi_supervised={semi_supervised!r} needs unlabelled images, but {source} hold none "
            f"({len(data['train'])} labelled, {len(data['val'])} validation images): lower --label_fraction or "
            "--num_labeled, or give --unlabeled_dir."
        )
    logger.info("%s: %d unlabelled images from %s", semi_supervised, len(items), source)
    return items


def unlabeled_transforms(
    kind: str,
    size: int | Sequence[int],
    num_classes: int = 8,
    intensity: str = "ct",
    ct_window: Sequence[float] = (-300.0, 500.0),
    num_samples: int = 2,
) -> Compose:
    """The weak view of the unlabelled images: the labelled chain's loading and geometry, without a label.

    Args:
        kind: ``"dermoscopy"``: the validation chain of
            :func:`~monai_cluster.workflows.segmentation_transforms.dermoscopy_transforms` (``size`` the
            ``image_size``), then random flips and 90-degree rotations; ``"heart"``: the validation chain of
            :func:`~monai_cluster.workflows.segmentation_transforms.heart_transforms` (``size`` the ``roi_size``),
            padded to ``size`` and ``num_samples`` random crops of ``size``.
        size: image size (2D) or crop size (3D).
        num_classes, intensity, ct_window, num_samples: as for ``heart_transforms``.

    Returns:
        a ``Compose`` mapping ``{"image": path}`` to ``image`` ``(C, *size)`` float (a list of ``num_samples``
        such dicts for ``"heart"``). Its steps form one flat list, the deterministic ones first, so a
        ``CacheDataset`` caches the loaded and scaled image (a nested ``Compose`` counts as random to it).
    """
    kind = check_choice(kind, "kind", ["dermoscopy", "heart"])
    if kind == "dermoscopy":
        return Compose(
            [
                *dermoscopy_transforms("val", size).transforms,
                RandFlipd("image", prob=0.5, spatial_axis=0),
                RandFlipd("image", prob=0.5, spatial_axis=1),
                RandRotate90d("image", prob=0.5, max_k=3),
            ]
        )
    roi = [size] * 3 if isinstance(size, int) else list(size)
    return Compose(
        [
            *heart_transforms("val", roi, num_classes, intensity, ct_window).transforms,
            SpatialPadd("image", spatial_size=roi),
            RandSpatialCropSamplesd("image", roi_size=roi, num_samples=num_samples, random_size=False),
            EnsureTyped("image", track_meta=False),
        ]
    )


def semi_supervised_settings(
    options: Mapping[str, Any], unlabeled: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The run record's entries for the semi-supervised options (:class:`~monai_cluster.workflows.RunOutputs`).

    Args:
        options: the result of :func:`check_semi_supervised_options`.
        unlabeled: the unlabelled listing the run trains on (``{"key", ...}`` items), or ``None``.

    Returns:
        ``{"semi_supervised": "none"}`` without a method (its other options change nothing); else the method,
        ``unlabeled_dir``, ``ema_decay``, ``consistency_threshold``, ``consistency_weight``, ``consistency_rampup``,
        ``copy_paste_fraction``, ``consistency_cutmix: True`` when it is on (absent when off, so runs started before
        the option existed still resume) and, given ``unlabeled``, ``unlabeled_data`` (its count and keys' SHA-1).
        The seed is recorded by the bundle itself.

    Raises:
        ValueError: when ``options`` lacks one of those names.
    """
    if not isinstance(options, Mapping) or "semi_supervised" not in options:
        raise ValueError(f"options must be check_semi_supervised_options' result, got {options!r}.")
    if options["semi_supervised"] == "none":
        return {"semi_supervised": "none"}
    missing = [name for name in _SPECS if name not in ("seed", *_RECORDED_WHEN_ON) and name not in options]
    if missing:
        raise ValueError(f"options lack the semi-supervised settings {missing}.")
    settings = {name: options[name] for name in _SPECS if name != "seed" and name not in _RECORDED_WHEN_ON}
    # options added later enter the settings only when on, so runs started before them still resume
    settings.update({name: True for name in _RECORDED_WHEN_ON if options.get(name)})
    if settings["unlabeled_dir"] is not None:
        settings["unlabeled_dir"] = os.path.abspath(settings["unlabeled_dir"])
    if unlabeled is not None:
        settings["unlabeled_data"] = data_fingerprint(unlabeled)
    return settings


def with_teacher(objects: Mapping[str, Any], teacher: Any | None) -> dict[str, Any]:
    """``objects`` plus ``{"teacher": teacher}`` when there is one (the checkpointer's objects)."""
    if not isinstance(objects, Mapping):
        raise TypeError(f"objects must be a dict, got {type(objects).__name__}.")
    out = dict(objects)
    if teacher is not None:
        if "teacher" in out:
            raise ValueError("objects already hold a 'teacher' entry.")
        out["teacher"] = teacher
    return out


def segmentation_trainer(
    semi_supervised: str = "none",
    unlabeled_data_loader: Any = None,
    teacher: Any = None,
    semi_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> SupervisedTrainer:
    """The bundles' trainer: ``SupervisedTrainer(**kwargs)`` for ``"none"``, else a ``SemiSupervisedTrainer``.

    Args:
        semi_supervised: ``"none"``, ``"mean_teacher"`` or ``"copy_paste"``.
        unlabeled_data_loader: the unlabelled loader (a method needs one).
        teacher: the :class:`~monai_cluster.handlers.EMATeacherHandler` (the one the checkpointer saves), or
            ``None`` to build one here.
        semi_options: the result of :func:`check_semi_supervised_options` (``ema_decay``,
            ``consistency_threshold``, ``consistency_weight``, ``consistency_rampup``, ``copy_paste_fraction``,
            ``seed``); ``None`` uses the defaults.
        kwargs: ``SupervisedTrainer``'s arguments (``device``, ``max_epochs``, ``train_data_loader``, ...).

    Raises:
        ValueError: for an unknown method, or a method without an unlabelled loader.
    """
    semi_supervised = check_choice(semi_supervised, "semi_supervised", SEMI_SUPERVISED_CHOICES)
    if semi_supervised == "none":
        return SupervisedTrainer(**kwargs)
    if unlabeled_data_loader is None:
        raise ValueError(f"semi_supervised={semi_supervised!r} needs an unlabeled_data_loader, got None.")
    given = {k: v for k, v in (semi_options or {}).items() if k != "semi_supervised"}
    opts = check_semi_supervised_options(semi_supervised, **given)
    return SemiSupervisedTrainer(
        unlabeled_data_loader=unlabeled_data_loader,
        method=semi_supervised,
        teacher=teacher,
        ema_decay=opts["ema_decay"],
        threshold=opts["consistency_threshold"],
        consistency_weight=opts["consistency_weight"],
        rampup_length=opts["consistency_rampup"],
        copy_paste_fraction=opts["copy_paste_fraction"],
        strong_mix=opts["consistency_cutmix"],
        seed=opts["seed"],
        **kwargs,
    )
