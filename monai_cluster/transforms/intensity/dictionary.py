"""Percentile intensity scaling for sample dictionaries."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_cluster.transforms.intensity.array import ScalePercentiles

__all__ = ["ScalePercentilesd", "ScalePercentilesD", "ScalePercentilesDict"]


class ScalePercentilesd(MapTransform):
    """Dictionary version of :class:`ScalePercentiles`: each image's ``lower``/``upper`` percentiles to 0 and 1.

    Args:
        keys: keys of the images to scale (numpy arrays or tensors; a tensor is returned as a tensor).
        lower: lower percentile in ``[0, 100)``.
        upper: upper percentile in ``(lower, 100]``.
        allow_missing_keys: skip keys absent from the sample instead of raising.

    Raises:
        ValueError: when the percentiles are not ``0 <= lower < upper <= 100`` or an image is not finite.
        TypeError: when a percentile is not a number.
    """

    def __init__(
        self, keys: KeysCollection, lower: float = 0.5, upper: float = 99.5, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScalePercentiles(lower, upper)
        self.lower, self.upper = self.scaler.lower, self.scaler.upper

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with each image scaled to ``[0, 1]`` (float32)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key], name=repr(key))
        return d


ScalePercentilesD = ScalePercentilesDict = ScalePercentilesd
