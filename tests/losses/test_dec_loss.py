"""DECClusteringLoss: KL(P || Q) against a loop and against kl_div's batchmean; zero at P == Q; safe logs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_cluster.clustering.dec import target_distribution
from monai_cluster.losses.dec import DECClusteringLoss, dec_kl_divergence


def _loop_kl(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(q.shape[0], dtype=torch.float64)
    for i in range(q.shape[0]):
        for j in range(q.shape[1]):
            if p[i, j] > 0:
                out[i] += float(p[i, j]) * math.log(float(p[i, j]) / float(q[i, j]))
    return out


def test_matches_loop_and_kl_div_batchmean():
    q = torch.softmax(torch.randn(9, 4, dtype=torch.float64), 1)
    p = target_distribution(q)
    per_sample = DECClusteringLoss(reduction="none")(q, p)
    torch.testing.assert_close(per_sample, _loop_kl(q, p))
    mean = DECClusteringLoss()(q, p)
    torch.testing.assert_close(mean, F.kl_div(q.log(), p, reduction="batchmean"))
    torch.testing.assert_close(mean, _loop_kl(q, p).mean())
    torch.testing.assert_close(DECClusteringLoss(reduction="sum")(q, p), _loop_kl(q, p).sum())
    assert float(mean) > 0


def test_zero_when_target_equals_q():
    q = torch.softmax(torch.randn(5, 3), 1)
    assert float(DECClusteringLoss()(q, q.clone())) == pytest.approx(0.0, abs=1e-6)


def test_zero_entries_are_safe():
    q = torch.tensor([[1.0, 0.0], [0.5, 0.5]], requires_grad=True)
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = DECClusteringLoss()(q, p)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, torch.tensor(math.log(2.0) / 2))
    loss.backward()
    assert torch.isfinite(q.grad).all()
    assert q.grad[1, 1] < 0  # raising q towards p lowers the loss


def test_gradient_flows_into_q_only():
    logits = torch.randn(6, 3, requires_grad=True)
    q = torch.softmax(logits, 1)
    p = target_distribution(q).requires_grad_()
    dec_kl_divergence(q, p).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert p.grad is None


def test_errors():
    loss = DECClusteringLoss()
    with pytest.raises(ValueError, match="q and target must have the same"):
        loss(torch.rand(3, 2), torch.rand(3, 3))
    with pytest.raises(ValueError, match="target must have 2 dimensions"):
        loss(torch.rand(3, 2), torch.rand(6))
    with pytest.raises(ValueError, match="target must be a non-negative"):
        loss(torch.rand(2, 2), torch.tensor([[1.5, -0.5], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="q must be finite"):
        loss(torch.tensor([[float("nan"), 1.0]]), torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="reduction"):
        DECClusteringLoss(reduction="batch")
    with pytest.raises(ValueError, match="eps"):
        DECClusteringLoss(eps=0.0)
