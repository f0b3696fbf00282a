import math

import pytest
import torch

from monai_cluster.losses import LocalContrastiveLoss, local_contrastive_loss


def loop_reference(f1, f2, temperature=0.1):
    """Local NT-Xent over ALL locations of each image, python loops in float64: (B, 2M) per-anchor losses."""
    b, c = f1.shape[:2]
    u = f1.reshape(b, c, -1).double()
    v = f2.reshape(b, c, -1).double()
    m = u.shape[2]
    out = torch.zeros(b, 2 * m, dtype=torch.float64)
    for i in range(b):
        vecs = [x / x.norm() for x in list(u[i].T) + list(v[i].T)]
        for a in range(2 * m):
            p = (a + m) % (2 * m)
            num = torch.exp(vecs[a] @ vecs[p] / temperature)
            den = num.clone()
            for k in range(2 * m):
                if k not in (a, p):
                    den = den + torch.exp(vecs[a] @ vecs[k] / temperature)
            out[i, a] = -torch.log(num / den)
    return out


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (2, 3, 2, 3, 2)])
def test_matches_loop_reference_2d_3d_all_locations(shape):
    f1, f2 = torch.randn(shape), torch.randn(shape)
    ours = local_contrastive_loss(f1, f2, temperature=0.2, num_locations=100, reduction="none")
    m = math.prod(shape[2:])
    assert ours.shape == (2, 2 * m)
    torch.testing.assert_close(ours.double(), loop_reference(f1, f2, 0.2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 2, 4, 6), (1, 2, 4, 2, 6)])
def test_region_pooling_2d_3d(shape):
    f1, f2 = torch.randn(shape), torch.randn(shape)
    ours = LocalContrastiveLoss(temperature=0.5, num_locations=64, region_size=2)(f1, f2)

    def pool(x):  # mean over each 2-pixel block along every spatial axis
        for axis in range(2, x.ndim):
            x = x.unfold(axis, 2, 2).mean(dim=-1)
        return x

    assert math.isclose(ours.item(), loop_reference(pool(f1), pool(f2), 0.5).mean().item(), rel_tol=1e-5)


@pytest.mark.parametrize("spatial", [(6, 6), (3, 4, 3)])
def test_sampled_locations_are_the_same_in_both_views(spatial):
    # every location of an image gets its own orthogonal feature and the views are identical: if the two
    # views used the same K locations, each anchor has e^{1/t} for its positive and 2K-2 negatives at e^0.
    m, k, t = math.prod(spatial), 5, 0.5
    f = torch.eye(m).reshape(1, m, *spatial).repeat(2, 1, *([1] * len(spatial)))
    per = local_contrastive_loss(f, f.clone(), temperature=t, num_locations=k, reduction="none")
    assert per.shape == (2, 2 * k)
    torch.testing.assert_close(per, torch.full_like(per, math.log1p((2 * k - 2) * math.exp(-1 / t))))


def test_seeded_generator_reproduces_draw_and_subset_matches_reference():
    f1, f2 = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    loss = LocalContrastiveLoss(temperature=0.3, num_locations=6, reduction="none")
    a = loss(f1, f2, generator=torch.Generator().manual_seed(3))
    b = loss(f1, f2, generator=torch.Generator().manual_seed(3))
    c = loss(f1, f2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # the documented draw: the K highest of torch.rand(B, M, generator=generator) per image
    flat1, flat2 = f1.flatten(2), f2.flatten(2)
    idx = torch.rand(2, 25, generator=torch.Generator().manual_seed(3)).topk(6, dim=1).indices
    for i in range(2):
        ref = loop_reference(flat1[i : i + 1, :, idx[i]], flat2[i : i + 1, :, idx[i]], 0.3)[0]
        torch.testing.assert_close(a[i].double(), ref, rtol=1e-5, atol=1e-6)


def test_finite_and_correct_gradient_at_temperature_0005():
    f1 = torch.randn(2, 4, 3, 3)
    f2 = f1 + 0.01 * torch.randn(2, 4, 3, 3)
    a = f1.clone().requires_grad_(True)
    loss = local_contrastive_loss(a, f2, temperature=0.005, num_locations=9)
    loss.backward()
    b = f1.double().requires_grad_(True)
    ref = loop_reference(b, f2.double(), 0.005).mean()
    ref.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-4, abs_tol=1e-5)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-3, atol=1e-4)


def test_reductions():
    f1, f2 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    none = local_contrastive_loss(f1, f2, num_locations=16, reduction="none")
    torch.testing.assert_close(local_contrastive_loss(f1, f2, num_locations=16, reduction="sum"), none.sum())
    torch.testing.assert_close(local_contrastive_loss(f1, f2, num_locations=16), none.mean())


def test_memory_is_quadratic_in_sampled_locations_not_pixels():
    b, c, k = 2, 4, 8
    f1 = torch.randn(b, c, 32, 32, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        local_contrastive_loss(f1, torch.randn(b, c, 32, 32), num_locations=k)
    assert sizes and max(sizes) <= max(f1.numel(), b * (2 * k) ** 2)


def test_loss_falls_when_optimising_free_maps_3d():
    f1 = torch.randn(2, 6, 3, 3, 3, requires_grad=True)
    f2 = torch.randn(2, 6, 3, 3, 3, requires_grad=True)
    loss_fn = LocalContrastiveLoss(temperature=0.2, num_locations=10)
    gen = torch.Generator().manual_seed(0)
    optim = torch.optim.SGD([f1, f2], lr=1.0)
    first = loss_fn(f1, f2, generator=torch.Generator().manual_seed(0)).item()
    for _ in range(20):
        optim.zero_grad()
        loss_fn(f1, f2, generator=gen).backward()
        optim.step()
    assert loss_fn(f1, f2, generator=torch.Generator().manual_seed(0)).item() < 0.8 * first


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": -0.1}, ValueError, "temperature"),
        ({"temperature": "x"}, TypeError, "temperature"),
        ({"num_locations": 0}, ValueError, "num_locations"),
        ({"num_locations": 2.0}, TypeError, "num_locations"),
        ({"region_size": 0}, ValueError, "region_size"),
        ({"reduction": None}, TypeError, "reduction"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        LocalContrastiveLoss(**kwargs)


@pytest.mark.parametrize(
    "f1, f2, kwargs, error, match",
    [
        (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 5), {}, ValueError, "same"),
        (torch.randn(2, 3, 4), torch.randn(2, 3, 4), {}, ValueError, "f1 must be"),
        (torch.randn(2, 3, 4, 4, 4, 4), torch.randn(2, 3, 4, 4, 4, 4), {}, ValueError, "f1 must be"),
        (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4), {}, ValueError, "f2 must be"),
        (torch.ones(2, 3, 4, 4, dtype=torch.long), torch.randn(2, 3, 4, 4), {}, TypeError, "f1"),
        (torch.randn(2, 3, 4, 4), torch.full((2, 3, 4, 4), float("nan")), {}, ValueError, "f2 must be finite"),
        (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), {"region_size": 5}, ValueError, "region_size"),
        (torch.randn(2, 3, 1, 1), torch.randn(2, 3, 1, 1), {}, ValueError, "at least 2 regions"),
        (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), {"generator": 3}, TypeError, "generator"),
    ],
)
def test_forward_errors(f1, f2, kwargs, error, match):
    generator = kwargs.pop("generator", None)
    with pytest.raises(error, match=match):
        LocalContrastiveLoss(num_locations=4, **kwargs)(f1, f2, generator=generator)
