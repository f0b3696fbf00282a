"""Attach an image's hierarchical pseudo-classes to its sample dictionary (contract 2: ``pseudo_class``)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import MapTransform

from monai_cluster.clustering import PseudoClassTable
from monai_cluster.transforms.pseudo_class.array import PseudoClass

__all__ = ["PseudoClassd", "PseudoClassD", "PseudoClassDict"]


class PseudoClassd(MapTransform):
    """Look up ``data[key_field]`` in a pseudo-class table and store ``np.int64`` ``(levels,)`` at ``output_key``.

    After collation the batch holds ``(B, levels)`` int64, coarse to fine, as the cluster-guided contrastive loss
    expects. A sample whose key is not in the table is an error: nothing is guessed.

    ``set_table`` swaps the table in place (the re-clustering handler
    :class:`~monai_cluster.handlers.PseudoClassUpdateHandler` calls it). The main process sees the new table at
    once. DataLoader workers hold copies of the transform made when their iterator started, so they pick the new
    table up at the next epoch only when ``persistent_workers=False`` (the default); with persistent workers they
    keep the old table. With ``CacheDataset``/``PersistentDataset``, place this transform after the first random
    transform (e.g. after :class:`MultiViewd`), otherwise its output is cached and a swapped table is never seen.

    Args:
        table: a :class:`~monai_cluster.clustering.PseudoClassTable` or the path of a table file (contract 4).
        key_field: the sample entry holding the image key (a path relative to the dataset root).
        output_key: where the pseudo-classes are written.

    Raises:
        ValueError: when the sample lacks ``key_field`` or its key is not in the table (both named).
        TypeError: when ``table`` is neither a table nor a path, or the key is not a string.

    References:
        - [0] Zhang et al., cluster-guided contrastive learning, 2022, https://arxiv.org/abs/2211.08557
    """

    def __init__(
        self,
        table: PseudoClassTable | str | os.PathLike,
        key_field: str = "key",
        output_key: str = "pseudo_class",
    ) -> None:
        super().__init__(keys=key_field, allow_missing_keys=False)
        self.key_field = key_field
        self.output_key = output_key
        self.converter = PseudoClass(table)

    @property
    def table(self) -> PseudoClassTable:
        """The table in use."""
        return self.converter.table

    def set_table(self, table: PseudoClassTable | str | os.PathLike) -> None:
        """Replace the table in place (a ``PseudoClassTable`` or a path); the next sample uses the new one."""
        self.converter.set_table(table)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with ``output_key`` set to the key's pseudo-classes ``(levels,)`` int64."""
        if self.key_field not in data:
            raise ValueError(
                f"PseudoClassd: the sample has no key_field {self.key_field!r} to look up (it has {list(data)})."
            )
        d = dict(data)
        d[self.output_key] = self.converter(d[self.key_field])
        return d


PseudoClassD = PseudoClassDict = PseudoClassd
