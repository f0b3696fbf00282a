"""Tests for FeatureAutoEncoder / FeatureVarAutoEncoder: shapes, pooled features by hand, grads, training, errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import AutoEncoder, VarAutoEncoder

from monai_cluster.networks import FeatureAutoEncoder, FeatureVarAutoEncoder

CHANNELS, STRIDES = (4, 8), (2, 2)


def _ae(spatial_dims: int, **kwargs) -> FeatureAutoEncoder:
    return FeatureAutoEncoder(spatial_dims, 2, channels=CHANNELS, strides=STRIDES, **kwargs)


def _vae(spatial_dims: int, **kwargs) -> FeatureVarAutoEncoder:
    return FeatureVarAutoEncoder(spatial_dims, 2, 8, latent_size=3, channels=CHANNELS, strides=STRIDES, **kwargs)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("pool", ["avg", "avgmax"])
def test_autoencoder_shapes_and_pooled_features(spatial_dims, pool):
    net = _ae(spatial_dims, feature_pool=pool)
    x = torch.randn(3, 2, *([8] * spatial_dims))
    assert net(x).shape == x.shape
    feats = net.forward_features(x)
    latent = net.intermediate(net.encode(x))
    assert latent.shape == (3, CHANNELS[-1], *([2] * spatial_dims))
    mean = latent.mean(dim=tuple(range(2, 2 + spatial_dims)))
    expected = mean if pool == "avg" else torch.cat([mean, latent.amax(dim=tuple(range(2, 2 + spatial_dims)))], 1)
    assert feats.shape == (3, net.num_features) and net.num_features == CHANNELS[-1] * (1 if pool == "avg" else 2)
    torch.testing.assert_close(feats, expected)


def test_autoencoder_is_monai_autoencoder_with_its_keys():
    net = FeatureAutoEncoder(2, 1, channels=CHANNELS, strides=STRIDES, num_res_units=1, inter_channels=[6])
    reference = AutoEncoder(2, 1, 1, CHANNELS, STRIDES, num_res_units=1, inter_channels=[6])
    assert isinstance(net, AutoEncoder)
    assert list(net.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(net(x), reference(x))
    assert net.num_features == 6 and net.forward_features(x).shape == (2, 6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_autoencoder_every_parameter_gets_a_finite_gradient(spatial_dims):
    net = _ae(spatial_dims, feature_pool="avgmax")
    x = torch.randn(2, 2, *([8] * spatial_dims))
    ((net(x) - x).square().mean() + net.forward_features(x).square().mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_autoencoder_reconstruction_loss_falls():
    net = _ae(2)
    x = torch.rand(4, 2, 8, 8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in net.parameters()]
    losses = []
    for _ in range(30):
        loss = (net(x) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_autoencoder_errors():
    net = _ae(2)
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\) for spatial_dims=2"):
        net(torch.randn(2, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="x must have 2 channel"):
        net.forward_features(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"x spatial size \(8, 6\) must be divisible by 4"):
        net(torch.randn(2, 2, 8, 6))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        net(torch.zeros(2, 2, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="feature_pool must be one of"):
        _ae(2, feature_pool="max")
    with pytest.raises(ValueError, match="strides must be a sequence with one stride per entry of channels"):
        FeatureAutoEncoder(2, 1, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match=r"channels\[1\]"):
        FeatureAutoEncoder(2, 1, channels=(4, 0), strides=(2, 2))
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        FeatureAutoEncoder(1, 1)
    with pytest.raises(ValueError, match="num_res_units"):
        FeatureAutoEncoder(2, 1, num_res_units=-1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_var_autoencoder_shapes_and_mean_features(spatial_dims):
    net = _vae(spatial_dims)
    assert isinstance(net, VarAutoEncoder) and net.num_features == 3
    x = torch.rand(3, 2, *([8] * spatial_dims))
    recon, mu, logvar, z = net(x)
    assert recon.shape == x.shape and bool(((recon >= 0) & (recon <= 1)).all())
    assert mu.shape == logvar.shape == z.shape == (3, 3)
    feats = net.forward_features(x)
    torch.testing.assert_close(feats, mu)
    torch.testing.assert_close(net.forward_features(x), feats)  # no sampling in features
    net.eval()
    _, mu_eval, _, z_eval = net(x)
    torch.testing.assert_close(z_eval, mu_eval)  # use_mean_at_inference


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_var_autoencoder_every_parameter_gets_a_finite_gradient(spatial_dims):
    net = _vae(spatial_dims, use_sigmoid=False)
    x = torch.randn(2, 2, *([8] * spatial_dims))
    recon, mu, logvar, _ = net(x)
    kl = -0.5 * torch.mean(1 + logvar - mu.square() - logvar.exp())
    ((recon - x).square().mean() + kl).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_var_autoencoder_errors():
    net = _vae(3)
    with pytest.raises(ValueError, match=r"x spatial size must be spatial_size=\(8, 8, 8\), got \(8, 8, 16\)"):
        net(torch.rand(2, 2, 8, 8, 16))
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W, D\) for spatial_dims=3"):
        net.forward_features(torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match="x must have 2 channel"):
        net(torch.rand(2, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"spatial_size \(8, 6\) must be divisible by 4"):
        FeatureVarAutoEncoder(2, 1, (8, 6), channels=CHANNELS, strides=STRIDES)
    with pytest.raises(ValueError, match="latent_size"):
        FeatureVarAutoEncoder(2, 1, 8, latent_size=0, channels=CHANNELS, strides=STRIDES)
