"""The local-discrimination bundle's option checks: each override and its relations, the settings that define a
run, the preflight before anything is written. :mod:`.local_discrimination` re-exports every public name here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_cluster.networks.nets.local_discrimination import ASSIGNMENT_ACTIVATIONS
from monai_cluster.workflows.common import validate_options
from monai_cluster.workflows.run_outputs import data_fingerprint

__all__ = [
    "PRETRAIN_OPTION_SPECS",
    "check_distributed_options",
    "check_local_discrimination_slice_options",
    "local_discrimination_run_settings",
    "preflight_local_discrimination",
    "validate_pretrain_options",
]


PRETRAIN_OPTION_SPECS = {
    "bundle_root": "path",
    "dataset_dir": "path?",
    "data_kind": "choice:fundus|heart|dermoscopy",
    "synthetic_n": "int?>=1",
    "synthetic_size": "ints?>=8",
    "num_val": "int>=0",
    "check_data": "bool",
    "seed": "int>=0",
    "amp": "bool",
    "spatial_dims": "int>=2",
    "in_channels": "int>=1",
    "spatial_size": "ints>=8",
    "crop_size": "ints?>=8",
    "features": "ints>=1",
    "embed_dim": "int>=1",
    "num_clusters": "int>=2",
    "assignment_activation": "choice:" + "|".join(ASSIGNMENT_ACTIVATIONS),
    "epochs": "int>=1",
    "warmup_epochs": "int>=0",
    "val_interval": "int>=1",
    "batch_size": "int>=2",
    "learning_rate": "float>0",
    "patch_weight": "float>=0",
    "mixup_weight": "float>=0",
    "region_weight": "float>=0",
    "entropy_weight": "float>=0",
    "patch_temperature": "float>0",
    "region_temperature": "float>0",
    "grid_size": "ints>=1",
    "shape_prior": "bool",
    "shape_prior_weight": "float>=0",
    "shape_prior_cluster": "int>=0",
    "prior_mask_dir": "path?",
    "num_cluster_maps": "int>=0",
    "resume": "bool",
}
"""What :func:`validate_pretrain_options` expects of each bundle option (specs of
:func:`~monai_cluster.workflows.common.validate_option`)."""

_RUN_SETTINGS = (
    "seed", "dataset_dir", "data_kind", "num_val", "spatial_dims", "in_channels", "spatial_size", "features",
    "embed_dim", "num_clusters", "assignment_activation", "batch_size", "learning_rate", "patch_weight",
    "mixup_weight", "region_weight", "entropy_weight", "patch_temperature", "region_temperature", "grid_size",
    "shape_prior",
)  # fmt: skip
_BUDGET_BEFORE = {
    "max_steps": None, "warmup_steps": 0, "min_lr_ratio": 0.0, "optimizer_name": "Adam", "weight_decay": 0.0,
}  # fmt: skip
"""The step-budget options as the bundle trained before it had them (constant Adam rate, no weight decay)."""


def validate_pretrain_options(**options: Any) -> dict[str, Any]:
    """Check the bundle's options (overrides included) against :data:`PRETRAIN_OPTION_SPECS`, and their relations.

    Only the options given are checked (the bundle gives them all). Beyond each option's own spec, and when the
    options involved are given:

    - ``dataset_dir`` and ``prior_mask_dir`` (with ``shape_prior``) must be existing folders; a 3D shape prior
      needs ``prior_mask_dir`` (the synthetic priors are 2D vessel trees);
    - ``spatial_dims`` is 2 or 3, ``spatial_size``, ``crop_size`` and ``grid_size`` have one value or one per
      spatial axis, ``crop_size`` (the training crop, ``None``: the whole image) does not exceed ``spatial_size``
      and ``grid_size`` not the training size on any axis, ``features`` holds BasicUNet's six sizes;
    - ``shape_prior_cluster`` is one of the ``num_clusters`` clusters;
    - ``warmup_epochs`` leaves at least one epoch with the clustering terms.

    Degenerate settings, under which a term or a part of the network would train nothing, are refused with the
    reason: every loss weight 0; a ``grid_size`` of one patch per image while patch discrimination or mixup is on
    (no local patch to tell apart: it would compare whole images); no term on the clustering head (``region_weight``
    and ``entropy_weight`` 0 without the shape prior: the cluster maps would stay random); a warm-up while
    ``patch_weight`` and ``mixup_weight`` are 0 (the warm-up epochs would train nothing); ``shape_prior`` with a
    ``shape_prior_weight`` of 0 (the prior would never reach the network).

    Returns:
        the checked options, ``spatial_size``, ``crop_size`` and ``grid_size`` as one value per spatial axis when
        ``spatial_dims`` is given.

    Raises:
        TypeError/ValueError: naming the first bad option, e.g. ``option 'epochs' (--epochs) must be an integer
            >= 1, got str 'abc'``.
    """
    specs = {k: v for k, v in PRETRAIN_OPTION_SPECS.items() if k in options}
    unknown = sorted(set(options) - set(PRETRAIN_OPTION_SPECS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known: {sorted(PRETRAIN_OPTION_SPECS)}.")
    checked = validate_options(options, specs)
    dataset_dir = checked.get("dataset_dir")
    if dataset_dir is not None and not Path(dataset_dir).is_dir():
        raise ValueError(f"option 'dataset_dir' (--dataset_dir) must be an existing folder, got {dataset_dir!r}.")
    if "warmup_epochs" in checked and "epochs" in checked and checked["warmup_epochs"] >= checked["epochs"]:
        raise ValueError(
            f"option 'warmup_epochs' (--warmup_epochs) must be below 'epochs' ({checked['epochs']}) so that the "
            f"clustering terms train at all, got {checked['warmup_epochs']}."
        )
    _check_geometry(checked)
    _check_terms(checked)
    return checked


def _per_axis(checked: dict[str, Any], name: str, dims: int) -> None:
    values = checked[name]
    if len(values) not in (1, dims):
        raise ValueError(
            f"option {name!r} (--{name}) must hold one value or one per spatial axis ({dims} for spatial_dims "
            f"{dims}), got {values}."
        )
    checked[name] = list(values) * dims if len(values) == 1 else list(values)


def _check_geometry(checked: dict[str, Any]) -> None:
    """Ranks and sizes: spatial_dims, spatial_size, grid_size, features, the shape prior's cluster and masks."""
    dims = checked.get("spatial_dims")
    if dims is not None and dims not in (2, 3):
        raise ValueError(f"option 'spatial_dims' (--spatial_dims) must be 2 or 3, got {dims}.")
    if dims is not None:
        for name in ("spatial_size", "crop_size", "grid_size"):
            if checked.get(name) is not None:
                _per_axis(checked, name, dims)
        crop = checked.get("crop_size")
        if crop is not None and "spatial_size" in checked and any(c > s for c, s in zip(crop, checked["spatial_size"])):
            raise ValueError(
                f"option 'crop_size' (--crop_size) {crop} must not exceed 'spatial_size' {checked['spatial_size']} "
                "on any axis: the training crops are cut from the image resized to spatial_size."
            )
        size, size_name = (crop, "crop_size") if crop is not None else (checked.get("spatial_size"), "spatial_size")
        if size is not None and "grid_size" in checked:
            if any(g > s for g, s in zip(checked["grid_size"], size)):
                raise ValueError(
                    f"option 'grid_size' (--grid_size) {checked['grid_size']} must not exceed {size_name!r} "
                    f"{size} on any axis: each patch must hold at least one pixel of the embedding map."
                )
    if "features" in checked and len(checked["features"]) != 6:
        raise ValueError(
            f"option 'features' (--features) must hold BasicUNet's six feature sizes, got {checked['features']}."
        )
    if checked.get("shape_prior") and "shape_prior_cluster" in checked and "num_clusters" in checked:
        if checked["shape_prior_cluster"] >= checked["num_clusters"]:
            raise ValueError(
                f"option 'shape_prior_cluster' (--shape_prior_cluster) must be one of the {checked['num_clusters']} "
                f"clusters of 'num_clusters' (0 to {checked['num_clusters'] - 1}), got {checked['shape_prior_cluster']}."
            )
    if checked.get("shape_prior") and checked.get("crop_size") is not None:
        raise ValueError(
            f"option 'crop_size' (--crop_size) {checked['crop_size']} cannot train with 'shape_prior': the prior "
            "masks are shaped like whole images at spatial_size; set crop_size null or shape_prior false."
        )
    if checked.get("shape_prior") and "prior_mask_dir" in checked:
        folder = checked["prior_mask_dir"]
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"option 'prior_mask_dir' (--prior_mask_dir) must be an existing folder, got {folder!r}.")
        if folder is None and dims == 3:
            raise ValueError(
                "option 'prior_mask_dir' (--prior_mask_dir) is needed for a 3D shape prior: the synthetic prior "
                "shapes are 2D vessel trees; give a folder of 3D prior masks or set shape_prior false."
            )


def _check_terms(checked: dict[str, Any]) -> None:
    """Refuse the settings under which a loss term, or the clustering head, would train nothing."""
    weights = {k: checked[f"{k}_weight"] for k in ("patch", "mixup", "region", "entropy") if f"{k}_weight" in checked}
    if len(weights) < 4:
        return
    prior = bool(checked.get("shape_prior")) and checked.get("shape_prior_weight", 1.0) > 0
    if not any(weights.values()) and not prior:
        raise ValueError(
            "options 'patch_weight', 'mixup_weight', 'region_weight' and 'entropy_weight' are all 0 (and no shape "
            "prior): the loss would train nothing; give at least one term a weight > 0."
        )
    local = weights["patch"] > 0 or weights["mixup"] > 0
    if local and "grid_size" in checked and math.prod(checked["grid_size"]) == 1:
        raise ValueError(
            f"option 'grid_size' (--grid_size) {checked['grid_size']} gives one patch per image: patch "
            "discrimination and mixup would compare whole images, with no local patch to tell apart; use a "
            "grid_size of at least 2 on some axis."
        )
    if weights["region"] == 0 and weights["entropy"] == 0 and not prior:
        raise ValueError(
            "options 'region_weight' and 'entropy_weight' are both 0 without the shape prior: no term reaches the "
            "clustering head, so the cluster maps would stay random; give region_weight (10 in the paper) a weight "
            "> 0."
        )
    if not local and checked.get("warmup_epochs", 0) > 0:
        raise ValueError(
            f"option 'warmup_epochs' (--warmup_epochs) is {checked['warmup_epochs']} but 'patch_weight' and "
            "'mixup_weight' are 0: the warm-up trains only those terms, so its epochs would train nothing; set "
            "warmup_epochs 0."
        )
    if checked.get("shape_prior") and checked.get("shape_prior_weight", 1.0) == 0:
        raise ValueError(
            "option 'shape_prior_weight' (--shape_prior_weight) is 0 while 'shape_prior' is true: the "
            "discriminator would train but the prior would never reach the network; give it a weight > 0 or set "
            "shape_prior false."
        )


def _train_size(options: Mapping[str, Any]) -> tuple[list[int], str]:
    """The size the network trains at and the option that sets it: ``crop_size`` when given, else ``spatial_size``."""
    if options.get("crop_size") is not None:
        return list(options["crop_size"]), "crop_size"
    return list(options["spatial_size"]), "spatial_size"


def _probe_embedding_size(options: Mapping[str, Any]) -> tuple[int, ...]:
    """The spatial size of the embedding map at the training size (``crop_size``, else ``spatial_size``), from a
    throwaway network (global RNG untouched)."""
    from monai_cluster.networks import LocalDiscriminationNet

    with torch.random.fork_rng(devices=[]):
        net = LocalDiscriminationNet(
            options["spatial_dims"], options["in_channels"], embed_dim=options["embed_dim"],
            num_clusters=options["num_clusters"], features=options["features"],
            assignment_activation=options["assignment_activation"],
        )  # fmt: skip
        net.eval()
        with torch.no_grad():
            out = net(torch.zeros(1, options["in_channels"], *_train_size(options)[0]))
    return tuple(int(s) for s in out["embedding"].shape[2:])


def preflight_local_discrimination(
    options: Mapping[str, Any],
    data: Mapping[str, Sequence[Mapping]],
    prior_masks: torch.Tensor | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Check, before the run writes anything, what needs the listings or the built network.

    Args:
        options: the checked options (:func:`validate_pretrain_options`, every option given).
        data: the listings (:func:`prepare_pretrain_data`).
        prior_masks: the shape prior's masks (``load_prior_masks``) when ``shape_prior``, else ``None``.
        max_steps: the step budget (the checked ``max_steps``), or ``None`` for a run of ``epochs``.

    Returns:
        ``{"embedding_size": spatial size of the embedding map, "batches": full batches per epoch and process}``.

    Raises:
        ValueError: naming the option: ``batch_size`` above the training images per process (an epoch without a
            full batch; at least 2 images are needed for mixup and for negatives from other images),
            ``grid_size`` above the embedding map's size, prior masks of another rank than ``spatial_dims``,
            ``warmup_epochs`` not below the epochs that ``max_steps`` makes (the clustering terms would never train).
    """
    from monai_cluster.handlers.step_budget import budget_epochs

    from .pretrain_data import check_batch_fits

    batches = check_batch_fits(data["train"], options["batch_size"])
    if max_steps is not None and options["warmup_epochs"] >= budget_epochs(options["epochs"], max_steps, batches):
        raise ValueError(
            f"option 'warmup_epochs' (--warmup_epochs) must be below the {budget_epochs(1, max_steps, batches)} "
            f"epoch(s) of max_steps {max_steps} ({batches} steps per epoch) so that the clustering terms train at "
            f"all, got {options['warmup_epochs']}."
        )
    size = _probe_embedding_size(options)
    train_size, size_name = _train_size(options)
    if any(g > s for g, s in zip(options["grid_size"], size)):
        raise ValueError(
            f"option 'grid_size' (--grid_size) {options['grid_size']} must not exceed the embedding map "
            f"{list(size)} at {size_name} {train_size}."
        )
    if options["shape_prior"] and prior_masks is not None and prior_masks.ndim - 2 != options["spatial_dims"]:
        raise ValueError(
            f"option 'prior_mask_dir' (--prior_mask_dir) gives {prior_masks.ndim - 2}D prior masks, but "
            f"'spatial_dims' is {options['spatial_dims']}."
        )
    return {"embedding_size": list(size), "batches": batches}


def local_discrimination_run_settings(
    options: Mapping[str, Any],
    data: Mapping[str, Sequence[Mapping]],
    budget: Mapping[str, Any] | None = None,
    slice_options: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The settings that define a pretraining run's outputs, for :class:`~monai_cluster.workflows.RunOutputs`.

    Seed, data (folder, kind, the training and monitoring listings), the training crop (``crop_size``, when
    set), network, loss (weights, temperatures, grid,
    the shape prior's weight, cluster and masks when it is on), batch size and learning rate; the step budget and
    optimiser (``max_steps``, ``warmup_steps``, ``min_lr_ratio``, ``optimizer_name``, ``weight_decay``) where they
    differ from the bundle before it had them (a constant Adam rate); with ``train_slices.json`` the slice chain's
    intensity scaling and crop. Not recorded: ``epochs`` and ``warmup_epochs`` (a resume may extend the run; the
    warm-up defaults to a quarter of the epochs), ``val_interval``, ``num_cluster_maps``, AMP, ``resume``.

    Args:
        options: the checked options (:func:`validate_pretrain_options`).
        data: the listings (:func:`prepare_pretrain_data`).
        budget: the checked step-budget options
            (:func:`~monai_cluster.workflows.step_budget.check_step_budget_options`), or ``None``.
        slice_options: the checked options of ``train_slices.json`` (:func:`check_local_discrimination_slice_options`),
            or ``None``.
    """
    settings = {name: options[name] for name in _RUN_SETTINGS}
    if options.get("crop_size") is not None:  # recorded when set, so that runs from before the option still resume
        settings["crop_size"] = options["crop_size"]
    for name, before in _BUDGET_BEFORE.items():  # likewise: recorded when they change the training
        if budget is not None and budget[name] != before:
            settings[name] = budget[name]
    if slice_options is not None:
        settings.update({k: slice_options[k] for k in ("intensity_range", "intensity_percentiles", "crop_fraction")})
    settings["data"] = {"train": data_fingerprint(data["train"]), "val": data_fingerprint(data["val"])}
    if options["shape_prior"]:
        settings.update({name: options[name] for name in ("shape_prior_weight", "shape_prior_cluster", "prior_mask_dir")})
    return {"pretrain": settings}


def check_local_discrimination_slice_options(
    intensity_range: Sequence[float] | None,
    intensity_percentiles: Sequence[float],
    crop_fraction: float | None,
    spatial_dims: int,
    in_channels: int,
    data_kind: str,
    shape_prior: bool,
    prior_mask_dir: str | None,
) -> dict[str, Any]:
    """Check the options ``train_slices.json`` adds or pins: a 2D network on the slices of 3D volumes.

    The slice chain's options (``intensity_range``: ``None`` for the ``intensity_percentiles`` of each volume, or a
    fixed window; ``crop_fraction``: ``None`` or the centred square of each slice, in ``(0, 1]``) and the pinned
    ``spatial_dims`` 2 and ``in_channels`` 1 are checked as the pretraining bundle's slice overlay checks them
    (:func:`~monai_cluster.workflows.check_slice_options`; its partitions and global strategy have no part in
    local discrimination). ``data_kind`` must be ``heart`` (the synthetic volumes), and the shape prior needs
    ``prior_mask_dir`` (the synthetic prior shapes are fundus vessel trees).

    Returns:
        ``{"intensity_range", "intensity_percentiles", "crop_fraction", "data_kind"}`` normalised.

    Raises:
        TypeError/ValueError: naming the option.
    """
    from .pretrain_slices import check_slice_options

    checked = check_slice_options(
        global_strategy="G_R", num_partitions=1, use_pseudo_classes=False, intensity_range=intensity_range,
        intensity_percentiles=intensity_percentiles, crop_fraction=crop_fraction, spatial_dims=spatial_dims,
        in_channels=in_channels,
    )  # fmt: skip
    kind = validate_options({"data_kind": data_kind}, {"data_kind": PRETRAIN_OPTION_SPECS["data_kind"]})["data_kind"]
    if kind != "heart":
        raise ValueError(
            f"option 'data_kind' (--data_kind) must be 'heart' with train_slices.json (the synthetic set is sliced: "
            f"3D heart phantoms), got {kind!r}."
        )
    if validate_options({"shape_prior": shape_prior}, {"shape_prior": "bool"})["shape_prior"] and not prior_mask_dir:
        raise ValueError(
            "option 'prior_mask_dir' (--prior_mask_dir) is needed for the shape prior with train_slices.json: the "
            "synthetic prior shapes are fundus vessel trees; give a folder of 2D masks of the structure, or set "
            "shape_prior false."
        )
    return {**{k: checked[k] for k in ("intensity_range", "intensity_percentiles", "crop_fraction")}, "data_kind": kind}


def check_distributed_options(shape_prior: bool, num_train: int, batch_size: int) -> None:
    """Refuse what the multi-GPU overlay cannot train correctly, before anything is built.

    The shape prior's discriminator has its own optimiser outside ``DistributedDataParallel``, so its weights would
    drift apart between ranks; and every rank needs at least one full batch of its share of the images.

    Raises:
        ValueError: for ``shape_prior=True``, or fewer than ``world_size * batch_size`` training images.
    """
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if shape_prior:
        raise ValueError(
            "option 'shape_prior' (--shape_prior) is not supported by multi_gpu_train.json: the discriminator "
            "would train apart on every rank; pretrain with the shape prior on one GPU (configs/train.json)."
        )
    if num_train < world * batch_size:
        raise ValueError(
            f"multi-GPU pretraining needs at least world_size * batch_size = {world} * {batch_size} training images "
            f"(one batch per rank), got {num_train}; lower --batch_size or use fewer processes."
        )
