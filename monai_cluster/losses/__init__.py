"""Contrastive losses (cluster-guided NT-Xent, partition-aware global and dense local losses, their sum) and the
pseudo-label consistency of semi-supervised fine-tuning."""

from .cluster_contrastive import ClusterGuidedContrastiveLoss, cluster_guided_nt_xent
from .consistency import (
    PseudoLabelConsistencyLoss,
    confident_pseudo_labels,
    pseudo_label_consistency_loss,
    sigmoid_rampup,
)
from .contrastive_autoencoder import ContrastiveAutoEncoderLoss, mean_reconstruction_error
from .dec import DECClusteringLoss, dec_kl_divergence
from .elbo import ELBOLoss, gaussian_kl_divergence, reconstruction_error
from .global_contrastive import (
    GLOBAL_STRATEGIES,
    GlobalContrastiveLoss,
    check_global_strategy,
    global_contrastive_loss,
)
from .local_contrastive import LocalContrastiveLoss, local_contrastive_loss
from .local_discrimination import LocalDiscriminationLoss
from .patch_discrimination import (
    MixupConsistencyLoss,
    PatchDiscriminationLoss,
    invariant_spreading_loss,
    mixup_consistency_loss,
    mixup_images,
    patch_discrimination_loss,
)
from .pretrain import ContrastivePretrainLoss
from .region_discrimination import (
    AssignmentEntropyLoss,
    RegionDiscriminationLoss,
    assignment_entropy_loss,
    region_discrimination_loss,
)
from .shape_prior import ShapePriorLoss, shape_prior_discriminator_loss, shape_prior_generator_loss

__all__ = [
    "AssignmentEntropyLoss",
    "ClusterGuidedContrastiveLoss",
    "ContrastiveAutoEncoderLoss",
    "ContrastivePretrainLoss",
    "DECClusteringLoss",
    "ELBOLoss",
    "GLOBAL_STRATEGIES",
    "GlobalContrastiveLoss",
    "LocalContrastiveLoss",
    "LocalDiscriminationLoss",
    "MixupConsistencyLoss",
    "PatchDiscriminationLoss",
    "PseudoLabelConsistencyLoss",
    "RegionDiscriminationLoss",
    "ShapePriorLoss",
    "assignment_entropy_loss",
    "cluster_guided_nt_xent",
    "confident_pseudo_labels",
    "dec_kl_divergence",
    "gaussian_kl_divergence",
    "check_global_strategy",
    "global_contrastive_loss",
    "invariant_spreading_loss",
    "mean_reconstruction_error",
    "local_contrastive_loss",
    "mixup_consistency_loss",
    "mixup_images",
    "patch_discrimination_loss",
    "pseudo_label_consistency_loss",
    "reconstruction_error",
    "region_discrimination_loss",
    "shape_prior_discriminator_loss",
    "shape_prior_generator_loss",
    "sigmoid_rampup",
]
