"""Ignite handler for the warm-up stage of local discrimination: the clustering terms join after some epochs.

Chen et al.'s released training first learns the embedding by patch discrimination and mixup only, then adds the
clustering branch (region discrimination, entropy, optionally the shape prior) on those weights, so the clusters
start from a trained embedding instead of a random one. :class:`LocalDiscriminationWarmupHandler` reproduces this
in one run: at the start of every epoch it switches the loss's clustering terms off for epochs
``1..warmup_epochs`` and on afterwards. It reads the epoch from the engine's state, so a resumed run lands in the
right stage.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
"""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

from monai_cluster.handlers.shape_prior import ShapePriorHandler
from monai_cluster.losses.local_discrimination import LocalDiscriminationLoss
from monai_cluster.utils.validation import check_positive_int

__all__ = ["LocalDiscriminationWarmupHandler"]

logger = logging.getLogger(__name__)


class LocalDiscriminationWarmupHandler:
    """Leave the clustering terms of a :class:`~monai_cluster.losses.LocalDiscriminationLoss` out of the first
    ``warmup_epochs`` epochs.

    Args:
        loss: the trainer's loss function.
        warmup_epochs: epochs trained on patch discrimination and mixup only (0: no warm-up, every term from the
            first step).
        shape_prior_handler: the :class:`ShapePriorHandler`, if any; its discriminator steps pause with the
            clustering terms (there is no generator term to train against during the warm-up).

    Raises:
        TypeError: for a ``loss`` that is not a ``LocalDiscriminationLoss`` or a wrong handler type.
        ValueError: for a negative ``warmup_epochs``, or a warm-up on a loss whose patch and mixup weights are 0.

    Example:
        >>> LocalDiscriminationWarmupHandler(loss, warmup_epochs=5).attach(trainer)
    """

    def __init__(
        self, loss: LocalDiscriminationLoss, warmup_epochs: int, shape_prior_handler: ShapePriorHandler | None = None
    ) -> None:
        if not isinstance(loss, LocalDiscriminationLoss):
            raise TypeError(f"loss must be a LocalDiscriminationLoss, got {type(loss).__name__}.")
        if shape_prior_handler is not None and not isinstance(shape_prior_handler, ShapePriorHandler):
            raise TypeError(
                f"shape_prior_handler must be a ShapePriorHandler or None, got {type(shape_prior_handler).__name__}."
            )
        self.loss = loss
        self.warmup_epochs = check_positive_int(warmup_epochs, "warmup_epochs", minimum=0)
        if self.warmup_epochs and not (loss.weights["patch"] > 0 or loss.weights["mixup"] > 0):
            raise ValueError("warmup_epochs > 0 needs patch_weight or mixup_weight > 0 in the loss; both are 0.")
        self.shape_prior_handler = shape_prior_handler

    def attach(self, engine: Engine) -> None:
        """Set the stage at the start of every epoch."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def in_warmup(self, epoch: int) -> bool:
        """Whether the 1-based ``epoch`` belongs to the warm-up stage."""
        return epoch <= self.warmup_epochs

    def __call__(self, engine: Engine) -> None:
        warm = self.in_warmup(engine.state.epoch)
        if self.loss.clustering_active == warm:  # a change of stage
            logger.info(
                "local discrimination: epoch %d %s", engine.state.epoch,
                "warm-up (patch discrimination + mixup only)" if warm else "clustering terms on",
            )  # fmt: skip
        self.loss.set_clustering_active(not warm)
        if self.shape_prior_handler is not None:
            self.shape_prior_handler.paused = warm
