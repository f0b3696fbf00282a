"""NoMetaCompose: the same values as Compose, plain tensors out, and the caller's metadata flag restored;
NoMetaRandomCompose: the deterministic prefix tracked (loading reads metadata), the random part not."""

import pytest
import torch
from monai.data import MetaTensor, get_track_meta, set_track_meta
from monai.transforms import Compose, Lambdad, RandFlipd

from monai_cluster.transforms import NoMetaCompose, NoMetaRandomCompose, first_random_index
from monai_cluster.workflows import pretrain_augmentation


def _item(dims: int):
    shape = (3, 32, 32) if dims == 2 else (1, 32, 32, 32)
    return {"image": MetaTensor(torch.rand(shape, generator=torch.Generator().manual_seed(dims))), "key": "a"}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("views", ["geometric", "intensity"])
def test_pretrain_views_equal_with_and_without_metadata(dims, views):
    size = [32] * dims
    plain = pretrain_augmentation(dims, size, views=views)
    tracked = pretrain_augmentation(dims, size, views=views, track_meta=True)
    assert isinstance(plain, NoMetaCompose) and not isinstance(tracked, NoMetaCompose)
    plain.set_random_state(seed=5)
    tracked.set_random_state(seed=5)
    for _ in range(3):  # several draws: the random states advance alike
        a, b = plain(_item(dims)), tracked(_item(dims))
        assert sorted(a) == sorted(b)
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert type(a[key]) is torch.Tensor, key  # no MetaTensor out
                torch.testing.assert_close(a[key], b[key].as_tensor() if isinstance(b[key], MetaTensor) else b[key],
                                           rtol=0, atol=0)
        assert isinstance(b["image"], MetaTensor)


def test_flag_is_restored_also_on_error():
    assert get_track_meta()
    seen = []
    NoMetaCompose([Lambdad("image", lambda x: seen.append(get_track_meta()) or x)])({"image": torch.zeros(1, 2, 2)})
    assert seen == [False] and get_track_meta()

    def boom(x):
        raise RuntimeError("bad image")

    with pytest.raises(RuntimeError, match="applying transform"):
        NoMetaCompose([Lambdad("image", boom)])({"image": torch.zeros(1, 2, 2)})
    assert get_track_meta()
    set_track_meta(False)
    try:
        NoMetaCompose([RandFlipd("image", prob=1.0)])({"image": torch.zeros(1, 2, 2)})
        assert not get_track_meta()  # a caller who had it off keeps it off
    finally:
        set_track_meta(True)


def test_inverse_is_refused_and_compose_behaviour_kept():
    chain = NoMetaCompose([RandFlipd("image", prob=1.0, spatial_axis=0)])
    x = torch.arange(4.0).reshape(1, 2, 2)
    torch.testing.assert_close(chain({"image": x})["image"], Compose(chain.transforms)({"image": x})["image"])
    with pytest.raises(NotImplementedError, match="cannot be inverted"):
        chain.inverse({"image": x})
    with pytest.raises(TypeError, match="track_meta must be a bool"):
        pretrain_augmentation(2, [32, 32], track_meta="no")


def _spy(seen: list, key: str = "image"):
    """A deterministic step that records the metadata flag and the type of what reaches it."""
    return Lambdad(key, lambda x: seen.append((get_track_meta(), type(x))) or x, track_meta=False)


def test_random_variant_tracks_the_deterministic_prefix_only():
    seen = []
    chain = NoMetaRandomCompose([_spy(seen), RandFlipd("image", prob=1.0, spatial_axis=0), _spy(seen)])
    assert isinstance(chain, NoMetaCompose) and chain.first_random == 1
    out = chain({"image": MetaTensor(torch.arange(4.0).reshape(1, 2, 2))})
    assert seen == [(True, MetaTensor), (False, torch.Tensor)] and type(out["image"]) is torch.Tensor
    assert get_track_meta()
    torch.testing.assert_close(out["image"], torch.tensor([[[2.0, 3.0], [0.0, 1.0]]]), rtol=0, atol=0)


def test_random_variant_splits_start_end_calls_as_cache_dataset_makes_them():
    seen = []
    chain = NoMetaRandomCompose([_spy(seen), _spy(seen), RandFlipd("image", prob=0.5), _spy(seen)])
    reference = Compose([RandFlipd("image", prob=0.5)])
    chain.set_random_state(seed=1)
    reference.set_random_state(seed=1)
    for _ in range(4):
        x = torch.rand(1, 3, 3)
        seen.clear()
        cached = chain({"image": x}, end=chain.first_random, threading=True)  # CacheDataset's prefix
        assert seen == [(True, torch.Tensor), (True, torch.Tensor)]  # the caller's flag
        out = chain(cached, start=chain.first_random)  # and the rest, at every draw
        assert seen[2:] == [(False, torch.Tensor)]
        torch.testing.assert_close(out["image"], reference({"image": x})["image"].as_tensor(), rtol=0, atol=0)
    assert chain({"image": x}, start=4)["image"] is x  # an empty range gives the input back


def test_first_random_index_looks_into_nested_chains_and_refuses_bad_input():
    deterministic = Compose([Lambdad("image", lambda x: x), Lambdad("image", lambda x: x)])
    random_inside = Compose([Lambdad("image", lambda x: x), RandFlipd("image")])
    assert first_random_index([deterministic, RandFlipd("image")]) == 1
    assert first_random_index([deterministic, random_inside]) == 1
    assert first_random_index(Compose([deterministic])) == 1  # none: the length
    assert first_random_index([lambda x: x]) == 0  # a plain callable may draw (as CacheDataset assumes)
    with pytest.raises(TypeError, match="transforms must be a Compose or a list"):
        first_random_index("RandFlipd")
    with pytest.raises(TypeError, match=r"transforms\[1\] must be callable"):
        first_random_index([deterministic, 3])
    chain = NoMetaRandomCompose([deterministic, RandFlipd("image")])
    for start, end, match in [(3, None, "start"), (1, 0, "start"), (-1, None, "start"), (0, 2.0, "end must be an int")]:
        with pytest.raises(ValueError, match=match):
            chain({"image": torch.zeros(1, 2, 2)}, start, end)


def test_random_variant_loads_with_channel_metadata_and_caches_as_compose(tmp_path):
    """``EnsureChannelFirstd`` reads the reader's channel metadata: in the tracked prefix it works (a plain
    ``NoMetaCompose`` over the same chain refuses), and a ``CacheDataset`` caches the same items as with ``Compose``."""
    nib = pytest.importorskip("nibabel")
    import numpy as np
    from monai.data import CacheDataset
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.eye(4)), str(path))

    def steps():
        return [LoadImaged("image", image_only=True), EnsureChannelFirstd("image"), RandFlipd("image", prob=1.0)]

    with pytest.raises(RuntimeError, match="EnsureChannelFirstd"):
        NoMetaCompose(steps())({"image": str(path)})
    new = CacheDataset([{"image": str(path)}], NoMetaRandomCompose(steps()), num_workers=0, progress=False)
    old = CacheDataset([{"image": str(path)}], Compose(steps()), num_workers=0, progress=False)
    assert type(new._cache[0]["image"]) is type(old._cache[0]["image"]) is MetaTensor
    assert torch.equal(new._cache[0]["image"], old._cache[0]["image"])
    a, b = new[0]["image"], old[0]["image"]
    assert type(a) is torch.Tensor and isinstance(b, MetaTensor) and a.shape == (1, 3, 4, 5)
    assert torch.equal(a, b.as_tensor())
