"""Semi-supervised fine-tuning on the slices of volumes: the unlabelled slices of the heart ``train_slices.json``.

The slices overlay takes the ``semi_supervised`` options of ``train.json`` (``none | mean_teacher | copy_paste``,
``unlabeled_dir``, ``ema_decay``, ``consistency_*``, ``copy_paste_fraction``; checked by
:func:`~monai_cluster.workflows.semi_supervised.check_semi_supervised_options` in the overlay's ``initialize``) and
trains with the same trainer (:func:`~monai_cluster.workflows.semi_supervised.segmentation_trainer`). What differs
is the data layout, provided here:

- :func:`unlabeled_slice_items`: the unlabelled slices. By default every slice of the pool patients that the
  patient-level selection left without a label (the pool minus the labeled patients; the held-out patients are not
  in the pool); with ``unlabeled_dir``, every volume found there, sliced the same way, less the labeled and
  held-out volumes and any volume of a held-out patient.

Their weak view is :func:`~monai_cluster.workflows.segmentation_slices.slice_segmentation_transforms` in mode
``"unlabeled"``: the labelled slices' deterministic chain (same intensity scaling, crop and grid) with random flips.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from monai_cluster.data.patients import patient_id
from monai_cluster.utils.validation import check_choice

from .common import list_unlabeled
from .pretrain_slices import list_volume_slices
from .semi_supervised import SEMI_SUPERVISED_CHOICES

__all__ = ["unlabeled_slice_items"]

logger = logging.getLogger(__name__)


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def unlabeled_slice_items(
    semi_supervised: str,
    unlabeled_dir: str | os.PathLike | None,
    data: Mapping[str, Any],
) -> list[dict]:
    """The unlabelled slices a semi-supervised slice run trains on; ``[]`` for ``"none"``.

    Args:
        semi_supervised: the method (``"none"`` lists nothing).
        unlabeled_dir: a folder searched recursively for 3D volumes (mask folders such as ``labels/`` skipped, see
            :func:`~monai_cluster.workflows.list_unlabeled`; every volume is read and must have one channel), or
            ``None``: the volumes of ``data["selection"]["pool"]`` minus ``["labeled"]``.
        data: :func:`~monai_cluster.workflows.segmentation_slices.slice_segmentation_splits`'s output (its
            ``all_volumes`` carry each volume's ``patient``; its ``selection`` names the ``val``, ``pool`` and
            ``labeled`` patients).

    Returns:
        one item per slice, ``{"image", "key": "<volume key>#sNN", "volume_key", "slice", "num_slices",
        "patient", ...}`` without a label, volume by volume. A volume of ``unlabeled_dir`` is left out when its file
        (links resolved) is a labeled or held-out volume, or when its patient
        (:func:`~monai_cluster.data.patients.patient_id`) is a held-out patient, so no held-out patient's slice is
        ever trained on.

    Raises:
        ValueError: when ``data`` lacks the splits, or no unlabelled volume is left (every pool patient labeled and
            no ``unlabeled_dir``), or a file of ``unlabeled_dir`` is unreadable or not a one-channel 3D volume
            (named).
    """
    semi_supervised = check_choice(semi_supervised, "semi_supervised", SEMI_SUPERVISED_CHOICES)
    if semi_supervised == "none":
        return []
    if not isinstance(data, Mapping) or "all_volumes" not in data or "selection" not in data:
        have = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"data must be slice_segmentation_splits' output with 'all_volumes' and 'selection', got {have}.")
    selection = data["selection"]
    held_out, labeled = set(selection["val"]), set(selection["labeled"])
    if unlabeled_dir is None or str(unlabeled_dir) == "":
        unlabeled_patients = set(selection["pool"]) - labeled
        volumes = [
            {"image": item["image"], "key": item["key"], "patient": item["patient"]}
            for item in data["all_volumes"]
            if item["patient"] in unlabeled_patients
        ]
        source = "the pool patients left without a label"
    else:
        taken = {_real(item["image"]) for item in data["all_volumes"] if item["patient"] in held_out | labeled}
        found = list_unlabeled(unlabeled_dir, ".", kind="heart", check=True, channels=1, spatial_dims=3)
        volumes = [
            {"image": item["image"], "key": item["key"], "patient": patient_id(item["image"])}
            for item in found
            if _real(item["image"]) not in taken and patient_id(item["image"]) not in held_out
        ]
        source = f"unlabeled_dir {os.path.abspath(unlabeled_dir)}"
    if not volumes:
        raise ValueError(
            f"semi_supervised={semi_supervised!r} needs unlabelled slices, but {source} hold none ({len(labeled)} "
            f"labeled, {len(held_out)} held-out patients): lower --num_labeled or --label_fraction, or give "
            "--unlabeled_dir."
        )
    items = list_volume_slices(volumes, num_partitions=1)
    logger.info(
        "%s: %d unlabelled slices of %d volumes (%d patients) from %s", semi_supervised, len(items), len(volumes),
        len({v["patient"] for v in volumes}), source,
    )  # fmt: skip
    return items
