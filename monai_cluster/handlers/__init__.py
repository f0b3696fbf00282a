"""Ignite handlers: pseudo-class re-clustering and the non-finite-loss stop."""

from .non_finite_loss import NonFiniteLossHandler
from .pseudo_class_update import PseudoClassUpdateHandler, count_changed

__all__ = ["NonFiniteLossHandler", "PseudoClassUpdateHandler", "count_changed"]
