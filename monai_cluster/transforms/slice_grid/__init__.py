"""The in-plane grid of slices: a centred square crop (``CenterFractionCrop(d)``), its geometry and the way back."""

from .array import CenterFractionCrop, SliceGridGeometry, center_fraction_box, restore_slice_grid, slice_grid_geometry
from .dictionary import CenterFractionCropd, CenterFractionCropD, CenterFractionCropDict

__all__ = [
    "CenterFractionCrop",
    "CenterFractionCropd",
    "CenterFractionCropD",
    "CenterFractionCropDict",
    "SliceGridGeometry",
    "center_fraction_box",
    "restore_slice_grid",
    "slice_grid_geometry",
]
