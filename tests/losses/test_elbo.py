"""ELBOLoss against a hand computation, both reconstructions, reductions, errors."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cluster.losses.elbo import ELBOLoss, gaussian_kl_divergence, reconstruction_error


def test_matches_hand_computation_mse():
    recon = torch.tensor([[[[0.5, 0.0]]], [[[1.0, 1.0]]]])  # (2, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # sample 0: rec 0.25, KL 0.5 * (1 + (2 - 1 - ln 2)); sample 1: rec 1, KL 0
    kl0 = 0.5 * (1.0 + 2.0 - 1.0 - math.log(2.0))
    expected = torch.tensor([0.25 + 0.5 * kl0, 1.0])
    loss = ELBOLoss(beta=0.5, reduction="none")
    torch.testing.assert_close(loss(recon, target, mu, logvar), expected)
    torch.testing.assert_close(ELBOLoss(beta=0.5)(recon, target, mu, logvar), expected.mean())
    torch.testing.assert_close(ELBOLoss(beta=0.5, reduction="sum")(recon, target, mu, logvar), expected.sum())
    parts = ELBOLoss(beta=0.5).components(recon, target, mu, logvar)
    torch.testing.assert_close(parts["kl"], torch.tensor(kl0 / 2))
    torch.testing.assert_close(parts["reconstruction"], torch.tensor(1.25 / 2))


def test_bce_matches_hand_computation_3d():
    recon = torch.full((1, 1, 2, 1, 1), 0.25)
    target = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1, 1)
    mu, logvar = torch.zeros(1, 3), torch.zeros(1, 3)
    expected = -math.log(0.25) - math.log(0.75)
    assert float(ELBOLoss(recon="bce")(recon, target, mu, logvar)) == pytest.approx(expected, rel=1e-6)


def test_kl_is_zero_at_prior_and_positive_elsewhere():
    assert float(gaussian_kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max()) == 0.0
    assert (gaussian_kl_divergence(torch.randn(3, 4), torch.randn(3, 4)) > 0).all()


def test_gradients_finite():
    recon = torch.rand(2, 1, 4, 4, requires_grad=True)
    mu, logvar = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    ELBOLoss(recon="bce")(recon, torch.rand(2, 1, 4, 4), mu, logvar).backward()
    for t in (recon, mu, logvar):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_errors():
    loss = ELBOLoss()
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="reconstruction and target must have the same shape"):
        loss(x, torch.rand(2, 1, 4, 5), torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="mu and logvar must have the same"):
        loss(x, x, torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="mu must have one row per sample"):
        loss(x, x, torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="target must lie in"):
        ELBOLoss(recon="bce")(x, x * 3, torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="recon must be one of"):
        ELBOLoss(recon="l2")
    with pytest.raises(ValueError, match="beta"):
        ELBOLoss(beta=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        ELBOLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="reconstruction must be batched"):
        reconstruction_error(torch.rand(3), torch.rand(3))
