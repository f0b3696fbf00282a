"""MONAI-style array and dictionary transforms: multi-view augmentation and slice partitions."""

from .multiview import MultiView, MultiViewd, MultiViewD, MultiViewDict, find_spatial_transforms, view_key
from .partition import (
    RandSlice,
    RandSliced,
    RandSliceD,
    RandSliceDict,
    SlicePartition,
    SlicePartitiond,
    SlicePartitionD,
    SlicePartitionDict,
)

__all__ = [
    "MultiView",
    "MultiViewd",
    "MultiViewD",
    "MultiViewDict",
    "RandSlice",
    "RandSliced",
    "RandSliceD",
    "RandSliceDict",
    "SlicePartition",
    "SlicePartitiond",
    "SlicePartitionD",
    "SlicePartitionDict",
    "find_spatial_transforms",
    "view_key",
]
