"""NoMetaCompose: the same values as Compose, plain tensors out, and the caller's metadata flag restored."""

import pytest
import torch
from monai.data import MetaTensor, get_track_meta, set_track_meta
from monai.transforms import Compose, Lambdad, RandFlipd

from monai_cluster.transforms import NoMetaCompose
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
