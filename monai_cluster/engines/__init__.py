"""Engines: batch preparation for MONAI's ``SupervisedTrainer`` and the image-clustering training procedures."""

from .clustering_trainers import (
    CAEClusteringResult,
    CAETrainingResult,
    DVCTrainingResult,
    RandomViewAugment,
    cluster_cae,
    init_dvc_centroids,
    pretrain_vae,
    train_cae,
    train_dvc,
    train_dvc_clustering,
)
from .prepare_batch import MultiViewPrepareBatch

__all__ = [
    "CAEClusteringResult",
    "CAETrainingResult",
    "DVCTrainingResult",
    "MultiViewPrepareBatch",
    "RandomViewAugment",
    "cluster_cae",
    "init_dvc_centroids",
    "pretrain_vae",
    "train_cae",
    "train_dvc",
    "train_dvc_clustering",
]
