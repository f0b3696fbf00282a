import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.decomposition import PCA

from monai_cluster.visualize import embed_2d, plot_latent_space


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    centres = np.repeat(np.eye(3, 12) * 10, 10, axis=0)
    features = centres + rng.normal(size=(30, 12))
    labels = np.array(["nevus"] * 10 + ["melanoma"] * 10 + ["atypical"] * 10)
    clusters = np.repeat([2, 0, 1], 10)
    return features, labels, clusters


def _png_size(path):
    with Image.open(path) as img:
        img.verify()
        assert img.format == "PNG"
        return img.size


def test_pca_panels_and_embedding(tmp_path, blobs):
    features, labels, clusters = blobs
    xy = plot_latent_space(torch.tensor(features), tmp_path / "two.png", labels=labels, clusters=clusters, dpi=40)
    assert np.allclose(np.abs(xy), np.abs(PCA(n_components=2).fit_transform(features)))
    plot_latent_space(features, tmp_path / "one.png", clusters=clusters, dpi=40)
    plot_latent_space(features, tmp_path / "labels.png", labels=labels, dpi=40)
    plot_latent_space(features, tmp_path / "plain.png", dpi=40)
    one, two = _png_size(tmp_path / "one.png"), _png_size(tmp_path / "two.png")
    assert one[0] > 100 and two[0] > 1.6 * one[0]  # a second panel coloured by label
    assert _png_size(tmp_path / "labels.png")[0] < 1.3 * one[0]
    assert _png_size(tmp_path / "plain.png")[0] > 100


def test_tsne_is_deterministic_and_separates_blobs(blobs):
    features, _, clusters = blobs
    a = embed_2d(features, method="tsne", seed=3, tsne_iterations=300)
    b = embed_2d(torch.tensor(features), method="tsne", seed=3, tsne_iterations=300)
    assert a.shape == (30, 2) and np.allclose(a, b)
    centres = np.stack([a[clusters == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(a[clusters == k] - centres[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_tsne_plot_and_many_clusters(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 3))
    clusters = np.arange(40) % 25  # more clusters than legend entries
    xy = plot_latent_space(features, tmp_path / "t.png", clusters=clusters, method="tsne", tsne_iterations=250, dpi=40)
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
    assert _png_size(tmp_path / "t.png")[0] > 100


def test_single_feature():
    xy = embed_2d(np.arange(5.0)[:, None])
    assert np.allclose(xy[:, 0], np.arange(5.0) - 2) and np.all(xy[:, 1] == 0)


def test_errors(tmp_path, blobs):
    features, labels, clusters = blobs
    path = tmp_path / "x.png"
    with pytest.raises(ValueError, match=r"labels must be one value per sample, shape \(30,\), got shape \(29,\)"):
        plot_latent_space(features, path, labels=labels[:-1])
    with pytest.raises(ValueError, match=r"clusters must be one value per sample, shape \(30,\), got shape \(30, 1\)"):
        plot_latent_space(features, path, clusters=clusters[:, None])
    with pytest.raises(ValueError, match=r"features must be \(N, F\) with N >= 2 samples .* got shape \(30,\)"):
        plot_latent_space(features[:, 0], path)
    with pytest.raises(ValueError, match=r"features must be \(N, F\) .* got shape \(1, 12\)"):
        plot_latent_space(features[:1], path)
    bad = features.copy()
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match="features must be finite, but 1 values"):
        plot_latent_space(bad, path)
    with pytest.raises(TypeError, match="features must hold real numbers"):
        plot_latent_space(np.array([["a", "b"], ["c", "d"]]), path)
    with pytest.raises(ValueError, match="method must be one of"):
        plot_latent_space(features, path, method="umap")
    with pytest.raises(ValueError, match=r"perplexity must lie in \(0, N=30\)"):
        embed_2d(features, method="tsne", perplexity=40)
    with pytest.raises(ValueError, match="tsne_iterations must be an integer >= 250"):
        embed_2d(features, method="tsne", tsne_iterations=10)
    with pytest.raises(ValueError, match=r"path must end with \.png"):
        plot_latent_space(features, tmp_path / "x.svg")
    assert not list(tmp_path.iterdir())
