"""Intensity scaling by each image's own percentiles (``ScalePercentiles(d)``)."""

from .array import ScalePercentiles, check_percentiles
from .dictionary import ScalePercentilesd, ScalePercentilesD, ScalePercentilesDict

__all__ = ["ScalePercentiles", "ScalePercentilesd", "ScalePercentilesD", "ScalePercentilesDict", "check_percentiles"]
