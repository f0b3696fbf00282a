"""Tests for RandFlipRot90(d), LocalDiscriminationViewsd and the exact inverse undo_flip_rot90, in 2D and 3D."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import RandGaussianNoised

from monai_cluster.transforms.flip_rotate import (
    LocalDiscriminationViewsd,
    LocalDiscriminationViewsD,
    LocalDiscriminationViewsDict,
    RandFlipRot90,
    RandFlipRot90d,
    RandFlipRot90D,
    RandFlipRot90Dict,
    apply_flip_rot90,
    check_flip_rot90_record,
    flip_rot90_record,
    identity_flip_rot90_record,
    record_key,
    undo_flip_rot90,
)


def _all_records(dims: int) -> list[np.ndarray]:
    flips = [c for n in range(dims + 1) for c in itertools.combinations(range(dims), n)]
    planes = list(itertools.combinations(range(dims), 2)) + ([(1, 0)] if dims == 2 else [(2, 0)])
    return [flip_rot90_record(dims, f, k, p) for f in flips for k in range(4) for p in planes]


def _plain(x) -> torch.Tensor:
    return torch.as_tensor(x).as_subclass(torch.Tensor)


@pytest.mark.parametrize("dims", [2, 3])
def test_undo_inverts_every_operation_exactly(dims):
    x = torch.randn(2, *([4] * dims))
    for record in _all_records(dims):
        y = _plain(apply_flip_rot90(x, record))[None]
        assert torch.equal(undo_flip_rot90(y, record)[0], x), record


@pytest.mark.parametrize("dims", [2, 3])
def test_undo_with_per_sample_records_in_one_batch(dims):
    records = _all_records(dims)
    rng = np.random.default_rng(0)
    chosen = [records[i] for i in rng.choice(len(records), size=6, replace=False)]
    x = torch.randn(6, 3, *([4] * dims), requires_grad=True)
    applied = torch.stack([_plain(apply_flip_rot90(x[b].detach(), r)) for b, r in enumerate(chosen)])
    for form in (np.stack(chosen), torch.as_tensor(np.stack(chosen)), chosen):
        assert torch.equal(undo_flip_rot90(applied, form), x.detach())
    undo_flip_rot90(x, np.stack(chosen)).sum().backward()  # autograd flows
    assert torch.equal(x.grad, torch.ones_like(x))


def test_apply_matches_torch_direction():
    x = torch.arange(24.0).reshape(1, 4, 6)
    out = _plain(apply_flip_rot90(x, flip_rot90_record(2, (0,), 1, (0, 1))))
    assert torch.equal(out, torch.rot90(torch.flip(x, [1]), 1, (1, 2)))
    # a non-square plane rotated by an odd k changes the shape, and the undo restores it
    assert out.shape == (1, 6, 4)
    assert torch.equal(undo_flip_rot90(out[None], flip_rot90_record(2, (0,), 1, (0, 1)))[0], x)


@pytest.mark.parametrize("dims", [2, 3])
def test_rand_flip_rot90_reproducible_and_varied(dims):
    img = np.random.default_rng(1).random((1, *([6] * dims))).astype(np.float32)
    a, b = RandFlipRot90().set_random_state(3), RandFlipRot90().set_random_state(3)
    seen = set()
    for _ in range(30):
        out_a, out_b = a(img), b(img)
        assert np.array_equal(a.last_record, b.last_record)
        assert torch.equal(_plain(out_a), _plain(out_b))
        assert isinstance(out_a, torch.Tensor) and out_a.shape == img.shape
        assert torch.equal(undo_flip_rot90(_plain(out_a)[None], a.last_record)[0], torch.from_numpy(img))
        seen.add(tuple(a.last_record.tolist()))
    assert len(seen) > 8
    assert {r[dims] for r in seen} == {0, 1, 2, 3}
    repeat = a(img, randomize=False)
    assert torch.equal(_plain(repeat), _plain(out_a))


def test_rand_flip_rot90_prob_zero_and_non_square_planes():
    img = np.random.default_rng(0).random((1, 6, 8)).astype(np.float32)
    t = RandFlipRot90(prob=0.0).set_random_state(0)
    out = t(img)
    assert np.array_equal(t.last_record, identity_flip_rot90_record(2))
    assert isinstance(out, torch.Tensor) and np.array_equal(out.numpy(), img)
    t = RandFlipRot90(flip_prob=0.0).set_random_state(0)
    ks = set()
    for _ in range(20):
        assert t(img).shape == img.shape
        ks.add(int(t.last_record[2]))
    assert ks == {0, 2}
    no_rot = RandFlipRot90(flip_prob=1.0, flip_axes=[1], rot_planes=[]).set_random_state(0)
    no_rot(img)
    assert no_rot.last_record.tolist() == [0, 1, 0, 0, 1]


def test_rand_flip_rot90_3d_single_plane():
    img = np.zeros((1, 4, 4, 5), dtype=np.float32)
    t = RandFlipRot90(flip_prob=0.0, rot_planes=[(0, 1)]).set_random_state(2)
    for _ in range(10):
        t(img)
        assert t.last_record[-2:].tolist() == [0, 1]


@pytest.mark.parametrize("dims", [2, 3])
def test_dictionary_applies_one_operation_to_every_key(dims):
    shape = (1, *([6] * dims))
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    label = (image > 0.5).astype(np.float32)
    t = RandFlipRot90d(["image", "label"], flip_prob=1.0).set_random_state(1)
    assert RandFlipRot90D is RandFlipRot90d and RandFlipRot90Dict is RandFlipRot90d
    out = t({"image": image, "label": label, "key": "a"})
    assert np.array_equal(out["image_flip_rot"], out["label_flip_rot"])
    assert torch.equal(_plain(out["label"]), (_plain(out["image"]) > 0.5).float())
    assert torch.equal(undo_flip_rot90(_plain(out["image"])[None], out["image_flip_rot"])[0], torch.from_numpy(image))
    t2 = RandFlipRot90d(["image", "label"], flip_prob=1.0).set_random_state(1)
    assert np.array_equal(t2({"image": image, "label": label})["image_flip_rot"], out["image_flip_rot"])
    assert record_key("image") == "image_flip_rot"


@pytest.mark.parametrize("dims", [2, 3])
def test_views_collate_and_realign(dims):
    t = LocalDiscriminationViewsd("image", transform=RandGaussianNoised("image", prob=1.0, std=0.01))
    t.set_random_state(0)
    assert LocalDiscriminationViewsD is LocalDiscriminationViewsd
    assert LocalDiscriminationViewsDict is LocalDiscriminationViewsd
    rng = np.random.default_rng(0)
    samples = [
        t({"image": MetaTensor(torch.from_numpy(rng.random((1, *([8] * dims))).astype(np.float32))), "key": f"k{i}"})
        for i in range(5)
    ]
    batch = list_data_collate(samples)
    assert set(batch) == {"image", "image_1", "image_flip_rot", "image_1_flip_rot", "key"}
    assert batch["image_flip_rot"].shape == (5, dims + 3) and batch["image_1_flip_rot"].dtype == torch.int64
    assert (batch["image_flip_rot"] == torch.as_tensor(identity_flip_rot90_record(dims))).all()
    assert len({tuple(r.tolist()) for r in batch["image_1_flip_rot"]}) > 1
    realigned = undo_flip_rot90(_plain(batch["image_1"]), batch["image_1_flip_rot"])
    diff = (realigned - _plain(batch["image"])).abs()
    assert 0 < float(diff.max()) < 0.2  # the same voxels, up to the two independent noise draws


def test_views_are_reproducible_and_view0_can_be_flipped():
    img = np.random.default_rng(0).random((1, 6, 6)).astype(np.float32)
    a = LocalDiscriminationViewsd("image", num_views=3, flip_rot_first_view=True).set_random_state(5)
    b = LocalDiscriminationViewsd("image", num_views=3, flip_rot_first_view=True).set_random_state(5)
    seen = set()
    for _ in range(6):
        out_a, out_b = a({"image": img}), b({"image": img})
        for i, key in enumerate(("image", "image_1", "image_2")):
            assert torch.equal(_plain(out_a[key]), _plain(out_b[key]))
            undone = undo_flip_rot90(_plain(out_a[key])[None], out_a[f"{key}_flip_rot"])[0]
            assert torch.equal(undone, torch.from_numpy(img))
        seen.add(tuple(out_a["image_flip_rot"].tolist()))
    assert len(seen) > 1


def test_record_errors_name_the_record():
    with pytest.raises(ValueError, match="record must be a flip/rot90 record of length"):
        check_flip_rot90_record(np.zeros(4, dtype=np.int64), 2)
    with pytest.raises(TypeError, match="record must hold integers"):
        check_flip_rot90_record(np.zeros(5), 2)
    with pytest.raises(ValueError, match="flips"):
        check_flip_rot90_record(np.array([2, 0, 0, 0, 1]), 2)
    with pytest.raises(ValueError, match="rotation k"):
        check_flip_rot90_record(np.array([0, 0, 4, 0, 1]), 2)
    with pytest.raises(ValueError, match="rotation plane"):
        check_flip_rot90_record(np.array([0, 0, 1, 1, 1]), 2)
    with pytest.raises(ValueError, match="rotation plane"):
        check_flip_rot90_record(np.array([0, 0, 0, 1, 0, 3]), 3)
    with pytest.raises(ValueError, match="spatial_dims"):
        flip_rot90_record(4)


def test_undo_errors():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(TypeError, match="feature_map must be a torch.Tensor"):
        undo_flip_rot90(np.zeros((2, 1, 4, 4)), identity_flip_rot90_record(2))
    with pytest.raises(ValueError, match="feature_map must be batched"):
        undo_flip_rot90(torch.zeros(1, 4, 4), identity_flip_rot90_record(2))
    with pytest.raises(ValueError, match=r"record must hold one record per sample \(B=2\)"):
        undo_flip_rot90(x, np.stack([identity_flip_rot90_record(2)] * 3))
    with pytest.raises(ValueError, match=r"record\[1\] rotation k"):
        undo_flip_rot90(x, np.array([[0, 0, 0, 0, 1], [0, 0, 7, 0, 1]]))
    with pytest.raises(ValueError, match="record must be one record"):
        undo_flip_rot90(x, np.zeros((2, 1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="non-square planes"):
        undo_flip_rot90(torch.zeros(2, 1, 4, 6), np.array([[0, 0, 1, 0, 1], [0, 0, 0, 0, 1]]))


def test_transform_errors_name_the_argument():
    with pytest.raises(ValueError, match="prob"):
        RandFlipRot90(prob=1.5)
    with pytest.raises(ValueError, match="flip_prob"):
        RandFlipRot90(flip_prob=-0.1)
    with pytest.raises(TypeError, match="flip_axes"):
        RandFlipRot90(flip_axes=[0.5])
    with pytest.raises(ValueError, match=r"rot_planes\[0\]"):
        RandFlipRot90(rot_planes=[(0, 1, 2)])
    with pytest.raises(TypeError, match="rot_planes"):
        RandFlipRot90(rot_planes=5)
    with pytest.raises(ValueError, match="flip_axes must be spatial axes"):
        RandFlipRot90(flip_axes=[2])(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="rot_planes must hold pairs"):
        RandFlipRot90(rot_planes=[(0, 0)])(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="img must be channel-first"):
        RandFlipRot90()(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="img must be channel-first"):
        apply_flip_rot90(np.zeros((1, 1, 2, 2, 2)), identity_flip_rot90_record(3))
    with pytest.raises(ValueError, match="record_suffix"):
        RandFlipRot90d("image", record_suffix="")
    with pytest.raises(ValueError, match="record_suffix"):
        LocalDiscriminationViewsd("image", record_suffix="")
    with pytest.raises(ValueError, match="num_views"):
        LocalDiscriminationViewsd("image", num_views=1)
    with pytest.raises(TypeError, match="flip_rot_first_view"):
        LocalDiscriminationViewsd("image", flip_rot_first_view=1)
    with pytest.raises(TypeError, match="transform"):
        LocalDiscriminationViewsd("image", transform=[3])


def test_dictionary_errors_name_the_keys():
    t = RandFlipRot90d(["image", "label"])
    with pytest.raises(ValueError, match=r"\['label'\] are missing"):
        t({"image": np.zeros((1, 4, 4))})
    with pytest.raises(ValueError, match="one spatial shape"):
        t({"image": np.zeros((1, 4, 4)), "label": np.zeros((1, 4, 6))})
    with pytest.raises(ValueError, match=r"sample\['image'\] must be channel-first"):
        t({"image": np.zeros((4, 4)), "label": np.zeros((4, 4))})
    lenient = RandFlipRot90d(["image", "label"], allow_missing_keys=True)
    assert "image_flip_rot" in lenient({"image": np.zeros((1, 4, 4))})
    v = LocalDiscriminationViewsd("image")
    with pytest.raises(ValueError, match=r"\['image'\] are missing"):
        v({"label": np.zeros((1, 4, 4))})
    with pytest.raises(ValueError, match=r"overwrite key\(s\) \['image_1'\]"):
        v({"image": np.zeros((1, 4, 4)), "image_1": 0})
    with pytest.raises(ValueError, match="one spatial shape"):
        LocalDiscriminationViewsd(["image", "label"])({"image": np.zeros((1, 4, 4)), "label": np.zeros((1, 4, 6))})


def test_views_transform_holds_as_many_random_sources_fresh_as_after_a_call():
    """A checkpoint records the random sources found by walking the transforms; a fresh transform (a resumed run in
    a new process) must hold as many as one that has run, or the resume is refused."""
    import numpy as np

    from monai_cluster.transforms import LocalDiscriminationViewsd
    from monai_cluster.workflows.random_state import random_sources

    views = LocalDiscriminationViewsd(keys="image", num_views=2)
    fresh = len(list(random_sources([views])))
    views({"image": np.zeros((1, 8, 8), dtype=np.float32)})
    assert fresh >= 1 and len(list(random_sources([views]))) == fresh
