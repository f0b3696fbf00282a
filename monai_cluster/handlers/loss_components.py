"""Ignite handler: :class:`LossComponentsLogger`, the terms of a composite loss in TensorBoard."""

from __future__ import annotations

import os
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["LossComponentsLogger"]


class LossComponentsLogger:
    """Ignite handler: write the loss terms of ``loss.last_components`` to TensorBoard every ``interval`` iterations.

    Args:
        loss: a loss with a ``last_components`` dict (e.g. :class:`~monai_cluster.losses.LocalDiscriminationLoss`).
        log_dir: TensorBoard folder (``<bundle_root>/runs``); ``None`` to only keep them on the engine state.
        interval: iterations between writes.
        tag: prefix of the scalar tags.
    """

    def __init__(
        self, loss: Any, log_dir: str | os.PathLike | None = None, interval: int = 1, tag: str = "loss"
    ) -> None:
        if not isinstance(getattr(loss, "last_components", None), dict):
            raise TypeError(f"loss must have a last_components dict, got {type(loss).__name__}.")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be an integer >= 1, got {interval!r}.")
        self.loss, self.log_dir, self.interval, self.tag = loss, log_dir, interval, tag
        self._writer = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self.close)

    def __call__(self, engine: Engine) -> None:
        components = dict(self.loss.last_components)
        engine.state.loss_components = components
        if self.log_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        for name, value in components.items():
            self._writer.add_scalar(f"{self.tag}/{name}", value, engine.state.iteration)

    def close(self, engine: Engine | None = None) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
