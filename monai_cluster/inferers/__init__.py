"""Inferers: MONAI inferers extended (mixed precision on the CPU)."""

from .autocast import AutocastInferer

__all__ = ["AutocastInferer"]
