"""Stage 3 of cluster-guided contrastive pretraining: pieces a bundle config wires into MONAI's ``SupervisedTrainer``.

- :data:`PRETRAIN_OPTION_SPECS` / :func:`check_pretrain_options`: every option a researcher overrides, checked
  before anything runs.
- :func:`make_recluster_handler`: re-cluster the pretraining network's own features every ``recluster_interval``
  epochs (0 = keep the autoencoder's pseudo-classes).
- :func:`make_pretrain_checkpointer`: a :class:`~monai_cluster.workflows.TrainingCheckpointer` whose checkpoints
  also carry the pseudo-class table in use, restored on resume.
- :class:`~monai_cluster.handlers.PretrainProgress` (re-exported from its former home here): tqdm bar and
  TensorBoard scalars of the total, global and local losses.
- :func:`run_pretrain`: run the trainer and export ``models/model.pt``, the wrapped segmentation network's own
  ``state_dict`` (contract 3), so a fine-tune bundle loads it into a plain MONAI ``BasicUNet`` (or the
  ``SegResNet`` / ``SwinUNETR`` of ``backbone``; ``pretrain_summary.json`` records which).

References:
    - [0] Zhang et al., cluster-guided contrastive learning, BIBM 2022, https://arxiv.org/abs/2211.08557
    - [1] Chaitanya et al., global and local contrastive learning, NeurIPS 2020, https://arxiv.org/abs/2006.10511
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from torch import nn

from monai_cluster.clustering import PseudoClassTable, write_pseudo_class_table
from monai_cluster.handlers import PseudoClassUpdateHandler
from monai_cluster.handlers.pretrain_progress import PretrainProgress
from monai_cluster.networks.backbones import backbone_of, backbone_spec, check_backbone_options
from monai_cluster.transforms import PseudoClassd
from monai_cluster.utils.io import atomic_torch_save, atomic_write_json

from .backbone_options import BACKBONE_OPTION_DEFAULTS, BACKBONE_OPTION_SPECS
from .common import TrainingCheckpointer, is_main_process, validate_options
from .pretrain_data import check_image_size

__all__ = [
    "PRETRAIN_OPTION_DEFAULTS",
    "PRETRAIN_OPTION_SPECS",
    "PretrainProgress",
    "SCHEDULES",
    "check_pretrain_options",
    "make_pretrain_checkpointer",
    "make_recluster_handler",
    "run_pretrain",
    "table_from_extra",
    "table_to_extra",
]

logger = logging.getLogger(__name__)

PRETRAIN_OPTION_SPECS: dict[str, str] = {
    "epochs": "int>=1",
    "autoencoder_epochs": "int>=1",
    "batch_size": "int>=2",
    "image_size": "ints>=16",
    "learning_rate": "float>0",
    "autoencoder_learning_rate": "float>0",
    **BACKBONE_OPTION_SPECS,
    "use_pseudo_classes": "bool",
    "pseudo_class_level": "int",
    "num_clusters": "ints>=2",
    "recluster_interval": "int>=0",
    "temperature": "float>0",
    "global_weight": "float>=0",
    "local_weight": "float>=0",
    "schedule": "choice:joint|staged",
    "local_epochs": "int>=1",
    "crop_scale": "floats>0",
    "crop_size": "ints?>=16",
    "resume": "bool",
    "seed": "int>=0",
    "spatial_dims": "int>=2",
    "in_channels": "int>=1",
    "dataset_dir": "path?",
    "bundle_root": "path",
    "decoder_layer": "str?",
    "local_num_locations": "int>=1",
    "local_region_size": "int>=1",
    "local_learning_rate": "float>0",
    "autoencoder_channels": "ints>=1",
    "autoencoder_strides": "ints?>=1",
    "intensity_range": "floats?",
    "num_workers": "int>=0",
    "gather_distributed": "bool",
}
"""Spec (see :func:`~monai_cluster.workflows.validate_option`) of every option of the pretraining bundle."""

PRETRAIN_OPTION_DEFAULTS: dict[str, Any] = {
    "decoder_layer": None,
    "crop_size": None,
    "local_num_locations": 32,
    "local_region_size": 4,
    "local_learning_rate": 1e-3,
    "autoencoder_channels": [16, 32, 64, 128],
    "autoencoder_strides": None,
    "intensity_range": [0.0, 255.0],
    "num_workers": 0,
    "gather_distributed": False,
}
"""Values of the options :func:`check_pretrain_options` fills in when a caller does not give them (the bundle's)."""


def check_pretrain_options(**options: Any) -> dict[str, Any]:
    """Check the pretraining bundle's options (:data:`PRETRAIN_OPTION_SPECS`) and their combinations.

    The backbone options (``backbone``, ``features``, ``init_filters``, ``feature_size``, ``depths``, see
    :mod:`~monai_cluster.workflows.backbone_options`) default to :data:`BACKBONE_OPTION_DEFAULTS`, the others of
    :data:`PRETRAIN_OPTION_DEFAULTS` to those values, when not given. Everything a later stage would refuse is
    refused here, before the autoencoder stage replaces a previous run's outputs; what needs the images or a
    built network (cluster counts against the images, the dense map's size) is checked by
    :func:`~monai_cluster.workflows.preflight_pretrain`.

    Raises:
        TypeError/ValueError: naming the option, e.g. ``option 'epochs' (--epochs) must be an integer >= 1, got
            str 'abc'``; also when both loss weights are 0, ``backbone`` is not registered, ``features`` is not
            six sizes (``basic_unet``), ``image_size`` is not a multiple of the backbone's size divisor (32 for
            ``swin_unetr``), or
            ``pseudo_class_level`` is not a level of ``num_clusters``, ``num_clusters`` does not increase
            strictly, ``crop_scale`` is not ``[low, high]`` in ``(0, 1]``, ``schedule`` is not
            ``joint``/``staged`` (or ``staged`` without a global loss), ``image_size`` is not a multiple of 16
            with one size or one per spatial axis (returned as one size per axis), ``decoder_layer`` is not one of
            the backbone's decoder blocks, the autoencoder's strides cannot halve ``image_size`` evenly, the local
            loss samples a single location (no negatives), ``recluster_interval`` would never re-cluster, or
            ``intensity_range`` is not ``[low, high]``, or ``crop_size`` (the pretraining crop, ``None``: the whole
            image) is not a multiple of 16 (returned as one size per axis), exceeds ``image_size`` or does not fit
            the backbone.
    """
    checked = validate_options(
        {**BACKBONE_OPTION_DEFAULTS, **PRETRAIN_OPTION_DEFAULTS, **options}, PRETRAIN_OPTION_SPECS
    )
    if checked["spatial_dims"] not in (2, 3):
        raise ValueError(f"option 'spatial_dims' must be 2 or 3, got {checked['spatial_dims']}.")
    checked["image_size"] = check_image_size(checked["image_size"], checked["spatial_dims"])
    if checked["global_weight"] == 0 and checked["local_weight"] == 0:
        raise ValueError("options 'global_weight' and 'local_weight' are both 0; at least one loss must be active.")
    check_backbone_options(
        checked["backbone"], checked["spatial_dims"], checked["features"], checked["init_filters"],
        checked["feature_size"], checked["depths"], size=checked["image_size"], size_option="image_size",
        strict_size=True,
    )  # fmt: skip
    _check_crop_size(checked)
    low_high = checked["crop_scale"]
    if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1] <= 1:
        raise ValueError(f"option 'crop_scale' must be [low, high] with 0 < low <= high <= 1, got {low_high}.")
    if checked["schedule"] == "staged" and checked["local_weight"] > 0 and checked["global_weight"] == 0:
        raise ValueError(
            "option 'schedule' is 'staged' but 'global_weight' is 0: stage 1 (the global loss) would train "
            "nothing; use schedule 'joint' for a local-only pretraining."
        )
    levels = checked["num_clusters"]
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"option 'num_clusters' (--num_clusters) must increase strictly from coarse to fine, got {levels}.")
    if not -len(levels) <= checked["pseudo_class_level"] < len(levels):
        raise ValueError(
            f"option 'pseudo_class_level' must index one of the {len(levels)} levels of num_clusters "
            f"{levels} (0 = coarsest, -1 = finest), got {checked['pseudo_class_level']}."
        )
    _check_decoder_layer(checked)
    _check_autoencoder_layout(checked)
    if checked["local_weight"] > 0 and checked["local_num_locations"] < 2:
        raise ValueError(
            f"option 'local_num_locations' (--local_num_locations) must be at least 2 while 'local_weight' is "
            f"{checked['local_weight']}: each sampled location's negatives are the other locations, so "
            f"{checked['local_num_locations']} location has none and the local loss would train nothing."
        )
    if checked["recluster_interval"] > 0 and not checked["use_pseudo_classes"]:
        raise ValueError(
            f"option 'recluster_interval' (--recluster_interval) is {checked['recluster_interval']} but "
            "'use_pseudo_classes' is false: there are no pseudo-classes to re-cluster; set it to 0."
        )
    if checked["recluster_interval"] > checked["epochs"]:
        raise ValueError(
            f"option 'recluster_interval' (--recluster_interval) is {checked['recluster_interval']}, more than "
            f"'epochs' ({checked['epochs']}): it would never re-cluster; use 0 (never) or at most {checked['epochs']}."
        )
    if checked["intensity_range"] is not None:
        low_high = checked["intensity_range"]
        if len(low_high) != 2 or not low_high[0] < low_high[1]:
            raise ValueError(
                f"option 'intensity_range' (--intensity_range) must be [low, high] with low < high, got {low_high}."
            )
    return checked


def _check_crop_size(checked: dict[str, Any]) -> None:
    """``crop_size``: ``None``, or one size per axis, multiples of 16, within ``image_size``, fit for the backbone."""
    if checked["crop_size"] is None:
        return
    crop = check_image_size(checked["crop_size"], checked["spatial_dims"], name="crop_size")
    if any(c > s for c, s in zip(crop, checked["image_size"])):
        raise ValueError(
            f"option 'crop_size' (--crop_size) {crop} must not exceed 'image_size' {checked['image_size']} on any "
            "axis: the pretraining views are cut from the image resized to image_size."
        )
    check_backbone_options(
        checked["backbone"], checked["spatial_dims"], checked["features"], checked["init_filters"],
        checked["feature_size"], checked["depths"], size=crop, size_option="crop_size", strict_size=True,
    )  # fmt: skip
    checked["crop_size"] = crop


def _check_decoder_layer(checked: Mapping[str, Any]) -> None:
    """``decoder_layer`` must be one of the backbone's decoder blocks (``None``: its full-resolution one)."""
    name = checked["decoder_layer"]
    blocks = backbone_spec(checked["backbone"]).decoder_blocks
    if name is not None and name not in blocks:
        raise ValueError(
            f"option 'decoder_layer' (--decoder_layer) must be null or one of the {checked['backbone']!r} "
            f"backbone's decoder blocks {list(blocks)}, got {name!r}"
            + (
                ": the local loss's map must come from the decoder (with schedule 'staged' an encoder block would "
                "leave the local stage no backbone weight to train)."
                if checked["schedule"] == "staged" else "."
            )
        )


def _check_autoencoder_layout(checked: Mapping[str, Any]) -> None:
    """The autoencoder's strides (one per channel entry) must halve ``image_size`` evenly (as stage 1 requires)."""
    channels, strides = checked["autoencoder_channels"], checked["autoencoder_strides"]
    if strides is not None and len(strides) != len(channels):
        raise ValueError(
            f"option 'autoencoder_strides' (--autoencoder_strides) must have one entry per 'autoencoder_channels' "
            f"entry ({len(channels)}: {channels}), or be null to halve once per block, got {strides}."
        )
    factor = math.prod(strides) if strides is not None else 2 ** len(channels)
    if any(size % factor for size in checked["image_size"]):
        raise ValueError(
            f"option 'image_size' {checked['image_size']} must be divisible by the product of the autoencoder "
            f"strides ({factor}: 'autoencoder_strides' {strides}, 'autoencoder_channels' {channels}); use fewer "
            "autoencoder_channels, smaller autoencoder_strides or another image_size."
        )


def table_to_extra(table: PseudoClassTable | None) -> dict | None:
    """A pseudo-class table as plain values (keys, labels, num_clusters, feature_model) for a checkpoint."""
    if table is None:
        return None
    return {
        "keys": list(table.keys),
        "labels": table.labels.tolist(),
        "num_clusters": list(table.num_clusters),
        "feature_model": table.feature_model,
    }


def table_from_extra(extra: Mapping[str, Any]) -> PseudoClassTable:
    """Inverse of :func:`table_to_extra` (the table is validated again)."""
    return PseudoClassTable(
        list(extra["keys"]),
        np.asarray(extra["labels"], dtype=np.int64),
        tuple(extra["num_clusters"]),
        str(extra["feature_model"]),
    )


def make_recluster_handler(
    recluster_interval: int,
    network: nn.Module,
    items: Sequence[dict],
    num_clusters: Sequence[int],
    table_path: str | os.PathLike,
    pseudo_class_transform: PseudoClassd | None,
    feature_transform: Callable | None,
    seed: int = 0,
    batch_size: int = 16,
) -> PseudoClassUpdateHandler:
    """Re-cluster the features of ``network`` (``forward_features``) every ``recluster_interval`` epochs.

    Off (interval 0) when ``recluster_interval`` is 0 or pseudo-classes are not used (no transform).
    Pass the unwrapped network (``network_def``), not a ``DistributedDataParallel`` wrapper.
    """
    interval = recluster_interval if pseudo_class_transform is not None else 0
    return PseudoClassUpdateHandler(
        interval=interval,
        feature_network=network,
        data=list(items),
        num_clusters=tuple(num_clusters),
        table_path=table_path,
        transforms=() if pseudo_class_transform is None else (pseudo_class_transform,),
        feature_transform=feature_transform,
        seed=seed,
        batch_size=batch_size,
    )


def make_pretrain_checkpointer(
    checkpoint_dir: str | os.PathLike,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any = None,
    resume: bool = False,
    pseudo_class_transform: PseudoClassd | None = None,
    recluster_handler: PseudoClassUpdateHandler | None = None,
    table_path: str | os.PathLike | None = None,
    n_saved: int = 2,
    random_objects: Sequence[Any] | None = None,
) -> TrainingCheckpointer:
    """Checkpoint network, optimizer, scheduler, epoch, iteration and the pseudo-class table every epoch.

    The checkpoint's ``extra`` is ``{"pseudo_class_table": table_to_extra(...) or None, "pseudo_class_table_path":
    str or None}``. On resume, the saved table is put back into ``pseudo_class_transform`` and the re-clustering
    handler and rewritten to ``table_path``, so a run that re-clustered after its last checkpoint continues with
    the pseudo-classes of that checkpoint. ``random_objects`` (the training dataset with its random transforms,
    the batch preparer) have their random states saved and restored with the global ones, so a resumed run makes
    the draws of an uninterrupted run.
    """
    objects: dict[str, Any] = {"network": network, "optimizer": optimizer}
    if lr_scheduler is not None:
        objects["lr_scheduler"] = lr_scheduler

    def extra() -> dict:
        table = None if pseudo_class_transform is None else pseudo_class_transform.table
        return {
            "pseudo_class_table": table_to_extra(table),
            "pseudo_class_table_path": None if table_path is None else str(table_path),
        }

    def restore(saved: dict) -> None:
        data = saved.get("pseudo_class_table")
        if data is None or pseudo_class_transform is None:
            return
        table = table_from_extra(data)
        pseudo_class_transform.set_table(table)
        if recluster_handler is not None:
            recluster_handler.table = table
        if table_path is not None and is_main_process():
            write_pseudo_class_table(table, table_path)
        logger.info("resume: pseudo-classes restored from the checkpoint (%d rows)", len(table))

    return TrainingCheckpointer(
        checkpoint_dir, objects, resume=resume, n_saved=n_saved, extra_fn=extra, on_resume=restore,
        random_objects=random_objects,
    )  # fmt: skip


SCHEDULES = ("joint", "staged")
"""Pretraining schedules: one stage with both losses, or Chaitanya et al.'s global stage then local stage."""


def _epoch_length_or_raise(trainer: Engine, name: str) -> None:
    if not trainer.state.epoch_length:
        raise ValueError(
            f"option 'batch_size' is larger than the number of unlabeled images per process, so an epoch of the "
            f"{name} has no batch (the last incomplete batch is dropped); lower batch_size or add images."
        )


def _uses_local_loss(trainer: Engine) -> bool:
    return bool(getattr(getattr(trainer, "loss_function", None), "use_local", False))


def run_pretrain(
    trainer: Engine,
    network: nn.Module,
    output_path: str | os.PathLike,
    summary_path: str | os.PathLike | None = None,
    progress: PretrainProgress | None = None,
    local_trainer: Engine | None = None,
    local_progress: PretrainProgress | None = None,
) -> Path:
    """Run the pretraining schedule, then save the segmentation network's own ``state_dict`` atomically (rank 0).

    ``schedule: joint`` (no ``local_trainer``): ``trainer`` runs the global and local losses together on views of
    different geometry (the local loss matches locations through the recorded crops).

    ``schedule: staged`` (Chaitanya et al.): ``trainer`` runs the global loss alone with the network in
    encoder-only mode (the decoder is not computed), then ``local_trainer`` runs the local loss on intensity-only
    views with the encoder frozen (``requires_grad=False`` on :meth:`ContrastivePretrainNet.encoder_parameters`,
    restored afterwards); its optimizer should hold :meth:`ContrastivePretrainNet.decoder_parameters`. Each stage
    checkpoints on its own, so ``--resume true`` after a kill in stage 2 skips the finished stage 1.

    Args:
        trainer: MONAI ``SupervisedTrainer`` (``MultiViewPrepareBatch``, ``decollate=False``): the joint run or
            stage 1.
        network: the :class:`~monai_cluster.networks.ContrastivePretrainNet` (or its DDP wrapper); its
            ``backbone_state_dict()`` is saved.
        output_path: ``models/model.pt``.
        summary_path: optional JSON with the backbone (its registry name, e.g. ``"basic_unet"``, which the
            fine-tune bundles check a ``pretrained_path`` against), epochs, iterations, seconds and per-epoch
            losses (per stage).
        progress: the :class:`PretrainProgress` attached to ``trainer``, for the summary's loss history.
        local_trainer: stage 2 of the staged schedule, or None for the joint schedule.
        local_progress: the :class:`PretrainProgress` attached to ``local_trainer``.

    Raises:
        ValueError: when an epoch would have no iteration (``batch_size`` larger than the images per process), or
            in the staged schedule when stage 1's loss has a local term or stage 2's has none.
    """
    _epoch_length_or_raise(trainer, "pretraining")
    module = getattr(network, "module", network)
    if not callable(getattr(module, "backbone_state_dict", None)):
        raise TypeError(f"network must be a ContrastivePretrainNet (backbone_state_dict), got {type(module).__name__}.")
    stages = {}
    start = time.perf_counter()
    if local_trainer is None:
        trainer.run()
    else:
        _epoch_length_or_raise(local_trainer, "local stage")
        if _uses_local_loss(trainer) or not _uses_local_loss(local_trainer):
            raise ValueError(
                "schedule 'staged' needs a global-only loss in stage 1 and a local loss in stage 2 "
                f"(stage 1 local: {_uses_local_loss(trainer)}, stage 2 local: {_uses_local_loss(local_trainer)})."
            )
        previous = module.encoder_only
        module.encoder_only = True
        try:
            trainer.run()
        finally:
            module.encoder_only = previous
        stages["global"] = {"epochs": trainer.state.epoch, "seconds": round(time.perf_counter() - start, 2)}
        encoder = module.encoder_parameters()
        flags = [p.requires_grad for p in encoder]
        for p in encoder:
            p.requires_grad_(False)
        t_local = time.perf_counter()
        try:
            local_trainer.run()
        finally:
            for p, flag in zip(encoder, flags):
                p.requires_grad_(flag)
        stages["local"] = {"epochs": local_trainer.state.epoch, "seconds": round(time.perf_counter() - t_local, 2)}
    seconds = time.perf_counter() - start
    if is_main_process():
        atomic_torch_save(module.backbone_state_dict(), output_path)
        logger.info(
            "pretrained %s weights saved to %s (epoch %d, %.1f s)",
            type(module.backbone).__name__, output_path, trainer.state.epoch, seconds,
        )
        if summary_path is not None:
            summary = {
                "backbone": backbone_of(module.backbone) or type(module.backbone).__name__,
                "schedule": "joint" if local_trainer is None else "staged",
                "epochs": trainer.state.epoch,
                "iterations": trainer.state.iteration,
                "seconds_this_run": round(seconds, 2),
                "model": str(output_path),
                "losses": [] if progress is None else progress.history,
            }
            if local_trainer is not None:
                summary.update(
                    stages=stages,
                    local_epochs=local_trainer.state.epoch,
                    local_losses=[] if local_progress is None else local_progress.history,
                )
            atomic_write_json(summary, summary_path)
    return Path(output_path)
