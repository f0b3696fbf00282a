"""Prototype assignments and updates (Ferrante et al.'s contrastive autoencoder), against direct computations."""

from __future__ import annotations

import pytest
import torch

from monai_cluster.clustering import prototype_assignment, prototype_means


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)


def test_soft_means_weight_every_code_by_its_assignment():
    z, b = _data()
    p = torch.softmax(z @ b.t() / 0.7, dim=1)
    torch.testing.assert_close(prototype_assignment(z, b, 0.7), p)
    expected = (p.t() @ z) / p.sum(0)[:, None]
    torch.testing.assert_close(prototype_means(z, b, 0.7, "soft"), expected)


def test_hard_means_ignore_the_temperature_and_keep_empty_prototypes():
    z, b = (t.abs() for t in _data())  # positive codes and prototypes: positive similarities
    b = torch.cat([b, -torch.ones(1, 3, dtype=torch.float64)])  # negative similarity: never the argmax
    labels = (z @ b.t()).argmax(1)
    out = prototype_means(z, b, 0.1, "hard")
    for k in range(b.shape[0]):
        want = z[labels == k].mean(0) if bool((labels == k).any()) else b[k]
        torch.testing.assert_close(out[k], want)
    torch.testing.assert_close(out, prototype_means(z, b, 50.0, "hard"))
    assert torch.equal(out[-1], b[-1])


def test_soft_means_approach_hard_means_at_low_temperature():
    z, b = _data()
    gap = (prototype_means(z, b, 1e-3, "soft") - prototype_means(z, b, 1.0, "hard")).abs().max()
    assert float(gap) < 1e-6


def test_no_gradient_flows_into_the_update():
    z, b = _data()
    z.requires_grad_(True)
    assert not prototype_means(z, b).requires_grad
    assert prototype_assignment(z, b).requires_grad  # the assignment itself is differentiable in z


@pytest.mark.parametrize(
    "z, b, kwargs, match",
    [
        (torch.rand(4, 3), torch.rand(2, 5), {}, "must share D"),
        (torch.rand(4), torch.rand(2, 4), {}, "z"),
        (torch.rand(4, 3), torch.rand(2, 3), {"temperature": 0.0}, "temperature"),
        (torch.rand(4, 3), torch.rand(2, 3), {"assignment": "fuzzy"}, "assignment must be one of"),
    ],
)
def test_errors_name_the_input(z, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prototype_means(z, b, **kwargs)
