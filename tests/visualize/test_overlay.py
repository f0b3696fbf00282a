import numpy as np
import pytest
import torch
from PIL import Image

from monai_cluster.visualize import dice_per_class, save_montage, save_overlay


def _png_size(path):
    with Image.open(path) as img:
        img.verify()
        assert img.format == "PNG"
        return img.size


@pytest.fixture
def rgb_case():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 32, 40)).astype(np.uint8)
    mask = np.zeros((32, 40), dtype=np.uint8)
    mask[8:20, 10:26] = 255
    return image, mask, np.roll(mask, 3, axis=0) // 255


def test_dice_per_class_against_counts():
    ref = np.array([[0, 1, 1], [2, 2, 0]])
    pred = np.array([[1, 1, 0], [2, 0, 0]])
    scores = dice_per_class(ref, pred)
    assert scores == {1: pytest.approx(2 * 1 / (2 + 2)), 2: pytest.approx(2 * 1 / (2 + 1))}
    assert dice_per_class(np.zeros((2, 2)), np.zeros((2, 2))) == {}


def test_overlay_2d_panels(tmp_path, rgb_case):
    image, mask, pred = rgb_case
    one = _png_size(save_overlay(image, path=tmp_path / "image.png", dpi=40))
    three = _png_size(save_overlay(torch.tensor(image), mask, pred, tmp_path / "all.png", dpi=40))
    assert one[0] > 60 and one[1] > 40
    assert three[0] > 2.5 * one[0]  # image, ground truth and prediction side by side
    assert _png_size(save_overlay(image[0], prediction=pred, path=tmp_path / "pred.png", dpi=40))[0] > 1.5 * one[0]


def test_overlay_3d_volume(tmp_path):
    vol = np.random.default_rng(1).normal(0, 100, (1, 24, 20, 9)).astype(np.float32)
    labels = np.zeros((24, 20, 9), dtype=np.int64)
    labels[4:10, 4:10, :] = 1
    labels[12:20, 8:16, 2:6] = 5
    path = save_overlay(vol, labels, labels, path=tmp_path / "vol.png", slice_index=3, alpha=0.6, dpi=40)
    assert path == tmp_path / "vol.png" and min(_png_size(path)) > 30


def test_overlay_errors(tmp_path, rgb_case):
    image, mask, pred = rgb_case
    with pytest.raises(ValueError, match=r"mask must have the image's spatial shape \(32, 40\), got \(32, 39\)"):
        save_overlay(image, mask[:, :-1], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="prediction must have the image's spatial shape"):
        save_overlay(image, mask, pred[:-2], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"image must be .* got shape \(1, 1, 3, 32, 40\)"):
        save_overlay(image[None, None], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="mask must be .* with 2 spatial dimensions"):
        save_overlay(image, mask[None, None], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="path must name the .png file"):
        save_overlay(image, mask)
    with pytest.raises(ValueError, match="alpha must lie in"):
        save_overlay(image, mask, path=tmp_path / "x.png", alpha=2.0)
    assert not list(tmp_path.iterdir())


def test_montage_grid_2d_and_3d(tmp_path):
    rng = np.random.default_rng(2)
    images = [rng.normal(size=(16, 16)), rng.integers(0, 256, (3, 16, 16)).astype(np.uint8)]
    images += [rng.normal(size=(1, 16, 16, 6)), rng.normal(size=(16, 16, 5)), torch.rand(1, 16, 16)]
    wide = _png_size(save_montage(images, tmp_path / "wide.png", nrow=5, titles=list("abcde"), dpi=40))
    tall = _png_size(save_montage(images, tmp_path / "tall.png", nrow=2, dpi=40))
    assert wide[0] > 3 * wide[1]  # one row of five
    assert tall[1] > tall[0]  # three rows of two
    batch = _png_size(save_montage(torch.rand(4, 1, 8, 8, 4), tmp_path / "batch.png", dpi=40))
    assert abs(batch[0] - batch[1]) < 0.3 * batch[0]  # 2 x 2


def test_montage_errors(tmp_path):
    good = [np.zeros((8, 8))] * 3
    with pytest.raises(ValueError, match=r"titles must give one title per image \(3\), got 2 titles"):
        save_montage(good, tmp_path / "m.png", titles=["a", "b"])
    with pytest.raises(ValueError, match="images must hold at least one image"):
        save_montage([], tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"images\[1\] must be .* got shape \(8,\)"):
        save_montage([np.zeros((8, 8)), np.zeros(8)], tmp_path / "m.png")
    with pytest.raises(ValueError, match="images as one array must be a batch"):
        save_montage(np.zeros((8, 8)), tmp_path / "m.png")
    with pytest.raises(ValueError, match="nrow must be an integer >= 1"):
        save_montage(good, tmp_path / "m.png", nrow=0)
    with pytest.raises(ValueError, match=r"path must end with \.png"):
        save_montage(good, tmp_path / "m.pdf")
