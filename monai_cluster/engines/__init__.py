"""Engines: batch preparation for MONAI's ``SupervisedTrainer`` and the image-clustering training procedures."""

from ._epoch_checkpoint import EpochCheckpoint
from .cae_trainer import (
    CAEClusteringResult,
    CAETrainingResult,
    RandomViewAugment,
    cluster_cae,
    train_autoencoder,
    train_cae,
)
from .dvc_trainer import DVCTrainingResult, init_dvc_centroids, pretrain_vae, train_dvc, train_dvc_clustering
from .local_discrimination import LocalDiscriminationPrepareBatch
from .prepare_batch import MultiViewPrepareBatch

__all__ = [
    "CAEClusteringResult",
    "CAETrainingResult",
    "DVCTrainingResult",
    "EpochCheckpoint",
    "LocalDiscriminationPrepareBatch",
    "MultiViewPrepareBatch",
    "RandomViewAugment",
    "cluster_cae",
    "init_dvc_centroids",
    "pretrain_vae",
    "train_autoencoder",
    "train_cae",
    "train_dvc",
    "train_dvc_clustering",
]
