"""Ignite handlers: pseudo-class re-clustering, the non-finite-loss stop, the shape-prior discriminator step, the
local-discrimination warm-up and the EMA teacher of semi-supervised fine-tuning."""

from .ema_teacher import EMATeacherHandler, ema_decay, make_teacher, unwrap_network
from .ld_warmup import LocalDiscriminationWarmupHandler
from .non_finite_loss import NonFiniteLossHandler
from .pseudo_class_update import PseudoClassUpdateHandler, count_changed
from .shape_prior import ShapePriorHandler, assignment_from_output

__all__ = [
    "EMATeacherHandler",
    "LocalDiscriminationWarmupHandler",
    "NonFiniteLossHandler",
    "PseudoClassUpdateHandler",
    "ShapePriorHandler",
    "assignment_from_output",
    "count_changed",
    "ema_decay",
    "make_teacher",
    "unwrap_network",
]
