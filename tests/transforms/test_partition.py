"""Tests for SlicePartition(d), RandSlice(d) and TakeSliced: partition values, slicing, metadata and every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose

from monai_cluster.transforms import (
    RandSlice,
    RandSliced,
    RandSliceD,
    RandSliceDict,
    SlicePartition,
    SlicePartitiond,
    SlicePartitionD,
    SlicePartitionDict,
    TakeSliced,
    TakeSliceD,
)


def test_partition_examples_and_types():
    p = SlicePartition(4)
    assert p(5, 10) == 2
    assert p(0, 10) == 0 and p(9, 10) == 3
    assert p(np.int64(3), torch.tensor(10)) == 1
    assert p(torch.tensor([7]), np.array(8)) == 3
    assert SlicePartition(1)(6, 7) == 0


@pytest.mark.parametrize("num_slices", [1, 4, 7, 10, 13])
def test_partition_splits_slices_into_ordered_near_equal_ranges(num_slices):
    for parts in range(1, num_slices + 1):
        labels = [SlicePartition(parts)(i, num_slices) for i in range(num_slices)]
        assert labels == sorted(labels)
        assert set(labels) == set(range(parts))
        counts = np.bincount(labels)
        assert counts.max() - counts.min() <= 1
        # slice i lies in partition q exactly when q/parts <= i/num_slices < (q+1)/parts
        for i, q in enumerate(labels):
            assert q * num_slices <= i * parts < (q + 1) * num_slices


def test_partition_errors():
    with pytest.raises(ValueError, match="num_partitions"):
        SlicePartition(0)
    with pytest.raises(TypeError, match="num_partitions"):
        SlicePartition(2.5)
    p = SlicePartition(4)
    with pytest.raises(ValueError, match="num_partitions"):
        p(0, 3)
    with pytest.raises(ValueError, match="slice_index"):
        p(10, 10)
    with pytest.raises(ValueError, match="slice_index"):
        p(-1, 10)
    with pytest.raises(ValueError, match="num_slices"):
        p(0, 0)
    with pytest.raises(TypeError, match="slice_index"):
        p(1.0, 10)
    with pytest.raises(TypeError, match="num_slices"):
        p(1, torch.tensor(10.0))


def test_partition_dict_writes_int64_and_collates():
    t = SlicePartitiond(3)
    samples = [t({"slice_index": np.int64(i), "num_slices": np.int64(9)}) for i in (0, 4, 8)]
    assert all(isinstance(s["partition"], np.int64) for s in samples)
    batch = list_data_collate(samples)
    assert batch["partition"].dtype == torch.int64
    assert batch["partition"].tolist() == [0, 1, 2]
    assert SlicePartitionD is SlicePartitiond and SlicePartitionDict is SlicePartitiond
    out = SlicePartitiond(2, slice_index_key="z", num_slices_key="n", output_key="part")({"z": 3, "n": 4})
    assert out["part"] == 1


def test_partition_dict_errors():
    with pytest.raises(ValueError, match="num_slices"):
        SlicePartitiond(2)({"slice_index": 0})
    with pytest.raises(ValueError, match="slice_index"):
        SlicePartitiond(2)({"num_slices": 4})
    with pytest.raises(ValueError, match="num_partitions"):
        SlicePartitiond(5)({"slice_index": 0, "num_slices": 4})


def _volume(shape=(2, 5, 6, 7)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_rand_slice_matches_indexing(axis):
    vol = _volume()
    t = RandSlice(axis=axis).set_random_state(0)
    out = t(vol)
    dim = axis % 3 + 1
    assert t.num_slices == vol.shape[dim]
    np.testing.assert_array_equal(out, np.take(vol, t.slice_index, axis=dim))
    assert out.ndim == 3
    tout = RandSlice(axis=axis, slice_index=1)(torch.from_numpy(vol))
    torch.testing.assert_close(tout, torch.from_numpy(vol).select(dim, 1))


def test_rand_slice_draws_cover_range_and_are_reproducible():
    vol = _volume((1, 3, 3, 5))
    t = RandSlice().set_random_state(1)
    seen = {int(t(vol)[0, 0, 0]) % 5 for _ in range(40)}
    assert seen == set(range(5))
    a = [RandSlice().set_random_state(4)(vol) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])


def test_rand_sliced_same_slice_for_all_keys():
    vol = _volume()
    label = (vol % 3).astype(np.int64)
    t = RandSliced(["image", "label"]).set_random_state(2)
    out = t({"image": vol, "label": label, "key": "vol01"})
    k = int(out["slice_index"])
    assert isinstance(out["slice_index"], np.int64) and out["num_slices"] == np.int64(7)
    np.testing.assert_array_equal(out["image"], vol[..., k])
    np.testing.assert_array_equal(out["label"], label[..., k])
    assert out["key"] == "vol01"
    fixed = RandSliced("image", axis=0, slice_index=4, slice_index_key="z", num_slices_key="nz")({"image": vol})
    assert fixed["z"] == 4 and fixed["nz"] == 5 and fixed["image"].shape == (2, 6, 7)
    assert RandSliceD is RandSliced and RandSliceDict is RandSliced


def test_rand_sliced_reproducible_and_chains_into_partition():
    vol = _volume()
    chain = lambda seed: Compose([RandSliced("image"), SlicePartitiond(3)]).set_random_state(seed)  # noqa: E731
    draws = [int(chain(s)({"image": vol})["slice_index"]) for s in range(6)]
    assert draws == [int(chain(s)({"image": vol})["slice_index"]) for s in range(6)]
    assert len(set(draws)) > 1
    out = chain(0)({"image": vol})
    assert out["partition"] == SlicePartition(3)(int(out["slice_index"]), 7)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rand_sliced_metatensor_affine(axis):
    rng = np.random.default_rng(0)
    affine = np.eye(4)
    affine[:3, :3] = rng.normal(size=(3, 3)) + 2 * np.eye(3)
    affine[:3, 3] = [10.0, -5.0, 3.0]
    vol = MetaTensor(torch.from_numpy(_volume()), affine=torch.from_numpy(affine))
    out = RandSliced("image", axis=axis, slice_index=3)({"image": vol})["image"]
    assert isinstance(out, MetaTensor) and out.affine.shape == (3, 3)
    keep = [a for a in range(3) if a != axis]
    # the 2D affine maps in-slice voxel (i, j) to the world coordinates (other than ``axis``) of voxel (.., 3, ..)
    for i, j in [(0, 0), (2, 4), (4, 1)]:
        voxel = np.zeros(4)
        voxel[keep[0]], voxel[keep[1]], voxel[axis], voxel[3] = i, j, 3, 1
        world = affine @ voxel
        np.testing.assert_allclose(out.affine.numpy() @ np.array([i, j, 1.0]), np.r_[world[keep], 1.0], atol=1e-9)
    np.testing.assert_allclose(vol.affine.numpy(), affine)  # the volume's own metadata is untouched


def test_rand_slice_errors():
    with pytest.raises(ValueError, match="C, H, W, D"):
        RandSlice()(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="C, H, W, D"):
        RandSliced("image")({"image": np.zeros((1, 1, 4, 4, 4))})
    with pytest.raises(ValueError, match="axis"):
        RandSlice(axis=3)
    with pytest.raises(ValueError, match="axis"):
        RandSliced("image", axis=-4)
    with pytest.raises(ValueError, match="slice_index"):
        RandSlice(slice_index=-1)
    with pytest.raises(ValueError, match="slice_index"):
        RandSlice(slice_index=7)(_volume())
    with pytest.raises(ValueError, match="slice_index"):
        RandSliced("image", slice_index=9)({"image": _volume()})
    with pytest.raises(ValueError, match="same number of slices"):
        RandSliced(["image", "label"])({"image": _volume(), "label": _volume((1, 5, 6, 8))})
    with pytest.raises(ValueError, match="label"):
        RandSliced(["image", "label"])({"image": _volume()})
    with pytest.raises(ValueError, match="none of the keys"):
        RandSliced("label", allow_missing_keys=True)({"image": _volume()})
    out = RandSliced(["image", "label"], allow_missing_keys=True)({"image": _volume()})
    assert out["image"].shape == (2, 5, 6) and "label" not in out


def test_take_sliced_checks_the_sample():
    volume = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    out = TakeSliced("image")({"image": volume, "slice": 2, "num_slices": 5})
    torch.testing.assert_close(out["image"], volume[..., 2])
    with pytest.raises(ValueError, match="lacks 'slice'"):
        TakeSliced("image")({"image": volume})
    with pytest.raises(ValueError, match="has 5 slices along axis 2, but the listing recorded 6"):
        TakeSliced("image")({"image": volume, "slice": 2, "num_slices": 6})
    with pytest.raises(ValueError, match="slice_index must lie in"):
        TakeSliced("image")({"image": volume, "slice": 5})
    assert TakeSliceD is TakeSliced
