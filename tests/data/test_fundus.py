"""Tests for the fundus listings (DRIVE, CHASE_DB1 layouts, real and mock) and the synthetic fundus generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_cluster.data import list_image_mask_pairs, read_image
from monai_cluster.data.fundus import list_fundus_pairs, make_synthetic_fundus, render_fundus


def _touch_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path)


def _mock_drive(root: Path, numbers=(21, 22), test_numbers=(1, 2)) -> Path:
    for sub, nums, kind in (("training", numbers, "training"), ("testing", test_numbers, "test")):
        for n in nums:
            _touch_image(root / sub / "images" / f"{n:02d}_{kind}.tif")
            _touch_image(root / sub / "1st_manual" / f"{n:02d}_manual1.gif")
            _touch_image(root / sub / "mask" / f"{n:02d}_{kind}_mask.gif")
            if sub == "testing":
                _touch_image(root / sub / "2nd_manual" / f"{n:02d}_manual2.gif")
    return root


def _mock_chase(root: Path, children=(1, 2, 11)) -> Path:
    for child in children:
        for eye in "LR":
            _touch_image(root / f"Image_{child:02d}{eye}.jpg")
            _touch_image(root / f"Image_{child:02d}{eye}_1stHO.png")
            _touch_image(root / f"Image_{child:02d}{eye}_2ndHO.png")
    return root


def test_mock_drive_listing_splits_observers_and_fov(tmp_path):
    root = _mock_drive(tmp_path / "drive")
    items = list_fundus_pairs(root)
    assert [i["key"] for i in items] == [
        "testing/images/01_test.tif",
        "testing/images/02_test.tif",
        "training/images/21_training.tif",
        "training/images/22_training.tif",
    ]
    first = items[2]
    assert first["label"] == str(root / "training" / "1st_manual" / "21_manual1.gif")
    assert first["fov"] == str(root / "training" / "mask" / "21_training_mask.gif")
    assert len(list_fundus_pairs(root, "drive", split="train")) == 2
    test2 = list_fundus_pairs(root, split="test", observer=2)
    assert test2[0]["label"].endswith("2nd_manual/01_manual2.gif")


def test_mock_chase_listing_and_split(tmp_path):
    root = _mock_chase(tmp_path / "chase")
    items = list_fundus_pairs(root)
    assert len(items) == 6 and items[0]["key"] == "Image_01L.jpg"
    assert items[0]["label"] == str(root / "Image_01L_1stHO.png") and "fov" not in items[0]
    assert [i["key"] for i in list_fundus_pairs(root, "chase_db1", split="test")] == ["Image_11L.jpg", "Image_11R.jpg"]
    assert len(list_fundus_pairs(root, split="train")) == 4
    assert list_fundus_pairs(root, observer=2)[0]["label"].endswith("Image_01L_2ndHO.png")


def test_listing_errors_name_the_files(tmp_path):
    root = _mock_drive(tmp_path / "drive")
    (root / "training" / "1st_manual" / "22_manual1.gif").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) without a manual .*22_training.tif"):
        list_fundus_pairs(root, split="train")
    _touch_image(root / "training" / "1st_manual" / "22_manual1.gif")
    _touch_image(root / "training" / "1st_manual" / "23_manual1.gif")
    with pytest.raises(ValueError, match=r"manual mask\(s\) without an image.*23_manual1.gif"):
        list_fundus_pairs(root, split="train")
    (root / "training" / "1st_manual" / "23_manual1.gif").unlink()
    (root / "training" / "mask" / "21_training_mask.gif").unlink()
    with pytest.raises(ValueError, match="21_training.tif has no field-of-view mask"):
        list_fundus_pairs(root, split="train")
    with pytest.raises(ValueError, match="observer=2 needs .*2nd_manual"):
        list_fundus_pairs(root, split="train", observer=2)
    for f in (root / "testing" / "images").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="DRIVE testing image folder .* holds no image files"):
        list_fundus_pairs(root, split="test")

    chase = _mock_chase(tmp_path / "chase")
    (chase / "Image_02R_1stHO.png").unlink()
    with pytest.raises(ValueError, match=r"without a '_1stHO' mask.*Image_02R.jpg"):
        list_fundus_pairs(chase)
    _touch_image(chase / "Image_02R_1stHO.png")
    _touch_image(chase / "Image_05L_1stHO.png")
    with pytest.raises(ValueError, match=r"mask\(s\) without an image.*Image_05L_1stHO.png"):
        list_fundus_pairs(chase)
    (chase / "Image_05L_1stHO.png").unlink()
    _touch_image(chase / "scan.jpg")
    _touch_image(chase / "scan_1stHO.png")
    with pytest.raises(ValueError, match="'scan' does not follow 'Image_<child><L|R>'"):
        list_fundus_pairs(chase)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="root .* does not exist"):
        list_fundus_pairs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no fundus layout found"):
        list_fundus_pairs(tmp_path / "empty")
    with pytest.raises(ValueError, match="dataset"):
        list_fundus_pairs(tmp_path, dataset="stare")
    with pytest.raises(ValueError, match="split"):
        list_fundus_pairs(tmp_path, split="val")
    with pytest.raises(ValueError, match="observer must be 1 or 2"):
        list_fundus_pairs(tmp_path, observer=3)
    with pytest.raises(ValueError, match="CHASE_DB1 folder .* holds no image files"):
        list_fundus_pairs(tmp_path / "empty", dataset="chase_db1")


def test_synthetic_fundus_files_listing_and_determinism(tmp_path):
    items = make_synthetic_fundus(tmp_path / "a", n=3, size=48, seed=1)
    assert [i["key"] for i in items] == ["images/FUNDUS0000.png", "images/FUNDUS0001.png", "images/FUNDUS0002.png"]
    assert list_image_mask_pairs(tmp_path / "a", layout="same_stem") == items
    for item in items:
        image, mask = read_image(item["image"]), read_image(item["label"])
        assert image.array.shape == (48, 48, 3) and image.array.dtype == np.uint8
        assert mask.array.shape == (48, 48) and set(np.unique(mask.array)) <= {0, 255}
        vessels = mask.array > 0
        assert 0.01 < vessels.mean() < 0.3
        # vessels are darker (in green) than the retina around them, and the corners are outside the field of view
        retina = (image.array.sum(axis=2) > 60) & ~vessels
        assert image.array[vessels, 1].mean() < image.array[retina, 1].mean()
        assert image.array[0, 0].max() < 30
    again = make_synthetic_fundus(tmp_path / "b", n=3, size=48, seed=1)
    for x, y in zip(items, again):
        assert np.array_equal(read_image(x["image"]).array, read_image(y["image"]).array)
    other = make_synthetic_fundus(tmp_path / "c", n=1, size=48, seed=2)
    assert not np.array_equal(read_image(other[0]["label"]).array, read_image(items[0]["label"]).array)


def test_render_fundus_rectangular_and_errors(tmp_path):
    image, mask = render_fundus(np.random.default_rng(0), (40, 64))
    assert image.shape == (40, 64, 3) and mask.shape == (40, 64)
    with pytest.raises(ValueError, match=r"size\[0\]"):
        make_synthetic_fundus(tmp_path, size=16)
    with pytest.raises(ValueError, match="size must be an int or a sequence of 2"):
        make_synthetic_fundus(tmp_path, size=(32, 32, 32))
    with pytest.raises(ValueError, match="n must be"):
        make_synthetic_fundus(tmp_path, n=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        make_synthetic_fundus(tmp_path, seed=0.5)


@pytest.mark.real_data
def test_real_drive_listing(real_data):
    root = real_data("retina", "drive")
    train, test = list_fundus_pairs(root, split="train"), list_fundus_pairs(root, split="test")
    assert len(train) == 20 and len(test) == 20
    assert len(list_fundus_pairs(root)) == 40
    assert all("fov" in item and Path(item["fov"]).is_file() for item in train + test)
    assert train[0]["key"] == "training/images/21_training.tif"
    assert Path(train[0]["label"]).name == "21_manual1.gif"
    assert len(list_fundus_pairs(root, split="test", observer=2)) == 20
    image, label = read_image(train[0]["image"]), read_image(train[0]["label"])
    assert image.spatial_shape == label.spatial_shape == (584, 565) and image.channels == 3


@pytest.mark.real_data
def test_real_chase_listing(real_data):
    root = real_data("retina", "chase_db1")
    items = list_fundus_pairs(root)
    assert len(items) == 28
    assert len(list_fundus_pairs(root, split="train")) == 20 and len(list_fundus_pairs(root, split="test")) == 8
    assert items[0]["key"] == "Image_01L.jpg" and items[0]["label"].endswith("Image_01L_1stHO.png")
    assert len(list_fundus_pairs(root, "chase_db1", observer=2)) == 28
