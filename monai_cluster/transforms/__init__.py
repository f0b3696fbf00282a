"""MONAI-style array and dictionary transforms: multi-view augmentation, pseudo-class lookup, slice partitions."""

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
from .pseudo_class import PseudoClass, PseudoClassd, PseudoClassD, PseudoClassDict

__all__ = [
    "MultiView",
    "MultiViewd",
    "MultiViewD",
    "MultiViewDict",
    "PseudoClass",
    "PseudoClassd",
    "PseudoClassD",
    "PseudoClassDict",
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
