"""Stop training on a NaN/Inf loss before any checkpoint saver can write the broken weights."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["NonFiniteLossHandler", "loss_from_output"]

logger = logging.getLogger(__name__)


def loss_from_output(output: Any) -> Any:
    """The loss of an iteration output: ``output["loss"]``, or that of the first item of a decollated list."""
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)) and output:
        output = output[0]
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise ValueError(
                f"the iteration output has no 'loss' entry (it has {list(output)}); pass output_transform."
            )
        return output["loss"]
    return output


def _as_float_values(loss: Any) -> list[float]:
    if isinstance(loss, torch.Tensor):
        return [float(v) for v in loss.detach().float().flatten().cpu().tolist()]
    if isinstance(loss, (int, float)):
        return [float(loss)]
    raise TypeError(f"the loss must be a number or a tensor, got {type(loss).__name__}; check output_transform.")


class NonFiniteLossHandler:
    """Terminate the engine and raise ``FloatingPointError`` when an iteration's loss is NaN or Inf.

    ``attach`` puts the check FIRST among the ``ITERATION_COMPLETED`` handlers, even those attached earlier, so a
    ``CheckpointSaver`` saving at that event never writes the weights of the non-finite step; a saver at
    ``EPOCH_COMPLETED`` never runs either, because the epoch does not complete. It also goes first among the
    ``EXCEPTION_RAISED`` handlers and re-raises its own error there, so a ``CheckpointSaver(save_final=True)`` does
    not save the broken weights as its "final" checkpoint. The last good checkpoint is left intact. Other
    exceptions pass on to the other handlers unchanged.

    Args:
        output_transform: maps ``engine.state.output`` to the loss (a number or tensor; every element is checked).
            The default reads ``output["loss"]`` (MONAI's ``SupervisedTrainer``), also from a decollated list.

    Example:
        >>> NonFiniteLossHandler().attach(trainer)  # attach at any time; it still runs first
    """

    def __init__(self, output_transform: Callable[[Any], Any] = loss_from_output) -> None:
        if not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {type(output_transform).__name__}.")
        self.output_transform = output_transform
        self._error: FloatingPointError | None = None

    def attach(self, engine: Engine) -> None:
        """Register the loss check first at ``ITERATION_COMPLETED`` and the re-raise first at ``EXCEPTION_RAISED``."""
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an ignite Engine, got {type(engine).__name__}.")
        for event, handler in ((Events.ITERATION_COMPLETED, self), (Events.EXCEPTION_RAISED, self.exception_raised)):
            if engine.has_event_handler(handler, event):
                continue
            engine.add_event_handler(event, handler)
            # ignite runs handlers in registration order; move this one to the front of the event's list
            handlers = engine._event_handlers[event]
            handlers.insert(0, handlers.pop())

    def __call__(self, engine: Engine) -> None:
        """Check the loss of the iteration that just completed."""
        values = _as_float_values(self.output_transform(engine.state.output))
        bad = [v for v in values if not math.isfinite(v)]
        if not bad:
            return
        shown = bad[0] if len(values) == 1 else f"{bad[0]} ({len(bad)} of {len(values)} elements non-finite)"
        self._error = FloatingPointError(
            f"non-finite loss {shown} at epoch {engine.state.epoch}, iteration {engine.state.iteration}; training "
            "stopped before any checkpoint of this iteration was written (the last good checkpoint is intact). "
            "Lower the learning rate, check the inputs for NaN/Inf, or clip gradients."
        )
        logger.error(str(self._error))
        engine.terminate()
        raise self._error

    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        """Re-raise this handler's own error before later handlers (e.g. a final-checkpoint saver) see it.

        Other exceptions are left to the handlers behind this one; when there are none, they are re-raised here,
        since ignite swallows an exception whose ``EXCEPTION_RAISED`` handlers all return.
        """
        if e is self._error:
            raise e
        others = [h for h, *_ in engine._event_handlers.get(Events.EXCEPTION_RAISED, ()) if h != self.exception_raised]
        if not others:
            raise e
