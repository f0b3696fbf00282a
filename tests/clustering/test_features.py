"""extract_features with tiny models in 2D and 3D: values, key order, eval mode restored, every error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Lambdad
from torch import nn

from monai_cluster.clustering import extract_features


class TinyEncoder(nn.Module):
    """Conv + dropout + global mean: ``forward_features`` gives ``(B, 4)``; ``forward`` a ``(B, 4, *spatial)`` map."""

    def __init__(self, spatial_dims: int):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(1, 4, kernel_size=1)
        self.drop = nn.Dropout(p=0.5)
        self.seen_training: list[bool] = []

    def forward(self, x):
        self.seen_training.append(self.training)
        return self.drop(self.conv(x))

    def forward_features(self, x):
        return self.forward(x).flatten(2).mean(-1)


class NoFeatures(nn.Module):
    def __init__(self, spatial_dims: int):
        super().__init__()
        self.conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(1, 2, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


def _samples(spatial_dims: int, n: int = 7) -> list[dict]:
    shape = (1,) + (6,) * spatial_dims
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(shape, generator=g), "key": f"img_{i}.png"} for i in range(n)]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_features_keys_and_values(spatial_dims):
    model = TinyEncoder(spatial_dims)
    data = _samples(spatial_dims)
    feats, keys = extract_features(model, data, batch_size=3, progress=False)
    assert feats.shape == (7, 4) and feats.dtype == np.float32
    assert keys == [f"img_{i}.png" for i in range(7)]
    with torch.no_grad():  # eval mode: dropout off, so features equal a direct computation
        model.eval()
        expected = torch.stack([model.forward_features(d["image"][None])[0] for d in data]).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_mode_restored_and_no_grad(spatial_dims):
    model = TinyEncoder(spatial_dims)
    model.train()
    model.drop.eval()  # a mixed state must come back exactly
    grads = []

    def recording(m, x):
        grads.append(torch.is_grad_enabled())
        return m.forward_features(x)

    extract_features(model, _samples(spatial_dims), progress=False, feature_fn=recording)
    assert model.training and model.conv.training and not model.drop.training
    assert model.seen_training and not any(model.seen_training)
    assert grads and not any(grads)

    model.train()

    def broken(m, x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        extract_features(model, _samples(spatial_dims), progress=False, feature_fn=broken)
    assert model.training and model.drop.training


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_flattened_without_forward_features(spatial_dims):
    model = NoFeatures(spatial_dims)
    feats, _ = extract_features(model, _samples(spatial_dims, 3), progress=False)
    assert feats.shape == (3, 2 * 6**spatial_dims)


def test_dataset_loader_transform_and_dict_output():
    data = _samples(2, 5)
    model = TinyEncoder(2)
    ref, _ = extract_features(model, data, progress=False)
    loader = DataLoader(Dataset(data), batch_size=2, shuffle=False)
    np.testing.assert_allclose(extract_features(model, loader, progress=False)[0], ref, rtol=1e-5, atol=1e-6)
    feats, _ = extract_features(model, Dataset(data), batch_size=4, progress=False)
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-6)
    doubled = Lambdad("image", lambda x: 2 * x)
    feats, _ = extract_features(model, data, transform=doubled, progress=False)
    np.testing.assert_allclose(feats, 2 * ref - model.conv.bias.detach().numpy(), rtol=1e-5, atol=1e-6)
    renamed = [{"img": d["image"], "id": d["key"]} for d in data]
    feats, keys = extract_features(model, renamed, image_key="img", key_field="id", progress=True)
    np.testing.assert_array_equal(feats, ref)

    class DictOut(nn.Module):
        def forward(self, x):
            return {"global": x[:, :, 0, 0], "pooled": x.mean((2, 3))}

    feats, _ = extract_features(DictOut(), data, progress=False)
    np.testing.assert_allclose(feats[:, 0], [d["image"].mean().item() for d in data], rtol=1e-5)


def test_errors():
    model = TinyEncoder(2)
    data = _samples(2, 4)
    with pytest.raises(ValueError, match="at least one sample"):
        extract_features(model, [], progress=False)
    with pytest.raises(ValueError, match="at least one sample"):
        extract_features(model, DataLoader(Dataset([]), batch_size=2), progress=False)
    with pytest.raises(ValueError, match="no 'key' entry"):
        extract_features(model, [{"image": d["image"]} for d in data], progress=False)
    with pytest.raises(ValueError, match="no 'pixels' entry"):
        extract_features(model, data, image_key="pixels", progress=False)
    with pytest.raises(ValueError, match=r"data\[0\]\['image'\] is a file path"):
        extract_features(model, [{"image": "/tmp/a.png", "key": "a.png"}], progress=False)
    with pytest.raises(TypeError, match="list of dicts"):
        extract_features(model, [torch.zeros(1, 4, 4)], progress=False)
    with pytest.raises(TypeError, match="data must be"):
        extract_features(model, torch.zeros(2, 1, 4, 4), progress=False)
    with pytest.raises(TypeError, match="model must be"):
        extract_features(lambda x: x, data, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(model, data, batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"\(B, F\) tensor with B=2"):
        extract_features(model, data, batch_size=2, feature_fn=lambda m, x: x, progress=False)

    class TupleOut(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match="pass feature_fn"):
        extract_features(TupleOut(), data, progress=False)

    def nan_for_odd(m, x):
        out = x.flatten(1)[:, :3].clone()
        out[1::2, 0] = float("nan")
        return out

    with pytest.raises(ValueError, match=r"2 image\(s\) hold NaN or Inf: \['img_1.png', 'img_3.png'\]"):
        extract_features(model, data, batch_size=2, feature_fn=nan_for_odd, progress=False)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_streaming_to_a_memory_mapped_file_equals_in_memory(tmp_path, spatial_dims):
    from monai_cluster.clustering import hierarchical_pseudo_classes

    model = TinyEncoder(spatial_dims)
    data = _samples(spatial_dims, n=40)
    in_memory, keys = extract_features(model, data, batch_size=3, progress=False)
    out = tmp_path / "feats" / "features.npy"
    mapped, mapped_keys = extract_features(model, data, batch_size=3, progress=False, out_path=out)
    assert isinstance(mapped, np.memmap) and mapped_keys == keys
    np.testing.assert_array_equal(mapped, in_memory)
    np.testing.assert_array_equal(np.load(out), in_memory)  # a complete .npy on disk, no temporary left
    assert sorted(p.name for p in out.parent.iterdir()) == ["features.npy"]
    # the pseudo-classes of the mapped features equal those of the in-memory ones, on either method
    for method in ("exact", "scalable"):
        a = hierarchical_pseudo_classes(in_memory, (2, 4), method=method, num_centroids=8)
        b = hierarchical_pseudo_classes(mapped, (2, 4), method=method, num_centroids=8)
        np.testing.assert_array_equal(a, b)


def test_streaming_failures_leave_no_file(tmp_path):
    data = _samples(2, n=5)
    data[3]["image"] = torch.full_like(data[3]["image"], float("nan"))
    out = tmp_path / "features.npy"
    with pytest.raises(ValueError, match="hold NaN or Inf"):
        extract_features(TinyEncoder(2), data, batch_size=2, progress=False, out_path=out)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="must name a .npy file"):
        extract_features(TinyEncoder(2), _samples(2), progress=False, out_path=tmp_path / "features.bin")
    loader = DataLoader(Dataset(_samples(2)), batch_size=2)
    feats, _ = extract_features(TinyEncoder(2), loader, progress=False, out_path=out)  # a loader of a sized dataset
    assert feats.shape == (7, 4)
