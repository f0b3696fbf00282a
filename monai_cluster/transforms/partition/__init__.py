"""Slice partitions (``SlicePartition``/``SlicePartitiond``) and random 2D slices of 3D volumes (``RandSlice(d)``), the
slice a sample names (``TakeSliced``)."""

from .array import RandSlice, SlicePartition, check_slice_axis, choose_slice, slice_count, take_slice
from .dictionary import (
    RandSliced,
    RandSliceD,
    RandSliceDict,
    SlicePartitiond,
    SlicePartitionD,
    SlicePartitionDict,
    TakeSliced,
    TakeSliceD,
    TakeSliceDict,
)

__all__ = [
    "RandSlice",
    "RandSliced",
    "RandSliceD",
    "RandSliceDict",
    "SlicePartition",
    "SlicePartitiond",
    "SlicePartitionD",
    "SlicePartitionDict",
    "TakeSliced",
    "TakeSliceD",
    "TakeSliceDict",
    "check_slice_axis",
    "choose_slice",
    "slice_count",
    "take_slice",
]
