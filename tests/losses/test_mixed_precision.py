"""Losses under bfloat16 autocast: they keep float32 inside, so they equal the float32 loss (issue 20).

Two cases per loss:
- float32 inputs under ``torch.autocast("cpu", bfloat16)`` give the float32 loss (to 1e-6): autocast is off inside;
- inputs rounded to bfloat16 (what a network under autocast hands over) give the float32 loss of the unrounded
  inputs within ``RTOL`` (the inputs' own rounding, 2^-8 relative), and stay finite at a temperature of 0.005.
A control shows the guard matters: the NT-Xent's undecorated forward under autocast misses the float32 value by far
more than ``RTOL`` at that temperature.
"""

from __future__ import annotations

import pytest
import torch

from monai_cluster.clustering.dec import student_t_assignment, target_distribution
from monai_cluster.losses import (
    ClusterGuidedContrastiveLoss,
    ContrastiveAutoEncoderLoss,
    DECClusteringLoss,
    ELBOLoss,
    GlobalContrastiveLoss,
    LocalContrastiveLoss,
    PatchDiscriminationLoss,
    RegionDiscriminationLoss,
)

RTOL = 0.01  # the inputs' own bfloat16 rounding (8 bits of mantissa) through a temperature-scaled log-sum-exp
TAU = 0.005


def _bf16(*tensors):
    return [t.to(torch.bfloat16) for t in tensors]


def _cases():
    g = torch.Generator().manual_seed(0)
    # four tight groups: same-group negatives are nearly as similar as the positives, so the loss is far from 0 and
    # the similarities near 1 are where bfloat16's grid (2^-8) would move a logit at tau 0.005 by up to 0.8
    centres, group = torch.randn(4, 32, generator=g), torch.arange(16) % 4
    z1 = centres[group] + 0.1 * torch.randn(16, 32, generator=g)
    z2 = centres[group] + 0.1 * torch.randn(16, 32, generator=g)
    pseudo = torch.randint(0, 3, (16, 2), generator=g)
    parts, vols = torch.randint(0, 4, (16,), generator=g), torch.arange(16) // 4
    f1 = torch.randn(2, 8, 12, 12, generator=g)
    f2 = f1 + 0.2 * torch.randn(2, 8, 12, 12, generator=g)
    f3d = torch.randn(2, 8, 8, 8, 8, generator=g)
    assign = torch.softmax(torch.randn(2, 4, 12, 12, generator=g), 1)
    x = torch.rand(4, 1, 8, 8, generator=g)
    rec = x + 0.1 * torch.randn(4, 1, 8, 8, generator=g)
    mu, logvar = torch.randn(4, 6, generator=g), 0.1 * torch.randn(4, 6, generator=g)
    q = torch.softmax(torch.randn(8, 3, generator=g), 1)
    p = target_distribution(q)
    cae_out = lambda z: {"projection": z, "reconstruction": rec, "latent": z}  # noqa: E731
    loc_gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    return {
        "cluster_guided_nt_xent": (ClusterGuidedContrastiveLoss(temperature=TAU), (z1, z2), {"pseudo_classes": pseudo}),
        "simclr_nt_xent": (ClusterGuidedContrastiveLoss(temperature=TAU), (z1, z2), {}),
        "global_G_D": (
            GlobalContrastiveLoss(temperature=TAU, strategy="G_D"), (z1, z2),
            {"partitions": parts, "volume_ids": vols, "pseudo_classes": pseudo},
        ),
        "local_2d": (LocalContrastiveLoss(temperature=TAU, num_locations=16), (f1, f2), {"generator": loc_gen}),
        "local_3d": (
            LocalContrastiveLoss(temperature=TAU, num_locations=16),
            (f3d, f3d + 0.1), {"generator": loc_gen},
        ),
        "patch_discrimination": (PatchDiscriminationLoss(temperature=TAU, grid_size=4), (f1, f2), {}),
        "region_discrimination": (RegionDiscriminationLoss(temperature=TAU), (f1, assign), {}),
        "elbo": (ELBOLoss(beta=1.0), (rec, x, mu, logvar), {}),
        "dec_kl": (DECClusteringLoss(), (q, p), {}),
        "contrastive_autoencoder": (
            ContrastiveAutoEncoderLoss(temperature=TAU), (cae_out(z1[:4]), cae_out(z2[:4]), x, x), {},
        ),
    }  # fmt: skip


CASES = _cases()


def _call(loss, args, kwargs):
    kwargs = {k: (v() if callable(v) and k == "generator" else v) for k, v in kwargs.items()}
    return loss(*args, **kwargs)


def _round(value):
    if torch.is_tensor(value):
        return value.to(torch.bfloat16) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("name", list(CASES))
def test_float32_inputs_under_autocast_equal_float32(name):
    loss, args, kwargs = CASES[name]
    reference = _call(loss, args, kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _call(loss, args, kwargs)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_bfloat16_inputs_within_rounding_and_finite(name):
    loss, args, kwargs = CASES[name]
    reference = _call(loss, args, kwargs)
    rounded = [_round(a) for a in args]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _call(loss, rounded, {k: _round(v) for k, v in kwargs.items()})
    assert mixed.dtype == torch.float32
    assert torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed, reference, rtol=RTOL, atol=1e-3)


def test_gradient_reaches_bfloat16_inputs():
    z1, z2 = (t.clone().to(torch.bfloat16).requires_grad_(True) for t in CASES["simclr_nt_xent"][1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ClusterGuidedContrastiveLoss(temperature=TAU)(z1, z2)
    loss.backward()
    assert z1.grad is not None and z1.grad.dtype == torch.bfloat16
    assert torch.isfinite(z1.grad.float()).all() and z1.grad.float().abs().sum() > 0


def test_without_the_guard_bfloat16_matmul_misses_by_far_more():
    """The control: the NT-Xent with autocast left on inside (the undecorated function) misses by far more."""
    from monai_cluster.losses.cluster_contrastive import cluster_guided_nt_xent

    loss, (z1, z2), _ = CASES["simclr_nt_xent"]
    reference = loss(z1, z2)
    assert reference > 0.5  # a loss far from 0, where relative errors mean something
    guarded_error = ((loss(*_bf16(z1, z2)) - reference).abs() / reference).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = cluster_guided_nt_xent.__wrapped__(z1, z2, None, TAU)
    raw_error = ((raw.float() - reference).abs() / reference).item()
    print(f'guarded {guarded_error:.5f}, unguarded {raw_error:.5f}')
    assert guarded_error < RTOL / 5
    assert raw_error > RTOL and raw_error > 10 * guarded_error


def test_student_t_assignment_float32_under_autocast():
    g = torch.Generator().manual_seed(3)
    z, mu = torch.randn(32, 5, generator=g) * 40, torch.randn(4, 5, generator=g) * 40
    reference = student_t_assignment(z, mu)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = student_t_assignment(z, mu)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=1e-6, atol=1e-7)
