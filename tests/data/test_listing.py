import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_cluster.data import list_image_mask_pairs, list_images, read_diagnosis_csv, write_nifti

GREY = np.zeros((6, 5), dtype=np.uint8)


def _touch_images(folder: Path, names) -> None:
    for name in names:
        if name.endswith(".nii.gz"):
            write_nifti(np.zeros((4, 4, 3), dtype=np.uint8), np.eye(4), folder / name)
        else:  # the format follows the extension (PNG, JPEG)
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(GREY).save(folder / name)


def _names(items, key):
    return [Path(it[key]).name for it in items]


def test_ph2_layout(tmp_path):
    _touch_images(tmp_path / "images", ["IMD004.png", "IMD002.png"])
    _touch_images(tmp_path / "masks", ["IMD002_lesion.png", "IMD004_lesion.png"])
    for layout in ("auto", "ph2"):
        items = list_image_mask_pairs(tmp_path, layout=layout)
        assert [it["key"] for it in items] == ["images/IMD002.png", "images/IMD004.png"]
        assert _names(items, "label") == ["IMD002_lesion.png", "IMD004_lesion.png"]
        assert all(Path(it["image"]).is_absolute() and Path(it["label"]).is_absolute() for it in items)


@pytest.mark.parametrize("mask_name", ["ISIC_0000001_segmentation.png", "ISIC_0000001.png"])
def test_isic_layout_both_mask_namings(tmp_path, mask_name):
    _touch_images(tmp_path / "images", ["ISIC_0000001.jpg"])
    _touch_images(tmp_path / "masks", [mask_name])
    for layout in ("auto", "isic"):
        items = list_image_mask_pairs(tmp_path, layout=layout)
        assert _names(items, "image") == ["ISIC_0000001.jpg"] and _names(items, "label") == [mask_name]


def test_same_stem_with_labels_folder_and_nifti(tmp_path):
    _touch_images(tmp_path / "images", ["p01.nii.gz", "p02.nii.gz"])
    _touch_images(tmp_path / "labels", ["p02.nii.gz", "p01.nii.gz"])
    for layout in ("auto", "same_stem"):
        items = list_image_mask_pairs(tmp_path, layout=layout)
        assert [it["key"] for it in items] == ["images/p01.nii.gz", "images/p02.nii.gz"]
        assert _names(items, "label") == ["p01.nii.gz", "p02.nii.gz"]


def test_msd_layout(tmp_path):
    _touch_images(tmp_path / "imagesTr", ["heart_1.nii.gz"])
    _touch_images(tmp_path / "labelsTr", ["heart_1.nii.gz"])
    (tmp_path / "imagesTs").mkdir()
    items = list_image_mask_pairs(tmp_path)
    assert [it["key"] for it in items] == ["imagesTr/heart_1.nii.gz"]
    assert list_image_mask_pairs(tmp_path, layout="msd") == items


def test_custom_folders_and_hidden_files_skipped(tmp_path):
    _touch_images(tmp_path / "raw" / "img", ["a.png", ".hidden.png", "._a.png"])
    _touch_images(tmp_path / "raw" / "seg", ["a_lesion.png", ".DS_Store.png"])
    (tmp_path / "raw" / "img" / "notes.txt").write_text("not an image")
    items = list_image_mask_pairs(tmp_path, image_dir="raw/img", mask_dir=tmp_path / "raw" / "seg")
    assert items == [
        {
            "image": str(tmp_path / "raw/img/a.png"),
            "label": str(tmp_path / "raw/seg/a_lesion.png"),
            "key": "raw/img/a.png",
        }
    ]


def test_one_custom_folder_with_auto_layout(tmp_path):
    _touch_images(tmp_path / "scans", ["a.png", "b.png"])
    _touch_images(tmp_path / "labels", ["a_segmentation.png", "b.png"])
    items = list_image_mask_pairs(tmp_path, image_dir="scans")
    assert [it["key"] for it in items] == ["scans/a.png", "scans/b.png"]
    assert _names(items, "label") == ["a_segmentation.png", "b.png"]


def test_unpaired_files_are_named(tmp_path):
    _touch_images(tmp_path / "images", ["a.png", "b.png", "c.png"])
    _touch_images(tmp_path / "masks", ["a.png", "d.png"])
    expected = r"2 image\(s\) .* without a mask: b\.png, c\.png.*1 mask\(s\) .* without an image: d\.png"
    with pytest.raises(ValueError, match=expected):
        list_image_mask_pairs(tmp_path)


def test_many_unpaired_files_are_counted(tmp_path):
    _touch_images(tmp_path / "images", [f"x{i:02d}.png" for i in range(13)])
    _touch_images(tmp_path / "masks", ["y.png"])
    with pytest.raises(ValueError, match=r"13 image\(s\).*x09\.png \.\.\. and 3 more"):
        list_image_mask_pairs(tmp_path)


def test_one_image_matching_two_masks(tmp_path):
    _touch_images(tmp_path / "images", ["a.png"])
    _touch_images(tmp_path / "masks", ["a.png", "a.nii.gz"])
    with pytest.raises(ValueError, match="several masks"):
        list_image_mask_pairs(tmp_path)


def test_empty_or_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="root .*missing.* does not exist"):
        list_image_mask_pairs(tmp_path / "missing")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match=r"image folder .*images holds no image files"):
        list_image_mask_pairs(tmp_path)
    _touch_images(tmp_path / "images", ["a.png"])
    with pytest.raises(ValueError, match=r"mask folder .*masks holds no image files"):
        list_image_mask_pairs(tmp_path)
    with pytest.raises(ValueError, match=r"image folder .*imagesTr does not exist"):
        list_image_mask_pairs(tmp_path, layout="msd")


def test_no_known_layout(tmp_path):
    _touch_images(tmp_path / "pictures", ["a.png"])
    with pytest.raises(ValueError, match=r"no known dataset layout .*imagesTr/ \+ labelsTr/.*images/ \+ labels/"):
        list_image_mask_pairs(tmp_path)
    with pytest.raises(ValueError, match="layout must be one of"):
        list_image_mask_pairs(tmp_path, layout="kaggle")


def test_list_images_recursive_and_filtered(tmp_path):
    _touch_images(tmp_path, ["b.png", "sub/a.nii.gz", "sub/deeper/c.png", ".hidden/d.png", "e.PNG"])
    (tmp_path / "readme.txt").write_text("x")
    items = list_images(tmp_path)
    assert [it["key"] for it in items] == ["b.png", "e.PNG", "sub/a.nii.gz", "sub/deeper/c.png"]
    assert all(set(it) == {"image", "key"} and Path(it["image"]).is_absolute() for it in items)
    assert [it["key"] for it in list_images(tmp_path, recursive=False)] == ["b.png", "e.PNG"]
    assert [it["key"] for it in list_images(tmp_path, extensions=("nii.gz",))] == ["sub/a.nii.gz"]


def test_list_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no image files under .*empty with extensions \['\.png'\]"):
        list_images(tmp_path / "empty", extensions=(".png",))
    with pytest.raises(ValueError, match="extensions must name at least one"):
        list_images(tmp_path, extensions=())
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nope")


def test_read_diagnosis_csv(tmp_path):
    good = tmp_path / "d.csv"
    good.write_text("image_name,diagnosis\nIMD003,Common Nevus\n\nIMD009,Melanoma\n")
    assert read_diagnosis_csv(good) == {"IMD003": "Common Nevus", "IMD009": "Melanoma"}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\nIMD003,x\n")
    with pytest.raises(ValueError, match="image_name,diagnosis"):
        read_diagnosis_csv(bad)
    twice = tmp_path / "twice.csv"
    twice.write_text("image_name,diagnosis\nA,x\nA,y\n")
    with pytest.raises(ValueError, match="'A' appears twice"):
        read_diagnosis_csv(twice)


# The real folders may grow (ACDC went from 24 to 70 patients), so these check the layout, not a count:
# every listed image pairs with the mask its dataset's naming gives, keys are sorted and unique.
@pytest.mark.real_data
@pytest.mark.parametrize(
    "parts, image_pattern, mask_of",
    [
        (("dermoscopy", "ph2"), r"IMD\d{3}\.png", lambda stem: f"{stem}_lesion.png"),
        (("dermoscopy", "ham10000"), r"ISIC_\d{7}\.jpg", lambda stem: f"{stem}.png"),
        (("heart", "acdc"), r"patient\d{3}_frame0[12]\.nii\.gz", lambda stem: f"{stem}.nii.gz"),
    ],
)
def test_real_layouts(real_data, parts, image_pattern, mask_of):
    root = real_data(*parts)
    items = list_image_mask_pairs(root)
    on_disk = sorted(p.name for p in (root / "images").iterdir() if not p.name.startswith("."))
    assert items, f"no pairs listed under {root}"
    assert _names(items, "image") == on_disk  # every image on disk is listed, none twice
    for it in items:
        name = Path(it["image"]).name
        assert re.fullmatch(image_pattern, name), name
        stem = name.split(".")[0]
        assert Path(it["label"]).name == mask_of(stem)
        assert Path(it["label"]).is_file()
    keys = [it["key"] for it in items]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.real_data
def test_real_acdc_patients_have_both_frames(real_data):
    """ACDC: each patient contributes its end-diastole and end-systole frame, so patient splits are whole."""
    items = list_image_mask_pairs(real_data("heart", "acdc"))
    frames = {}
    for it in items:
        patient, frame = Path(it["image"]).name.split(".")[0].split("_")
        frames.setdefault(patient, set()).add(frame)
    assert frames and all(f == {"frame01", "frame02"} for f in frames.values()), frames
    assert len(items) == 2 * len(frames)


@pytest.mark.real_data
def test_real_unlabeled_ph2(real_data):
    items = list_images(real_data("dermoscopy", "ph2", "unlabeled"))
    assert len(items) == 155 and all(it["key"].endswith(".jpg") for it in items)
