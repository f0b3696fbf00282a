"""DVC training procedure end to end on tiny separable images (2D and 3D), and the shared data/argument checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from monai_cluster.clustering.metrics import cluster_accuracy
from monai_cluster.engines.dvc_trainer import init_dvc_centroids, pretrain_vae, train_dvc, train_dvc_clustering
from monai_cluster.networks.nets.dvc import DeepVariationalClustering


def _dvc(in_shape=(1, 16, 16), seed=0):
    torch.manual_seed(seed)
    return DeepVariationalClustering(
        len(in_shape) - 1, in_shape, latent_dim=4, num_clusters=3, channels=(4, 8), strides=(2, 2)
    )


def test_dvc_reaches_high_accuracy_on_separable_images(blobs, recording_writer):
    x, y = blobs()
    writer = recording_writer
    model = _dvc()
    before = [p.detach().clone() for p in model.parameters()]
    rng_state = torch.random.get_rng_state()
    result = train_dvc(
        model, x, pretrain_epochs=20, cluster_epochs=10, batch_size=16, lr=3e-3, tol=0.0, writer=writer, progress=False
    )
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the seed does not leak into the caller's RNG
    assert cluster_accuracy(y, result.labels) > 0.9
    assert result.labels.shape == (90,) and result.centroids.shape == (3, 4)
    assert result.stop_reason == "max_epochs" and result.epochs_run == 10
    assert result.gamma == pytest.approx(0.1 * 16 * 16 / 3)  # the default scales with the image size
    assert len(result.history["pretrain_loss"]) == 20 and len(result.history["loss"]) == 10
    assert result.history["pretrain_loss"][-1] < result.history["pretrain_loss"][0]
    assert all(np.isfinite(result.history[k]).all() for k in ("loss", "reconstruction", "kl", "clustering"))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"dvc/pretrain/loss", "dvc/cluster/loss", "dvc/cluster/clustering", "dvc/cluster/changed_fraction"} <= tags
    np.testing.assert_allclose(result.centroids, model.centroids.detach().numpy())


def _by_hand_student_t(mu: torch.Tensor, centroids: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """DEC eq. 1 written out: ``q_ij`` proportional to ``(1 + |mu_i - c_j|^2 / alpha) ^ -((alpha + 1) / 2)``."""
    kernel = (1.0 + ((mu[:, None, :] - centroids[None]) ** 2).sum(-1) / alpha) ** (-(alpha + 1.0) / 2.0)
    return kernel / kernel.sum(1, keepdim=True)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_dvc_logged_terms_equal_kl_and_reconstruction_recomputed_from_the_model_outputs(blobs, recording_writer, beta):
    """The trainer's logged reconstruction, KL(P||Q), prior KL and loss equal a recomputation from scratch: P by
    DEC eq. 3 from the Student's-t assignments of the model as it stood at the refresh, Q, reconstructions and
    posteriors from the outputs each training step actually saw, averaged over samples across uneven batches."""
    x, _ = blobs(n_per_class=4)  # 12 images in batches of 5, 5 and 2
    model = _dvc()
    pretrain_vae(model, x, epochs=2, batch_size=12, progress=False)
    initial = init_dvc_centroids(model, x)
    frozen = copy.deepcopy(model).eval()
    with torch.no_grad():
        q_refresh = _by_hand_student_t(frozen.encode(x)[0].double(), frozen.centroids.double())
    p_all = q_refresh**2 / q_refresh.sum(0)
    p_all = p_all / p_all.sum(1, keepdim=True)
    seen = []
    hook = model.register_forward_hook(
        lambda m, args, out: seen.append(
            (args[0].detach().clone(), {k: v.detach().double() for k, v in out.items()}, m.centroids.detach().double())
        )
    )  # the images, outputs and (trained, so moving) centroids of every training step
    gamma = 2.0
    try:
        result = train_dvc_clustering(model, x, initial, epochs=1, batch_size=5, beta=beta, gamma=gamma, tol=0.0,
                                      writer=recording_writer, progress=False)  # fmt: skip
    finally:
        hook.remove()
    assert [images.shape[0] for images, _, _ in seen] == [5, 5, 2]
    totals = dict.fromkeys(("reconstruction", "clustering", "kl"), 0.0)
    covered = []
    for images, out, centroids in seen:
        # which dataset rows this batch holds (the loader shuffles): match the images exactly
        index = [int(torch.nonzero((x == image).flatten(1).all(1))[0]) for image in images]
        covered += index
        q = out["q"]
        torch.testing.assert_close(q, _by_hand_student_t(out["mu"], centroids), rtol=1e-4, atol=1e-6)
        p = p_all[index]
        totals["clustering"] += float((p * (p.log() - q.log())).sum())
        totals["reconstruction"] += float(((out["reconstruction"] - images.double()) ** 2).sum())
        mu, logvar = out["mu"], out["logvar"]
        totals["kl"] += float((0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)).sum())
    assert sorted(covered) == list(range(12))
    expected = {key: value / 12 for key, value in totals.items()}
    expected["loss"] = expected["reconstruction"] + beta * expected["kl"] + gamma * expected["clustering"]
    assert expected["clustering"] > 1e-3  # P differs from Q: the comparison below is not 0 == 0
    for key, value in expected.items():
        assert result.history[key] == [pytest.approx(value, rel=1e-4)], key
        assert (f"dvc/cluster/{key}", pytest.approx(value, rel=1e-4), 0) in recording_writer.scalars, key


def test_dvc_refreshes_target_every_update_interval_epochs_and_is_seeded(blobs):
    x, _ = blobs(n_per_class=8)
    runs = []
    for _ in range(2):
        model = _dvc()
        initial = init_dvc_centroids(model, x, seed=0)
        result = train_dvc_clustering(
            model, x, initial, epochs=7, update_interval=3, tol=0.0, batch_size=8, gamma=2.0, progress=False
        )
        assert result.gamma == 2.0
        assert result.history["refresh_epochs"] == [0, 3, 6]
        assert len(result.history["changed_fraction"]) == 3 and result.history["changed_fraction"][0] == 0.0
        assert result.epochs_run == 7 and result.stop_reason == "max_epochs"
        runs.append(result)
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    assert runs[0].history["loss"] == runs[1].history["loss"]


def test_dvc_tol_stopping_rule_fires(blobs):
    x, _ = blobs(n_per_class=8)
    model = _dvc()
    initial = init_dvc_centroids(model, x)
    result = train_dvc_clustering(
        model, x, initial, epochs=20, update_interval=2, tol=1.0, batch_size=8, progress=False
    )
    # the first refresh only compares with k-means; the second one (epoch 2) changes < 100% of labels and stops
    assert result.stop_reason == "tol"
    assert result.history["refresh_epochs"] == [0, 2]
    assert result.epochs_run == 2 and len(result.history["loss"]) == 2
    assert result.history["changed_fraction"][-1] < 1.0
    assert result.labels.shape == (24,)


def test_dvc_3d_and_dataset_of_dicts(blobs):
    x, _ = blobs(n_per_class=4, size=8, spatial_dims=3)
    data = [{"image": image, "key": str(i)} for i, image in enumerate(x)]
    model = DeepVariationalClustering(3, (1, 8, 8, 8), latent_dim=3, num_clusters=3, channels=(2, 4), strides=(2, 2))
    twin = copy.deepcopy(model)
    history = pretrain_vae(model, data, epochs=2, batch_size=6, recon="bce", progress=False)
    # a list of dicts trains exactly like the plain tensor of its "image" entries (same batches, same noise)
    assert history == pretrain_vae(twin, x, epochs=2, batch_size=6, recon="bce", progress=False)
    assert len(history["pretrain_loss"]) == 2
    np.testing.assert_allclose(history["pretrain_loss"],
                               np.add(history["pretrain_reconstruction"], history["pretrain_kl"]), rtol=1e-5)  # beta 1
    assert min(history["pretrain_reconstruction"]) > 0.5 * 8**3 * 0.1  # BCE summed over 512 voxels, not averaged
    result = train_dvc(model, data, pretrain_epochs=1, cluster_epochs=2, batch_size=6, progress=False)
    assert result.labels.shape == (12,) and set(result.labels.tolist()) <= {0, 1, 2}
    model.eval()
    with torch.no_grad():  # the labels are the trained model's assignments of the 3D volumes
        assert np.array_equal(result.labels, model(x)["q"].argmax(1).numpy())


def test_non_finite_loss_stops_with_a_message():
    x = torch.rand(4, 1, 16, 16)
    model = _dvc()
    with torch.no_grad():
        next(model.vae.parameters()).fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="non-finite loss .* in DVC pretraining epoch 0"):
        pretrain_vae(model, x, epochs=1, batch_size=4, progress=False)
    x[0, 0, 0, 0] = float("nan")  # a non-finite image is rejected by the loss, naming the target
    with pytest.raises(ValueError, match="target must be finite"):
        pretrain_vae(_dvc(), x, epochs=1, batch_size=4, progress=False)


def test_dvc_and_data_errors(blobs):
    x, _ = blobs(n_per_class=2)
    model = _dvc()
    with pytest.raises(ValueError, match="tol must be a fraction"):
        train_dvc_clustering(model, x, np.zeros(6, dtype=int), tol=2.0, progress=False)
    with pytest.raises(ValueError, match="initial_labels must be integer"):
        train_dvc_clustering(model, x, np.zeros(5, dtype=int), progress=False)
    with pytest.raises(ValueError, match="update_interval"):
        train_dvc_clustering(model, x, np.zeros(6, dtype=int), update_interval=0, progress=False)
    with pytest.raises(ValueError, match="gamma"):
        train_dvc(model, x, gamma=-1.0, pretrain_epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        pretrain_vae(model, x, epochs=0)
    with pytest.raises(ValueError, match="seed"):
        pretrain_vae(model, x, seed=-1)
    with pytest.raises(TypeError, match="writer must have add_scalar"):
        pretrain_vae(model, x, writer=object())
    with pytest.raises(ValueError, match=r"data must be \(N, C, H, W\)"):
        pretrain_vae(model, torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="data must hold at least one image"):
        pretrain_vae(model, [])
    with pytest.raises(TypeError, match="data must be a tensor"):
        pretrain_vae(model, 3)
    with pytest.raises(ValueError, match="must hold the key 'image'"):
        pretrain_vae(model, [{"img": x[0]}], progress=False)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        pretrain_vae(lambda t: t, x)


@pytest.mark.real_data
def test_dvc_runs_on_real_pneumoniamnist(real_data):
    from monai_cluster.data.medmnist import load_medmnist_npz

    images, labels = load_medmnist_npz(real_data("chest_xray", "pneumoniamnist_balanced.npz"), "val")
    pick = np.random.default_rng(0).choice(len(images), size=48, replace=False)  # the file is grouped by class
    images, labels = images[pick], labels[pick]
    torch.manual_seed(0)
    dvc = DeepVariationalClustering(2, (1, 28, 28), latent_dim=4, num_clusters=2, channels=(4, 8), strides=(2, 2))
    result = train_dvc(dvc, images, pretrain_epochs=2, cluster_epochs=2, batch_size=16, recon="bce", progress=False)
    assert result.labels.shape == (48,)
    assert result.history["pretrain_loss"][-1] < result.history["pretrain_loss"][0]
    h = result.history  # the clustering-stage loss is the reconstruction plus gamma KL(P||Q) (no prior by default)
    np.testing.assert_allclose(h["loss"], np.add(h["reconstruction"], result.gamma * np.asarray(h["clustering"])),
                               rtol=1e-5)  # fmt: skip
    assert all(k > 0 for k in h["clustering"])  # P is sharper than Q on real images too
    dvc.eval()
    with torch.no_grad():
        q = dvc(torch.as_tensor(images))["q"]
    assert np.array_equal(result.labels, q.argmax(1).numpy())  # the trained model's assignments
    assert min(np.bincount(result.labels, minlength=2)) >= 5  # both clusters hold real groups of X-rays


def test_clustering_stage_loss_is_the_authors_by_default_and_the_prior_is_an_option(blobs):
    x, _ = blobs(n_per_class=6)
    hist = {}
    for beta in (0.0, 1.0):
        model = _dvc(seed=1)
        pretrain_vae(model, x, epochs=2, batch_size=9, progress=False)
        initial = init_dvc_centroids(model, x)
        out = train_dvc_clustering(model, x, initial, epochs=2, batch_size=9, tol=0.0, beta=beta, progress=False)
        hist[beta] = out.history
    g = out.gamma
    for beta, h in hist.items():
        expected = np.asarray(h["reconstruction"]) + beta * np.asarray(h["kl"]) + g * np.asarray(h["clustering"])
        np.testing.assert_allclose(h["loss"], expected, rtol=1e-5)
    assert all(k > 0 for k in hist[0.0]["kl"])  # the prior is still logged when it is not trained
    # train_dvc forwards cluster_beta (default 0) to the clustering stage, beta to the pretraining
    model = _dvc(seed=1)
    default = train_dvc(model, x, pretrain_epochs=2, cluster_epochs=2, batch_size=9, tol=0.0, progress=False)
    np.testing.assert_allclose(hist[0.0]["loss"], default.history["loss"], rtol=1e-5)
    model = _dvc(seed=1)
    prior = train_dvc(model, x, pretrain_epochs=2, cluster_epochs=2, batch_size=9, tol=0.0, cluster_beta=1.0,
                      progress=False)
    np.testing.assert_allclose(hist[1.0]["loss"], prior.history["loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="beta"):
        train_dvc_clustering(_dvc(), x, initial, epochs=1, beta=-1.0, progress=False)
