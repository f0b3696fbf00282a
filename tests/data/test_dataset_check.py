import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_cluster.data import check_dataset, list_image_mask_pairs, list_images, write_nifti, write_png


def _pair(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> dict:
    write_png(image, folder / "images" / f"{name}.png")
    write_png(mask, folder / "masks" / f"{name}.png")
    return {"image": str(folder / "images" / f"{name}.png"), "label": str(folder / "masks" / f"{name}.png")}


RGB = np.full((12, 10, 3), 120, dtype=np.uint8)
MASK = np.zeros((12, 10), dtype=np.uint8)


def test_synthetic_dermoscopy_passes(derm_set):
    summary = check_dataset(derm_set[1], num_classes=2, channels=3, spatial_dims=2)
    assert summary == {
        "num_items": 9,
        "num_labelled": 9,
        "spatial_shapes": [(48, 48)],
        "channels": [3],
        "spatial_dims": [2],
        "label_values": [0, 255],
    }


def test_synthetic_heart_passes(heart_set):
    summary = check_dataset(heart_set[1], num_classes=8, channels=1, spatial_dims=3)
    assert summary["spatial_shapes"] == [(40, 44, 48)] and summary["label_values"] == list(range(8))


def test_unlabeled_listing_passes(derm_set):
    summary = check_dataset(list_images(derm_set[0] / "images"), channels=3)
    assert summary["num_items"] == 9 and summary["num_labelled"] == 0 and summary["label_values"] == []


def test_truncated_png_and_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    item = _pair(tmp_path, "a", noise, MASK)
    data = Path(item["image"]).read_bytes()
    Path(item["image"]).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"a\.png: cannot decode"):
        check_dataset([item])
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"b\.jpg: cannot decode"):
        check_dataset([{"image": str(tmp_path / "b.jpg")}])


def test_corrupt_nifti(tmp_path):
    write_nifti(np.zeros((6, 6, 6), dtype=np.int16), np.eye(4), tmp_path / "v.nii.gz")
    data = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "v.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"v\.nii\.gz: cannot decode"):
        check_dataset([{"image": str(tmp_path / "v.nii.gz")}])
    (tmp_path / "w.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all"))
    with pytest.raises(ValueError, match=r"w\.nii\.gz: cannot decode"):
        check_dataset([{"image": str(tmp_path / "w.nii.gz")}])


def test_missing_file(tmp_path):
    item = _pair(tmp_path, "a", RGB, MASK)
    Path(item["label"]).unlink()
    with pytest.raises(ValueError, match=r"items\[0\]\['label'\]: file not found: .*masks/a\.png"):
        check_dataset([item])


def test_mask_of_another_size(tmp_path):
    item = _pair(tmp_path, "a", RGB, np.zeros((12, 11), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"label .*a\.png: expected the spatial shape \(12, 10\) of its image"):
        check_dataset([item])


def test_label_values_outside_num_classes(tmp_path):
    three = MASK.copy()
    three[2:4, 2:4] = 3
    expected = r"values must lie in \[0, 2\) \(or \{0, 255\} for a binary mask\), found \[3\]"
    with pytest.raises(ValueError, match=expected):
        check_dataset([_pair(tmp_path, "a", RGB, three)], num_classes=2)
    assert check_dataset([_pair(tmp_path, "a", RGB, three)], num_classes=4)["label_values"] == [0, 3]
    binary = MASK.copy()
    binary[5:, 5:] = 255
    assert check_dataset([_pair(tmp_path, "b", RGB, binary)], num_classes=2)["label_values"] == [0, 255]
    with pytest.raises(ValueError, match=r"values must lie in \[0, 3\), found \[255\]"):
        check_dataset([_pair(tmp_path, "b", RGB, binary)], num_classes=3)


def test_non_integer_and_multichannel_labels(tmp_path):
    write_nifti(np.full((4, 4, 4), 0.5, dtype=np.float32), np.eye(4), tmp_path / "soft.nii.gz")
    write_nifti(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4), tmp_path / "img.nii.gz")
    with pytest.raises(ValueError, match=r"soft\.nii\.gz: must hold integer class values"):
        check_dataset([{"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "soft.nii.gz")}])
    item = _pair(tmp_path, "a", RGB, MASK)
    write_png(RGB, Path(item["label"]))
    with pytest.raises(ValueError, match="expected a single-channel mask, got 3 channels"):
        check_dataset([item])


def test_nan_in_image(tmp_path):
    vol = np.zeros((5, 5, 5), dtype=np.float32)
    vol[1, 2, 3] = np.nan
    write_nifti(vol, np.eye(4), tmp_path / "nan.nii.gz")
    with pytest.raises(ValueError, match=r"image .*nan\.nii\.gz: must be finite, but 1 of 125 values are NaN or Inf"):
        check_dataset([{"image": str(tmp_path / "nan.nii.gz")}])


def test_channels_and_spatial_dims(tmp_path):
    item = _pair(tmp_path, "a", RGB, MASK)
    with pytest.raises(ValueError, match=r"a\.png: expected 1 channel\(s\), got 3"):
        check_dataset([item], channels=1)
    with pytest.raises(ValueError, match=r"a\.png: expected 3 spatial dimensions, got spatial shape \(12, 10\)"):
        check_dataset([item], spatial_dims=3)


def test_every_problem_is_reported(tmp_path):
    good = _pair(tmp_path, "good", RGB, MASK)
    bad1 = _pair(tmp_path, "bad1", RGB, np.zeros((3, 3), dtype=np.uint8))
    bad2 = {"image": str(tmp_path / "nowhere.png")}
    with pytest.raises(ValueError, match=r"(?s)2 problem\(s\) in 3 item\(s\).*bad1\.png.*nowhere\.png"):
        check_dataset([good, bad1, bad2])


def test_bad_arguments(tmp_path):
    item = _pair(tmp_path, "a", RGB, MASK)
    with pytest.raises(ValueError, match="empty listing"):
        check_dataset([])
    with pytest.raises(TypeError, match="items must be a list of dicts"):
        check_dataset(item)
    with pytest.raises(TypeError, match=r"items\[0\] must be a dict"):
        check_dataset([item["image"]])
    with pytest.raises(ValueError, match=r"items\[0\] has no 'img' entry"):
        check_dataset([item], image_key="img")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        check_dataset([item], num_classes=1)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        check_dataset([item], spatial_dims=4)


@pytest.mark.real_data
def test_real_data_passes(real_data):
    ph2 = list_image_mask_pairs(real_data("dermoscopy", "ph2"))[:3]
    assert check_dataset(ph2, num_classes=2, channels=3, spatial_dims=2)["label_values"] == [0, 255]
    ham = list_image_mask_pairs(real_data("dermoscopy", "ham10000"))[:3]
    assert check_dataset(ham, num_classes=2, channels=3, spatial_dims=2)["spatial_shapes"] == [(450, 600)]
    acdc = list_image_mask_pairs(real_data("heart", "acdc"))[:2]
    summary = check_dataset(acdc, num_classes=4, channels=1, spatial_dims=3)
    assert summary["label_values"] == [0, 1, 2, 3]
