import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from monai_cluster.visualize import check_png_path, image_slice, save_figure, to_display_image, to_label_slice


def test_grey_and_rgb_images():
    grey = np.linspace(0, 10, 12 * 8).reshape(12, 8)
    out = to_display_image(grey)
    assert out.shape == (12, 8) and out.min() == 0.0 and out.max() == 1.0
    assert np.array_equal(to_display_image(grey[None]), out)
    rgb = np.random.default_rng(0).integers(0, 256, (3, 12, 8)).astype(np.uint8)
    out = to_display_image(torch.from_numpy(rgb))
    assert out.shape == (12, 8, 3) and np.allclose(out, np.moveaxis(rgb, 0, -1) / 255.0)
    unit = np.random.default_rng(1).uniform(0.2, 0.6, (3, 5, 5))
    assert np.allclose(to_display_image(unit), np.moveaxis(unit, 0, -1))  # [0, 1] RGB kept as is


def test_volumes_show_a_slice_of_the_last_axis():
    vol = np.zeros((1, 6, 7, 5))
    vol[0, :, :, 2] = np.arange(42).reshape(6, 7)
    vol[0, :, :, 4] = -np.arange(42).reshape(6, 7)
    arr, dims = image_slice(vol)
    assert dims == 3 and arr.shape == (1, 6, 7) and np.array_equal(arr[0], vol[0, :, :, 2])  # middle slice
    assert np.array_equal(image_slice(vol[0], slice_index=-1)[0][0], vol[0, :, :, 4])  # (H, W, D)
    shown = to_display_image(torch.tensor(vol), slice_index=4)
    assert shown.shape == (6, 7) and shown[0, 0] == 1.0 and shown[-1, -1] == 0.0
    # a rank-3 array with 3 in front is RGB unless told otherwise
    assert image_slice(np.zeros((3, 6, 7)))[1] == 2
    assert image_slice(np.zeros((3, 6, 7)), spatial_dims=3)[0].shape == (1, 3, 6)


def test_image_errors():
    expected = r"image must be \(H, W\), \(C, H, W\), \(H, W, D\) or \(C, H, W, D\), got shape \(2, 1, 4, 4, 4\)"
    with pytest.raises(ValueError, match=expected):
        to_display_image(np.zeros((2, 1, 4, 4, 4)))
    with pytest.raises(ValueError, match=r"my_image must be .* got shape \(5,\)"):
        to_display_image(np.zeros(5), name="my_image")
    with pytest.raises(ValueError, match="image must have 2 or 3 dimensions for spatial_dims=2"):
        to_display_image(np.zeros((1, 4, 4, 4)), spatial_dims=2)
    with pytest.raises(ValueError, match=r"slice_index must be an int in \[-4, 4\)"):
        to_display_image(np.zeros((4, 4, 4)), slice_index=4)
    with pytest.raises(ValueError, match="image must be finite"):
        to_display_image(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="image must not be empty"):
        to_display_image(np.zeros((0, 4)))
    with pytest.raises(TypeError, match="image must be a numpy array or torch tensor, got str"):
        to_display_image("picture.png")


def test_label_maps():
    binary = np.zeros((5, 6), dtype=np.uint8)
    binary[1:3, 2:4] = 255
    assert np.array_equal(to_label_slice(binary, "mask", (5, 6), 2), binary // 255)
    probs = np.full((1, 5, 6), 0.2)
    probs[0, 0, 0] = 0.7
    assert to_label_slice(probs, "prediction", (5, 6), 2).sum() == 1
    onehot = np.zeros((3, 5, 6))
    onehot[2, :, :3] = 1
    onehot[0, :, 3:] = 1
    expected = np.zeros((5, 6), dtype=int)
    expected[:, :3] = 2
    assert np.array_equal(to_label_slice(torch.tensor(onehot), "prediction", (5, 6), 2), expected)
    vol = np.zeros((5, 6, 4), dtype=np.int64)
    vol[..., 1] = 7
    assert np.all(to_label_slice(vol, "mask", (5, 6), 3, slice_index=1) == 7)


def test_label_errors():
    with pytest.raises(ValueError, match=r"mask must have the image's spatial shape \(5, 6\), got \(5, 7\)"):
        to_label_slice(np.zeros((5, 7)), "mask", (5, 6), 2)
    with pytest.raises(ValueError, match="prediction must be .* with 3 spatial dimensions"):
        to_label_slice(np.zeros((5, 6)), "prediction", (5, 6), 3)


def test_png_path_and_atomic_save(tmp_path):
    with pytest.raises(ValueError, match=r"path must end with \.png"):
        check_png_path(tmp_path / "plot.jpg")
    with pytest.raises(ValueError, match="path must name the .png file"):
        check_png_path(None)
    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "sub" / "line.png", dpi=50)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 10
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["line.png"]
