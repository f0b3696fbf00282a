"""Tests for the adversarial shape prior: GAN terms against their formulas, cluster maps, a D step, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cluster.losses.shape_prior import (
    ShapePriorLoss,
    shape_prior_discriminator_loss,
    shape_prior_generator_loss,
)
from monai_cluster.networks.blocks.shape_prior import ShapePriorDiscriminator


def test_terms_match_the_non_saturating_formulas():
    fake, real = torch.randn(4), torch.randn(3)
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    torch.testing.assert_close(shape_prior_generator_loss(fake), F.softplus(-fake).mean())
    torch.testing.assert_close(shape_prior_generator_loss(fake, "none"), F.softplus(-fake))
    d = shape_prior_discriminator_loss(real, fake, reduction="none")
    torch.testing.assert_close(d, torch.cat([F.softplus(-real), F.softplus(fake)]))
    torch.testing.assert_close(shape_prior_discriminator_loss(real, fake, "sum"), d.sum())
    big = torch.tensor([200.0, -200.0])
    assert torch.isfinite(shape_prior_discriminator_loss(big, big)) and torch.isfinite(shape_prior_generator_loss(big))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cluster_map_and_gradients(spatial_dims):
    shape = (2, 4, *([8] * spatial_dims))
    logits = torch.randn(shape, requires_grad=True)
    a = torch.softmax(logits, dim=1)
    prior = ShapePriorLoss(ShapePriorDiscriminator(spatial_dims, features=(4, 4)), cluster_index=[0, 2])
    torch.testing.assert_close(prior.cluster_map(a), a[:, [0, 2]].sum(1, keepdim=True))
    g = prior(a)
    expected = F.softplus(-prior.discriminator(a[:, [0, 2]].sum(1, keepdim=True))).mean()
    torch.testing.assert_close(g, expected)
    g.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    masks = (torch.rand(3, 1, *([8] * spatial_dims)) > 0.5).float()
    logits.grad = None
    d = prior.discriminator_loss(a, masks)
    d.backward()
    assert logits.grad is None  # the cluster map is detached for the discriminator term
    assert all(torch.isfinite(p.grad).all() for p in prior.discriminator.parameters())
    assert "cluster_index=[0, 2]" in repr(prior)


def test_discriminator_steps_lower_its_loss():
    torch.manual_seed(0)
    prior = ShapePriorLoss(ShapePriorDiscriminator(2, features=(8, 8)))
    assignment = torch.softmax(torch.randn(4, 3, 16, 16), dim=1)
    masks = torch.zeros(4, 1, 16, 16)
    masks[:, :, :, ::3] = 1.0
    opt = torch.optim.Adam(prior.discriminator.parameters(), lr=1e-2)
    values = []
    for _ in range(25):
        loss = prior.discriminator_loss(assignment, masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(float(loss))
    assert values[-1] < 0.5 * values[0]


def test_errors_name_the_input():
    disc = ShapePriorDiscriminator(2, features=(4, 4))
    with pytest.raises(TypeError, match="discriminator must be a torch.nn.Module"):
        ShapePriorLoss(lambda x: x)
    with pytest.raises(TypeError, match="cluster_index"):
        ShapePriorLoss(disc, cluster_index="0")
    with pytest.raises(ValueError, match="cluster_index must hold cluster indices >= 0"):
        ShapePriorLoss(disc, cluster_index=-1)
    with pytest.raises(ValueError, match="must not repeat"):
        ShapePriorLoss(disc, cluster_index=[1, 1])
    with pytest.raises(ValueError, match="reduction"):
        ShapePriorLoss(disc, reduction="max")
    prior = ShapePriorLoss(disc, cluster_index=3)
    a = torch.softmax(torch.randn(2, 3, 8, 8), dim=1)
    with pytest.raises(ValueError, match=r"cluster_index \[3\] must be below the K=3"):
        prior(a)
    prior = ShapePriorLoss(disc)
    with pytest.raises(ValueError, match="prior_masks must have 1 channel"):
        prior.discriminator_loss(a, torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"prior_masks must be \(B, C, H, W\)"):
        prior.discriminator_loss(a, torch.zeros(2, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"prior_masks must hold values in \[0, 1\]"):
        prior.discriminator_loss(a, torch.full((2, 1, 8, 8), 255.0))
    with pytest.raises(ValueError, match="fake_logits must have 1 dimensions"):
        shape_prior_generator_loss(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="real_logits must be finite"):
        shape_prior_discriminator_loss(torch.tensor([float("nan")]), torch.zeros(1))
