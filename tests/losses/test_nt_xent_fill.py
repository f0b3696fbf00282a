"""The in-place masked fill of the NT-Xent losses: its pass-through backward equals autograd's masked_fill."""

import pytest
import torch

from monai_cluster.losses._nt_xent import single_positive_nt_xent


def _grads(inplace: bool, dtype: torch.dtype, excluded: torch.Tensor, positive: torch.Tensor):
    torch.manual_seed(0)
    a = torch.randn(12, 8, dtype=torch.float64)
    b = torch.randn(12, 8, dtype=torch.float64)
    a, b = a.to(dtype).requires_grad_(True), b.to(dtype).requires_grad_(True)
    logits = (a / 0.1) @ b.T  # a fresh matmul output, as the losses pass it
    loss = single_positive_nt_xent(logits, excluded.clone(), positive, inplace=inplace).float().sum()
    loss.backward()
    return loss.detach(), a.grad.float(), b.grad.float()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_pass_through_backward_equals_masked_fill(dtype):
    excluded = torch.rand(12, 12, generator=torch.Generator().manual_seed(1)) < 0.5
    excluded[3] = True  # a row with nothing but its positive: loss 0, zero gradient
    positive = torch.arange(12).roll(1)
    ours = _grads(True, dtype, excluded, positive)
    plain = _grads(False, dtype, excluded, positive)
    for x, y in zip(ours, plain):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert ours[1].abs().sum() > 0  # the gradient is not trivially zero


def test_row_without_negatives_gets_zero_loss_and_gradient():
    torch.manual_seed(0)
    a = torch.randn(4, 3, requires_grad=True)
    logits = a @ a.detach().T
    excluded = torch.ones(4, 4, dtype=torch.bool)
    losses = single_positive_nt_xent(logits, excluded, torch.tensor([1, 0, 3, 2]), inplace=True)
    losses.sum().backward()
    assert torch.equal(losses.detach(), torch.zeros(4))
    assert torch.equal(a.grad, torch.zeros(4, 3))
