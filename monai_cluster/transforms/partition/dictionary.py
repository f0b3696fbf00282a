"""Slice partitions and random 2D slices of 3D volumes for sample dictionaries."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from monai_cluster.transforms.partition.array import (
    SlicePartition,
    check_slice_axis,
    choose_slice,
    slice_count,
    take_slice,
)
from monai_cluster.utils import check_positive_int

__all__ = [
    "SlicePartitiond",
    "SlicePartitionD",
    "SlicePartitionDict",
    "RandSliced",
    "RandSliceD",
    "RandSliceDict",
    "TakeSliced",
    "TakeSliceD",
    "TakeSliceDict",
]


class SlicePartitiond(MapTransform):
    """Write the partition ``floor(slice_index * num_partitions / num_slices)`` of a sample's slice (``np.int64``).

    Reads the slice index and slice count that :class:`RandSliced` (or a dataset listing) recorded; after collation
    the batch holds ``partition`` ``(B,)`` int64 for the partition-aware global contrastive loss.

    Args:
        num_partitions: partitions per volume, at least 1 and at most the volume's slice count.
        slice_index_key: sample entry with the slice index.
        num_slices_key: sample entry with the number of slices of the volume.
        output_key: where the partition is written.

    Raises:
        ValueError: when an entry is missing (named), the index is out of range or there are fewer slices than
            partitions.

    References:
        - [0] Chaitanya et al., global and local contrastive learning, 2020, https://arxiv.org/abs/2006.10511
    """

    def __init__(
        self,
        num_partitions: int,
        slice_index_key: str = "slice_index",
        num_slices_key: str = "num_slices",
        output_key: str = "partition",
    ) -> None:
        super().__init__(keys=(slice_index_key, num_slices_key), allow_missing_keys=False)
        self.partitioner = SlicePartition(num_partitions)
        self.slice_index_key = slice_index_key
        self.num_slices_key = num_slices_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with ``output_key`` set to the partition (``np.int64`` scalar)."""
        missing = [k for k in (self.slice_index_key, self.num_slices_key) if k not in data]
        if missing:
            raise ValueError(
                f"SlicePartitiond: the sample lacks {missing} (it has {list(data)}); apply RandSliced first "
                "or record the slice index and slice count in the listing."
            )
        d = dict(data)
        d[self.output_key] = np.int64(self.partitioner(d[self.slice_index_key], d[self.num_slices_key]))
        return d


class RandSliced(Randomizable, MapTransform):
    """Turn loaded 3D volumes ``(C, H, W, D)`` into one 2D slice ``(C, H, W)``, the same slice for every key.

    The slice is drawn uniformly from ``self.R`` (or fixed by ``slice_index``); its index and the slice count are
    written as ``np.int64`` to ``slice_index_key`` and ``num_slices_key`` for :class:`SlicePartitiond`.
    ``MetaTensor`` metadata is kept with the affine reduced to 2D.

    Args:
        keys: keys of the volumes to slice (e.g. ``("image", "label")``).
        axis: spatial axis to slice along, ``-3 .. 2`` (``-1``: the last, D).
        slice_index_key: where the slice index is written.
        num_slices_key: where the number of slices is written.
        slice_index: a fixed slice index instead of a random one.
        allow_missing_keys: skip keys absent from the sample instead of raising.

    Raises:
        ValueError: when a volume is not ``(C, H, W, D)``, the volumes disagree on the slice count along ``axis``,
            the fixed ``slice_index`` is out of range, a key is missing, or no key is present.
    """

    def __init__(
        self,
        keys: KeysCollection,
        axis: int = -1,
        slice_index_key: str = "slice_index",
        num_slices_key: str = "num_slices",
        slice_index: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.axis = check_slice_axis(axis)
        self.fixed_index = None if slice_index is None else check_positive_int(slice_index, "slice_index", minimum=0)
        self.slice_index: int | None = None
        self.slice_index_key = slice_index_key
        self.num_slices_key = num_slices_key

    def randomize(self, data: Any = None) -> None:
        """Choose the slice of a volume with ``data`` (an ``int``) slices: the fixed index or a draw from ``self.R``."""
        self.slice_index = choose_slice(self.R, int(data), self.fixed_index, self.axis)

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with each volume replaced by the chosen slice and the index/count recorded."""
        missing = [k for k in self.keys if k not in data]
        if missing and not self.allow_missing_keys:
            raise ValueError(f"RandSliced: key(s) {missing} are missing from the sample (it has {list(data)}).")
        keys = [k for k in self.keys if k in data]
        if not keys:
            raise ValueError(f"RandSliced: none of the keys {list(self.keys)} is in the sample (it has {list(data)}).")
        counts = {k: slice_count(data[k], self.axis, name=repr(k)) for k in keys}
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"RandSliced: the volumes must have the same number of slices along axis {self.axis}, got {counts}."
            )
        n = counts[keys[0]]
        if randomize or self.slice_index is None:
            self.randomize(n)
        d = dict(data)
        for k in keys:
            d[k] = take_slice(d[k], self.axis, self.slice_index)
        d[self.slice_index_key] = np.int64(self.slice_index)
        d[self.num_slices_key] = np.int64(n)
        return d


SlicePartitionD = SlicePartitionDict = SlicePartitiond
RandSliceD = RandSliceDict = RandSliced


class TakeSliced(MapTransform):
    """Replace loaded channel-first volumes ``(C, H, W, D)`` by the slice the sample names: ``(C, H, W)``.

    The slice index is read from the sample (``slice_key``, as :func:`monai_cluster.workflows.list_volume_slices`
    writes it), so one deterministic transform serves every slice of a listing (cacheable, unlike a random slice). When the sample
    also records ``num_slices_key``, the loaded volume must have that many slices (the file changed otherwise).
    ``MetaTensor`` metadata is kept with the affine reduced to 2D.

    Args:
        keys: keys of the volumes to slice.
        slice_key: sample entry with the slice index.
        num_slices_key: sample entry with the slice count recorded in the listing, or None to skip that check.
        axis: spatial axis to slice along, ``-3 .. 2`` (``-1``: the last).
        allow_missing_keys: skip keys absent from the sample instead of raising.

    Raises:
        ValueError: when the slice index is missing or out of range, a volume is not ``(C, H, W, D)``, or its
            slice count differs from the recorded one (the file is named).
    """

    def __init__(
        self,
        keys: KeysCollection,
        slice_key: str = "slice",
        num_slices_key: str | None = "num_slices",
        axis: int = -1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slice_key = slice_key
        self.num_slices_key = num_slices_key
        self.axis = check_slice_axis(axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with each volume replaced by its slice ``data[slice_key]``."""
        if self.slice_key not in data:
            raise ValueError(
                f"TakeSliced: the sample lacks {self.slice_key!r} (it has {list(data)}); list the volumes with "
                "list_volume_slices."
            )
        d = dict(data)
        index = d[self.slice_key]
        for key in self.key_iterator(d):
            volume = d[key]
            source = volume.meta.get("filename_or_obj", key) if isinstance(volume, MetaTensor) else key
            count = slice_count(volume, self.axis, name=f"{key} ({source})")
            recorded = None if self.num_slices_key is None else d.get(self.num_slices_key)
            if recorded is not None and int(recorded) != count:
                raise ValueError(
                    f"TakeSliced: {source} has {count} slices along axis {self.axis}, but the listing recorded "
                    f"{int(recorded)}; the file changed since it was listed."
                )
            d[key] = take_slice(volume, self.axis, index)
        return d


TakeSliceD = TakeSliceDict = TakeSliced
