"""Engines: batch preparation for MONAI's ``SupervisedTrainer``."""

from .prepare_batch import MultiViewPrepareBatch

__all__ = ["MultiViewPrepareBatch"]
