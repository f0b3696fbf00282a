"""Engines: batch preparation for MONAI's ``SupervisedTrainer``, the image-clustering training procedures and the
semi-supervised fine-tuning trainer."""

from ._epoch_checkpoint import EpochCheckpoint
from .cae_trainer import (
    CAEClusteringResult,
    CAETrainingResult,
    FlipRot90ViewAugment,
    RandomViewAugment,
    cluster_cae,
    train_autoencoder,
    train_cae,
)
from .dvc_trainer import DVCTrainingResult, init_dvc_centroids, pretrain_vae, train_dvc, train_dvc_clustering
from .local_discrimination import LocalDiscriminationPrepareBatch
from .prepare_batch import MultiViewPrepareBatch
from .semi_supervised import SEMI_SUPERVISED_METHODS, BatchIntensityPerturbation, SemiSupervisedTrainer, iteration_seed

__all__ = [
    "BatchIntensityPerturbation",
    "CAEClusteringResult",
    "CAETrainingResult",
    "DVCTrainingResult",
    "EpochCheckpoint",
    "FlipRot90ViewAugment",
    "LocalDiscriminationPrepareBatch",
    "MultiViewPrepareBatch",
    "RandomViewAugment",
    "SEMI_SUPERVISED_METHODS",
    "SemiSupervisedTrainer",
    "cluster_cae",
    "init_dvc_centroids",
    "iteration_seed",
    "pretrain_vae",
    "train_autoencoder",
    "train_cae",
    "train_dvc",
    "train_dvc_clustering",
]
