"""MONAI-style array and dictionary transforms: multi-view augmentation, pseudo-class lookup, slice partitions."""

from .flip_rotate import (
    LocalDiscriminationViewsd,
    LocalDiscriminationViewsD,
    LocalDiscriminationViewsDict,
    RandFlipRot90,
    RandFlipRot90d,
    RandFlipRot90D,
    RandFlipRot90Dict,
    apply_flip_rot90,
    undo_flip_rot90,
)
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
    "LocalDiscriminationViewsd",
    "LocalDiscriminationViewsD",
    "LocalDiscriminationViewsDict",
    "MultiView",
    "MultiViewd",
    "MultiViewD",
    "MultiViewDict",
    "PseudoClass",
    "PseudoClassd",
    "PseudoClassD",
    "PseudoClassDict",
    "RandFlipRot90",
    "RandFlipRot90d",
    "RandFlipRot90D",
    "RandFlipRot90Dict",
    "RandSlice",
    "RandSliced",
    "RandSliceD",
    "RandSliceDict",
    "SlicePartition",
    "SlicePartitiond",
    "SlicePartitionD",
    "SlicePartitionDict",
    "apply_flip_rot90",
    "find_spatial_transforms",
    "undo_flip_rot90",
    "view_key",
]
