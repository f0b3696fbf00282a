"""Tests of faiss k-means: recovered blobs, shapes and dtypes, reproducibility and every input error."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from monai_cluster.clustering import kmeans, kmeans_assign


def test_recovers_blobs(two_scale_blobs):
    x, _, fine = two_scale_blobs(n=450)
    labels, centroids = kmeans(x, 9, seed=0, nredo=2)
    assert labels.shape == (450,) and labels.dtype == np.int64
    assert centroids.shape == (9, 8) and centroids.dtype == np.float32
    assert adjusted_rand_score(fine, labels) > 0.99
    # every point sits at its nearest centroid
    d = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))
    np.testing.assert_array_equal(kmeans_assign(x, centroids), labels)


def test_same_seed_same_result_and_float64_input(two_scale_blobs):
    x, _, _ = two_scale_blobs(n=300)
    a, ca = kmeans(x, 5, seed=3)
    b, cb = kmeans(x.astype(np.float64), 5, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ca, cb)


def test_k_equals_n_and_k_one():
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    labels, _ = kmeans(x, 6)
    assert sorted(labels.tolist()) == list(range(6))
    labels, centroids = kmeans(x, 1)
    assert (labels == 0).all()
    np.testing.assert_allclose(centroids[0], x.mean(0), rtol=1e-5, atol=1e-6)


def test_errors():
    x = np.zeros((5, 3), dtype=np.float32) + np.arange(5, dtype=np.float32)[:, None]
    with pytest.raises(ValueError, match=r"5 sample\(s\).*num_clusters=6"):
        kmeans(x, 6)
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(x, 0)
    with pytest.raises(TypeError, match="num_clusters"):
        kmeans(x, 2.5)
    with pytest.raises(ValueError, match="2D"):
        kmeans(x[0], 1)
    with pytest.raises(TypeError, match="floating-point"):
        kmeans(x.astype(np.int64), 2)
    with pytest.raises(ValueError, match="at least one sample"):
        kmeans(np.zeros((0, 3), dtype=np.float32), 1)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        kmeans(bad, 2)
    with pytest.raises(ValueError, match="niter"):
        kmeans(x, 2, niter=0)
    with pytest.raises(ValueError, match="seed"):
        kmeans(x, 2, seed=-1)
    with pytest.raises(ValueError, match="centroids must have 3 features"):
        kmeans_assign(x, np.zeros((2, 4), dtype=np.float32))


def test_init_choice(two_scale_blobs):
    x, _, _ = two_scale_blobs(n=90)
    labels, _ = kmeans(x, 3, init="random")
    assert labels.shape == (90,)
    with pytest.raises(ValueError, match="init"):
        kmeans(x, 3, init="forgy")


def test_accepts_torch_tensors(two_scale_blobs):
    import torch

    x, _, fine = two_scale_blobs(n=90)
    labels, _ = kmeans(torch.from_numpy(x), 9, seed=0, nredo=2)
    assert adjusted_rand_score(fine, labels) > 0.99


def test_assignment_in_chunks_equals_one_pass(monkeypatch):
    import sys

    km = sys.modules["monai_cluster.clustering.kmeans"]  # the module (the package exports the function kmeans)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 8)).astype(np.float32)
    c = rng.normal(size=(5, 8)).astype(np.float32)
    whole = km.kmeans_assign(x, c)
    monkeypatch.setattr(km, "_ASSIGN_CHUNK_ROWS", 64)
    np.testing.assert_array_equal(km.kmeans_assign(x, c), whole)
    brute = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(whole, brute)


def test_gpu_option_resolves_and_refuses_clearly(monkeypatch, two_scale_blobs):
    import faiss

    from monai_cluster.clustering import faiss_gpu_count, hierarchical_pseudo_classes

    x = two_scale_blobs(n=90)[0]
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)  # as faiss-cpu, whatever this machine has
    assert faiss_gpu_count(None) == 0 and faiss_gpu_count(False) == 0
    with pytest.raises(ValueError, match="gpu=True, but faiss .* sees no GPU"):
        faiss_gpu_count(True)
    with pytest.raises(ValueError, match="sees no GPU"):
        kmeans(x, 3, gpu=True)
    with pytest.raises(TypeError, match="gpu must be True, False or None"):
        kmeans(x, 3, gpu="cuda")
    with pytest.raises(TypeError, match="gpu must be True, False or None"):
        hierarchical_pseudo_classes(x, (2, 4), gpu=1)
    np.testing.assert_array_equal(kmeans(x, 3, gpu=None)[0], kmeans(x, 3, gpu=False)[0])
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    assert faiss_gpu_count(None) == 2 and faiss_gpu_count(True) == 2 and faiss_gpu_count(False) == 0


def test_gpus_reach_faiss(monkeypatch):
    """With GPUs, k-means is built with gpu=<count> and the assignment index moved to them (faiss mocked)."""
    import sys

    import faiss

    km = sys.modules["monai_cluster.clustering.kmeans"]
    seen = {}
    real_kmeans = faiss.Kmeans

    def fake_kmeans(d, k, **kwargs):
        seen["gpu"] = kwargs.pop("gpu", None)
        return real_kmeans(d, k, **kwargs)

    monkeypatch.setattr(faiss, "Kmeans", fake_kmeans)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index, ngpu: seen.setdefault("moved", ngpu) and index)
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    labels, _ = km.faiss_kmeans(x, 3, 0, 5, 1, 64, gpus=2)
    assert seen == {"gpu": 2, "moved": 2} and labels.shape == (200,)
