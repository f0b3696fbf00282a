"""Random resized crops with flips that record their geometry, and the point arithmetic between two views."""

from .array import (
    RandResizedCrop,
    check_geometry,
    corresponding_points,
    identity_geometry,
    map_points,
    resample_with_geometry,
)
from .dictionary import RandResizedCropd, RandResizedCropD, RandResizedCropDict, geometry_key

__all__ = [
    "RandResizedCrop",
    "RandResizedCropd",
    "RandResizedCropD",
    "RandResizedCropDict",
    "check_geometry",
    "corresponding_points",
    "geometry_key",
    "identity_geometry",
    "map_points",
    "resample_with_geometry",
]
