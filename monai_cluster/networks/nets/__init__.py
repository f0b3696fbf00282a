"""Whole models: pretraining wrappers, autoencoders and clustering networks."""

from .autoencoder import FeatureAutoEncoder, FeatureVarAutoEncoder
from .contrastive_pretrain import ContrastivePretrainNet

__all__ = [
    "ContrastivePretrainNet",
    "FeatureAutoEncoder",
    "FeatureVarAutoEncoder",
]
