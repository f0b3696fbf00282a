"""Tests for monai_cluster.networks.blocks.heads: shapes, values against hand-written maps, grads, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_cluster.networks import DenseProjectionHead, ProjectionHead


def test_projection_head_two_layers_matches_manual_mlp():
    head = ProjectionHead(6, hidden_features=5, out_features=3).eval()
    lin1, bn, act, lin2 = head.layers
    assert isinstance(bn, nn.BatchNorm1d) and isinstance(act, nn.ReLU) and lin1.bias is None
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 6)
    h = x @ lin1.weight.T
    h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    expected = torch.relu(h) @ lin2.weight.T + lin2.bias
    torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("num_layers,norm,hidden", [(1, True, None), (2, False, None), (3, True, 7)])
def test_projection_head_structure(num_layers, norm, hidden):
    head = ProjectionHead(6, hidden_features=hidden, out_features=3, num_layers=num_layers, norm=norm, act="GELU")
    linears = [m for m in head.layers if isinstance(m, nn.Linear)]
    assert len(linears) == num_layers
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.layers) == (num_layers - 1 if norm else 0)
    assert sum(isinstance(m, nn.GELU) for m in head.layers) == num_layers - 1
    if num_layers > 1:
        assert linears[0].out_features == (hidden or 6)
    assert head(torch.randn(3, 6)).shape == (3, 3)


def test_projection_head_gradients_finite():
    head = ProjectionHead(6, out_features=3)
    head(torch.randn(4, 6)).square().sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_projection_head_errors():
    head = ProjectionHead(6)
    with pytest.raises(ValueError, match=r"x must be \(B, 6\)"):
        head(torch.randn(4, 5))
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        head(torch.randn(4, 6, 1))
    with pytest.raises(ValueError, match="at least 2 vectors in training mode"):
        head(torch.randn(1, 6))
    assert head.eval()(torch.randn(1, 6)).shape == (1, 128)
    with pytest.raises(ValueError, match="in_features"):
        ProjectionHead(0)
    with pytest.raises(TypeError, match="hidden_features"):
        ProjectionHead(4, hidden_features=2.5)
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(4, num_layers=0)
    with pytest.raises(TypeError, match="norm"):
        ProjectionHead(4, norm="batch")


@pytest.mark.parametrize("spatial_dims,size", [(2, (5, 6)), (3, (3, 4, 5))])
def test_dense_head_is_a_per_location_linear_map(spatial_dims, size):
    head = DenseProjectionHead(spatial_dims, 4, out_channels=3)
    x = torch.randn(2, 4, *size)
    conv = head.layers[0]
    weight = conv.weight.reshape(3, 4)
    expected = torch.einsum("oc,bc...->bo...", weight, x) + conv.bias.reshape(1, 3, *([1] * spatial_dims))
    torch.testing.assert_close(head(x), expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_dense_head_hidden_layer_shapes_and_grads(spatial_dims):
    head = DenseProjectionHead(spatial_dims, 4, out_channels=3, hidden_channels=5)
    assert [type(m).__name__ for m in head.layers] == [f"Conv{spatial_dims}d", "ReLU", f"Conv{spatial_dims}d"]
    out = head(torch.randn(2, 4, *([6] * spatial_dims)))
    assert out.shape == (2, 3, *([6] * spatial_dims))
    out.square().mean().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_dense_head_errors():
    head = DenseProjectionHead(2, 4)
    with pytest.raises(ValueError, match="x must be .*spatial_dims=2"):
        head(torch.randn(2, 4, 3, 3, 3))
    with pytest.raises(ValueError, match="x must have 4 channel"):
        head(torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="spatial_dims"):
        DenseProjectionHead(1, 4)
    with pytest.raises(ValueError, match="hidden_channels"):
        DenseProjectionHead(2, 4, hidden_channels=0)
