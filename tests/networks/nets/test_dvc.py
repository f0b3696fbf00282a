"""DeepVariationalClustering: 2D/3D shapes, q on the latent mean, eval determinism, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from monai_cluster.networks.nets.dvc import DeepVariationalClustering

CASES = [
    (2, (1, 16, 16), (4, 8), (2, 2)),
    (2, (3, 12, 8), (4,), (2,)),
    (3, (1, 8, 8, 4), (4, 8), (2, 2)),
]


@pytest.mark.parametrize("spatial_dims, in_shape, channels, strides", CASES)
def test_shapes(spatial_dims, in_shape, channels, strides):
    net = DeepVariationalClustering(
        spatial_dims, in_shape, latent_dim=5, num_clusters=3, channels=channels, strides=strides
    )
    out = net(torch.rand(4, *in_shape))
    assert out["reconstruction"].shape == (4, *in_shape)
    for key in ("mu", "logvar", "z"):
        assert out[key].shape == (4, 5)
    assert out["q"].shape == (4, 3)
    torch.testing.assert_close(out["q"].sum(1), torch.ones(4))
    assert 0 <= float(out["reconstruction"].min()) and float(out["reconstruction"].max()) <= 1
    assert net.centroids.shape == (3, 5)


def test_q_uses_mean_and_eval_is_deterministic():
    net = DeepVariationalClustering(2, (1, 8, 8), latent_dim=3, num_clusters=2, channels=(4,), strides=(2,))
    x = torch.rand(3, 1, 8, 8)
    out = net(x)
    torch.testing.assert_close(out["q"], net.assign(out["mu"]))
    assert not torch.allclose(out["z"], out["mu"])  # sampled in training mode
    net.eval()
    a, b = net(x), net(x)
    torch.testing.assert_close(a["z"], a["mu"])
    torch.testing.assert_close(a["reconstruction"], b["reconstruction"])
    torch.testing.assert_close(net.decode(a["mu"]), a["reconstruction"])


@pytest.mark.parametrize("spatial_dims, in_shape, channels, strides", [CASES[0], CASES[2]])
def test_every_parameter_gets_a_finite_gradient(spatial_dims, in_shape, channels, strides):
    net = DeepVariationalClustering(
        spatial_dims, in_shape, latent_dim=4, num_clusters=2, channels=channels, strides=strides
    )
    out = net(torch.rand(3, *in_shape))
    loss = out["reconstruction"].mean() + out["logvar"].exp().mean() + (out["q"][:, 0] * out["mu"].sum(1)).mean()
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((4, (1, 8, 8)), {}, ValueError, "spatial_dims"),
        ((2, (8, 8)), {}, ValueError, "in_shape must be channel-first"),
        ((2, (1, 10, 8)), {"channels": (4, 8), "strides": (2, 2)}, ValueError, "in_shape .* divisible"),
        ((2, (1, 8, 8)), {"channels": (4, 8), "strides": (2,)}, ValueError, "strides must be a sequence"),
        ((2, (1, 8, 8)), {"channels": ()}, ValueError, "channels must be a non-empty"),
        ((2, (1, 8, 8)), {"num_clusters": 1}, ValueError, "num_clusters"),
        ((2, (1, 8, 8)), {"latent_dim": 0}, ValueError, "latent_dim"),
        ((2, (0, 8, 8)), {}, ValueError, "in_shape channel entry"),
    ],
)
def test_constructor_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        DeepVariationalClustering(*args, **kwargs)


def test_input_errors():
    net = DeepVariationalClustering(2, (1, 8, 8), latent_dim=3, channels=(4,), strides=(2,))
    with pytest.raises(ValueError, match="x must be"):
        net(torch.rand(2, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="x must have 1 channel"):
        net(torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"x must have shape \(B, \*in_shape\)"):
        net(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"z must be \(B, 3\)"):
        net.decode(torch.rand(2, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        net(torch.rand(2, 1, 8, 8).numpy())
