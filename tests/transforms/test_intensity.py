"""Tests for ScalePercentiles(d): scaling, constant images and every error naming its input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cluster.transforms import ScalePercentiles, ScalePercentilesd, ScalePercentilesD, check_percentiles


def test_scale_percentiles_maps_the_percentiles_to_zero_and_one():
    image = np.arange(101, dtype=np.float64).reshape(1, 101)
    out = ScalePercentiles(10.0, 90.0)(image)
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out[0, 50], 0.5, atol=1e-6)
    tensor = ScalePercentiles()(torch.from_numpy(image))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32


def test_scale_percentiles_of_a_constant_image_is_zero():
    out = ScalePercentilesd("image")({"image": np.full((1, 4, 4, 2), 7.0)})["image"]
    assert out.dtype == np.float32 and not out.any()
    with pytest.raises(ValueError, match="non-finite"):
        ScalePercentilesd("image")({"image": np.full((1, 2, 2, 2), np.nan)})
    assert ScalePercentilesD is ScalePercentilesd


@pytest.mark.parametrize(
    "lower, upper, error, match",
    [
        (50.0, 50.0, ValueError, "lower and upper must satisfy"),
        (-1.0, 50.0, ValueError, "lower and upper must satisfy"),
        (1.0, 101.0, ValueError, "lower and upper must satisfy"),
        ("1", 90.0, TypeError, "lower must be a number"),
        (1.0, float("nan"), ValueError, "upper must be finite"),
    ],
)
def test_percentiles_are_checked_by_their_own_names(lower, upper, error, match):
    with pytest.raises(error, match=match):
        check_percentiles(lower, upper)
    with pytest.raises(error, match=match):
        ScalePercentilesd("image", lower=lower, upper=upper)
