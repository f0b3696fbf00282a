"""Loss logging: :class:`LossComponentsLogger` (the terms of a composite loss in TensorBoard) and
:class:`OutputScalars` (the loss and named scalar terms of an iteration output, for MONAI's stats handlers)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ignite.engine import Engine, Events

__all__ = ["LossComponentsLogger", "OutputScalars"]


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


class OutputScalars:
    """``output_transform`` for MONAI's ``TensorBoardStatsHandler``: the iteration's loss and the named scalar terms
    its output carries, as one dict, so that each is written as its own curve.

    MONAI's handler writes a dict's entries under their own names, so the loss keeps its usual tag (``loss_tag``) and
    every term found in the output is written as ``prefix + key``; a term the output lacks is skipped, so one
    handler serves a trainer that reports the terms (semi-supervised fine-tuning: ``kept_fraction`` of the
    confident pseudo-labels, ``loss_consistency``, ...) and one that reports only the loss.

    Args:
        keys: names of the scalar terms to pick from the output dict.
        loss_tag: the tag of the loss (``output["loss"]``).
        prefix: put before each term's name in its tag.

    Raises:
        TypeError: ``keys`` is not a sequence of strings.
        ValueError: the output has no ``"loss"``, or a picked term is not a scalar.
    """

    def __init__(self, keys: Sequence[str] = (), loss_tag: str = "train_loss", prefix: str = "train_") -> None:
        if isinstance(keys, str) or not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"keys must be a sequence of strings, got {keys!r}.")
        self.keys, self.loss_tag, self.prefix = tuple(keys), loss_tag, prefix

    def __call__(self, output: Any) -> dict[str, float]:
        if isinstance(output, Sequence) and not isinstance(output, (str, bytes)) and output:
            output = output[0]  # a decollated output repeats the scalars in every item
        if not isinstance(output, Mapping) or "loss" not in output:
            found = list(output) if isinstance(output, Mapping) else type(output).__name__
            raise ValueError(f"the iteration output must be a dict with a 'loss' entry, got {found}.")
        scalars = {self.loss_tag: _scalar("loss", output["loss"])}
        for key in self.keys:
            if key in output:
                scalars[self.prefix + key] = _scalar(key, output[key])
        return scalars


def _scalar(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"output term {name!r} must be a scalar, got a tensor of shape {tuple(value.shape)}.")
        return float(value.detach().float().item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"output term {name!r} must be a scalar, got {type(value).__name__}.")
