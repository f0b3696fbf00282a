"""Recorded random flips / 90-degree rotations, their exact inverse on batched maps, and local-discrimination views."""

from .array import (
    RandFlipRot90,
    apply_flip_rot90,
    check_flip_rot90_record,
    flip_rot90_record,
    identity_flip_rot90_record,
    undo_flip_rot90,
)
from .dictionary import (
    LocalDiscriminationViewsd,
    LocalDiscriminationViewsD,
    LocalDiscriminationViewsDict,
    RandFlipRot90d,
    RandFlipRot90D,
    RandFlipRot90Dict,
    record_key,
)

__all__ = [
    "LocalDiscriminationViewsd",
    "LocalDiscriminationViewsD",
    "LocalDiscriminationViewsDict",
    "RandFlipRot90",
    "RandFlipRot90d",
    "RandFlipRot90D",
    "RandFlipRot90Dict",
    "apply_flip_rot90",
    "check_flip_rot90_record",
    "flip_rot90_record",
    "identity_flip_rot90_record",
    "record_key",
    "undo_flip_rot90",
]
