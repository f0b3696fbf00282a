"""Contrastive losses: cluster-guided NT-Xent, partition-aware global and dense local losses, their sum."""

from .cluster_contrastive import ClusterGuidedContrastiveLoss, cluster_guided_nt_xent
from .global_contrastive import GlobalContrastiveLoss, global_contrastive_loss
from .local_contrastive import LocalContrastiveLoss, local_contrastive_loss
from .pretrain import ContrastivePretrainLoss

__all__ = [
    "ClusterGuidedContrastiveLoss",
    "ContrastivePretrainLoss",
    "GlobalContrastiveLoss",
    "LocalContrastiveLoss",
    "cluster_guided_nt_xent",
    "global_contrastive_loss",
    "local_contrastive_loss",
]
