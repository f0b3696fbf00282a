"""Sampling around cluster centres and reconstructions, with small decoders written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from monai_cluster.clustering.sampling import cluster_spread, reconstruct, sample_around_centroids
from monai_cluster.networks.nets.dvc import DeepVariationalClustering


class _Identity(nn.Module):
    """A 'decoder' that returns the latent code as a (b, 1, D) image, so the samples can be checked directly."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.modes: list[bool] = []

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return (z * self.weight)[:, None]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"reconstruction": x * 2}


def test_cluster_spread_matches_numpy():
    z = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    labels = np.array([0] * 8 + [1] * 11 + [2])
    spread = cluster_spread(z, labels, 4)
    np.testing.assert_allclose(spread[0].numpy(), z[:8].std(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(spread[1].numpy(), z[8:19].std(0, ddof=1), rtol=1e-5)
    assert float(spread[2:].abs().sum()) == 0.0  # one member, and an empty cluster


def test_samples_centre_on_centroids_with_given_scale():
    dec = _Identity()
    centroids = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    images, ids = sample_around_centroids(dec.decode, centroids, n_per_cluster=400, scale=0.5, seed=3)
    assert images.shape == (800, 1, 2) and ids.tolist() == [0] * 400 + [1] * 400
    for k in range(2):
        z = images[ids == k, 0]
        torch.testing.assert_close(z.mean(0), centroids[k], atol=0.1, rtol=0)
        torch.testing.assert_close(z.std(0), torch.full((2,), 0.5), atol=0.06, rtol=0)
    again, _ = sample_around_centroids(dec.decode, centroids, n_per_cluster=400, scale=0.5, seed=3, batch_size=7)
    torch.testing.assert_close(again, images)
    dec.train()
    sample_around_centroids(dec.decode, centroids, n_per_cluster=2, scale=0.0)
    assert dec.modes[-1] is False and dec.training  # decoded in eval mode, mode restored


def test_scale_per_cluster_and_from_spread():
    dec = _Identity()
    centroids = np.zeros((2, 3), dtype=np.float32)
    images, ids = sample_around_centroids(dec.decode, centroids, 300, scale=np.array([0.0, 2.0]))
    assert float(images[ids == 0].abs().max()) == 0.0
    assert 1.7 < float(images[ids == 1].std()) < 2.3
    latents = torch.cat([torch.randn(200, 3) * 0.1, torch.randn(200, 3) * 3.0])
    labels = torch.tensor([0] * 200 + [1] * 200)
    images, ids = sample_around_centroids(dec.decode, centroids, 300, latents=latents, labels=labels)
    assert float(images[ids == 0].std()) < 0.2 < 2.0 < float(images[ids == 1].std())


def test_decodes_with_a_real_network_2d_and_3d():
    for in_shape in ((1, 8, 8), (1, 4, 4, 4)):
        net = DeepVariationalClustering(
            len(in_shape) - 1, in_shape, latent_dim=3, num_clusters=2, channels=(2,), strides=(2,)
        )
        images, ids = sample_around_centroids(net.decode, net.centroids.detach(), n_per_cluster=3, scale=0.1)
        assert images.shape == (6, *in_shape) and ids.shape == (6,)
        recon = reconstruct(net, torch.rand(5, *in_shape), batch_size=2)
        assert recon.shape == (5, *in_shape)


def test_reconstruct_accepts_tensor_tuple_and_dict_outputs():
    x = torch.rand(3, 1, 2, 2)
    torch.testing.assert_close(reconstruct(_Identity(), x), x * 2)
    torch.testing.assert_close(reconstruct(lambda t: (t + 1, None), x), x + 1)
    torch.testing.assert_close(reconstruct(lambda t: t - 1, x.numpy()), x - 1)


def test_errors():
    dec = _Identity()
    c = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="latents and labels are needed"):
        sample_around_centroids(dec.decode, c)
    with pytest.raises(ValueError, match="scale must be a number"):
        sample_around_centroids(dec.decode, c, scale=torch.ones(3))
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        sample_around_centroids(dec.decode, c, scale=-1.0)
    with pytest.raises(ValueError, match="scale must be non-negative"):
        sample_around_centroids(dec.decode, c, scale=-torch.ones(2))
    with pytest.raises(ValueError, match="n_per_cluster"):
        sample_around_centroids(dec.decode, c, n_per_cluster=0, scale=1.0)
    with pytest.raises(TypeError, match="decode must be callable"):
        sample_around_centroids("decoder", c, scale=1.0)
    with pytest.raises(TypeError, match="decode must return a tensor"):
        sample_around_centroids(lambda z: z.numpy(), c, scale=1.0)
    with pytest.raises(ValueError, match="centroids must have 2 dimensions"):
        sample_around_centroids(dec.decode, torch.zeros(3), scale=1.0)
    with pytest.raises(ValueError, match="latents must have D=3"):
        sample_around_centroids(dec.decode, c, latents=torch.zeros(4, 2), labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_clusters=2\)"):
        cluster_spread(torch.zeros(3, 2), torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="labels must have length"):
        cluster_spread(torch.zeros(3, 2), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="images must be"):
        reconstruct(dec, torch.rand(3, 4))
    with pytest.raises(ValueError, match="model output has no key 'recon'"):
        reconstruct(dec, torch.rand(2, 1, 2, 2), key="recon")
    with pytest.raises(TypeError, match="model must be callable"):
        reconstruct(3, torch.rand(2, 1, 2, 2))
