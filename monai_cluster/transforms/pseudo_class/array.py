"""Look up an image's hierarchical pseudo-classes in a pseudo-class table (array transform)."""

from __future__ import annotations

import os

import numpy as np
from monai.transforms import Transform

from monai_cluster.clustering import PseudoClassTable, read_pseudo_class_table

__all__ = ["PseudoClass", "load_pseudo_class_table"]


def load_pseudo_class_table(table: PseudoClassTable | str | os.PathLike) -> PseudoClassTable:
    """Return ``table`` itself, or the table read (and validated) from the CSV file at path ``table``.

    Raises:
        TypeError: when ``table`` is neither a ``PseudoClassTable`` nor a path.
    """
    if isinstance(table, PseudoClassTable):
        return table
    if isinstance(table, (str, os.PathLike)):
        return read_pseudo_class_table(table)
    raise TypeError(f"table must be a PseudoClassTable or a path to a pseudo-class table, got {type(table).__name__}.")


class PseudoClass(Transform):
    """Map an image key (its path relative to the dataset root) to its pseudo-classes, coarse to fine.

    Args:
        table: a :class:`~monai_cluster.clustering.PseudoClassTable` or the path of a table file (contract 4).

    Example:
        >>> PseudoClass("pseudo_classes.csv")("images/IMD002.png")
        array([3, 41])
    """

    def __init__(self, table: PseudoClassTable | str | os.PathLike) -> None:
        self.table = load_pseudo_class_table(table)

    def set_table(self, table: PseudoClassTable | str | os.PathLike) -> None:
        """Replace the table (e.g. after re-clustering); later calls use the new one."""
        self.table = load_pseudo_class_table(table)

    def __call__(self, key: str) -> np.ndarray:
        """Return the pseudo-classes of ``key`` as ``np.int64`` ``(levels,)``.

        Raises:
            TypeError: when ``key`` is not a string.
            ValueError: when ``key`` is not in the table (the message names it; nothing is guessed).
        """
        if not isinstance(key, str):
            raise TypeError(
                f"key must be a str (an image path relative to the dataset root), got {type(key).__name__}."
            )
        return np.array(self.table.lookup(key), dtype=np.int64, copy=True)
