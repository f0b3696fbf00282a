"""Tests for LocalDiscriminationLoss: the combination of its terms, training that lowers it, memory, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from monai_cluster.data.fundus import render_fundus
from monai_cluster.losses.local_discrimination import LocalDiscriminationLoss
from monai_cluster.losses.patch_discrimination import (
    mixup_consistency_loss,
    mixup_images,
    patch_discrimination_loss,
)
from monai_cluster.losses.region_discrimination import assignment_entropy_loss, region_discrimination_loss
from monai_cluster.losses.shape_prior import ShapePriorLoss
from monai_cluster.networks.blocks.shape_prior import ShapePriorDiscriminator
from monai_cluster.networks.nets.local_discrimination import LocalDiscriminationNet
from monai_cluster.transforms.flip_rotate import RandFlipRot90, flip_rot90_record, undo_flip_rot90


def _outputs(rows: int, spatial: tuple[int, ...], d: int = 4, k: int = 3, grad: bool = False) -> dict:
    e = F.normalize(torch.randn(rows, d, *spatial), dim=1).requires_grad_(grad)
    logits = torch.randn(rows, k, *spatial, requires_grad=grad)
    return {"embedding": e, "assignment": torch.softmax(logits, dim=1), "logits": logits}


def _records(batch: int, spatial_dims: int, seed: int = 0) -> np.ndarray:
    t = RandFlipRot90().set_random_state(seed)
    out = []
    for _ in range(batch):
        t(np.zeros((1, *([4] * spatial_dims)), dtype=np.float32))
        out.append(t.last_record)
    return np.stack(out)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_total_is_the_weighted_sum_of_the_terms(spatial_dims):
    b, spatial = 2, (4,) * spatial_dims
    preds = _outputs(3 * b, spatial)
    r1 = _records(b, spatial_dims)
    w, partner = torch.tensor([0.3, 0.6]), torch.tensor([1, 0])
    loss_fn = LocalDiscriminationLoss(grid_size=2)
    total = loss_fn(preds, {"flip_rot": [None, r1], "mix_weight": w, "mix_partner": partner})
    e, a = preds["embedding"], preds["assignment"]
    expected = {
        "patch": patch_discrimination_loss(e[:b], undo_flip_rot90(e[b : 2 * b], r1), 0.1, 2),
        "mixup": mixup_consistency_loss(e[2 * b :], e[:b], w, partner, 0.1, 2),
        "region": region_discrimination_loss(e[: 2 * b], a[: 2 * b], 0.2),
        "entropy": assignment_entropy_loss(a[: 2 * b]),
    }
    for name, value in expected.items():
        assert loss_fn.last_components[name] == pytest.approx(float(value), rel=1e-5), name
    weighted = expected["patch"] + expected["mixup"] + 10 * expected["region"] + 0.1 * expected["entropy"]
    torch.testing.assert_close(total, weighted)
    assert loss_fn.last_components["total"] == pytest.approx(float(total))
    assert set(loss_fn.last_components) == {"patch", "mixup", "region", "entropy", "total"}


def test_records_as_one_tensor_and_three_views():
    b = 2
    preds = _outputs(3 * b, (4, 4))
    records = torch.as_tensor(np.stack([_records(b, 2, s) for s in range(3)]))
    loss_fn = LocalDiscriminationLoss(mixup_weight=0.0, grid_size=2, num_views=3)
    loss_fn(preds, {"flip_rot": records})
    e = preds["embedding"]
    views = [undo_flip_rot90(e[i * b : (i + 1) * b], records[i]) for i in range(3)]
    pairs = [patch_discrimination_loss(views[i], views[j], 0.1, 2) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert loss_fn.last_components["patch"] == pytest.approx(float(torch.stack(pairs).mean()), rel=1e-5)
    assert "mixup" not in loss_fn.last_components


def test_zero_weights_skip_terms_and_their_inputs():
    preds = _outputs(4, (4, 4))
    only_region = LocalDiscriminationLoss(patch_weight=0, mixup_weight=0, entropy_weight=0, grid_size=2)
    value = only_region(preds)  # no records, no mixed rows needed
    assert set(only_region.last_components) == {"region", "total"}
    torch.testing.assert_close(value, 10 * region_discrimination_loss(preds["embedding"], preds["assignment"]))
    only_entropy = LocalDiscriminationLoss(patch_weight=0, mixup_weight=0, region_weight=0)
    only_entropy({"assignment": preds["assignment"]})  # the embedding is not needed
    only_patch = LocalDiscriminationLoss(mixup_weight=0, region_weight=0, entropy_weight=0, grid_size=2)
    only_patch({"embedding": preds["embedding"]})


def test_shape_prior_term_is_added():
    preds = _outputs(4, (8, 8))
    prior = ShapePriorLoss(ShapePriorDiscriminator(2, features=(4, 4)))
    loss_fn = LocalDiscriminationLoss(mixup_weight=0, grid_size=2, shape_prior_weight=0.5, shape_prior=prior)
    total = loss_fn(preds)
    assert loss_fn.last_components["shape_prior"] == pytest.approx(float(prior(preds["assignment"])), rel=1e-5)
    without = {k: v for k, v in loss_fn.last_components.items() if k not in ("shape_prior", "total")}
    weights = {"patch": 1.0, "region": 10.0, "entropy": 0.1}
    base = sum(weights[k] * v for k, v in without.items())
    assert float(total) == pytest.approx(base + 0.5 * loss_fn.last_components["shape_prior"], rel=1e-5)


def _fundus_batch(n: int, size: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = [render_fundus(rng, (size, size))[0] for _ in range(n)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def _views(x: torch.Tensor, flip: RandFlipRot90) -> tuple[torch.Tensor, np.ndarray]:
    out, records = [], []
    for img in x:
        out.append(torch.as_tensor(flip(img)).as_subclass(torch.Tensor))
        records.append(flip.last_record)
    return torch.stack(out), np.stack(records)


def test_training_lowers_the_loss_and_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(0)
    net = LocalDiscriminationNet(2, 3, embed_dim=8, num_clusters=4, features=(4, 4, 8, 8, 16, 4))
    loss_fn = LocalDiscriminationLoss(grid_size=4)
    images = _fundus_batch(3, 32, seed=0)
    flip = RandFlipRot90().set_random_state(0)
    gen = torch.Generator().manual_seed(0)

    def step_inputs():
        x1, r1 = _views(images, flip)
        mixed, w, partner = mixup_images(images, generator=gen)
        return torch.cat([images, x1, mixed]), {"flip_rot": [None, r1], "mix_weight": w, "mix_partner": partner}

    fixed_inputs, fixed_targets = step_inputs()
    with torch.no_grad():
        before = float(loss_fn(net(fixed_inputs), fixed_targets))
    patch_before = loss_fn.last_components["patch"]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(20):
        inputs, targets = step_inputs()
        loss = loss_fn(net(inputs), targets)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for name, p in net.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
        opt.step()
    with torch.no_grad():
        after = float(loss_fn(net(fixed_inputs), fixed_targets))
    assert math.isfinite(after) and after < 0.9 * before
    assert loss_fn.last_components["patch"] < patch_before  # not only the clustering terms improve


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_of_inputs_are_finite(spatial_dims):
    preds = _outputs(6, (4,) * spatial_dims, grad=True)
    targets = {"flip_rot": [None, _records(2, spatial_dims)], "mix_weight": torch.tensor([0.4, 0.7]),
               "mix_partner": torch.tensor([1, 0])}
    LocalDiscriminationLoss(grid_size=2)(preds, targets).backward()
    for key in ("embedding", "logits"):
        grad = preds[key].grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, key


def _largest_square(fn) -> int:
    """The largest ``m`` such that some op saw a tensor with two dimensions of size >= ``m``."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    largest = 0
    for event in prof.events():
        for shape in event.input_shapes or []:
            if isinstance(shape, (list, tuple)) and len(shape) >= 2 and all(isinstance(s, int) for s in shape):
                largest = max(largest, sorted(shape)[-2])
    return largest


def test_memory_is_linear_in_voxels_on_a_32_cubed_map():
    b, voxels = 2, 32**3
    preds = _outputs(3 * b, (32, 32, 32), d=32, k=8, grad=True)  # 2 views + mixed images, 32 channels
    targets = {"flip_rot": [None, _records(b, 3)], "mix_weight": torch.tensor([0.5, 0.5]),
               "mix_partner": torch.tensor([1, 0])}
    loss_fn = LocalDiscriminationLoss(granularity="pixel")  # grid 8: 512 patches per volume; (N, K, P) pixel logits

    def run():
        loss_fn(preds, targets).backward()

    largest = _largest_square(run)
    assert math.isfinite(loss_fn.last_components["total"])
    assert torch.isfinite(preds["embedding"].grad).all()
    # the only square operands are the (2 B 512)^2 patch similarities; no voxels x voxels (or x patches) matrix
    assert largest == 2 * b * 8**3 < voxels // 8, largest


def test_errors_name_the_input():
    preds = _outputs(6, (4, 4))
    targets = {"mix_weight": torch.tensor([0.5, 0.5]), "mix_partner": torch.tensor([1, 0])}
    loss_fn = LocalDiscriminationLoss(grid_size=2)
    with pytest.raises(ValueError, match="at least one weight > 0"):
        LocalDiscriminationLoss(0, 0, 0, 0)
    with pytest.raises(ValueError, match="region_weight"):
        LocalDiscriminationLoss(region_weight=-1.0)
    with pytest.raises(ValueError, match="shape_prior_weight > 0 needs a shape_prior"):
        LocalDiscriminationLoss(shape_prior_weight=1.0)
    with pytest.raises(TypeError, match="shape_prior must be a ShapePriorLoss"):
        LocalDiscriminationLoss(shape_prior=ShapePriorDiscriminator(2))
    with pytest.raises(ValueError, match="granularity"):
        LocalDiscriminationLoss(granularity="image")
    with pytest.raises(ValueError, match="num_views"):
        LocalDiscriminationLoss(num_views=1)
    with pytest.raises(ValueError, match="patch_temperature"):
        LocalDiscriminationLoss(patch_temperature=0)
    with pytest.raises(ValueError, match="grid_size"):
        LocalDiscriminationLoss(grid_size=0)
    with pytest.raises(TypeError, match="preds must be the network's output dict"):
        loss_fn(preds["embedding"], targets)
    with pytest.raises(TypeError, match="targets must be a dict"):
        loss_fn(preds, [1])
    with pytest.raises(ValueError, match="preds must hold the key 'assignment'"):
        loss_fn({"embedding": preds["embedding"]}, targets)
    with pytest.raises(ValueError, match=r"preds\['embedding'\] must be \(B, C, H, W\)"):
        loss_fn({"embedding": preds["embedding"][0], "assignment": preds["assignment"]}, targets)
    with pytest.raises(ValueError, match="mixup_weight > 0 needs targets\\['mix_weight'\\]"):
        loss_fn(preds)
    with pytest.raises(ValueError, match=r"preds must hold 3\*B rows"):
        loss_fn({k: v[:5] for k, v in preds.items()}, targets)
    with pytest.raises(ValueError, match=r"targets\['mix_partner'\] is missing"):
        loss_fn(preds, {"mix_weight": targets["mix_weight"]})
    with pytest.raises(ValueError, match=r"targets\['flip_rot'\] must hold one record entry per view"):
        loss_fn(preds, {**targets, "flip_rot": [None]})
    with pytest.raises(ValueError, match=r"targets\['flip_rot'\] must be a sequence"):
        loss_fn(preds, {**targets, "flip_rot": torch.zeros(2, 5, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"record\[0\] rotation k"):
        bad = np.stack([flip_rot90_record(2)] * 2)
        bad[0, 2] = 9
        loss_fn(preds, {**targets, "flip_rot": [None, bad]})
    with pytest.raises(ValueError, match="mix_weight must lie"):
        loss_fn(preds, {**targets, "mix_weight": torch.tensor([2.0, 0.5])})


def test_warmup_leaves_out_the_clustering_terms_and_keeps_the_rest_exact():
    b, spatial = 2, (4, 4)
    preds = _outputs(3 * b, spatial)
    targets = {"flip_rot": [None, _records(b, 2)], "mix_weight": torch.tensor([0.3, 0.6]),
               "mix_partner": torch.tensor([1, 0])}  # fmt: skip
    loss_fn = LocalDiscriminationLoss(grid_size=2)
    full = loss_fn(preds, targets)
    parts = dict(loss_fn.last_components)
    loss_fn.set_clustering_active(False)
    warm = loss_fn(preds, targets)
    assert set(loss_fn.last_components) == {"patch", "mixup", "total"}
    torch.testing.assert_close(warm, torch.tensor(parts["patch"] + parts["mixup"]), rtol=1e-5, atol=1e-6)
    # no assignment needed while warming up
    warm_only = loss_fn({"embedding": preds["embedding"]}, targets)
    torch.testing.assert_close(warm_only, warm)
    loss_fn.set_clustering_active(True)
    torch.testing.assert_close(loss_fn(preds, targets), full)
    with pytest.raises(TypeError, match="active must be a bool"):
        loss_fn.set_clustering_active(1)
    clustering_only = LocalDiscriminationLoss(patch_weight=0, mixup_weight=0)
    with pytest.raises(ValueError, match="patch_weight or mixup_weight"):
        clustering_only.set_clustering_active(False)
