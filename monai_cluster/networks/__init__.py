"""Networks for learning from unlabeled images: heads, pretraining wrappers, autoencoders, weight loading."""

from .blocks import DenseProjectionHead, ProjectionHead
from .nets import ContrastivePretrainNet, FeatureAutoEncoder, FeatureVarAutoEncoder
from .utils import load_pretrained

__all__ = [
    "ContrastivePretrainNet",
    "DenseProjectionHead",
    "FeatureAutoEncoder",
    "FeatureVarAutoEncoder",
    "ProjectionHead",
    "load_pretrained",
]
