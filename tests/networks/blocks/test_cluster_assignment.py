"""StudentTClusterAssignment: rows sum to one, centroids initialise from k-means output, gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cluster.clustering.dec import student_t_assignment
from monai_cluster.networks.blocks.cluster_assignment import StudentTClusterAssignment


def test_forward_rows_sum_to_one_and_match_function():
    layer = StudentTClusterAssignment(4, 6, alpha=2.0)
    z = torch.randn(10, 6)
    q = layer(z)
    assert q.shape == (10, 4)
    torch.testing.assert_close(q.sum(1), torch.ones(10))
    torch.testing.assert_close(q, student_t_assignment(z, layer.centroids, 2.0))
    assert isinstance(layer.centroids, torch.nn.Parameter)
    assert "num_clusters=4" in repr(layer)


def test_init_centroids_from_numpy_and_tensor():
    layer = StudentTClusterAssignment(3, 2)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]], dtype=np.float32)
    layer.init_centroids(centres)
    torch.testing.assert_close(layer.centroids.detach(), torch.from_numpy(centres))
    assert layer.centroids.requires_grad
    q = layer(torch.tensor([[4.9, 5.1], [0.1, -0.1], [-5.0, 4.0]]))
    assert q.argmax(1).tolist() == [1, 0, 2]
    layer.init_centroids(torch.zeros(3, 2, dtype=torch.float64))
    assert layer.centroids.dtype == torch.float32 and float(layer.centroids.detach().abs().sum()) == 0.0


def test_centroids_receive_finite_gradients():
    layer = StudentTClusterAssignment(3, 4)
    z = torch.randn(8, 4, requires_grad=True)
    (layer(z) * torch.rand(8, 3)).sum().backward()
    for tensor in (layer.centroids.grad, z.grad):
        assert tensor is not None and torch.isfinite(tensor).all() and tensor.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_clusters": 1, "embed_dim": 2}, ValueError, "num_clusters"),
        ({"num_clusters": 2, "embed_dim": 0}, ValueError, "embed_dim"),
        ({"num_clusters": 2, "embed_dim": 2, "alpha": -1.0}, ValueError, "alpha"),
        ({"num_clusters": 2.0, "embed_dim": 2}, TypeError, "num_clusters"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        StudentTClusterAssignment(**kwargs)


def test_call_and_init_errors():
    layer = StudentTClusterAssignment(2, 3)
    with pytest.raises(ValueError, match=r"z must be \(B, 3\)"):
        layer(torch.randn(4, 2))
    with pytest.raises(ValueError, match="z must have 2 dimensions"):
        layer(torch.randn(4, 3, 1))
    with pytest.raises(ValueError, match=r"centroids must have shape \(num_clusters, embed_dim\)"):
        layer.init_centroids(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="centroids must be finite"):
        layer.init_centroids(np.full((2, 3), np.nan))
    with pytest.raises(TypeError, match="centroids must be numeric"):
        layer.init_centroids(np.array([["a", "b", "c"]] * 2))
    with pytest.raises(TypeError, match="centroids must be a torch.Tensor"):
        layer.init_centroids([[0.0] * 3] * 2)
