"""Split, few-label subsets, checked listings and transforms of the segmentation workflows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_cluster.workflows.segmentation_data import (
    inference_items,
    labeled_subset,
    segmentation_splits,
    split_train_val,
)
from monai_cluster.workflows.segmentation_transforms import binarize_mask, dermoscopy_transforms, heart_transforms

ITEMS = [{"key": f"images/{i:03d}.png", "image": f"/d/images/{i:03d}.png"} for i in range(20)]


def test_split_is_seeded_disjoint_and_order_free():
    train, val = split_train_val(ITEMS, 0.2, seed=1)
    assert len(val) == 4 and len(train) == 16
    assert not {d["key"] for d in train} & {d["key"] for d in val}
    assert split_train_val(list(reversed(ITEMS)), 0.2, seed=1) == (train, val)
    assert split_train_val(ITEMS, 0.2, seed=2)[1] != val
    assert split_train_val(ITEMS, 0.0) == (ITEMS, [])


@pytest.mark.parametrize(
    "fraction, error, match",
    [(1.0, ValueError, "val_fraction must be below 1"), (-0.1, ValueError, r"\[0, 1\]"), ("x", TypeError, "number")],
)
def test_split_rejects_bad_fractions(fraction, error, match):
    with pytest.raises(error, match=match):
        split_train_val(ITEMS, fraction)


def test_labeled_subsets_are_nested_and_seeded():
    small = labeled_subset(ITEMS, 0.1, seed=0)
    large = labeled_subset(ITEMS, 0.5, seed=0)
    assert len(small) == 2 and len(large) == 10
    assert {d["key"] for d in small} <= {d["key"] for d in large}
    assert labeled_subset(ITEMS, num_labeled=2, seed=0) == small  # num_labeled wins over the fraction
    assert labeled_subset(ITEMS, 1.0) == sorted(ITEMS, key=lambda d: d["key"])
    assert labeled_subset(ITEMS, 0.01) == labeled_subset(ITEMS, num_labeled=1)  # at least one image


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"label_fraction": 0.0}, r"label_fraction must lie in \(0, 1\]"),
        ({"label_fraction": 1.5}, r"label_fraction must lie in \(0, 1\]"),
        ({"num_labeled": 21}, "num_labeled must be at most the 20 training samples"),
        ({"num_labeled": 0}, "num_labeled"),
    ],
)
def test_labeled_subset_rejects_bad_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        labeled_subset(ITEMS, **kwargs)


def test_splits_of_a_synthetic_set(tmp_path):
    splits = segmentation_splits(None, tmp_path, "dermoscopy", 2, 3, num_labeled=2, synthetic_n=6, synthetic_size=32)
    assert len(splits["all"]) == 6 and len(splits["val"]) == 1 and len(splits["train"]) == 2
    assert (tmp_path / "synthetic_data" / "images").is_dir()
    # another seed draws another split from the same generated images
    again = segmentation_splits(None, tmp_path, "dermoscopy", 2, 3, seed=5, synthetic_n=6, synthetic_size=32)
    assert again["all"] == splits["all"]


def test_splits_name_an_unreadable_image(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "images" / f"IMD00{i}.png")
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "masks" / f"IMD00{i}_lesion.png")
    (tmp_path / "images" / "IMD001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match="IMD001.png"):
        segmentation_splits(tmp_path, tmp_path / "root", "dermoscopy", 2, 3)


def test_inference_items_without_masks(tmp_path):
    (tmp_path / "scans").mkdir()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "scans" / "a.png")
    items = inference_items(tmp_path, tmp_path / "root", "dermoscopy", 3)
    assert [d["key"] for d in items] == ["scans/a.png"] and "label" not in items[0]
    with pytest.raises(ValueError, match="does not exist"):
        inference_items(tmp_path / "nowhere", tmp_path, "dermoscopy", 3)


def test_dermoscopy_transforms_keep_orientation_and_binarize(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    image[:10] = 255  # a bright band at the top rows
    mask = np.zeros((40, 60), np.uint8)
    mask[:10] = 255
    Image.fromarray(image).save(tmp_path / "i.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = dermoscopy_transforms("val", 32)({"image": str(tmp_path / "i.png"), "label": str(tmp_path / "m.png")})
    assert out["image"].shape == (3, 32, 32) and out["label"].shape == (1, 32, 32)
    assert float(out["image"].max()) == pytest.approx(1.0)
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0}
    assert out["label"][0, 0].sum() == 32 and out["label"][0, -1].sum() == 0  # rows stay rows
    assert "label" not in dermoscopy_transforms("infer", 32)({"image": str(tmp_path / "i.png")})
    assert torch.equal(binarize_mask(torch.tensor([0, 1, 255])), torch.tensor([0.0, 1.0, 1.0]))


def test_heart_transforms_window_and_crop(tmp_path):
    from monai_cluster.data import make_synthetic_heart

    make_synthetic_heart(tmp_path, n=1, size=32, seed=0)
    name = "heart_000.nii.gz"
    item = {"image": str(tmp_path / "images" / name), "label": str(tmp_path / "labels" / name)}
    crops = heart_transforms("train", 16, num_classes=8, num_samples=3)(item)
    assert len(crops) == 3 and crops[0]["image"].shape == (1, 16, 16, 16)
    val = heart_transforms("val", 16, intensity="mri")(item)
    assert val["image"].shape == (1, 32, 32, 32) and 0.0 <= float(val["image"].min()) <= float(val["image"].max()) <= 1
    with pytest.raises(ValueError, match="intensity"):
        heart_transforms("val", intensity="pet")
    with pytest.raises(ValueError, match="ct_window must have low < high"):
        heart_transforms("val", ct_window=(500, -300))
    with pytest.raises(ValueError, match=r"roi_size\[0\]"):
        heart_transforms("train", roi_size=(8, 16, 16))
