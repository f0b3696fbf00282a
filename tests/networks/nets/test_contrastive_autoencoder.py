"""ContrastiveAutoEncoder: 2D/3D output dict, encode/decode consistency, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from monai_cluster.networks.nets.contrastive_autoencoder import ContrastiveAutoEncoder

CASES = [
    (2, 1, (16, 16), (4, 8), (2, 2)),
    (2, 3, (8, 12), (4,), (2,)),
    (3, 1, (8, 8, 4), (4, 8), (2, 2)),
]


@pytest.mark.parametrize("spatial_dims, in_channels, in_shape, channels, strides", CASES)
def test_shapes(spatial_dims, in_channels, in_shape, channels, strides):
    net = ContrastiveAutoEncoder(
        spatial_dims, in_channels, in_shape, latent_dim=6, channels=channels, strides=strides, proj_dim=5
    )
    x = torch.rand(4, in_channels, *in_shape)
    out = net(x)
    assert out["latent"].shape == (4, 6)
    assert out["projection"].shape == (4, 5)
    assert out["reconstruction"].shape == x.shape
    assert 0 <= float(out["reconstruction"].min()) and float(out["reconstruction"].max()) <= 1


def test_encode_decode_match_forward_and_options():
    net = ContrastiveAutoEncoder(
        2, 1, (8, 8), latent_dim=4, channels=(4,), strides=(2,), use_sigmoid=False, out_channels=2
    )
    net.eval()
    x = torch.rand(3, 1, 8, 8)
    out = net(x)
    torch.testing.assert_close(net.encode(x), out["latent"])
    torch.testing.assert_close(net.decode(out["latent"]), out["reconstruction"])
    assert out["reconstruction"].shape == (3, 2, 8, 8)
    assert net.projection.out_features == 128


@pytest.mark.parametrize("case", [CASES[0], CASES[2]])
def test_every_parameter_gets_a_finite_gradient(case):
    spatial_dims, in_channels, in_shape, channels, strides = case
    net = ContrastiveAutoEncoder(
        spatial_dims, in_channels, in_shape, latent_dim=4, channels=channels, strides=strides, proj_dim=3
    )
    out = net(torch.rand(4, in_channels, *in_shape))
    (out["reconstruction"].mean() + out["projection"].pow(2).mean()).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((1, 1, (8, 8)), {}, ValueError, "spatial_dims"),
        ((2, 0, (8, 8)), {}, ValueError, "in_channels"),
        ((2, 1, (1, 8, 8)), {}, ValueError, "in_shape must be a sequence of 2"),
        ((2, 1, (8, 6)), {"channels": (4, 8), "strides": (2, 2)}, ValueError, "in_shape .* divisible"),
        ((2, 1, (8, 8)), {"proj_dim": 0}, ValueError, "proj_dim"),
        ((2, 1, (8, 8)), {"strides": "22"}, ValueError, "strides must be a sequence"),
        ((2, 1, (8, 8)), {"latent_dim": 2.5}, TypeError, "latent_dim"),
    ],
)
def test_constructor_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ContrastiveAutoEncoder(*args, **kwargs)


def test_input_errors():
    net = ContrastiveAutoEncoder(2, 1, (8, 8), latent_dim=4, channels=(4,), strides=(2,))
    with pytest.raises(ValueError, match="x must have spatial size in_shape"):
        net(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="x must have 1 channel"):
        net(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"z must be \(B, 4\)"):
        net.decode(torch.rand(2, 5))
