"""Ignite handlers: pseudo-class re-clustering, the non-finite-loss stop, the shape-prior discriminator step and the
local-discrimination warm-up."""

from .ld_warmup import LocalDiscriminationWarmupHandler
from .non_finite_loss import NonFiniteLossHandler
from .pseudo_class_update import PseudoClassUpdateHandler, count_changed
from .shape_prior import ShapePriorHandler, assignment_from_output

__all__ = [
    "LocalDiscriminationWarmupHandler",
    "NonFiniteLossHandler",
    "PseudoClassUpdateHandler",
    "ShapePriorHandler",
    "assignment_from_output",
    "count_changed",
]
