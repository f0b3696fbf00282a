"""Tests for region discrimination (region and pixel granularity) and assignment entropy against loop references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_cluster.losses.region_discrimination import (
    AssignmentEntropyLoss,
    RegionDiscriminationLoss,
    assignment_entropy_loss,
    cluster_centres,
    region_discrimination_loss,
    region_embeddings,
)

SPATIAL = {2: (3, 4), 3: (2, 3, 2)}


def _inputs(spatial_dims: int, n: int = 3, d: int = 4, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    shape = SPATIAL[spatial_dims]
    e = F.normalize(torch.randn(n, d, *shape), dim=1)
    a = torch.softmax(2 * torch.randn(n, k, *shape), dim=1)
    return e, a


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v))


def _ref_centres(e: torch.Tensor, a: torch.Tensor) -> tuple[list, list]:
    n, d, k = e.shape[0], e.shape[1], a.shape[1]
    ef, af = e.reshape(n, d, -1).double().tolist(), a.reshape(n, k, -1).double().tolist()
    pixels = len(ef[0][0])
    regions = [
        [_unit([sum(af[i][c][p] * ef[i][j][p] for p in range(pixels)) / pixels for j in range(d)]) for c in range(k)]
        for i in range(n)
    ]
    centres = [_unit([sum(regions[i][c][j] for i in range(n)) / n for j in range(d)]) for c in range(k)]
    return regions, centres


def _ref_region(e: torch.Tensor, a: torch.Tensor, t: float) -> list[list[float]]:
    regions, centres = _ref_centres(e, a)
    out = []
    for r in regions:
        row = []
        for c, rk in enumerate(r):
            denom = sum(math.exp(_dot(rk, centre) / t) for centre in centres)
            row.append(-math.log(math.exp(_dot(rk, centres[c]) / t) / denom))
        out.append(row)
    return out


def _ref_pixel(e: torch.Tensor, a: torch.Tensor, t: float) -> list[list[float]]:
    _, centres = _ref_centres(e, a)
    n, d, k = e.shape[0], e.shape[1], a.shape[1]
    ef, af = e.reshape(n, d, -1).double().tolist(), a.reshape(n, k, -1).double().tolist()
    out = []
    for i in range(n):
        row = []
        for p in range(len(ef[i][0])):
            vec = _unit([ef[i][j][p] for j in range(d)])
            denom = sum(math.exp(_dot(vec, c) / t) for c in centres)
            row.append(-sum(af[i][c][p] * math.log(math.exp(_dot(vec, centres[c]) / t) / denom) for c in range(k)))
        out.append(row)
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_region_granularity_matches_the_loop_reference(spatial_dims):
    e, a = _inputs(spatial_dims)
    ref = torch.tensor(_ref_region(e, a, 0.2), dtype=torch.float64)
    per = region_discrimination_loss(e, a, temperature=0.2, reduction="none")
    assert per.shape == (3, 3)
    torch.testing.assert_close(per.double(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(RegionDiscriminationLoss()(e, a), per.mean())
    torch.testing.assert_close(RegionDiscriminationLoss(reduction="sum")(e, a), per.sum())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pixel_granularity_matches_the_loop_reference(spatial_dims):
    e, a = _inputs(spatial_dims)
    ref = torch.tensor(_ref_pixel(e, a, 0.5), dtype=torch.float64).view(3, *SPATIAL[spatial_dims])
    per = region_discrimination_loss(e, a, temperature=0.5, granularity="pixel", reduction="none")
    assert per.shape == (3, *SPATIAL[spatial_dims])
    torch.testing.assert_close(per.double(), ref, rtol=1e-4, atol=1e-5)
    module = RegionDiscriminationLoss(temperature=0.5, granularity="pixel")
    torch.testing.assert_close(module(e, a), per.mean())
    assert "granularity='pixel'" in repr(module)


def test_region_embeddings_and_centres():
    e, a = _inputs(2)
    regions = region_embeddings(e, a)
    centres = cluster_centres(regions)
    ref_regions, ref_centres = _ref_centres(e, a)
    torch.testing.assert_close(regions.double(), torch.tensor(ref_regions, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(centres.double(), torch.tensor(ref_centres, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_consistent_clusters_score_better_than_random_ones():
    # two structures with distinct embeddings; a clustering that follows them beats a random one
    e = torch.zeros(4, 2, 4, 4)
    e[:, 0, :, :2] = 1.0
    e[:, 1, :, 2:] = 1.0
    good = torch.zeros(4, 2, 4, 4)
    good[:, 0, :, :2] = 1.0
    good[:, 1, :, 2:] = 1.0
    bad = torch.softmax(torch.randn(4, 2, 4, 4), dim=1)
    for granularity in ("region", "pixel"):
        assert float(region_discrimination_loss(e, good, granularity=granularity)) < float(
            region_discrimination_loss(e, bad, granularity=granularity)
        )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_reach_embeddings_and_assignments(spatial_dims):
    e, a = _inputs(spatial_dims)
    e.requires_grad_()
    logits = torch.randn(3, 3, *SPATIAL[spatial_dims], requires_grad=True)
    for granularity in ("region", "pixel"):
        loss = region_discrimination_loss(e, torch.softmax(logits, 1), granularity=granularity)
        e.grad, logits.grad = None, None
        loss.backward()
        assert torch.isfinite(e.grad).all() and e.grad.abs().sum() > 0
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_entropy_matches_binary_entropy_in_bits(spatial_dims):
    _, a = _inputs(spatial_dims)
    flat = a.double().flatten().tolist()
    ref = [-(x * math.log2(x) + (1 - x) * math.log2(1 - x)) for x in flat]
    per = assignment_entropy_loss(a, reduction="none")
    assert per.shape == a.shape
    torch.testing.assert_close(per.double().flatten(), torch.tensor(ref, dtype=torch.float64), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(AssignmentEntropyLoss()(a), per.mean())


def test_entropy_is_zero_for_one_hot_and_one_bit_at_a_half():
    one_hot = F.one_hot(torch.randint(0, 3, (2, 4, 4)), 3).permute(0, 3, 1, 2).float()
    assert float(assignment_entropy_loss(one_hot)) == pytest.approx(0.0, abs=1e-4)
    half = torch.full((1, 2, 4, 4), 0.5)
    assert float(assignment_entropy_loss(half)) == pytest.approx(1.0, abs=1e-6)
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    assignment_entropy_loss(torch.softmax(logits + 0.1 * torch.randn(1, 2, 4, 4), 1)).backward()
    assert torch.isfinite(logits.grad).all()


def test_errors_name_the_input():
    e, a = _inputs(2)
    with pytest.raises(ValueError, match="assignment must have K >= 2"):
        region_discrimination_loss(e, a[:, :1])
    with pytest.raises(ValueError, match=r"assignment must hold probabilities in \[0, 1\]"):
        region_discrimination_loss(e, a - 0.5)
    with pytest.raises(ValueError, match="must share N and the spatial size"):
        region_discrimination_loss(e[:2], a)
    with pytest.raises(ValueError, match="must share N and the spatial size"):
        region_discrimination_loss(e[..., :2], a)
    with pytest.raises(ValueError, match="embedding must be finite"):
        region_discrimination_loss(e * float("nan"), a)
    with pytest.raises(ValueError, match="assignment must be finite"):
        assignment_entropy_loss(a * float("nan"))
    with pytest.raises(TypeError, match="assignment must be a floating-point"):
        assignment_entropy_loss(a.long())
    with pytest.raises(ValueError, match=r"embedding must be \(B, C, H, W\)"):
        region_discrimination_loss(e[0], a)
    with pytest.raises(ValueError, match="temperature"):
        RegionDiscriminationLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="granularity"):
        RegionDiscriminationLoss(granularity="voxel")
    with pytest.raises(ValueError, match="reduction"):
        AssignmentEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="regions must have 3 dimensions"):
        cluster_centres(torch.randn(3, 4))
