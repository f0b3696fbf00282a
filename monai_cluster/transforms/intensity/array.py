"""Intensity scaling of whole images by their own percentiles."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.transforms import Transform

__all__ = ["ScalePercentiles", "check_percentiles"]


def check_percentiles(lower: object, upper: object) -> tuple[float, float]:
    """Return ``(lower, upper)`` as floats when ``0 <= lower < upper <= 100``, else raise naming them.

    Raises:
        TypeError: when ``lower`` or ``upper`` is not a real number.
        ValueError: when they are not finite or not ``0 <= lower < upper <= 100``.
    """
    for name, value in (("lower", lower), ("upper", upper)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number (a percentile), got {type(value).__name__}.")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}.")
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"lower and upper must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}.")
    return float(lower), float(upper)


class ScalePercentiles(Transform):
    """Map the ``lower`` and ``upper`` percentiles of an image (all channels together) to 0 and 1, clipped.

    MONAI's ``ScaleIntensityRangePercentiles`` does the same but sorts volumes under a million voxels with
    ``torch.quantile``, about ten times slower than ``numpy.percentile`` used here; on whole volumes, once per
    slice item, that cost counts. A constant image becomes 0.

    Args:
        lower: lower percentile in ``[0, 100)``.
        upper: upper percentile in ``(lower, 100]``.

    Raises:
        ValueError: when the percentiles are not ``0 <= lower < upper <= 100``, or (on call) the image is not finite.
        TypeError: when a percentile is not a number.
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5) -> None:
        self.lower, self.upper = check_percentiles(lower, upper)

    def __call__(self, img: np.ndarray | torch.Tensor, name: str = "img") -> np.ndarray | torch.Tensor:
        """Return ``img`` scaled to ``[0, 1]`` as float32 (a tensor stays a tensor, on the CPU).

        Args:
            img: the image, any shape.
            name: how error messages name the image.
        """
        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise ValueError(f"ScalePercentiles: {name} holds non-finite values.")
        low, high = np.percentile(array, [self.lower, self.upper])
        if high > low:
            scaled = np.clip((array - low) / (high - low), 0.0, 1.0).astype(np.float32)
        else:
            scaled = np.zeros_like(array)
        return torch.from_numpy(scaled) if isinstance(img, torch.Tensor) else scaled
