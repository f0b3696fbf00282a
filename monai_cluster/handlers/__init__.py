"""Ignite handlers: pseudo-class re-clustering and the non-finite-loss stop."""

from .non_finite_loss import NonFiniteLossHandler

__all__ = ["NonFiniteLossHandler"]
