"""A training budget in optimiser steps, and evaluations at chosen steps averaged over the last few.

- :class:`StepBudgetHandler`: terminates the engine at iteration ``max_steps`` (the epochs of a bundle are then
  ``ceil(max_steps / steps per epoch)``, :func:`budget_epochs`);
- :class:`PeriodicEvaluationHandler`: calls an evaluation at chosen iterations, keeps each result as JSON (so a
  resumed run keeps the evaluations made before the kill) and writes the mean of the last ones when training ends,
  with the learning curve of every evaluation beside it (``curve_steps``: evaluated, not averaged);
- :func:`evaluation_steps`: the iterations of "every ``every`` steps, the last ``last`` of them".
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from monai_cluster.utils.io import atomic_write_json

__all__ = ["PeriodicEvaluationHandler", "StepBudgetHandler", "average_summaries", "budget_epochs", "evaluation_steps"]

logger = logging.getLogger(__name__)


def budget_epochs(epochs: int, max_steps: int | None, steps_per_epoch: int) -> int:
    """Epochs a trainer runs: ``epochs`` without a step budget, else ``ceil(max_steps / steps_per_epoch)``.

    Raises:
        ValueError: when ``steps_per_epoch`` is below 1 with a step budget (no batch per epoch).
    """
    if max_steps is None:
        return int(epochs)
    if int(steps_per_epoch) < 1:
        raise ValueError(f"steps_per_epoch must be >= 1 with max_steps {max_steps}, got {steps_per_epoch}.")
    return max(1, math.ceil(int(max_steps) / int(steps_per_epoch)))


def evaluation_steps(total_steps: int, every: int, last: int) -> list[int]:
    """``[total - every * (last - 1), ..., total - every, total]``: the last ``last`` of evaluations every ``every``.

    Raises:
        ValueError: naming the values when an argument is below 1 or the first step would not be positive.
    """
    if min(int(total_steps), int(every), int(last)) < 1:
        raise ValueError(f"total_steps, every and last must be >= 1, got {total_steps}, {every}, {last}.")
    first = int(total_steps) - int(every) * (int(last) - 1)
    if first < 1:
        raise ValueError(
            f"{last} evaluations every {every} steps do not fit in {total_steps} steps (the first would be at "
            f"step {first}); lower last or every, or train longer."
        )
    return list(range(first, int(total_steps) + 1, int(every)))


def _mean(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _numbers(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of an evaluation summary (``mean_dice``) and its per-name numbers (``dice: {RV: ...}``)."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
        elif isinstance(value, Mapping) and all(isinstance(v, (int, float)) or v is None for v in value.values()):
            out[key] = dict(value)
    return out


def average_summaries(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over evaluations of every number (``mean_dice``) and of every per-name number (``dice: {RV: ...}``).

    ``None`` entries are left out of a mean; lists (per-volume records) are not averaged. Other entries are taken
    from the last summary.

    Raises:
        ValueError: when ``summaries`` is empty.
    """
    if not summaries:
        raise ValueError("summaries must hold at least one evaluation, got none.")
    out: dict[str, Any] = {}
    for key, value in summaries[-1].items():
        values = [s.get(key) for s in summaries]
        if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
            out[key] = _mean(values)
        elif isinstance(value, Mapping) and all(isinstance(v, (int, float)) or v is None for v in value.values()):
            out[key] = {k: _mean([(v or {}).get(k) for v in values]) for k in value}
        elif not isinstance(value, list):
            out[key] = value
    return out


class StepBudgetHandler:
    """Terminate the trainer after ``max_steps`` iterations (counted over the whole run, resumes included).

    The trainer's ``max_epochs`` must cover the budget (:func:`budget_epochs`); the last epoch is cut short and
    ``COMPLETED`` fires as after a full run, so final checkpoints and evaluations run as usual.

    Args:
        max_steps: iterations to run, or ``None`` to leave the run to its epochs (the handler then does nothing).

    Raises:
        ValueError: when ``max_steps`` is below 1.
    """

    def __init__(self, max_steps: int | None) -> None:
        if max_steps is not None and int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}.")
        self.max_steps = None if max_steps is None else int(max_steps)

    def attach(self, engine: Engine) -> None:
        """Check the budget after every iteration of ``engine``."""
        if self.max_steps is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration >= self.max_steps:
            logger.info("step budget reached: %d iterations (epoch %d)", engine.state.iteration, engine.state.epoch)
            engine.terminate()


class PeriodicEvaluationHandler:
    """Evaluate at chosen iterations, and write the mean of those evaluations when the trainer completes.

    Each evaluation is ``evaluate(output_path=...)`` (a callable returning a JSON-able summary and writing it to
    ``output_path``, e.g. a ``functools.partial`` of
    :func:`~monai_cluster.workflows.segmentation_slices_eval.evaluate_volumes`), written to
    ``<output_dir>/step_<iteration>.json``. At ``COMPLETED`` the summaries of every step of ``steps`` found there
    are averaged (:func:`average_summaries`) into ``<output_dir>/metrics.json`` with ``"steps"``, the iterations
    averaged. Evaluations already on disk are not redone, so a run resumed after a kill keeps them.

    ``curve_steps`` are further iterations to evaluate at, for a learning curve: they are written like the others
    and listed in ``metrics.json`` under ``"evaluations"`` (one ``{"step": ..., <numbers of the summary>}`` per
    evaluated step, ``steps`` and ``curve_steps`` together, in order), but only ``steps`` enter the mean, so the
    score of a run does not depend on whether its curve was recorded.

    Args:
        evaluate: ``evaluate(output_path=path) -> dict`` (e.g. a config component with ``"_mode_": "callable"``).
        steps: the iterations to evaluate at (e.g. :func:`evaluation_steps`); ``None`` or empty: the handler does
            nothing.
        output_dir: where the JSON files go.
        is_main: whether this process writes (``False`` on the other ranks of a multi-process run).
        curve_steps: iterations evaluated for the curve only (e.g. ``range(every, max_steps + 1, every)``), or
            ``None``.

    Raises:
        TypeError: when ``evaluate`` is not callable.
        ValueError: when a step of ``steps`` or ``curve_steps`` is below 1.
    """

    def __init__(
        self,
        evaluate: Callable[..., Mapping[str, Any]],
        steps: Sequence[int] | None,
        output_dir: str | os.PathLike,
        is_main: bool = True,
        curve_steps: Sequence[int] | None = None,
    ) -> None:
        if not callable(evaluate):
            raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}.")
        self.evaluate, self.steps = evaluate, sorted({int(s) for s in steps or ()})
        self.curve_steps = sorted({int(s) for s in curve_steps or ()} - set(self.steps))
        bad = [s for s in (*self.steps, *self.curve_steps) if s < 1]
        if bad:
            raise ValueError(f"steps and curve_steps must be iterations >= 1, got {bad}.")
        self.output_dir, self.is_main = Path(output_dir), bool(is_main)

    def path(self, step: int) -> Path:
        """The JSON file of the evaluation at ``step``."""
        return self.output_dir / f"step_{step}.json"

    def attach(self, engine: Engine) -> None:
        """Evaluate at the chosen iterations of ``engine`` and average at its completion."""
        if self.steps and self.is_main:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine: Engine) -> None:
        step = engine.state.iteration
        if (step in self.steps or step in self.curve_steps) and not self.path(step).is_file():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            summary = self.evaluate(output_path=str(self.path(step)))
            logger.info("evaluation at step %d: mean Dice %s", step, summary.get("mean_dice"))

    def completed(self, engine: Engine) -> dict[str, Any] | None:
        every = sorted({*self.steps, *self.curve_steps})
        done = {s: json.loads(self.path(s).read_text()) for s in every if self.path(s).is_file()}
        found = [s for s in self.steps if s in done]
        if not found:
            logger.warning("no evaluation of steps %s was made (the run ended at %d)", self.steps, engine.state.iteration)
            return None
        summary = average_summaries([done[s] for s in found])
        summary["steps"] = found
        if self.curve_steps:
            summary["evaluations"] = [{"step": s, **_numbers(done[s])} for s in every if s in done]
        atomic_write_json(summary, self.output_dir / "metrics.json")
        logger.info("mean of %d evaluations (steps %s): mean Dice %s", len(found), found, summary.get("mean_dice"))
        return summary
