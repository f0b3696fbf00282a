"""Pseudo-class lookup: ``PseudoClass`` (key -> classes) and ``PseudoClassd`` (sample dictionaries)."""

from .array import PseudoClass, load_pseudo_class_table
from .dictionary import PseudoClassd, PseudoClassD, PseudoClassDict

__all__ = ["PseudoClass", "PseudoClassd", "PseudoClassD", "PseudoClassDict", "load_pseudo_class_table"]
