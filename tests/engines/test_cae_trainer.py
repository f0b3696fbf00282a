"""Contrastive-autoencoder and plain-autoencoder training end to end on tiny separable images (2D and 3D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cluster.clustering.metrics import cluster_accuracy
from monai_cluster.engines.cae_trainer import RandomViewAugment, cluster_cae, train_autoencoder, train_cae
from monai_cluster.networks.nets.contrastive_autoencoder import ContrastiveAutoEncoder


def test_cae_reaches_high_accuracy_and_clusters_by_kmeans_and_prototypes(blobs, recording_writer):
    x, y = blobs()
    torch.manual_seed(0)
    model = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=8, channels=(4, 8), strides=(2, 2), proj_dim=16)
    writer = recording_writer
    result = train_cae(model, x.numpy(), epochs=10, batch_size=30, num_clusters=3, writer=writer, progress=False)
    assert result.epochs_run == 10 and len(result.history["loss"]) == 10
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.clustering.method == "kmeans" and result.clustering.latents.shape == (90, 8)
    assert cluster_accuracy(y, result.clustering.labels) > 0.9
    assert {"cae/loss", "cae/contrastive", "cae/reconstruction"} <= {tag for tag, _, _ in writer.scalars}
    prototypes = cluster_cae(model, x, 3, method="prototypes", temperature=0.5)
    assert prototypes.method == "prototypes" and prototypes.iterations >= 1
    assert prototypes.centroids.shape == (3, 8)
    assert cluster_accuracy(y, prototypes.labels) > 0.9


def test_cae_uses_given_second_views_in_3d(blobs):
    x, _ = blobs(n_per_class=3, size=8, spatial_dims=3)
    data = [{"image": image, "image_1": image.flip(-1)} for image in x]
    model = ContrastiveAutoEncoder(3, 1, (8, 8, 8), latent_dim=4, channels=(2,), strides=(2,), proj_dim=4)
    seen = []
    result = train_cae(model, data, epochs=2, batch_size=4, augment=lambda b: seen.append(b) or b, progress=False)
    assert not seen  # the dataset's own views were used
    assert len(result.history["loss"]) == 2 and result.clustering is None


def test_random_view_augment_is_seeded_and_stays_in_range():
    x = torch.rand(4, 1, 8, 8)
    a, b = RandomViewAugment(seed=1)(x), RandomViewAugment(seed=1)(x)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, x) and a.min() >= x.min() and a.max() <= x.max()
    assert RandomViewAugment(seed=2)(torch.rand(2, 1, 4, 4, 4)).shape == (2, 1, 4, 4, 4)


def test_plain_autoencoder_learns_to_reconstruct_and_clusters(blobs, recording_writer):
    x, y = blobs()
    torch.manual_seed(0)
    model = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=8, channels=(4, 8), strides=(2, 2), proj_dim=4)
    projection = [p.detach().clone() for p in model.projection.parameters()]
    result = train_autoencoder(
        model, x, epochs=15, batch_size=16, lr=3e-3, num_clusters=3, writer=recording_writer, progress=False
    )
    assert len(result.history["loss"]) == 15 and result.history["loss"] == result.history["reconstruction"]
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    assert all(torch.equal(a, b) for a, b in zip(projection, model.projection.parameters()))  # no contrastive term
    assert result.clustering.labels.shape == (90,) and cluster_accuracy(y, result.clustering.labels) > 0.9
    assert {"autoencoder/loss", "autoencoder/reconstruction"} <= {tag for tag, _, _ in recording_writer.scalars}
    with pytest.raises(ValueError, match="recon must be one of"):
        train_autoencoder(model, x, recon="bce", progress=False)


def test_cae_errors(blobs):
    x, _ = blobs(n_per_class=2)
    cae = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4,), strides=(2,))
    with pytest.raises(ValueError, match="data must hold at least two images"):
        train_cae(cae, x[:1], progress=False)
    with pytest.raises(TypeError, match="augment must be a callable"):
        train_cae(cae, x, augment=3, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_cae(cae, x, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="method must be one of"):
        cluster_cae(cae, x, 3, method="gmm")
    with pytest.raises(ValueError, match="temperature"):
        cluster_cae(cae, x, 3, method="prototypes", temperature=0.0)


@pytest.mark.real_data
def test_cae_runs_on_real_pneumoniamnist(real_data):
    from monai_cluster.data.medmnist import load_medmnist_npz

    images, labels = load_medmnist_npz(real_data("chest_xray", "pneumoniamnist_balanced.npz"), "val")
    pick = np.random.default_rng(0).choice(len(images), size=48, replace=False)  # the file is grouped by class
    images, labels = images[pick], labels[pick]
    cae = ContrastiveAutoEncoder(2, 1, (28, 28), latent_dim=8, channels=(4, 8), strides=(2, 2), proj_dim=8)
    out = train_cae(cae, images, epochs=2, batch_size=16, num_clusters=2, progress=False)
    assert out.clustering.labels.shape == (48,) and 0.0 <= cluster_accuracy(labels, out.clustering.labels) <= 1.0
