"""ContrastiveAutoEncoderLoss: NT-Xent + weighted reconstruction of both views, against a loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cluster.losses.contrastive_autoencoder import ContrastiveAutoEncoderLoss


def _loop_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    views = [v / v.norm() for v in torch.cat([z1, z2])]
    n, b = len(views), z1.shape[0]
    losses = []
    for a in range(n):
        pos = (a + b) % n
        sims = {j: float(views[a] @ views[j]) / t for j in range(n) if j != a}
        denom = sum(math.exp(s) for s in sims.values())
        losses.append(-math.log(math.exp(sims[pos]) / denom))
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("recon, spatial", [("mse", (4, 4)), ("l1", (3, 3, 2))])
def test_matches_loop_reference(recon, spatial):
    b = 4
    x1, x2 = torch.rand(b, 1, *spatial, dtype=torch.float64), torch.rand(b, 1, *spatial, dtype=torch.float64)
    out1 = {"projection": torch.randn(b, 5, dtype=torch.float64), "reconstruction": torch.rand_like(x1)}
    out2 = {"projection": torch.randn(b, 5, dtype=torch.float64), "reconstruction": torch.rand_like(x2)}
    err = (lambda d: d.pow(2)) if recon == "mse" else (lambda d: d.abs())
    rec = torch.cat(
        [err(out1["reconstruction"] - x1).flatten(1).mean(1), err(out2["reconstruction"] - x2).flatten(1).mean(1)]
    )
    nt = _loop_nt_xent(out1["projection"], out2["projection"], 0.5)
    loss = ContrastiveAutoEncoderLoss(temperature=0.5, recon_weight=0.3, recon=recon, reduction="none")
    torch.testing.assert_close(loss(out1, out2, x1, x2), nt + 0.3 * rec)
    mean = ContrastiveAutoEncoderLoss(temperature=0.5, recon_weight=0.3, recon=recon)
    torch.testing.assert_close(mean(out1, out2, x1, x2), (nt + 0.3 * rec).mean())
    parts = mean.components(out1, out2, x1, x2)
    torch.testing.assert_close(parts["contrastive"], nt.mean())
    torch.testing.assert_close(parts["reconstruction"], rec.mean())


def test_zero_weight_is_plain_nt_xent_and_gradients_flow():
    z1, z2 = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    r = torch.rand(3, 1, 2, 2, requires_grad=True)
    x = torch.rand(3, 1, 2, 2)
    loss = ContrastiveAutoEncoderLoss(recon_weight=0.0)
    value = loss({"projection": z1, "reconstruction": r}, {"projection": z2, "reconstruction": r}, x, x)
    torch.testing.assert_close(value.double(), _loop_nt_xent(z1.detach().double(), z2.detach().double(), 0.5).mean())
    ContrastiveAutoEncoderLoss()(
        {"projection": z1, "reconstruction": r}, {"projection": z2, "reconstruction": r}, x, x
    ).backward()
    for t in (z1, z2, r):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_errors():
    loss = ContrastiveAutoEncoderLoss()
    x = torch.rand(3, 1, 4, 4)
    good = {"projection": torch.randn(3, 4), "reconstruction": torch.rand(3, 1, 4, 4)}
    with pytest.raises(ValueError, match="output_2 must hold the key 'projection'"):
        loss(good, {"reconstruction": x}, x, x)
    with pytest.raises(TypeError, match="output_1 must be the model's output dict"):
        loss(torch.randn(3, 4), good, x, x)
    with pytest.raises(ValueError, match="x2 .* and its reconstruction must have the same shape"):
        loss(good, good, x, torch.rand(3, 1, 4, 5))
    with pytest.raises(ValueError, match="x1 and x2 must hold the same B samples"):
        short = {"projection": torch.randn(3, 4), "reconstruction": torch.rand(2, 1, 4, 4)}
        loss(short, short, x[:2], x[:2])
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveAutoEncoderLoss(temperature=0.0)
    with pytest.raises(ValueError, match="recon_weight"):
        ContrastiveAutoEncoderLoss(recon_weight=-1.0)
    with pytest.raises(ValueError, match="recon must be one of"):
        ContrastiveAutoEncoderLoss(recon="bce")
