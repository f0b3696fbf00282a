"""Pretraining on 2D slices of 3D volumes: slice listing, base chain, option checks and the train_slices overlay."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import BasicUNet
from monai.transforms import Compose

from monai_cluster import transforms
from monai_cluster.losses import GlobalContrastiveLoss
from monai_cluster.workflows import (
    TakeSliced,
    bundle_workflow,
    check_slice_options,
    list_volume_slices,
    prepare_volume_slices,
    require_pseudo_classes,
    slice_base_transforms,
)
from monai_cluster.workflows.pretrain_slices import ScalePercentilesd

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cluster_contrastive_pretrain"
FEATURES = [4, 4, 8, 8, 16, 4]


def _write(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(path))
    return str(path)


def _volume_items(root: Path, shapes: dict[str, tuple]) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image": _write(root / key, rng.random(shape)), "key": key} for key, shape in shapes.items()]


# ------------------------------------------------------------------------------------------------ slice listing


def test_slices_counts_keys_partitions_and_volume_ids(tmp_path):
    items = _volume_items(tmp_path, {"images/a.nii.gz": (6, 5, 5), "images/b.nii.gz": (6, 5, 9)})
    slices = list_volume_slices(items, num_partitions=4)
    assert len(slices) == 14
    assert [s["key"] for s in slices[:5]] == [f"images/a.nii.gz#s0{i}" for i in range(5)]
    assert slices[5]["key"] == "images/b.nii.gz#s00" and slices[-1]["key"] == "images/b.nii.gz#s08"
    assert [s["slice"] for s in slices] == list(range(5)) + list(range(9))
    assert [s["num_slices"] for s in slices] == [5] * 5 + [9] * 9
    assert [s["volume_id"] for s in slices] == [0] * 5 + [1] * 9
    # floor(slice * 4 / num_slices)
    assert [s["partition"] for s in slices] == [0, 0, 1, 2, 3] + [0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert all(type(s["partition"]) is int and type(s["volume_id"]) is int for s in slices)
    assert {s["volume_key"] for s in slices} == {"images/a.nii.gz", "images/b.nii.gz"}
    assert all(s["image"] == items[s["volume_id"]]["image"] for s in slices)
    one = list_volume_slices(items, num_partitions=1, axis=0)  # along the first axis: 6 slices each, 1 partition
    assert len(one) == 12 and {s["partition"] for s in one} == {0}


def test_slice_keys_widen_with_the_slice_count(tmp_path):
    items = _volume_items(tmp_path, {"v.nii": (2, 2, 120)})
    keys = [s["key"] for s in list_volume_slices(items, num_partitions=2)]
    assert keys[0] == "v.nii#s000" and keys[-1] == "v.nii#s119" and len(set(keys)) == 120


def test_slice_count_comes_from_the_header_only(tmp_path):
    path = tmp_path / "vol.nii"
    _write(path, np.ones((16, 16, 7)))
    path.write_bytes(path.read_bytes()[:400])  # header intact, voxels cut off: loading the data would fail
    slices = list_volume_slices([{"image": str(path), "key": "vol.nii"}], num_partitions=2)
    assert len(slices) == 7 and slices[-1]["partition"] == 1


def test_acdc_layout_lists_images_not_labels(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("patient001_frame01", "patient001_frame02", "patient002_frame01"):
        _write(tmp_path / "images" / f"{name}.nii.gz", rng.random((8, 8, 6)))
        _write(tmp_path / "labels" / f"{name}.nii.gz", np.zeros((8, 8, 6)))
    slices = prepare_volume_slices(tmp_path, tmp_path / "bundle", num_partitions=3)
    assert len(slices) == 18
    names = ("patient001_frame01", "patient001_frame02", "patient002_frame01")
    assert {s["volume_key"] for s in slices} == {f"images/{n}.nii.gz" for n in names}
    assert slices[0]["key"] == "images/patient001_frame01.nii.gz#s00"
    assert sorted({s["volume_id"] for s in slices}) == [0, 1, 2]


@pytest.mark.parametrize(
    "shape, match",
    [
        ((8, 6), r"flat\.nii\.gz \(key 'flat\.nii\.gz'\) must be a 3D volume \(H, W, D\).*\(8, 6\)"),
        ((8, 6, 4, 2), r"flat\.nii\.gz .*must be a 3D volume.*\(8, 6, 4, 2\)"),
        ((8, 6, 3), r"flat\.nii\.gz .*has 3 slices along axis 2, fewer than num_partitions=4"),
    ],
)
def test_unsliceable_volume_is_named(tmp_path, shape, match):
    items = _volume_items(tmp_path, {"ok.nii.gz": (4, 4, 8), "flat.nii.gz": shape})
    with pytest.raises(ValueError, match=match):
        list_volume_slices(items, num_partitions=4)


def test_bad_listings(tmp_path):
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("not a volume")
    with pytest.raises(ValueError, match=r"notes\.nii\.gz \(key 'notes'\) could not be read as NIfTI"):
        list_volume_slices([{"image": str(bad), "key": "notes"}])
    items = _volume_items(tmp_path, {"a.nii.gz": (4, 4, 4)})
    with pytest.raises(ValueError, match="repeats the key 'a.nii.gz'"):
        list_volume_slices(items + items)
    with pytest.raises(ValueError, match=r"items\[0\] lacks \['key'\]"):
        list_volume_slices([{"image": items[0]["image"]}])
    with pytest.raises(ValueError, match="at least one volume"):
        list_volume_slices([])
    with pytest.raises(TypeError, match="items must be a list"):
        list_volume_slices(items[0])
    with pytest.raises(ValueError, match="num_partitions"):
        list_volume_slices(items, num_partitions=0)


# --------------------------------------------------------------------------------------------------- base chain


def _ramp_volume(tmp_path: Path, shape=(32, 32, 5)) -> list[dict]:
    """Voxels of slice s hold the value s: percentile scaling over the volume maps slice s to s / (D - 1)."""
    ramp = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape)
    path = _write(tmp_path / "ramp.nii.gz", ramp)
    return list_volume_slices([{"image": path, "key": "ramp.nii.gz"}], num_partitions=2)


def test_base_chain_shape_dtype_range_and_slice_content(tmp_path):
    slices = _ramp_volume(tmp_path)
    chain = Compose(slice_base_transforms([32, 32], percentiles=(0.0, 100.0)))
    for item in slices:
        out = chain(item)
        image = out["image"]
        assert type(image) is torch.Tensor and not isinstance(image, MetaTensor)
        assert image.shape == (1, 32, 32) and image.dtype == torch.float32
        torch.testing.assert_close(image, torch.full((1, 32, 32), item["slice"] / 4))  # the right slice, scaled
        assert out["partition"] == item["partition"] and out["volume_id"] == 0 and type(out["partition"]) is int


def test_base_chain_keeps_the_aspect_ratio_and_pads_with_zero(tmp_path):
    slices = _ramp_volume(tmp_path, shape=(64, 32, 5))
    image = Compose(slice_base_transforms(32, percentiles=(0.0, 100.0)))(slices[4])["image"]
    assert image.shape == (1, 32, 32)
    torch.testing.assert_close(image[:, :, 8:24], torch.ones(1, 32, 16))  # (64, 32) -> (32, 16), centred
    assert image[:, :, :8].abs().max() == 0 and image[:, :, 24:].abs().max() == 0


def test_base_chain_percentiles_clip_outliers(tmp_path):
    rng = np.random.default_rng(2)
    volume = rng.normal(100.0, 10.0, (32, 32, 4)).astype(np.float32)
    volume[0, 0, 0] = 1e6  # one bright outlier does not compress the rest
    path = _write(tmp_path / "mri.nii.gz", volume)
    item = list_volume_slices([{"image": path, "key": "mri.nii.gz"}], num_partitions=1)[1]
    image = Compose(slice_base_transforms([32, 32]))(item)["image"]
    assert image.min() >= 0 and image.max() <= 1
    assert 0.4 < image.mean() < 0.6 and image.std() > 0.1


def test_base_chain_fixed_window_for_ct(tmp_path):
    volume = np.broadcast_to(np.linspace(-1000, 1000, 32, dtype=np.float32)[:, None, None], (32, 32, 3))
    path = _write(tmp_path / "ct.nii.gz", volume)
    item = list_volume_slices([{"image": path, "key": "ct.nii.gz"}], num_partitions=1)[0]
    image = Compose(slice_base_transforms([32, 32], intensity_range=(-300, 500)))(item)["image"]
    expected = np.clip((np.linspace(-1000, 1000, 32) + 300) / 800, 0, 1)
    np.testing.assert_allclose(image[0, :, 0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"image_size": [40, 40]}, ValueError, "image_size"),
        ({"image_size": [32, 32], "percentiles": (99.5, 0.5)}, ValueError, "intensity_percentiles"),
        ({"image_size": [32, 32], "percentiles": (0.5, 150)}, ValueError, "intensity_percentiles"),
        ({"image_size": [32, 32], "intensity_range": [100.0]}, ValueError, "intensity_range"),
        ({"image_size": [32, 32], "intensity_range": "wide"}, TypeError, "intensity_range"),
    ],
)
def test_base_chain_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        slice_base_transforms(**kwargs)


def test_moved_transforms_stay_importable_from_their_former_home():
    assert TakeSliced is transforms.TakeSliced
    assert ScalePercentilesd is transforms.ScalePercentilesd


# ------------------------------------------------------------------------------------------------------ options

GOOD = {
    "global_strategy": "G_D",
    "num_partitions": 4,
    "intensity_range": None,
    "intensity_percentiles": [0.5, 99.5],
    "use_pseudo_classes": False,
    "crop_fraction": None,
    "spatial_dims": 2,
    "in_channels": 1,
}


def test_slice_options_normalise():
    checked = check_slice_options(**{**GOOD, "num_partitions": 3.0, "intensity_range": [-300, 500]})
    assert checked["num_partitions"] == 3 and checked["intensity_range"] == [-300.0, 500.0]


@pytest.mark.parametrize(
    "override, error, match",
    [
        ({"global_strategy": "G_X"}, ValueError, r"option 'global_strategy' .*one of \['G_D', 'G_D-', 'G_R'\]"),
        ({"num_partitions": 0}, ValueError, r"option 'num_partitions' .*integer >= 1"),
        ({"spatial_dims": 3}, ValueError, r"option 'spatial_dims' must be 2 with train_slices.json"),
        ({"in_channels": 3}, ValueError, r"option 'in_channels' must be 1"),
        ({"crop_fraction": 1.5}, ValueError, r"option 'crop_fraction' \(--crop_fraction\) must lie in \(0, 1\]"),
        ({"crop_fraction": 0}, ValueError, r"option 'crop_fraction' .*> 0"),
        ({"intensity_percentiles": [99.5, 0.5]}, ValueError, r"option 'intensity_percentiles' .*low < high"),
        ({"intensity_range": [500, -300]}, ValueError, r"option 'intensity_range' .*low < high"),
    ],
)
def test_slice_options_errors_name_the_option(override, error, match):
    with pytest.raises(error, match=match):
        check_slice_options(**{**GOOD, **override})


def test_clustering_stages_need_pseudo_classes():
    with pytest.raises(ValueError, match=r"stage 'run_cluster' of train_slices.json needs option 'use_pseudo_classes'"):
        require_pseudo_classes(False, "run_cluster")
    require_pseudo_classes("true", "run_cluster")


# ------------------------------------------------------------------------------------------------------- bundle

TOY = {
    "synthetic_n": 3,
    "synthetic_size": [32, 32, 16],
    "image_size": [32, 32],
    "features": FEATURES,
    "epochs": 1,
    "batch_size": 8,
    "local_num_locations": 8,
    "device": "cpu",
}
CONFIGS = ("train.json", "train_slices.json")


@pytest.mark.bundle
@pytest.mark.parametrize("schedule", ["joint", "staged"])
def test_overlay_pretrains_on_slices_with_partition_aware_loss(tmp_path, schedule):
    workflow = bundle_workflow(BUNDLE, CONFIGS, tmp_path, schedule=schedule, local_epochs=1, **TOY)
    loss = workflow.parser.get_parsed_content("loss#global_loss")
    assert isinstance(loss, GlobalContrastiveLoss) and loss.strategy == "G_D"
    received = []
    forward = loss.forward

    def recording_forward(z1, z2, partitions=None, volume_ids=None):
        received.append((z1.shape, partitions, volume_ids))
        return forward(z1, z2, partitions, volume_ids)

    loss.forward = recording_forward
    workflow.run()
    workflow.finalize()

    items = workflow.parser.get_parsed_content("unlabeled_items")
    assert len(items) == 48 and items[0]["key"] == "images/heart_000.nii.gz#s00"
    assert len(received) == 6  # 48 slices / batch 8, one view pair per step (the staged local stage has no global loss)
    for shape, partitions, volume_ids in received:
        assert shape[0] == 8
        assert partitions is not None and partitions.shape == (8,) and partitions.dtype == torch.int64
        assert 0 <= partitions.min() and partitions.max() < 4
        assert volume_ids is not None and volume_ids.shape == (8,) and volume_ids.max() < 3
    seen = torch.cat([p for _, p, _ in received])
    assert torch.bincount(seen, minlength=4).tolist() == [12, 12, 12, 12]  # each slice once per epoch

    models = tmp_path / "models_slices"
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    net = BasicUNet(2, 1, 2, features=FEATURES)
    assert set(state) == set(net.state_dict())
    net.load_state_dict(state, strict=True)
    summary = json.loads((models / "pretrain_summary.json").read_text())
    assert summary["epochs"] == 1
    assert all("global" in epoch for epoch in summary["losses"])
    local_checkpoints = list((models / "checkpoints" / "local").glob("checkpoint_epoch*.pt"))
    assert len(local_checkpoints) == (1 if schedule == "staged" else 0)  # the staged local stage ran once
    assert not (tmp_path / "models").exists()  # the 2D RGB weights the dermoscopy bundle reads are untouched


@pytest.mark.bundle
def test_overlay_strategy_and_partitions_reach_the_loss(tmp_path):
    workflow = bundle_workflow(BUNDLE, CONFIGS, tmp_path, global_strategy="G_D-", num_partitions=2, **TOY)
    assert workflow.parser.get_parsed_content("loss#global_loss").strategy == "G_D-"
    items = workflow.parser.get_parsed_content("unlabeled_items")
    assert sorted({item["partition"] for item in items}) == [0, 1]


@pytest.mark.bundle
@pytest.mark.parametrize(
    "override, error, match",
    [
        ({"global_strategy": "G_X"}, ValueError, r"option 'global_strategy'"),
        ({"num_partitions": 0}, ValueError, r"option 'num_partitions'"),
        ({"spatial_dims": 3}, ValueError, r"option 'spatial_dims' must be 2"),
        ({"epochs": "abc"}, TypeError, r"option 'epochs'"),
    ],
)
def test_overlay_bad_option_fails_before_anything_runs(tmp_path, override, error, match):
    with pytest.raises(RuntimeError) as raised:
        bundle_workflow(BUNDLE, CONFIGS, tmp_path, **{**TOY, **override})
    assert isinstance(raised.value.__cause__, error)
    assert re.search(match, str(raised.value.__cause__)), str(raised.value.__cause__)
    assert not (tmp_path / "synthetic_data").exists() and not (tmp_path / "models_slices").exists()
