"""Contrastive losses: cluster-guided NT-Xent, partition-aware global and dense local losses, their sum."""

from .cluster_contrastive import ClusterGuidedContrastiveLoss, cluster_guided_nt_xent
from .contrastive_autoencoder import ContrastiveAutoEncoderLoss
from .dec import DECClusteringLoss, dec_kl_divergence
from .elbo import ELBOLoss, gaussian_kl_divergence, reconstruction_error
from .global_contrastive import GlobalContrastiveLoss, global_contrastive_loss
from .local_contrastive import LocalContrastiveLoss, local_contrastive_loss
from .pretrain import ContrastivePretrainLoss

__all__ = [
    "ClusterGuidedContrastiveLoss",
    "ContrastiveAutoEncoderLoss",
    "ContrastivePretrainLoss",
    "DECClusteringLoss",
    "ELBOLoss",
    "GlobalContrastiveLoss",
    "LocalContrastiveLoss",
    "cluster_guided_nt_xent",
    "dec_kl_divergence",
    "gaussian_kl_divergence",
    "global_contrastive_loss",
    "local_contrastive_loss",
    "reconstruction_error",
]
