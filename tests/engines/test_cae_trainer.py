"""Contrastive-autoencoder and plain-autoencoder training end to end on tiny separable images (2D and 3D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cluster.clustering.metrics import cluster_accuracy
from monai_cluster.engines.cae_trainer import (
    FlipRot90ViewAugment,
    RandomViewAugment,
    cluster_cae,
    train_autoencoder,
    train_cae,
)
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


def test_flip_rot90_views_are_the_default_views_flipped_and_rotated_by_one_generator():
    x = torch.rand(6, 2, 5, 5)
    views = FlipRot90ViewAugment(seed=3)(x)
    base = RandomViewAugment(seed=3)  # the same draws first, then one (flip, rotation) pair per image
    expected = base(x)
    draws = torch.randint(0, 4, (6, 2), generator=base.generator).tolist()
    for i, (flip, k) in enumerate(draws):
        image = expected[i].flip(-1) if flip % 2 else expected[i]
        torch.testing.assert_close(views[i], torch.rot90(image, k, dims=(-2, -1)))
    assert len({(f % 2, k) for f, k in draws}) > 1  # not one fixed transform
    augment = FlipRot90ViewAugment(seed=3)
    state = augment.generator.get_state()  # what a checkpoint saves: the whole view is replayed from it
    first = augment(x)
    augment.generator.set_state(state)
    torch.testing.assert_close(augment(x), first)
    assert FlipRot90ViewAugment(seed=0)(torch.rand(2, 1, 4, 4, 4)).shape == (2, 1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"square images, got the batch shape \(2, 1, 4, 6\)"):
        FlipRot90ViewAugment()(torch.rand(2, 1, 4, 6))


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
def test_cae_trains_and_clusters_its_own_codes_on_real_pneumoniamnist(real_data):
    """Real images: the loss and the reconstruction fall, encoder and decoder move, and the clusters are the k-means
    of the trained model's codes (their accuracy on 2 classes of chest X-rays is no stable signal, so it is not
    asserted)."""
    from monai_cluster.clustering.kmeans import kmeans
    from monai_cluster.data.medmnist import load_medmnist_npz

    images, labels = load_medmnist_npz(real_data("chest_xray", "pneumoniamnist_balanced.npz"), "val")
    pick = np.random.default_rng(0).choice(len(images), size=96, replace=False)  # the file is grouped by class
    images, labels = images[pick], labels[pick]
    cae = ContrastiveAutoEncoder(2, 1, (28, 28), latent_dim=8, channels=(4, 8), strides=(2, 2), proj_dim=8)
    start = {name: value.clone() for name, value in cae.state_dict().items()}
    out = train_cae(cae, images, epochs=10, batch_size=32, num_clusters=2, progress=False)
    history = out.history
    assert history["loss"][-1] < 0.95 * history["loss"][0]
    assert history["reconstruction"][-1] < 0.9 * history["reconstruction"][0]
    for name in ("backbone.encode.encode_0.conv.weight", "to_latent.weight", "from_latent.weight"):
        assert not torch.equal(cae.state_dict()[name], start[name]), f"{name} did not train"
    cae.eval()
    with torch.no_grad():
        codes = cae.encode(torch.as_tensor(images)).numpy()
    np.testing.assert_allclose(out.clustering.latents, codes, rtol=1e-4, atol=1e-5)  # codes of the trained model
    assert cluster_accuracy(out.clustering.labels, kmeans(codes, 2, seed=0)[0]) == 1.0
    assert sorted(np.bincount(out.clustering.labels).tolist())[0] >= 10  # both clusters hold real groups


def _old_hard_rounds(z, prototypes, max_iter=50):
    """The earlier prototype update: hard argmax labels, each prototype the plain mean of its codes."""
    labels = (z @ prototypes.t()).argmax(1)
    for _ in range(max_iter):
        for k in range(prototypes.shape[0]):
            if bool((labels == k).any()):
                prototypes[k] = z[labels == k].mean(0)
        new = (z @ prototypes.t()).argmax(1)
        if bool((new == labels).all()):
            break
        labels = new
    return labels, prototypes


def test_prototype_temperature_changes_soft_prototypes_and_hard_mode_ignores_it():
    from monai_cluster.engines.cae_trainer import _refine_prototypes

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-2.0, -2.0]], dtype=torch.float64)
    z = torch.cat([c + 0.8 * torch.randn(40, 2, generator=g, dtype=torch.float64) for c in centres])
    start = centres + 0.3
    soft = {t: _refine_prototypes(z, start.clone(), t, "soft", 100, 1e-9) for t in (0.05, 1.0, 20.0)}
    # a larger temperature pulls every prototype towards the global mean of the codes
    spread = {t: float((p - z.mean(0)).norm(dim=1).mean()) for t, (_, p, _) in soft.items()}
    assert spread[0.05] > spread[1.0] > spread[20.0]
    assert not torch.allclose(soft[0.05][1], soft[20.0][1])
    hard = [_refine_prototypes(z, start.clone(), t, "hard", 100, 0.0) for t in (0.05, 20.0)]
    assert torch.equal(hard[0][0], hard[1][0]) and torch.allclose(hard[0][1], hard[1][1])
    old_labels, old_prototypes = _old_hard_rounds(z, start.clone())
    assert torch.equal(hard[0][0], old_labels) and torch.allclose(hard[0][1], old_prototypes)
    # the low-temperature soft prototypes approach the hard means
    assert float((soft[0.05][1] - hard[0][1]).norm(dim=1).max()) < 0.1


def test_train_cae_passes_the_prototype_settings_and_checks_them(blobs):
    x, y = blobs(n_per_class=10)
    cae = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4,), strides=(2,))
    with pytest.raises(ValueError, match="cluster_method must be one of"):
        train_cae(cae, x, epochs=1, num_clusters=3, cluster_method="gmm", progress=False)
    with pytest.raises(ValueError, match="prototype_temperature"):
        train_cae(cae, x, epochs=1, num_clusters=3, cluster_method="prototypes", prototype_temperature=0.0,
                  progress=False)
    with pytest.raises(ValueError, match="assignment must be one of"):
        cluster_cae(cae, x, 3, method="prototypes", assignment="fuzzy")
    out = train_cae(cae, x, epochs=1, num_clusters=3, cluster_method="prototypes", prototype_temperature=0.5,
                    progress=False)
    assert out.clustering.method == "prototypes" and out.clustering.iterations >= 1
    assert out.clustering.labels.shape == (30,)


def test_prototype_phase_trains_the_conditioned_decoder_and_moves_the_prototypes(blobs, recording_writer):
    x, y = blobs()
    torch.manual_seed(0)
    model = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=8, channels=(4, 8), strides=(2, 2), proj_dim=8,
                                   proj_layers=3, proj_norm=False, num_prototypes=3)  # fmt: skip
    seen = []
    original_set = model.set_prototypes
    model.set_prototypes = lambda p: seen.append(torch.as_tensor(p).clone()) or original_set(p)
    decoder = [p.detach().clone() for p in model.from_latent.parameters()]
    result = train_cae(model, x, epochs=8, batch_size=30, num_clusters=3, cluster_method="prototypes",
                       prototype_epochs=6, writer=recording_writer, progress=False)  # fmt: skip
    history = result.history
    assert len(history["loss"]) == 8 and len(history["prototype_loss"]) == 6
    assert history["prototype_loss"] == history["prototype_reconstruction"]
    assert history["prototype_loss"][-1] < history["prototype_loss"][0]
    # k-means start, then one update per batch (3 batches of 30 per epoch): 1 + 6 * 3 settings
    assert len(seen) == 1 + 6 * 3
    assert not torch.allclose(seen[0].float(), model.prototypes)
    assert not all(torch.equal(a, b) for a, b in zip(decoder, model.from_latent.parameters()))
    assert {"cae/prototypes/loss", "cae/prototypes/reconstruction"} <= {t for t, _, _ in recording_writer.scalars}
    # the clusters are the argmax over the trained prototypes, not a refinement of new k-means centres
    assert result.clustering.method == "prototypes" and result.clustering.iterations == 0
    torch.testing.assert_close(torch.as_tensor(result.clustering.centroids), model.prototypes)
    z = torch.as_tensor(result.clustering.latents)
    assert np.array_equal(result.clustering.labels, (z @ model.prototypes.t()).argmax(1).numpy())
    assert cluster_accuracy(y, result.clustering.labels) > 0.9


def test_prototype_phase_errors(blobs):
    x, _ = blobs(n_per_class=4)
    plain = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4,), strides=(2,))
    with pytest.raises(ValueError, match="prototype_epochs=2 needs a ContrastiveAutoEncoder built with num_prototypes"):
        train_cae(plain, x, epochs=1, prototype_epochs=2, progress=False)
    conditioned = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4,), strides=(2,), num_prototypes=4)
    with pytest.raises(ValueError, match="reads the model's 4 prototypes, but num_clusters=3"):
        train_cae(conditioned, x, epochs=1, prototype_epochs=1, num_clusters=3, cluster_method="prototypes",
                  progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="prototype_assignment must be one of"):
        train_cae(conditioned, x, epochs=1, prototype_epochs=1, prototype_assignment="fuzzy", progress=False)
    with pytest.raises(ValueError, match="prototype_momentum"):
        train_cae(conditioned, x, epochs=1, prototype_epochs=1, prototype_momentum=1.5, progress=False)
    with pytest.raises(ValueError, match=r"prototype_momentum must lie in \[0, 1\)"):
        train_cae(conditioned, x, epochs=1, prototype_epochs=1, prototype_momentum=1.0, progress=False)
    with pytest.raises(ValueError, match="max_iter"):
        cluster_cae(conditioned, x, 4, method="prototypes", max_iter=-1)
