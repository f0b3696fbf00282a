"""Ignite handlers: pseudo-class re-clustering, the non-finite-loss stop, the shape-prior discriminator step, the
local-discrimination warm-up, the EMA teacher of semi-supervised fine-tuning, a budget in steps and evaluations
at chosen steps."""

from .ema_teacher import EMATeacherHandler, ema_decay, make_teacher, unwrap_network
from .ld_warmup import LocalDiscriminationWarmupHandler
from .non_finite_loss import NonFiniteLossHandler
from .pseudo_class_update import PseudoClassUpdateHandler, count_changed
from .shape_prior import ShapePriorHandler, assignment_from_output
from .step_budget import (
    PeriodicEvaluationHandler,
    StepBudgetHandler,
    average_summaries,
    budget_epochs,
    evaluation_steps,
)

__all__ = [
    "EMATeacherHandler",
    "LocalDiscriminationWarmupHandler",
    "NonFiniteLossHandler",
    "PeriodicEvaluationHandler",
    "PseudoClassUpdateHandler",
    "ShapePriorHandler",
    "StepBudgetHandler",
    "assignment_from_output",
    "average_summaries",
    "budget_epochs",
    "count_changed",
    "ema_decay",
    "evaluation_steps",
    "make_teacher",
    "unwrap_network",
]
