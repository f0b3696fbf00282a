"""load_medmnist_npz on small archives written here, every error path, and on the real PneumoniaMNIST subset."""

from __future__ import annotations

import numpy as np
import pytest

from monai_cluster.data.medmnist import load_medmnist_npz


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def grey(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 6, 6), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, size=(n, 1)).astype(np.uint8)
    return _write(tmp_path / "grey.npz", **arrays), arrays


def test_grey_splits(grey):
    path, arrays = grey
    images, labels = load_medmnist_npz(path, "val")
    assert images.shape == (2, 1, 6, 6) and images.dtype == np.float32
    np.testing.assert_allclose(images[:, 0], arrays["val_images"] / 255.0, rtol=1e-6)
    assert labels.dtype == np.int64 and labels.tolist() == arrays["val_labels"][:, 0].tolist()
    images, labels = load_medmnist_npz(str(path), "all")
    assert images.shape == (10, 1, 6, 6) and labels.shape == (10,)
    np.testing.assert_allclose(images[7:, 0], arrays["test_images"] / 255.0, rtol=1e-6)
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_rgb_volumes_and_multilabel(tmp_path):
    rgb = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    images, _ = load_medmnist_npz(_write(tmp_path / "rgb.npz", train_images=rgb, train_labels=np.zeros((2, 1), int)))
    assert images.shape == (2, 3, 4, 4) and images[:, 2].min() == 1.0 and images[:, :2].max() == 0.0
    vol = np.zeros((2, 4, 4, 5), dtype=np.uint8)  # a last axis of 4 would be ambiguous (RGBA or depth 4)
    labels = np.array([[1, 0, 1], [0, 0, 1]])
    images, out = load_medmnist_npz(_write(tmp_path / "vol.npz", train_images=vol, train_labels=labels))
    assert images.shape == (2, 1, 4, 4, 5) and out.shape == (2, 3)
    rgb_as_volume, _ = load_medmnist_npz(tmp_path / "rgb.npz", spatial_dims=3)
    assert rgb_as_volume.shape == (2, 1, 4, 4, 3)


def test_errors(tmp_path, grey):
    path, arrays = grey
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_medmnist_npz(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="split must be one of"):
        load_medmnist_npz(path, "training")
    with pytest.raises(ValueError, match="spatial_dims must be None, 2 or 3"):
        load_medmnist_npz(path, spatial_dims=1)
    no_val = _write(tmp_path / "noval.npz", train_images=arrays["train_images"], train_labels=arrays["train_labels"])
    with pytest.raises(ValueError, match="no key 'val_images' for split='val'"):
        load_medmnist_npz(no_val, "val")
    with pytest.raises(ValueError, match="no key 'val_images' for split='val'"):
        load_medmnist_npz(no_val, "all")
    short = _write(tmp_path / "short.npz", train_images=arrays["train_images"], train_labels=np.zeros((4, 1), int))
    with pytest.raises(ValueError, match="train_labels must be"):
        load_medmnist_npz(short)
    flat = _write(tmp_path / "flat.npz", train_images=np.zeros((3, 9), np.uint8), train_labels=np.zeros(3, int))
    with pytest.raises(ValueError, match="train_images has shape"):
        load_medmnist_npz(flat)
    wide = _write(tmp_path / "wide.npz", train_images=np.full((1, 2, 2), 2.0), train_labels=np.zeros(1, int))
    with pytest.raises(ValueError, match=r"train_images holds floating-point values outside \[0, 1\]"):
        load_medmnist_npz(wide)
    float_labels = _write(tmp_path / "fl.npz", train_images=np.zeros((1, 2, 2), np.uint8), train_labels=np.zeros(1))
    with pytest.raises(ValueError, match="train_labels must hold integers"):
        load_medmnist_npz(float_labels)
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        load_medmnist_npz(text)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="holds a single array"):
        load_medmnist_npz(single)


@pytest.mark.real_data
def test_real_pneumoniamnist(real_data):
    path = real_data("chest_xray", "pneumoniamnist_balanced.npz")
    images, labels = load_medmnist_npz(path, "all")
    assert images.shape == (3166, 1, 28, 28) and labels.shape == (3166,)
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.05
    assert set(np.unique(labels).tolist()) == {0, 1}
    train_images, train_labels = load_medmnist_npz(path, "train")
    assert train_images.shape[0] == 2428 and train_labels.mean() == pytest.approx(0.5, abs=0.05)
