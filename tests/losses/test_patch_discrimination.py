"""Tests for patch discrimination, mixup consistency and mixup_images against loop-based references, 2D and 3D."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from monai_cluster.losses.patch_discrimination import (
    MixupConsistencyLoss,
    PatchDiscriminationLoss,
    invariant_spreading_loss,
    mixup_consistency_loss,
    mixup_images,
    patch_discrimination_loss,
    pool_patches,
)


def _ref_invariant_spreading(u: torch.Tensor, v: torch.Tensor, t: float) -> list[float]:
    """Ye et al.'s criterion written out with loops, in float64."""
    x = [row / row.norm() for row in torch.cat([u, v]).double()]
    n, m = len(x), len(u)
    losses = []
    for i in range(n):
        pos = (i + m) % n
        denom = sum(math.exp(float(x[i] @ x[k]) / t) for k in range(n) if k != i)
        loss = -math.log(math.exp(float(x[i] @ x[pos]) / t) / denom)
        for j in range(n):
            if j not in (i, pos):
                loss -= math.log(1 - math.exp(float(x[i] @ x[j]) / t) / denom)
        losses.append(loss)
    return losses


def _ref_pool(e: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B*G, D)`` rows: the mean of each equal block, normalised, image-major and cells in row-major order."""
    b, d = e.shape[:2]
    spatial = e.shape[2:]
    step = [s // grid for s in spatial]
    rows = []
    for i in range(b):
        for cell in itertools.product(range(grid), repeat=len(spatial)):
            block = e[i][(slice(None),) + tuple(slice(c * s, (c + 1) * s) for c, s in zip(cell, step))]
            vec = block.reshape(d, -1).mean(dim=1).double()
            rows.append(vec / vec.norm())
    return torch.stack(rows)


def _maps(spatial_dims: int, batch: int = 2, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (batch, dim, *([4] * spatial_dims))
    return F.normalize(torch.randn(shape), dim=1), F.normalize(torch.randn(shape), dim=1)


def test_invariant_spreading_matches_the_loop_reference():
    u, v = torch.randn(5, 4), torch.randn(5, 4)
    for t in (0.1, 0.5):
        ref = torch.tensor(_ref_invariant_spreading(u, v, t), dtype=torch.float64)
        per = invariant_spreading_loss(u, v, t, reduction="none")
        torch.testing.assert_close(per.double(), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(invariant_spreading_loss(u, v, t), per.mean())
        torch.testing.assert_close(invariant_spreading_loss(u, v, t, reduction="sum"), per.sum())


def test_invariant_spreading_single_pair_and_perfect_pairs():
    u = torch.tensor([[1.0, 0.0]])
    assert float(invariant_spreading_loss(u, u)) == pytest.approx(0.0, abs=1e-6)  # the positive is the only other
    eye = torch.eye(4)
    aligned = invariant_spreading_loss(eye, eye)
    shuffled = invariant_spreading_loss(eye, eye.roll(1, dims=0))
    assert float(aligned) < 0.01 < float(shuffled)


def test_invariant_spreading_is_stable_at_tiny_temperature():
    u = torch.randn(6, 3, requires_grad=True)
    v = torch.randn(6, 3, requires_grad=True)
    loss = invariant_spreading_loss(u, v, temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all()
    same = u.detach().clone().requires_grad_()
    loss = invariant_spreading_loss(same, torch.cat([same[:1], same[:1] * -1, same[2:]]).detach(), temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(same.grad).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_patch_discrimination_matches_pooled_reference(spatial_dims):
    e0, e1 = _maps(spatial_dims)
    ref = _ref_invariant_spreading(_ref_pool(e0, 2), _ref_pool(e1, 2), 0.1)
    per = patch_discrimination_loss(e0, e1, temperature=0.1, grid_size=2, reduction="none")
    assert per.shape == (2 * 2 * 2**spatial_dims,)
    torch.testing.assert_close(per.double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-4, atol=1e-4)
    module = PatchDiscriminationLoss(temperature=0.1, grid_size=2)
    torch.testing.assert_close(module(e0, e1), per.mean())
    assert "grid_size=2" in repr(module)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pool_patches_shapes_and_unit_norm(spatial_dims):
    e = torch.randn(2, 3, *([8] * spatial_dims))
    p = pool_patches(e, 4)
    assert p.shape == (2, 3, *([4] * spatial_dims))
    torch.testing.assert_close(p.norm(dim=1), torch.ones(2, *([4] * spatial_dims)))
    per_axis = (2, 4) if spatial_dims == 2 else (2, 4, 1)
    assert pool_patches(e, per_axis).shape == (2, 3, *per_axis)


def test_patch_discrimination_prefers_aligned_views():
    e0, e1 = _maps(2, batch=3)
    assert float(patch_discrimination_loss(e0, e0, grid_size=2)) < float(patch_discrimination_loss(e0, e1, grid_size=2))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_mixup_consistency_matches_reference_and_detaches_the_target(spatial_dims):
    mixed, e = _maps(spatial_dims, batch=3)
    mixed.requires_grad_()
    e.requires_grad_()
    w, partner = torch.tensor([0.3, 0.5, 0.8]), torch.tensor([1, 2, 0])
    pooled = _ref_pool(e.detach(), 2).view(3, -1, e.shape[1])
    mixes = [w[b] * pooled[b] + (1 - w[b]) * pooled[partner[b]] for b in range(3)]
    targets = [mix / mix.norm(dim=1, keepdim=True) for mix in mixes]
    ref = _ref_invariant_spreading(_ref_pool(mixed, 2), torch.cat(targets), 0.1)
    loss = mixup_consistency_loss(mixed, e, w, partner, temperature=0.1, grid_size=2, reduction="none")
    torch.testing.assert_close(loss.double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-4, atol=1e-4)
    loss.sum().backward()
    assert e.grad is None  # the mix of embeddings is a fixed target
    assert torch.isfinite(mixed.grad).all() and mixed.grad.abs().sum() > 0
    module = MixupConsistencyLoss(grid_size=2)
    torch.testing.assert_close(module(mixed, e, w, partner), loss.mean())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_mixup_images_mixes_with_another_image(spatial_dims):
    x = torch.randn(4, 2, *([4] * spatial_dims))
    gen = torch.Generator().manual_seed(0)
    mixed, w, partner = mixup_images(x, generator=gen)
    assert mixed.shape == x.shape and w.shape == (4,) and partner.dtype == torch.int64
    assert ((w >= 0.2) & (w <= 0.8)).all()
    assert (partner != torch.arange(4)).all() and sorted(partner.tolist()) == [0, 1, 2, 3]
    view = w.view(-1, *([1] * (x.ndim - 1)))
    torch.testing.assert_close(mixed, view * x + (1 - view) * x[partner])
    again = mixup_images(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again[0], mixed)
    fixed = mixup_images(x, low=0.5, high=0.5)[1]
    torch.testing.assert_close(fixed, torch.full((4,), 0.5))


def test_errors_name_the_input():
    u = torch.randn(3, 4)
    with pytest.raises(ValueError, match="temperature"):
        invariant_spreading_loss(u, u, temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        invariant_spreading_loss(u, u, reduction="max")
    with pytest.raises(ValueError, match="u and v must have the same"):
        invariant_spreading_loss(u, torch.randn(2, 4))
    with pytest.raises(ValueError, match="u must have 2 dimensions"):
        invariant_spreading_loss(torch.randn(3), torch.randn(3))
    with pytest.raises(ValueError, match="v must be finite"):
        invariant_spreading_loss(u, torch.full((3, 4), float("inf")))
    e0, e1 = _maps(2)
    with pytest.raises(ValueError, match="grid_size"):
        patch_discrimination_loss(e0, e1, grid_size=8)
    with pytest.raises(ValueError, match="grid_size must be an int or 2 ints"):
        patch_discrimination_loss(e0, e1, grid_size=(2, 2, 2))
    with pytest.raises(ValueError, match="grid_size"):
        PatchDiscriminationLoss(grid_size=0)
    with pytest.raises(ValueError, match="grid_size must be an int or a sequence of 2 or 3"):
        MixupConsistencyLoss(grid_size=(2,))
    with pytest.raises(ValueError, match="embedding and embedding_1 must have the same"):
        patch_discrimination_loss(e0, e1[:, :3], grid_size=2)
    with pytest.raises(ValueError, match="embedding_1 must be"):
        patch_discrimination_loss(e0, e1[0], grid_size=2)
    with pytest.raises(TypeError, match="embedding must be a floating-point"):
        patch_discrimination_loss(e0.long(), e1)
    w, p = torch.tensor([0.5, 0.5]), torch.tensor([1, 0])
    with pytest.raises(ValueError, match="mixed_embedding and embedding must have the same"):
        mixup_consistency_loss(e0, e1[:, :2], w, p, grid_size=2)
    with pytest.raises(ValueError, match="one entry per image"):
        mixup_consistency_loss(e0, e1, w[:1], p, grid_size=2)
    with pytest.raises(ValueError, match=r"mix_partner must hold indices in \[0, 2\)"):
        mixup_consistency_loss(e0, e1, w, torch.tensor([1, 2]), grid_size=2)
    with pytest.raises(TypeError, match="mix_partner must be an integer"):
        mixup_consistency_loss(e0, e1, w, p.float(), grid_size=2)
    with pytest.raises(ValueError, match=r"mix_weight must lie in \[0, 1\]"):
        mixup_consistency_loss(e0, e1, torch.tensor([0.5, 1.5]), p, grid_size=2)
    with pytest.raises(ValueError, match="at least 2 images"):
        mixup_images(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match="low must not exceed high"):
        mixup_images(torch.randn(2, 1, 4, 4), low=0.7, high=0.3)
    with pytest.raises(ValueError, match="high"):
        mixup_images(torch.randn(2, 1, 4, 4), high=1.2)
    with pytest.raises(TypeError, match="generator"):
        mixup_images(torch.randn(2, 1, 4, 4), generator=0)
    with pytest.raises(TypeError, match="images must be a floating-point"):
        mixup_images(torch.ones(2, 1, 4, 4, dtype=torch.long))
