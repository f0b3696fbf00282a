"""Networks for learning from unlabeled images: heads, pretraining wrappers, autoencoders, weight loading.

:mod:`~monai_cluster.networks.backbones` is the registry of segmentation backbones (``basic_unet``,
``segresnet``, ``swin_unetr``) and the layer names their pretraining needs.
"""

from .blocks import DenseProjectionHead, ProjectionHead, ShapePriorDiscriminator, StudentTClusterAssignment
from .backbones import (
    BACKBONES,
    BackboneSpec,
    backbone_spec,
    build_backbone,
    detect_backbone,
)
from .nets import (
    ContrastiveAutoEncoder,
    ContrastivePretrainNet,
    DeepVariationalClustering,
    FeatureAutoEncoder,
    FeatureVarAutoEncoder,
    LocalDiscriminationNet,
    build_pretrain_net,
)
from .utils import load_pretrained

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "backbone_spec",
    "build_backbone",
    "build_pretrain_net",
    "detect_backbone",
    "ContrastiveAutoEncoder",
    "ContrastivePretrainNet",
    "DeepVariationalClustering",
    "DenseProjectionHead",
    "FeatureAutoEncoder",
    "FeatureVarAutoEncoder",
    "LocalDiscriminationNet",
    "ProjectionHead",
    "ShapePriorDiscriminator",
    "StudentTClusterAssignment",
    "load_pretrained",
]
