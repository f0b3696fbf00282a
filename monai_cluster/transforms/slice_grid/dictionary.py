"""Dictionary version of :class:`~monai_cluster.transforms.slice_grid.CenterFractionCrop`."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from .array import CenterFractionCrop

__all__ = ["CenterFractionCropd", "CenterFractionCropD", "CenterFractionCropDict"]


class CenterFractionCropd(MapTransform):
    """Crop each image and label of ``keys`` to the same centred square (:class:`CenterFractionCrop`).

    Args:
        keys: keys of the ``(C, H, W[, D])`` images (an image and its label share one crop: same in-plane shape).
        crop_fraction: fraction of the short side, in ``(0, 1]``, or ``None`` to keep the whole plane.
        allow_missing_keys: skip keys absent from the sample.
    """

    def __init__(self, keys: KeysCollection, crop_fraction: float | None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cropper = CenterFractionCrop(crop_fraction)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with each key's image cropped."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key])
        return d


CenterFractionCropD = CenterFractionCropDict = CenterFractionCropd
