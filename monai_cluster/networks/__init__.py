"""Networks for learning from unlabeled images: heads, pretraining wrappers, autoencoders, weight loading."""

from .blocks import DenseProjectionHead, ProjectionHead, StudentTClusterAssignment
from .nets import (
    ContrastiveAutoEncoder,
    ContrastivePretrainNet,
    DeepVariationalClustering,
    FeatureAutoEncoder,
    FeatureVarAutoEncoder,
)
from .utils import load_pretrained

__all__ = [
    "ContrastiveAutoEncoder",
    "ContrastivePretrainNet",
    "DeepVariationalClustering",
    "DenseProjectionHead",
    "FeatureAutoEncoder",
    "FeatureVarAutoEncoder",
    "ProjectionHead",
    "StudentTClusterAssignment",
    "load_pretrained",
]
