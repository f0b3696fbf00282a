"""Tests for MultiViewPrepareBatch: view concatenation, targets and every error."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from monai_cluster.engines import MultiViewPrepareBatch

SPATIAL = {2: (8, 8), 3: (4, 4, 4)}


def _batch(dims: int, views: int = 2, batch: int = 3, **extra) -> dict:
    data = {
        ("image" if v == 0 else f"image_{v}"): torch.full((batch, 1, *SPATIAL[dims]), float(v)) for v in range(views)
    }
    data["key"] = [f"k{i}" for i in range(batch)]
    data.update(extra)
    return data


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("views", [1, 2, 3])
def test_inputs_are_view_major_concatenation(dims, views):
    inputs, targets = MultiViewPrepareBatch(num_views=views)(_batch(dims, views))
    assert inputs.shape == (views * 3, 1, *SPATIAL[dims])
    for v in range(views):
        assert torch.all(inputs[v * 3 : (v + 1) * 3] == v)
    assert targets == {"pseudo_class": None, "partition": None, "volume_id": None, "geometry": None}


@pytest.mark.parametrize("dims", [2, 3])
def test_targets_are_long_and_metatensors_become_plain(dims):
    batch = _batch(
        dims,
        pseudo_class=torch.tensor([[0, 3], [1, 4], [0, 5]], dtype=torch.int32),
        partition=torch.tensor([0, 2, 1]),
        volume_id=torch.tensor([5, 5, 6]),
    )
    batch["image"] = MetaTensor(batch["image"])
    batch["image_1"] = MetaTensor(batch["image_1"])
    inputs, targets = MultiViewPrepareBatch()(batch, device=torch.device("cpu"), non_blocking=False)
    assert type(inputs) is torch.Tensor
    assert targets["pseudo_class"].dtype == torch.long and targets["pseudo_class"].tolist() == [[0, 3], [1, 4], [0, 5]]
    assert targets["partition"].dtype == torch.long and targets["partition"].tolist() == [0, 2, 1]
    assert targets["volume_id"].tolist() == [5, 5, 6]


def test_custom_keys_and_to_kwargs():
    batch = {"img": torch.zeros(2, 1, 8, 8), "img_1": torch.ones(2, 1, 8, 8), "pc": torch.zeros(2, 1, dtype=torch.long)}
    prep = MultiViewPrepareBatch(image_key="img", pseudo_class_key="pc", volume_id_key=None)
    inputs, targets = prep(batch, None, False, dtype=torch.float64, memory_format=torch.channels_last)
    assert inputs.dtype == torch.float64 and inputs.is_contiguous(memory_format=torch.channels_last)
    assert targets["pseudo_class"].shape == (2, 1) and targets["volume_id"] is None


def test_errors():
    prep = MultiViewPrepareBatch(num_views=3)
    with pytest.raises(ValueError, match=r"image_1.*image_2|image_2"):
        prep(_batch(2, views=1))
    with pytest.raises(ValueError, match="image_2"):
        prep(_batch(2, views=2))
    bad = _batch(2)
    bad["image_1"] = torch.zeros(3, 1, 8, 4)
    with pytest.raises(ValueError, match="same shape"):
        MultiViewPrepareBatch()(bad)
    with pytest.raises(ValueError, match="B, C, H, W"):
        MultiViewPrepareBatch()({"image": torch.zeros(3, 8, 8), "image_1": torch.zeros(3, 8, 8)})
    with pytest.raises(TypeError, match="image_1"):
        MultiViewPrepareBatch()({"image": torch.zeros(3, 1, 8, 8), "image_1": [1, 2, 3]})
    with pytest.raises(TypeError, match="batchdata"):
        MultiViewPrepareBatch()([torch.zeros(3, 1, 8, 8)])
    with pytest.raises(ValueError, match="pseudo_class"):
        MultiViewPrepareBatch()(_batch(2, pseudo_class=torch.tensor([0, 1, 2])))
    with pytest.raises(ValueError, match="pseudo_class"):
        MultiViewPrepareBatch()(_batch(2, pseudo_class=torch.zeros(2, 2, dtype=torch.long)))
    with pytest.raises(TypeError, match="pseudo_class"):
        MultiViewPrepareBatch()(_batch(2, pseudo_class=torch.zeros(3, 2)))
    with pytest.raises(ValueError, match="partition"):
        MultiViewPrepareBatch()(_batch(2, partition=torch.zeros(3, 1, dtype=torch.long)))
    with pytest.raises(ValueError, match="num_views"):
        MultiViewPrepareBatch(num_views=0)
