"""Tests for ShapePriorDiscriminator: logits per sample in 2D/3D, gradients, learning to separate, errors."""

from __future__ import annotations

import pytest
import torch

from monai_cluster.networks.blocks.shape_prior import ShapePriorDiscriminator


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_one_logit_per_sample_and_finite_gradients(spatial_dims):
    disc = ShapePriorDiscriminator(spatial_dims, features=(4, 8))
    x = torch.rand(3, 1, *([8] * spatial_dims), requires_grad=True)
    logits = disc(x)
    assert logits.shape == (3,)
    logits.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in disc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_any_size_above_the_minimum_and_two_channels():
    disc = ShapePriorDiscriminator(2, in_channels=2, features=(4, 4, 4))
    assert disc.min_size == 8
    assert disc(torch.rand(2, 2, 8, 20)).shape == (2,)
    assert disc(torch.rand(1, 2, 33, 17)).shape == (1,)


def test_learns_to_tell_stripes_from_blobs():
    torch.manual_seed(0)
    disc = ShapePriorDiscriminator(2, features=(8, 8))
    stripes = torch.zeros(8, 1, 16, 16)
    stripes[:, :, :, ::4] = 1.0
    blobs = torch.zeros(8, 1, 16, 16)
    blobs[:, :, 4:12, 4:12] = 1.0
    x, y = torch.cat([stripes, blobs]), torch.cat([torch.ones(8), torch.zeros(8)])
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(disc(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_errors_name_the_input():
    with pytest.raises(ValueError, match="spatial_dims"):
        ShapePriorDiscriminator(4)
    with pytest.raises(ValueError, match="in_channels"):
        ShapePriorDiscriminator(2, in_channels=0)
    with pytest.raises(ValueError, match="features must be a non-empty sequence"):
        ShapePriorDiscriminator(2, features=())
    with pytest.raises(ValueError, match=r"features\[1\]"):
        ShapePriorDiscriminator(2, features=(4, -1))
    disc = ShapePriorDiscriminator(2, features=(4, 4))
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\)"):
        disc(torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="x must have 1 channel"):
        disc(torch.rand(1, 2, 8, 8))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        disc(torch.ones(1, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 4 per axis"):
        disc(torch.rand(1, 1, 8, 3))
    with pytest.raises(ValueError, match="x must be finite"):
        disc(torch.full((1, 1, 8, 8), float("nan")))
