"""Networks for learning from unlabeled images: heads, pretraining wrappers, autoencoders, weight loading."""

from .blocks import DenseProjectionHead, ProjectionHead, ShapePriorDiscriminator, StudentTClusterAssignment
from .nets import (
    ContrastiveAutoEncoder,
    ContrastivePretrainNet,
    DeepVariationalClustering,
    FeatureAutoEncoder,
    FeatureVarAutoEncoder,
    LocalDiscriminationNet,
)
from .utils import load_pretrained

__all__ = [
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
