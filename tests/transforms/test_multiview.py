"""Tests for MultiView / MultiViewd: independent draws per view, reproducibility, intensity-only checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import (
    Compose,
    Lambdad,
    OneOf,
    Rand2DElasticd,
    RandAffined,
    RandFlipd,
    RandGaussianNoise,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandSpatialCropd,
    RandZoomd,
    Resized,
    ToTensord,
)

from monai_cluster.transforms import MultiView, MultiViewd, MultiViewD, MultiViewDict, find_spatial_transforms, view_key
from monai_cluster.transforms.flip_rotate import RandFlipRot90d

SHAPES = {2: (1, 8, 8), 3: (1, 6, 6, 4)}


def _ramp(dims: int) -> np.ndarray:
    shape = SHAPES[dims]
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / np.prod(shape)


def _sample(dims: int) -> dict:
    affine = torch.diag(torch.tensor([0.5] * dims + [1.0], dtype=torch.float64))
    return {"image": MetaTensor(torch.from_numpy(_ramp(dims)), affine=affine), "key": "images/a.png"}


def _noise_chain() -> Compose:
    return Compose(
        [RandGaussianNoised("image", prob=1.0, std=0.1), RandScaleIntensityd("image", factors=0.3, prob=1.0)]
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_array_views_differ_and_keep_shape(dims):
    img = _ramp(dims)
    views = MultiView(RandGaussianNoise(prob=1.0, std=0.1), num_views=3).set_random_state(0)(img)
    assert len(views) == 3
    for v in views:
        assert tuple(v.shape) == img.shape
        assert not np.allclose(np.asarray(v), img)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(np.asarray(views[i]), np.asarray(views[j]))


@pytest.mark.parametrize("dims", [2, 3])
def test_array_reproducible_and_new_draw_per_call(dims):
    img = _ramp(dims)
    a = MultiView([RandGaussianNoise(prob=1.0, std=0.1)]).set_random_state(7)
    b = MultiView([RandGaussianNoise(prob=1.0, std=0.1)]).set_random_state(7)
    first_a, first_b = a(img), b(img)
    for va, vb in zip(first_a, first_b):
        np.testing.assert_allclose(np.asarray(va), np.asarray(vb))
    second_a = a(img)
    assert not np.allclose(np.asarray(first_a[0]), np.asarray(second_a[0]))
    repeat = a(img, randomize=False)
    np.testing.assert_allclose(np.asarray(repeat[1]), np.asarray(second_a[1]))


def test_array_views_start_from_a_copy():
    def add_one_in_place(x):
        x += 1.0
        return x

    img = np.zeros((1, 4, 4), dtype=np.float32)
    views = MultiView(add_one_in_place, num_views=3)(img)
    for v in views:
        np.testing.assert_array_equal(v, np.ones_like(img))
    np.testing.assert_array_equal(img, 0.0)


def test_array_errors():
    with pytest.raises(ValueError, match="num_views"):
        MultiView(RandGaussianNoise(), num_views=1)
    with pytest.raises(TypeError, match="num_views"):
        MultiView(RandGaussianNoise(), num_views=2.0)
    with pytest.raises(TypeError, match="transform"):
        MultiView(3)
    with pytest.raises(TypeError, match="transform"):
        MultiView([RandGaussianNoise(), "flip"])
    with pytest.raises(TypeError, match="transform"):
        MultiView([])


@pytest.mark.parametrize("dims", [2, 3])
def test_dict_views_written_to_contract_keys(dims):
    out = MultiViewd("image", _noise_chain(), num_views=3).set_random_state(0)(_sample(dims))
    assert set(out) == {"image", "image_1", "image_2", "key"}
    assert out["key"] == "images/a.png"
    for i in range(3):
        v = out[view_key("image", i)]
        assert isinstance(v, MetaTensor)
        assert tuple(v.shape) == SHAPES[dims]
        np.testing.assert_allclose(v.affine.numpy(), np.diag([0.5] * dims + [1.0]))
    assert not torch.allclose(out["image"], out["image_1"])
    assert not torch.allclose(out["image_1"], out["image_2"])


@pytest.mark.parametrize("dims", [2, 3])
def test_dict_reproducible_with_fixed_seed_and_through_compose(dims):
    a = MultiViewd("image", _noise_chain()).set_random_state(3)(_sample(dims))
    b = MultiViewd("image", _noise_chain()).set_random_state(3)(_sample(dims))
    for k in ("image", "image_1"):
        torch.testing.assert_close(a[k], b[k])
    # MONAI's Compose (and DataLoader worker seeding) reaches the views through set_random_state.
    c1 = Compose([MultiViewd("image", _noise_chain())]).set_random_state(11)(_sample(dims))
    c2 = Compose([MultiViewd("image", _noise_chain())]).set_random_state(11)(_sample(dims))
    c3 = Compose([MultiViewd("image", _noise_chain())]).set_random_state(12)(_sample(dims))
    torch.testing.assert_close(c1["image_1"], c2["image_1"])
    assert not torch.allclose(c1["image_1"], c3["image_1"])


def test_dict_new_draw_every_call():
    t = MultiViewd("image", _noise_chain()).set_random_state(0)
    first, second = t(_sample(2)), t(_sample(2))
    assert not torch.allclose(first["image"], second["image"])
    assert not torch.allclose(first["image_1"], second["image_1"])


@pytest.mark.parametrize("dims", [2, 3])
def test_dict_shared_transform_runs_once(dims):
    roi = (4,) * dims
    chain = RandGaussianNoised("image", prob=1.0, std=1e-3)
    shared = RandSpatialCropd("image", roi_size=roi, random_size=False)
    hits = set()
    for seed in range(6):
        out = MultiViewd("image", chain, shared_transform=shared, intensity_only=True).set_random_state(seed)(
            _sample(dims)
        )
        assert tuple(out["image"].shape) == (1, *roi) == tuple(out["image_1"].shape)
        # both views come from the same crop of the ramp: they differ only by the small noise
        assert torch.max(torch.abs(out["image"] - out["image_1"])) < 0.05
        hits.add(round(float(out["image"].as_tensor().min()), 1))
    assert len(hits) > 1, "the shared crop must itself be random"


def test_dict_spatial_chain_allowed_when_not_intensity_only():
    chain = Compose([RandFlipd("image", prob=1.0, spatial_axis=0), RandGaussianNoised("image", prob=1.0, std=0.05)])
    out = MultiViewd("image", chain).set_random_state(0)(_sample(2))
    flipped = torch.from_numpy(np.flip(_ramp(2), axis=1).copy())
    for k in ("image", "image_1"):
        assert torch.max(torch.abs(out[k].as_tensor() - flipped)) < 0.3
        assert out[k].applied_operations[-1]["class"] == "RandFlipd"
    assert not torch.allclose(out["image"], out["image_1"])


@pytest.mark.parametrize(
    "chain, name",
    [
        (RandFlipd("image", prob=0.5), "RandFlipd"),
        ([RandGaussianNoised("image"), RandAffined("image", prob=1.0)], "RandAffined"),
        (Compose([RandGaussianNoised("image"), Compose([RandZoomd("image")])]), "RandZoomd"),
        (OneOf([RandGaussianNoised("image"), RandSpatialCropd("image", roi_size=4)]), "RandSpatialCropd"),
        (Rand2DElasticd("image", spacing=3, magnitude_range=(1, 2)), "Rand2DElasticd"),
        (Resized("image", spatial_size=4), "Resized"),
        (RandFlipRot90d("image"), "RandFlipRot90d"),
    ],
)
def test_intensity_only_rejects_spatial_transforms(chain, name):
    with pytest.raises(ValueError, match=name):
        MultiViewd("image", chain, intensity_only=True)


def test_find_spatial_transforms_lists_in_order_and_allows_conversions():
    chain = [ToTensord("image"), RandFlipd("image"), RandGaussianNoised("image"), Compose([RandZoomd("image")])]
    assert find_spatial_transforms(chain) == ["RandFlipd", "RandZoomd"]
    assert find_spatial_transforms(Compose([ToTensord("image"), RandScaleIntensityd("image", factors=0.1)])) == []


@pytest.mark.parametrize("dims", [2, 3])
def test_intensity_only_checks_shape_at_run_time(dims):
    crop = Lambdad("image", lambda x: x[:, 1:])  # a Lambda is allowed by type but moves voxels here
    t = MultiViewd("image", [crop], intensity_only=True)
    with pytest.raises(ValueError, match="shape"):
        t(_sample(dims))


def test_dict_missing_and_taken_keys():
    t = MultiViewd(["image", "label"], _noise_chain())
    with pytest.raises(ValueError, match="label"):
        t(_sample(2))
    out = MultiViewd(["image", "label"], _noise_chain(), allow_missing_keys=True)(_sample(2))
    assert "label_1" not in out and "image_1" in out
    with pytest.raises(ValueError, match="image_1"):
        MultiViewd("image", _noise_chain())({**_sample(2), "image_1": np.zeros((1, 8, 8))})
    with pytest.raises(ValueError, match="num_views"):
        MultiViewd("image", _noise_chain(), num_views=0)
    with pytest.raises(TypeError, match="shared_transform"):
        MultiViewd("image", _noise_chain(), shared_transform=5)


@pytest.mark.parametrize("dims", [2, 3])
def test_dict_views_collate_into_a_batch(dims):
    t = MultiViewd("image", _noise_chain()).set_random_state(0)
    batch = list_data_collate([t(_sample(dims)), t(_sample(dims))])
    assert tuple(batch["image"].shape) == (2, *SHAPES[dims]) == tuple(batch["image_1"].shape)
    assert batch["key"] == ["images/a.png", "images/a.png"]


def test_aliases_and_numpy_input():
    assert MultiViewD is MultiViewd and MultiViewDict is MultiViewd
    out = MultiViewd("image", RandGaussianNoised("image", prob=1.0)).set_random_state(0)({"image": _ramp(2)})
    assert tuple(out["image_1"].shape) == SHAPES[2]


def test_share_random_state_reaches_inner_array_transforms_with_one_generator():
    from monai.transforms import Compose, RandGaussianNoised, RandScaleIntensityd

    from monai_cluster.transforms.multiview.utils import share_random_state

    chain = Compose([RandGaussianNoised("image", prob=1.0), RandScaleIntensityd("image", 0.5, prob=1.0)])
    share_random_state(chain, 11)
    rngs = {id(chain.R), id(chain.transforms[0].R), id(chain.transforms[0].rand_gaussian_noise.R),
            id(chain.transforms[1].R), id(chain.transforms[1].scaler.R)}
    assert len(rngs) == 1  # every randomizable part draws from the same new generator
    x = {"image": np.zeros((1, 4, 4), dtype=np.float32)}
    first = chain(dict(x))["image"]
    share_random_state(chain, 11)
    assert np.array_equal(chain(dict(x))["image"], first)  # reproducible from the seed
    share_random_state(chain, 12)
    assert not np.array_equal(chain(dict(x))["image"], first)
