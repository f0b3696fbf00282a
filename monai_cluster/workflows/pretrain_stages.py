"""Stages 1 and 2 of cluster-guided contrastive pretraining: train the autoencoder, cluster its features.

Stage 1 (:func:`run_autoencoder_stage`) trains a :class:`~monai_cluster.networks.FeatureAutoEncoder` to
reconstruct the unlabeled images with the package's one autoencoder training
(:func:`monai_cluster.engines.train_autoencoder`, a MONAI/Ignite engine checkpointed after every epoch, so a killed
stage resumes inside the stage) and saves its ``state_dict`` atomically (``models/autoencoder.pt``). Stage 2
(:func:`cluster_pseudo_classes`) loads it, extracts one pooled feature vector per image, clusters the features
hierarchically and writes the pseudo-class table atomically (``models/pseudo_classes.csv``, contract 4 of
``docs/ARCHITECTURE.md``). Under ``torch.distributed`` stage 1 trains data-parallel (DDP) on every rank and rank 0
writes the weights; stage 2 extracts features on every rank's shard and clusters on rank 0.

References:
    - [0] Zhang et al., cluster-guided contrastive learning, BIBM 2022, https://arxiv.org/abs/2211.08557
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from monai_cluster.clustering import (
    PseudoClassTable,
    compute_pseudo_class_table,
    extract_features_sharded,
    read_pseudo_class_table,
    write_pseudo_class_table,
)
from monai_cluster.engines import EpochCheckpoint, train_autoencoder
from monai_cluster.networks import FeatureAutoEncoder
from monai_cluster.utils.io import atomic_torch_save, atomic_write_json

from .common import barrier, is_main_process, resolve_device, validate_option

__all__ = ["build_autoencoder", "cluster_pseudo_classes", "load_autoencoder", "run_autoencoder_stage"]

logger = logging.getLogger(__name__)


def build_autoencoder(
    spatial_dims: int,
    in_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] | None = None,
    num_res_units: int = 1,
    feature_pool: str = "avgmax",
    image_size: int | Sequence[int] | None = None,
) -> FeatureAutoEncoder:
    """The stage-1 autoencoder (MONAI ``AutoEncoder`` with pooled ``forward_features``).

    Args:
        channels: channels per encoder block (any length >= 1).
        strides: stride per block; ``None`` gives 2 for every block (one halving per entry of ``channels``).
        image_size: the images' spatial size, when known: it must be divisible by the product of the strides, so
            that the reconstruction has the input's size (checked here, before any training).

    Raises:
        ValueError: for ``strides`` of another length than ``channels`` (naming both), or an ``image_size`` that
            the strides cannot halve down evenly.
    """
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) < 1:
        raise ValueError(f"autoencoder channels must be a non-empty list of channel counts, got {channels!r}.")
    if strides is None:
        strides = (2,) * len(channels)
    elif isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or len(strides) != len(channels):
        raise ValueError(
            f"autoencoder strides {strides!r} must have one entry per autoencoder channel ({len(channels)}: "
            f"{list(channels)}), or be null to halve once per block."
        )
    if image_size is not None:
        sizes = [image_size] * spatial_dims if isinstance(image_size, int) else list(image_size)
        factor = 1
        for s in strides:
            factor *= int(s)
        if any(int(n) % factor for n in sizes):
            raise ValueError(
                f"image_size {sizes} must be divisible by the product of the autoencoder strides {list(strides)} "
                f"(= {factor}, one factor per autoencoder channel {list(channels)}); use fewer channels, smaller "
                "strides or another image_size."
            )
    return FeatureAutoEncoder(
        spatial_dims, in_channels, channels, strides, num_res_units=num_res_units, feature_pool=feature_pool
    )


def load_autoencoder(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` (a ``state_dict`` written by :func:`run_autoencoder_stage`) into ``network`` strictly.

    Raises:
        ValueError: when the file is missing (run stage 1 first), unreadable or of another network.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"autoencoder weights {path} do not exist; run the autoencoder stage first (--run_id run_autoencoder)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as err:
        raise ValueError(f"autoencoder weights {path} do not fit the configured autoencoder: {err}") from err
    return network


def run_autoencoder_stage(
    network: nn.Module,
    items: Sequence[dict],
    transform: Callable,
    output_path: str | os.PathLike,
    epochs: int = 10,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    device: str | torch.device | None = "cpu",
    log_dir: str | os.PathLike | None = None,
    resume: bool = False,
    image_key: str = "image",
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
) -> dict:
    """Stage 1: train ``network`` to reconstruct the images (mean squared error, Adam) and save it atomically.

    The training is :func:`monai_cluster.engines.train_autoencoder` on the items loaded through ``transform``: an
    Ignite engine whose state (weights, optimiser, every random state) is checkpointed after every epoch in
    ``checkpoint_dir``, so a stage killed mid-way and rerun with ``resume`` ends with the weights of an
    uninterrupted one.

    Args:
        network: the autoencoder (``forward(x)`` returns a reconstruction of ``x``'s shape).
        items: ``{"image", "key"}`` dicts.
        transform: loading chain with light augmentation (e.g. :func:`autoencoder_transforms`).
        output_path: where the ``state_dict`` is written (``models/autoencoder.pt``).
        epochs: training epochs (>= 1).
        batch_size: batch size (>= 1; capped at the number of images).
        learning_rate: Adam learning rate (> 0).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        log_dir: TensorBoard folder (scalars ``autoencoder/loss`` per epoch), or ``None``.
        resume: when ``output_path`` already exists, load it and skip training (a finished stage is not redone);
            otherwise continue from the stage's newest checkpoint. False trains afresh.
        image_key: the sample entry holding the image.
        seed: seed of the batch order, the augmentation's draws and the other draws of the stage.
        checkpoint_dir: the stage's checkpoints while it is unfinished (``None``: ``autoencoder_checkpoints`` beside
            ``output_path``); deleted once the weights are written.

    Returns:
        ``{"epochs": int, "loss": [per-epoch mean], "seconds": float, "skipped": bool}``.

    Raises:
        FloatingPointError: on a non-finite loss (the weights are not written; the last good epoch's checkpoint
            stays).
    """
    epochs = validate_option("autoencoder_epochs", epochs, "int>=1")
    batch_size = validate_option("batch_size", batch_size, "int>=1")
    learning_rate = validate_option("learning_rate", learning_rate, "float>0")
    resume = validate_option("resume", resume, "bool")
    seed = validate_option("seed", seed, "int>=0")
    output_path = Path(output_path)
    if resume and output_path.is_file():
        barrier()  # every rank sees the file before loading it
        load_autoencoder(network, output_path)
        logger.info("resume: autoencoder %s exists; stage 1 skipped", output_path)
        return {"epochs": 0, "loss": [], "seconds": 0.0, "skipped": True}
    if not items:
        raise ValueError("items must hold at least one image for the autoencoder stage, got none.")
    checkpoint_dir = output_path.parent / "autoencoder_checkpoints" if checkpoint_dir is None else checkpoint_dir
    writer = None
    if log_dir is not None and is_main_process():
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(log_dir))
    start = time.perf_counter()
    try:
        result = train_autoencoder(
            network, list(items), epochs=epochs, batch_size=min(batch_size, len(items)), lr=learning_rate,
            device=resolve_device(device), seed=seed, writer=writer, progress=is_main_process(), image_key=image_key,
            checkpoint=EpochCheckpoint(checkpoint_dir, resume=resume), transform=transform,
        )  # fmt: skip
    finally:
        if writer is not None:
            writer.close()
    history = result.history["loss"]
    if is_main_process():
        atomic_torch_save(network.state_dict(), output_path)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the stage is complete: its weights stand for it now
    seconds = time.perf_counter() - start
    logger.info("autoencoder saved to %s (%d epochs, %.1f s, last mse %.5f)", output_path, epochs, seconds, history[-1])
    barrier()
    return {"epochs": epochs, "loss": history, "seconds": seconds, "skipped": False}


def _check_clusters(num_clusters: object, count: int) -> tuple[int, ...]:
    levels = validate_option("num_clusters", num_clusters, "ints>=2")
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"option 'num_clusters' must increase strictly from coarse to fine, got {levels}.")
    if levels[-1] > count:
        raise ValueError(
            f"option 'num_clusters' asks for {levels[-1]} clusters at the finest level, but there are only {count} "
            "images; use fewer clusters or more images."
        )
    return tuple(levels)


def cluster_pseudo_classes(
    network: nn.Module,
    items: Sequence[dict],
    transform: Callable,
    table_path: str | os.PathLike,
    num_clusters: Sequence[int] = (3, 8),
    autoencoder_path: str | os.PathLike | None = None,
    device: str | torch.device | None = "cpu",
    batch_size: int = 16,
    seed: int = 0,
    resume: bool = False,
    method: str = "auto",
    summary_path: str | os.PathLike | None = None,
) -> PseudoClassTable:
    """Stage 2: extract pooled autoencoder features and write the hierarchical pseudo-class table atomically.

    Args:
        network: the autoencoder (``forward_features(x) -> (B, F)``).
        items: ``{"image", "key"}`` dicts; the table gets one row per key.
        transform: deterministic loading chain (:func:`feature_transforms`).
        table_path: where the table is written (``models/pseudo_classes.csv``).
        num_clusters: clusters per level, coarse to fine, strictly increasing, the finest at most ``len(items)``.
        autoencoder_path: weights to load into ``network`` first (stage 1's output), or ``None`` to use it as is.
        device: feature-extraction device.
        batch_size: feature-extraction batch size.
        seed: clustering seed.
        resume: keep an existing table that covers exactly these keys with these cluster counts.
        method: :func:`~monai_cluster.clustering.hierarchical_pseudo_classes`'s method.
        summary_path: optional JSON with the cluster sizes per level.

    Returns:
        the table. Under ``torch.distributed`` every rank extracts the features of its shard of ``items``
        (:func:`~monai_cluster.clustering.extract_features_sharded`), rank 0 clusters them and writes the table,
        the other ranks read it after a barrier: every rank returns the table one process would have made.
    """
    levels = _check_clusters(num_clusters, len(items))
    batch_size = validate_option("batch_size", batch_size, "int>=1")
    table_path = Path(table_path)
    keys = [item["key"] for item in items]
    if validate_option("resume", resume, "bool") and table_path.is_file():
        try:
            table = read_pseudo_class_table(table_path, expected_keys=keys)
        except ValueError as err:
            logger.warning("resume: existing table %s is not usable (%s); clustering again", table_path, err)
        else:
            if table.num_clusters == levels and len(table) == len(keys):
                logger.info("resume: pseudo-class table %s exists; stage 2 skipped", table_path)
                barrier()
                return table
    if autoencoder_path is not None:
        load_autoencoder(network, autoencoder_path)
    device = resolve_device(device)
    network.to(device)
    # under torchrun every rank extracts its shard of the images; rank 0 gathers them in listing order
    features, feature_keys = extract_features_sharded(
        network, list(items), batch_size=batch_size, device=device, transform=transform, progress=False
    )
    if not is_main_process():
        barrier()
        return read_pseudo_class_table(table_path, expected_keys=keys)
    if not np.all(np.isfinite(features)):
        raise ValueError("autoencoder features hold NaN or Inf; retrain the autoencoder (stage 1).")
    name = f"{type(network).__name__} ({Path(autoencoder_path).name if autoencoder_path else 'in memory'})"
    table = compute_pseudo_class_table(features, feature_keys, levels, name, seed=seed, method=method)
    write_pseudo_class_table(table, table_path)
    sizes = [np.bincount(table.labels[:, level], minlength=k).tolist() for level, k in enumerate(levels)]
    logger.info("pseudo-classes of %d images written to %s; cluster sizes per level: %s", len(table), table_path, sizes)
    if summary_path is not None:
        summary = {"num_images": len(table), "num_clusters": list(levels), "cluster_sizes": sizes}
        atomic_write_json(summary, summary_path)
    barrier()
    return table

