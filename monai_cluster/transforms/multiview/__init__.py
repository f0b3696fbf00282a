"""Multi-view augmentation: ``MultiView`` (arrays) and ``MultiViewd`` (sample dictionaries)."""

from .array import MultiView
from .dictionary import MultiViewd, MultiViewD, MultiViewDict, view_key
from .utils import NON_SPATIAL_INVERTIBLES, find_spatial_transforms

__all__ = [
    "MultiView",
    "MultiViewd",
    "MultiViewD",
    "MultiViewDict",
    "NON_SPATIAL_INVERTIBLES",
    "find_spatial_transforms",
    "view_key",
]
