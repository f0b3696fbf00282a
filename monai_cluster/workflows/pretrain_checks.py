"""Pre-flight of every stage of cluster-guided contrastive pretraining, and the settings that define its outputs.

:func:`check_pretrain_options` checks the options alone; :func:`preflight_pretrain` checks, before the first stage
writes anything, what needs the images or the built network: the finest cluster count against the number of
images, the slice partitions against the global strategy, the size of the dense map under ``decoder_layer``
against ``local_region_size``, and that the local stage of the ``staged`` schedule has backbone weights to train.
:func:`pretrain_run_settings` gives each stage's defining settings for
:class:`~monai_cluster.workflows.RunOutputs` (resume refuses another run's outputs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from monai_cluster.networks.nets.contrastive_pretrain import build_pretrain_net

from .run_outputs import data_fingerprint

__all__ = ["preflight_pretrain", "pretrain_run_settings"]

_PARTITIONED = ("G_D", "G_D-")


def _train_size(options: Mapping[str, Any]) -> tuple[list[int], str]:
    """The size the pretraining views have and the option that sets it: ``crop_size`` when set, else ``image_size``."""
    if options.get("crop_size") is not None:
        return list(options["crop_size"]), "crop_size"
    return list(options["image_size"]), "image_size"


def _probe_network(options: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    """Build a throwaway pretraining network (the global random state untouched) and return the dense map's
    spatial size at the views' size (``crop_size``, else ``image_size``) and the number of backbone tensors the local stage would train."""
    with torch.random.fork_rng(devices=[]):
        net = build_pretrain_net(
            options["backbone"], options["spatial_dims"], options["in_channels"], 2, features=options["features"],
            init_filters=options["init_filters"], feature_size=options["feature_size"], depths=options["depths"],
            decoder_layer=options["decoder_layer"], global_dim=128, dense_dim=64,
        )  # fmt: skip
        net.eval()
        with torch.no_grad():
            dense = net(torch.zeros(1, options["in_channels"], *_train_size(options)[0]))["dense"]
        head = {id(p) for p in net.dense_head.parameters()}
        trained = [p for p in net.decoder_parameters() if id(p) not in head]
    return tuple(int(s) for s in dense.shape[2:]), len(trained)


def preflight_pretrain(
    options: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    cluster_stage: bool = True,
    slice_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check, before any stage writes, what the stages would refuse or silently not train.

    Args:
        options: the checked options (:func:`~monai_cluster.workflows.check_pretrain_options`).
        items: the unlabeled items the stages train on (``{"image", "key"}``; slices also ``"partition"``).
        cluster_stage: the run clusters the images (stage 2): the finest ``num_clusters`` must not exceed them.
        slice_options: the checked options of ``train_slices.json``
            (:func:`~monai_cluster.workflows.check_slice_options`), or ``None``.

    Returns:
        ``{"dense_size": spatial size of the local loss's map, "local_tensors": backbone tensors the staged local
        stage trains}``.

    Raises:
        ValueError: naming the option: ``num_clusters`` finer than the images, ``num_partitions`` that leaves a
            partition-aware global loss without negatives, ``local_region_size`` larger than the dense map or
            leaving fewer than 2 regions (no negatives), or a ``decoder_layer`` that leaves the staged local stage
            no backbone weight to train.
    """
    if cluster_stage and options["num_clusters"][-1] > len(items):
        raise ValueError(
            f"option 'num_clusters' (--num_clusters) asks for {options['num_clusters'][-1]} clusters at the finest "
            f"level, but there are only {len(items)} images; use fewer clusters or more images."
        )
    if slice_options is not None and slice_options["global_strategy"] in _PARTITIONED and options["global_weight"] > 0:
        found = {it.get("partition") for it in items}
        if len(found) < 2:
            raise ValueError(
                f"option 'num_partitions' (--num_partitions) gives the slices {len(found)} partition(s): with "
                f"global_strategy {slice_options['global_strategy']!r} only slices of other partitions are "
                "negatives, so the global loss would have none; use num_partitions >= 2 (and volumes with at least "
                "as many slices) or global_strategy 'G_R'."
            )
    dense_size, local_tensors = _probe_network(options)
    if options["local_weight"] > 0:
        region = options["local_region_size"]
        regions = math.prod(s // region for s in dense_size)
        if min(dense_size) < region or regions < 2:
            raise ValueError(
                f"option 'local_region_size' (--local_region_size) is {region}, but the local loss's map under "
                f"decoder_layer {options['decoder_layer'] or 'default'} is {list(dense_size)} at "
                f"{_train_size(options)[1]} {_train_size(options)[0]}: it must hold at least 2 regions (each region's negatives are the others); "
                "use a smaller local_region_size or a finer decoder_layer."
            )
    if options["schedule"] == "staged" and options["local_weight"] > 0 and local_tensors == 0:
        raise ValueError(
            f"option 'decoder_layer' (--decoder_layer) {options['decoder_layer']!r} leaves the local stage of "
            "schedule 'staged' no backbone weight to train (only the dense head, which is not saved)."
        )
    return {"dense_size": list(dense_size), "local_tensors": local_tensors}


def pretrain_run_settings(
    options: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    slice_options: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The settings that define each stage's outputs, for :class:`~monai_cluster.workflows.RunOutputs`.

    ``autoencoder``: seed, data (folder and listing), image geometry and intensity window, autoencoder layout,
    learning rate and batch size. ``cluster``: those and ``num_clusters``. ``pretrain``: the cluster stage's (when
    pseudo-classes are used) and the network, loss, schedule, view and optimiser settings (slices: every stage
    also records the slice chain's intensity scaling and crop, the pretraining the global strategy and
    partitions; the pretraining its ``crop_size`` when set). Not recorded: epochs (a resume may extend them), workers, AMP, ``resume``.

    Args:
        options: the checked options (:func:`~monai_cluster.workflows.check_pretrain_options`).
        items: the unlabeled items.
        slice_options: the checked options of ``train_slices.json``, or ``None``.
    """
    data = {"seed": options["seed"], "dataset_dir": options["dataset_dir"], "data": data_fingerprint(items)}
    image = {name: options[name] for name in ("spatial_dims", "in_channels", "image_size", "intensity_range")}
    if slice_options is not None:  # the slice chain: its intensity scaling and crop shape every stage's input
        image.update({k: slice_options[k] for k in ("intensity_range", "intensity_percentiles", "crop_fraction")})
    autoencoder = {
        **data, **image, "batch_size": options["batch_size"],
        **{name: options[name] for name in ("autoencoder_channels", "autoencoder_strides", "autoencoder_learning_rate")},
    }  # fmt: skip
    cluster = {**autoencoder, "num_clusters": options["num_clusters"]}
    names = (
        "backbone", "features", "init_filters", "feature_size", "depths", "decoder_layer", "use_pseudo_classes",
        "temperature", "global_weight", "local_weight", "schedule", "crop_scale", "batch_size", "learning_rate",
        "local_num_locations", "local_region_size", "local_learning_rate",
    )  # fmt: skip
    pretrain = {**(cluster if options["use_pseudo_classes"] else {**data, **image})}
    pretrain.update({name: options[name] for name in names})
    if options["use_pseudo_classes"]:
        pretrain.update(pseudo_class_level=options["pseudo_class_level"], recluster_interval=options["recluster_interval"])
    if options.get("crop_size") is not None:  # recorded when set, so that runs from before the option still resume
        pretrain["crop_size"] = options["crop_size"]
    if slice_options is not None:
        pretrain.update({name: slice_options[name] for name in ("global_strategy", "num_partitions")})
    return {"autoencoder": autoencoder, "cluster": cluster, "pretrain": pretrain}
