"""Ignite handler: :class:`PretrainProgress`, the console and TensorBoard view of the pretraining losses."""

from __future__ import annotations

import logging
import os
from typing import Any

from ignite.engine import Engine, Events
from tqdm.auto import tqdm

from monai_cluster.utils.distributed import is_main_process

__all__ = ["PretrainProgress"]

logger = logging.getLogger(__name__)


class PretrainProgress:
    """Console (tqdm bar, one log line per epoch) and TensorBoard view of the pretraining losses.

    Reads ``loss_function.last_components`` (``total``, ``global``, ``local``) after each iteration; writes the
    scalars ``pretrain/loss``, ``pretrain/global``, ``pretrain/local`` per iteration, ``pretrain/lr`` and the
    per-epoch means ``pretrain/epoch_*`` under ``log_dir``. Only rank 0 reports.

    Args:
        loss_function: a :class:`~monai_cluster.losses.ContrastivePretrainLoss` (or anything with
            ``last_components``).
        log_dir: TensorBoard folder, or ``None``.
        optimizer: whose first learning rate is logged, or ``None``.
        progress: show the tqdm bar.
    """

    def __init__(self, loss_function: Any, log_dir: str | os.PathLike | None = None, optimizer: Any = None,
                 progress: bool = True) -> None:
        if not hasattr(loss_function, "last_components"):
            raise TypeError(
                "loss_function must expose last_components (ContrastivePretrainLoss), got "
                f"{type(loss_function).__name__}."
            )
        self.loss_function = loss_function
        self.log_dir = log_dir
        self.optimizer = optimizer
        self.progress = bool(progress)
        self.history: list[dict[str, float]] = []
        self._sums: dict[str, float] = {}
        self._count = 0
        self._bar = None
        self._writer = None

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_STARTED``, ``ITERATION_COMPLETED``, ``EPOCH_COMPLETED`` and ``COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._close_on_error)

    def _writer_or_none(self):
        if self._writer is None and self.log_dir is not None and is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def epoch_started(self, engine: Engine) -> None:
        self._sums, self._count = {}, 0
        if self.progress and is_main_process():
            desc = f"pretrain epoch {engine.state.epoch}/{engine.state.max_epochs}"
            self._bar = tqdm(total=engine.state.epoch_length, desc=desc, unit="it", leave=False)

    def iteration_completed(self, engine: Engine) -> None:
        values = dict(self.loss_function.last_components)
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1
        writer = self._writer_or_none()
        if writer is not None:
            for name, value in values.items():
                tag = "pretrain/loss" if name == "total" else f"pretrain/{name}"
                writer.add_scalar(tag, value, engine.state.iteration)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})

    def epoch_completed(self, engine: Engine) -> None:
        means = {name: total / max(self._count, 1) for name, total in self._sums.items()}
        self.history.append({"epoch": engine.state.epoch, **means})
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        writer = self._writer_or_none()
        if writer is not None:
            for name, value in means.items():
                writer.add_scalar(f"pretrain/epoch_{name}", value, engine.state.epoch)
            if self.optimizer is not None:
                writer.add_scalar("pretrain/lr", self.optimizer.param_groups[0]["lr"], engine.state.epoch)
            writer.flush()
        if is_main_process():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in means.items())
            logger.info("pretrain epoch %d/%d: %s", engine.state.epoch, engine.state.max_epochs, shown)

    def close(self, engine: Engine | None = None) -> None:
        """Close the bar and the TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _close_on_error(self, engine: Engine, error: BaseException) -> None:
        self.close(engine)
        raise error
