"""Whole models: pretraining wrappers, autoencoders and clustering networks."""

from .autoencoder import FeatureAutoEncoder, FeatureVarAutoEncoder
from .contrastive_autoencoder import ContrastiveAutoEncoder
from .contrastive_pretrain import ContrastivePretrainNet, build_pretrain_net
from .dvc import DeepVariationalClustering
from .local_discrimination import LocalDiscriminationNet

__all__ = [
    "ContrastiveAutoEncoder",
    "ContrastivePretrainNet",
    "DeepVariationalClustering",
    "FeatureAutoEncoder",
    "FeatureVarAutoEncoder",
    "LocalDiscriminationNet",
    "build_pretrain_net",
]
