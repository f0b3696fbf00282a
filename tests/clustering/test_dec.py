"""DEC pure functions: Student's-t assignment against a loop, target distribution properties, label drift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cluster.clustering.dec import assignment_change_fraction, student_t_assignment, target_distribution


def _loop_student_t(z: torch.Tensor, c: torch.Tensor, alpha: float) -> torch.Tensor:
    q = torch.zeros(z.shape[0], c.shape[0], dtype=torch.float64)
    for i in range(z.shape[0]):
        for j in range(c.shape[0]):
            d2 = sum((float(z[i, d]) - float(c[j, d])) ** 2 for d in range(z.shape[1]))
            q[i, j] = (1.0 + d2 / alpha) ** (-(alpha + 1.0) / 2.0)
        q[i] /= q[i].sum()
    return q


@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
def test_student_t_matches_loop(alpha):
    z, c = torch.randn(7, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    q = student_t_assignment(z, c, alpha)
    assert q.shape == (7, 4)
    torch.testing.assert_close(q, _loop_student_t(z, c, alpha), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(q.sum(1), torch.ones(7, dtype=torch.float64))


def test_student_t_far_points_stay_finite_and_pick_nearest():
    z = torch.tensor([[1e4, 1e4], [-1e4, 0.0]])
    c = torch.tensor([[1e4, 1e4 + 1.0], [-1e4, 1.0], [0.0, 0.0]])
    q = student_t_assignment(z, c)
    assert torch.isfinite(q).all()
    assert q.argmax(1).tolist() == [0, 1]


def test_student_t_gradients_reach_both_inputs():
    z = torch.randn(6, 3, requires_grad=True)
    c = torch.randn(2, 3, requires_grad=True)
    student_t_assignment(z, c)[:, 0].sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0


def test_target_distribution_properties():
    q = torch.softmax(torch.randn(50, 4, dtype=torch.float64) * 2, dim=1)
    p = target_distribution(q)
    torch.testing.assert_close(p.sum(1), torch.ones(50, dtype=torch.float64))
    # loop reference of eq. 3
    f = q.sum(0)
    ref = torch.stack([(q[i] ** 2 / f) / (q[i] ** 2 / f).sum() for i in range(50)])
    torch.testing.assert_close(p, ref)
    # sharper than q: lower entropy on average, larger top probability for balanced clusters
    entropy = lambda d: -(d * d.clamp_min(1e-30).log()).sum(1)  # noqa: E731
    assert entropy(p).mean() < entropy(q).mean()
    balanced = torch.softmax(torch.tensor([[2.0, 0.0], [0.0, 2.0]] * 5, dtype=torch.float64), dim=1)
    assert (target_distribution(balanced).max(1).values > balanced.max(1).values).all()


def test_target_distribution_is_detached():
    q = torch.softmax(torch.randn(5, 3, requires_grad=True), 1)
    assert not target_distribution(q).requires_grad


def test_assignment_change_fraction():
    assert assignment_change_fraction(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0])) == 0.25
    assert assignment_change_fraction(torch.tensor([1, 1]), torch.tensor([1, 1])) == 0.0
    assert assignment_change_fraction(torch.tensor([1, 0]), np.array([0, 1])) == 1.0


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.randn(3, 2), torch.randn(2, 3)), ValueError, "embedding size D"),
        ((torch.randn(3), torch.randn(2, 3)), ValueError, "z must have 2 dimensions"),
        ((torch.randn(3, 2), torch.randn(2, 2), 0.0), ValueError, "alpha"),
        ((torch.ones(3, 2, dtype=torch.long), torch.randn(2, 2)), TypeError, "z must be a floating-point"),
        ((torch.randn(3, 2), [[0.0, 0.0]]), TypeError, "centroids must be a torch.Tensor"),
    ],
)
def test_student_t_errors(args, error, match):
    with pytest.raises(error, match=match):
        student_t_assignment(*args)


def test_target_distribution_errors():
    with pytest.raises(ValueError, match="q must have 2 dimensions"):
        target_distribution(torch.rand(3))
    with pytest.raises(ValueError, match="q must be non-negative"):
        target_distribution(torch.tensor([[1.5, -0.5]]))
    with pytest.raises(ValueError, match="q must be finite"):
        target_distribution(torch.tensor([[float("nan"), 1.0]]))


def test_assignment_change_fraction_errors():
    with pytest.raises(ValueError, match="previous and new must have the same length"):
        assignment_change_fraction(np.array([0, 1]), np.array([0]))
    with pytest.raises(TypeError, match="previous must hold integer labels"):
        assignment_change_fraction(np.array([0.0]), np.array([0]))
    with pytest.raises(ValueError, match="new must be a non-empty"):
        assignment_change_fraction(np.array([0]), np.zeros((1, 1), dtype=int))
    with pytest.raises(TypeError, match="new must be a torch.Tensor or numpy array"):
        assignment_change_fraction(np.array([0]), [0])
