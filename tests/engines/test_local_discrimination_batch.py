"""LocalDiscriminationPrepareBatch: views + mixed rows, records and mixup targets for LocalDiscriminationLoss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import list_data_collate

from monai_cluster.engines import LocalDiscriminationPrepareBatch
from monai_cluster.losses import LocalDiscriminationLoss
from monai_cluster.networks import LocalDiscriminationNet
from monai_cluster.transforms import LocalDiscriminationViewsd, undo_flip_rot90


def _batch(n: int = 3, spatial=(16, 16), channels: int = 2, seed: int = 0) -> dict:
    views = LocalDiscriminationViewsd("image").set_random_state(seed)
    rng = np.random.default_rng(seed)
    samples = [views({"image": rng.random((channels, *spatial), dtype=np.float32)}) for _ in range(n)]
    return list_data_collate(samples)


def test_inputs_are_views_then_mixed_images():
    batch = _batch()
    inputs, targets = LocalDiscriminationPrepareBatch(seed=3)(batch)
    x0, x1 = batch["image"].as_tensor(), batch["image_1"].as_tensor()
    assert inputs.shape == (9, 2, 16, 16)
    torch.testing.assert_close(inputs[:3], x0)
    torch.testing.assert_close(inputs[3:6], x1)
    w, partner = targets["mix_weight"], targets["mix_partner"]
    assert w.shape == (3,) and bool(((w >= 0.2) & (w <= 0.8)).all())
    assert not bool((partner == torch.arange(3)).any())
    expected = w.view(-1, 1, 1, 1) * x0 + (1 - w.view(-1, 1, 1, 1)) * x0[partner]
    torch.testing.assert_close(inputs[6:], expected)
    records = targets["flip_rot"]
    assert len(records) == 2 and all(r.dtype == torch.int64 and r.shape == (3, 5) for r in records)
    # the records undo view 1's flip/rotation exactly: back onto view 0's grid
    torch.testing.assert_close(undo_flip_rot90(x1, records[1]), x0)


def test_seeded_mixup_repeats_and_reseeds():
    batch = _batch()
    a = LocalDiscriminationPrepareBatch(seed=5)(batch)[1]["mix_weight"]
    b = LocalDiscriminationPrepareBatch(seed=5)(batch)[1]["mix_weight"]
    prep = LocalDiscriminationPrepareBatch(seed=6)
    c = prep(batch)[1]["mix_weight"]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    prep.set_seed(5)
    torch.testing.assert_close(prep(batch)[1]["mix_weight"], a)


def test_without_mixup_and_loss_accepts_targets_2d_and_3d():
    batch = _batch(spatial=(32, 32))
    inputs, targets = LocalDiscriminationPrepareBatch(mixup=False)(batch)
    assert inputs.shape[0] == 6 and targets["mix_weight"] is None and targets["mix_partner"] is None
    net = LocalDiscriminationNet(2, 2, embed_dim=4, num_clusters=3, features=(4, 4, 4, 4, 4, 4))
    inputs, targets = LocalDiscriminationPrepareBatch()(batch)
    loss_fn = LocalDiscriminationLoss(grid_size=4)
    loss = loss_fn(net(inputs), targets)
    assert torch.isfinite(loss) and set(loss_fn.last_components) >= {"patch", "mixup", "region", "entropy"}
    batch3 = _batch(n=2, spatial=(32, 16, 16), channels=1)
    inputs3, targets3 = LocalDiscriminationPrepareBatch()(batch3)
    assert inputs3.shape == (6, 1, 32, 16, 16) and targets3["flip_rot"][1].shape == (2, 6)
    net3 = LocalDiscriminationNet(3, 1, embed_dim=4, num_clusters=3, features=(2, 2, 2, 2, 2, 2))
    assert torch.isfinite(LocalDiscriminationLoss(grid_size=2)(net3(inputs3), targets3))


def test_errors_name_the_input():
    batch = _batch()
    with pytest.raises(ValueError, match="image_1_flip_rot"):
        LocalDiscriminationPrepareBatch()({k: v for k, v in batch.items() if k != "image_1_flip_rot"})
    no_record = {k: v for k, v in batch.items() if k != "image_1_flip_rot"}
    inputs, targets = LocalDiscriminationPrepareBatch(require_records=False)(no_record)
    assert targets["flip_rot"][1] is None
    with pytest.raises(ValueError, match="at least 2 samples"):
        LocalDiscriminationPrepareBatch()(_batch(n=1))
    with pytest.raises(TypeError, match="integer flip/rot90"):
        LocalDiscriminationPrepareBatch()({**batch, "image_flip_rot": batch["image_flip_rot"].float()})
    with pytest.raises(ValueError, match="mix_low"):
        LocalDiscriminationPrepareBatch(mix_low=0.9, mix_high=0.1)
    with pytest.raises(TypeError, match="batchdata"):
        LocalDiscriminationPrepareBatch()([batch])
    with pytest.raises(ValueError, match="num_views"):
        LocalDiscriminationPrepareBatch(num_views=1)
