"""The bundles' ``datalist`` option (a fixed split for fine-tuning and pretraining) and the evaluation's Jaccard and
ASD in mm (``metric_spacing``): hand-checked values and the refusals, each naming its input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_cluster.workflows.datalist import load_datalist
from monai_cluster.workflows.pretrain_data import autoencoder_transforms, prepare_unlabeled
from monai_cluster.workflows.segmentation_data import segmentation_splits
from monai_cluster.handlers import SegmentationMetricsWriter


def _volumes(root: Path, n: int = 6) -> list[str]:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    names = []
    for i in range(n):
        image = np.full((8, 8, 8), 10 * i, np.uint8)
        label = np.zeros((8, 8, 8), np.uint8)
        label[2:5, 2:5, 2:5] = 1
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "images" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labels" / f"v{i}.nii.gz")
        names.append(f"v{i}.nii.gz")
    return names


def _datalist(path: Path, train: list[str], val: list[str]) -> Path:
    entry = lambda n: {"image": f"images/{n}", "label": f"labels/{n}"}  # noqa: E731
    path.write_text(json.dumps({"training": [entry(n) for n in train], "validation": [entry(n) for n in val]}))
    return path


def test_splits_follow_the_datalist_and_draw_the_labeled_subset(tmp_path):
    names = _volumes(tmp_path / "data")
    dl = _datalist(tmp_path / "split.json", names[:4], names[4:])
    splits = segmentation_splits(tmp_path / "data", tmp_path, "heart", 2, 1, num_labeled=2, seed=3, datalist=dl)
    assert [i["key"] for i in splits["val"]] == ["images/v4.nii.gz", "images/v5.nii.gz"]
    assert len(splits["train"]) == 2 and {i["key"] for i in splits["train"]} <= {f"images/{n}" for n in names[:4]}
    assert len(splits["all"]) == 6 and splits["summary"]["num_items"] == 6
    # the labeled subset is the bundle's draw: the same for the same seed, nested over sizes
    again = segmentation_splits(tmp_path / "data", tmp_path, "heart", 2, 1, num_labeled=3, seed=3, datalist=dl)
    assert {i["key"] for i in splits["train"]} <= {i["key"] for i in again["train"]}
    every = segmentation_splits(tmp_path / "data", tmp_path, "heart", 2, 1, datalist=dl)
    assert len(every["train"]) == 4


def test_datalist_refusals_name_the_input(tmp_path):
    names = _volumes(tmp_path / "data")
    data = tmp_path / "data"
    with pytest.raises(ValueError, match="does not exist"):
        load_datalist(tmp_path / "missing.json", "training", data)
    overlap = _datalist(tmp_path / "overlap.json", names[:4], names[3:])
    with pytest.raises(ValueError, match="both 'training' and 'validation'"):
        segmentation_splits(data, tmp_path, "heart", 2, 1, datalist=overlap)
    (tmp_path / "nolabel.json").write_text(json.dumps({"training": [{"image": "images/v0.nii.gz"}]}))
    with pytest.raises(ValueError, match=r"training\[0\] has no 'label'"):
        load_datalist(tmp_path / "nolabel.json", "training", data)
    assert load_datalist(tmp_path / "nolabel.json", "training", data, require_label=False)[0]["key"] == "images/v0.nii.gz"
    (tmp_path / "ghost.json").write_text(json.dumps({"training": [{"image": "images/ghost.nii.gz", "label": "x"}]}))
    with pytest.raises(ValueError, match="ghost.nii.gz does not exist"):
        load_datalist(tmp_path / "ghost.json", "training", data)
    with pytest.raises(ValueError, match="non-empty list 'validation'"):
        load_datalist(tmp_path / "nolabel.json", "validation", data, require_label=False)
    with pytest.raises(TypeError, match="section"):
        load_datalist(overlap, 3, data)


def test_pretraining_reads_only_the_training_images(tmp_path):
    names = _volumes(tmp_path / "data")
    dl = _datalist(tmp_path / "split.json", names[:4], names[4:])
    items = prepare_unlabeled(tmp_path / "data", tmp_path, kind="heart", channels=1, spatial_dims=3, datalist=dl)
    assert [i["key"] for i in items] == [f"images/{n}" for n in names[:4]]
    assert all(set(i) == {"image", "key"} for i in items)


def test_autoencoder_augmentation_keeps_a_non_square_size(tmp_path):
    """No 90-degree rotation when the first two axes differ: every sample keeps ``image_size`` (they stack)."""
    names = _volumes(tmp_path / "data")
    chain = autoencoder_transforms(3, [32, 16, 16], (0, 255))
    chain.set_random_state(0)
    shapes = {tuple(chain({"image": str(tmp_path / "data" / "images" / names[0])})["image"].shape) for _ in range(8)}
    assert shapes == {(1, 32, 16, 16)}


def _writer_output(tmp_path, pred: np.ndarray, label: np.ndarray, spacing):
    writer = SegmentationMetricsWriter(tmp_path / "m.json", num_classes=2, spacing=spacing)
    writer.collect(type("E", (), {"state": type("S", (), {
        "output": [{"pred": torch.as_tensor(pred[None]), "label": torch.as_tensor(label[None])}],
        "batch": [{"key": "k"}]})()})())  # fmt: skip
    return writer.write()


def test_jaccard_and_distances_in_mm(tmp_path):
    # ground truth: a 4-voxel-long bar; prediction: the same bar shifted by one voxel along x
    label = np.zeros((10, 6, 6), np.float32)
    label[2:6, 2:4, 2:4] = 1
    pred = np.zeros_like(label)
    pred[3:7, 2:4, 2:4] = 1
    voxels = _writer_output(tmp_path, pred, label, None)
    mm = _writer_output(tmp_path, pred, label, [2.0, 1.0, 1.0])
    inter, union = 3 * 4, 5 * 4
    assert voxels["mean_jaccard"] == pytest.approx(inter / union)
    assert voxels["mean_dice"] == pytest.approx(2 * inter / (2 * 16))
    assert voxels["distance_unit"] == "voxel" and mm["distance_unit"] == "mm" and mm["spacing"] == [2.0, 1.0, 1.0]
    # every surface voxel is 0 or 1 voxel from the other surface, along x only: the mm figures are twice the voxel ones
    assert voxels["mean_hd95"] == pytest.approx(1.0)
    assert mm["mean_hd95"] == pytest.approx(2.0)
    assert 0 < voxels["mean_asd"] < 1 and mm["mean_asd"] == pytest.approx(2 * voxels["mean_asd"])
    assert mm["per_image"][0]["asd"] == [pytest.approx(mm["mean_asd"])]


def test_spacing_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="spacing"):
        SegmentationMetricsWriter(tmp_path / "m.json", num_classes=2, spacing=[1.25, -1.0, 1.0])
    with pytest.raises(TypeError, match="spacing"):
        SegmentationMetricsWriter(tmp_path / "m.json", num_classes=2, spacing="1.25")
    label = np.zeros((6, 6, 6), np.float32)
    label[2:4, 2:4, 2:4] = 1
    with pytest.raises(ValueError, match="one per spatial axis"):
        _writer_output(tmp_path, label, label, [1.0, 1.0])
