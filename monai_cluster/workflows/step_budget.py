"""Bundle options of a training budget in steps and of its optimiser and schedule (pretraining and slice fine-tuning).

The bundles count training in epochs by default, which shrink with the folder. ``max_steps`` budgets the run in
optimiser steps instead, the unit the ACDC protocol of ``BENCHMARKS.md`` measured in (3,000 pretraining steps,
2,000 fine-tuning steps): the trainer runs ``ceil(max_steps / steps per epoch)`` epochs, stops at step
``max_steps`` (:class:`~monai_cluster.handlers.StepBudgetHandler`) and the learning rate follows a per-step warm-up
+ cosine (:class:`~monai_cluster.optimizers.WarmupCosineLR`). Without ``max_steps`` the bundles keep their
per-epoch ``CosineAnnealingLR``.

- :data:`STEP_BUDGET_OPTION_SPECS` / :func:`check_step_budget_options`: the options, checked before anything runs;
- :func:`build_lr_scheduler`: the scheduler the options describe, and :func:`per_step_schedule` whether the
  ``LrScheduleHandler`` steps it per iteration;
- :func:`evaluation_plan` (the steps of ``eval_every_steps``/``eval_last``, refused naming them when they do not
  fit), :func:`check_eval_curve_every` (a learning curve's extra evaluations need scored ones) and
  :func:`evaluate_to_json` (one run of a bundle's evaluator as the JSON summary that
  :class:`~monai_cluster.handlers.PeriodicEvaluationHandler` averages), for the dermoscopy bundle's scoring at
  chosen steps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from monai_cluster.optimizers import OPTIMIZERS, WarmupCosineLR

from .common import validate_options

__all__ = [
    "STEP_BUDGET_OPTION_SPECS",
    "build_lr_scheduler",
    "check_eval_curve_every",
    "check_step_budget_options",
    "evaluate_to_json",
    "evaluation_plan",
    "per_step_schedule",
]

STEP_BUDGET_OPTION_SPECS: dict[str, str] = {
    "epochs": "int>=1",
    "max_steps": "int?>=1",
    "warmup_steps": "int>=0",
    "min_lr_ratio": "float>=0",
    "optimizer_name": "choice:" + "|".join(OPTIMIZERS),
    "weight_decay": "float>=0",
}
"""Spec (see :func:`~monai_cluster.workflows.validate_option`) of the budget and optimiser options."""


def check_step_budget_options(**options: Any) -> dict[str, Any]:
    """Check ``epochs``, ``max_steps``, ``warmup_steps``, ``min_lr_ratio``, ``optimizer_name``, ``weight_decay``.

    Beyond each option's type and range: ``warmup_steps`` and ``min_lr_ratio`` shape the per-step schedule of a
    step budget, so without ``max_steps`` they must stay 0 (the per-epoch cosine has neither); ``warmup_steps``
    is at most ``max_steps``; ``min_lr_ratio`` is at most 1.

    Returns:
        the options normalised.

    Raises:
        TypeError/ValueError: naming the option, e.g. ``option 'max_steps' (--max_steps) must be an integer >= 1
            or None, got int 0.``
    """
    checked = validate_options(options, STEP_BUDGET_OPTION_SPECS)
    if checked["min_lr_ratio"] > 1:
        raise ValueError(f"option 'min_lr_ratio' (--min_lr_ratio) must lie in [0, 1], got {checked['min_lr_ratio']}.")
    if checked["max_steps"] is None:
        for name in ("warmup_steps", "min_lr_ratio"):
            if checked[name]:
                raise ValueError(
                    f"option {name!r} (--{name}) shapes the per-step schedule of a step budget: set --max_steps, "
                    f"or leave --{name} at 0 (got {checked[name]} without max_steps)."
                )
    elif checked["warmup_steps"] > checked["max_steps"]:
        raise ValueError(
            f"option 'warmup_steps' (--warmup_steps) must be at most max_steps {checked['max_steps']}, "
            f"got {checked['warmup_steps']}."
        )
    return checked


def per_step_schedule(max_steps: int | None) -> bool:
    """Whether the learning rate is stepped per iteration (a step budget) rather than per epoch."""
    return max_steps is not None


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    epochs: int,
    max_steps: int | None = None,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """``CosineAnnealingLR(T_max=epochs)`` stepped per epoch, or with ``max_steps`` a per-step ``WarmupCosineLR``."""
    if max_steps is None:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(epochs))
    return WarmupCosineLR(optimizer, int(max_steps), int(warmup_steps), float(min_lr_ratio))


def evaluation_plan(eval_every_steps: int | None, eval_last: int, total_steps: int) -> list[int] | None:
    """The iterations to evaluate at: the last ``eval_last`` of every ``eval_every_steps`` up to ``total_steps``.

    Returns:
        ``None`` without ``eval_every_steps``, else
        :func:`~monai_cluster.handlers.step_budget.evaluation_steps`'s list.

    Raises:
        ValueError: naming ``eval_every_steps`` and ``eval_last`` when the evaluations do not fit in the run.
    """
    from monai_cluster.handlers import evaluation_steps

    if eval_every_steps is None:
        return None
    first = int(total_steps) - int(eval_every_steps) * (int(eval_last) - 1)
    if first < 1:
        raise ValueError(
            f"options 'eval_every_steps' ({eval_every_steps}) and 'eval_last' ({eval_last}) ask for evaluations "
            f"before the first step of a {total_steps}-step run (the first would be at step {first}); lower them "
            "or train longer (max_steps or epochs)."
        )
    return evaluation_steps(total_steps, eval_every_steps, eval_last)


def check_eval_curve_every(eval_curve_every: int | None, eval_every_steps: int | None) -> None:
    """Refuse ``eval_curve_every`` without ``eval_every_steps``, naming both options.

    ``eval_curve_every`` (the segmentation bundles' further evaluations for a learning curve, never averaged into
    the score) is handed to :class:`~monai_cluster.handlers.PeriodicEvaluationHandler` as ``curve_steps``, which
    evaluates only in a run that has scored steps.

    Raises:
        ValueError: when ``eval_curve_every`` is given and ``eval_every_steps`` is ``None``.
    """
    if eval_curve_every is not None and eval_every_steps is None:
        raise ValueError(
            f"option 'eval_curve_every' (--eval_curve_every {eval_curve_every}) records a learning curve beside the "
            "scored evaluations; it needs 'eval_every_steps' (--eval_every_steps), got None."
        )


def evaluate_to_json(evaluator: Any, output_path: str | os.PathLike | None = None, extra: Mapping | None = None) -> dict:
    """Run a bundle's ``SupervisedEvaluator`` once and write its metrics as JSON (``mean_dice`` = its key metric).

    Args:
        evaluator: the evaluator (``validate#evaluator``), whose network is the one being trained.
        output_path: where the JSON goes, or ``None``.
        extra: entries added to the summary (e.g. the number of images).

    Returns:
        ``{"mean_dice": key metric, <every metric by name>, **extra}``.
    """
    from monai_cluster.utils.io import atomic_write_json

    evaluator.run()
    metrics = {name: float(value) for name, value in evaluator.state.metrics.items()}
    summary = {"mean_dice": metrics.get(evaluator.state.key_metric_name), **metrics, **dict(extra or {})}
    if output_path is not None:
        atomic_write_json(summary, output_path)
    return summary
