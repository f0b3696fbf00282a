"""Workflow pieces of the local-discrimination bundle: data, options, best-cluster Dice, export, maps, priors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet
from monai.transforms import Compose, EnsureTyped, LoadImaged, Resized, ScaleIntensityd

from monai_cluster.data import read_image
from monai_cluster.networks import LocalDiscriminationNet, load_pretrained
from monai_cluster.handlers import BestClusterDice, LossComponentsLogger
from monai_cluster.workflows.local_discrimination import (
    check_local_discrimination_slice_options,
    export_backbone,
    load_prior_masks,
    local_discrimination_run_settings,
    prepare_pretrain_data,
    save_cluster_maps,
    validate_pretrain_options,
)

FEATURES = (4, 4, 8, 8, 16, 4)


def test_synthetic_fundus_is_generated_once_and_split(tmp_path):
    data = prepare_pretrain_data(None, tmp_path, n=5, size=32, num_val=2)
    assert len(data["train"]) == 3 and len(data["val"]) == 2
    assert all("label" in it for it in data["val"])
    first = (tmp_path / "synthetic_data" / "images" / "FUNDUS0000.png").stat().st_mtime_ns
    again = prepare_pretrain_data(None, tmp_path, n=5, size=32, num_val=0)
    assert again["val"] == [] and len(again["train"]) == 5
    assert (tmp_path / "synthetic_data" / "images" / "FUNDUS0000.png").stat().st_mtime_ns == first
    assert read_image(data["train"][0]["image"]).array.shape == (32, 32, 3)
    with pytest.raises(ValueError, match="num_val"):
        prepare_pretrain_data(None, tmp_path, n=5, size=32, num_val=4)
    with pytest.raises(ValueError, match="kind must be one of"):
        prepare_pretrain_data(None, tmp_path, kind="retina")


def test_unlabeled_folder_pretrains_without_validation(tmp_path):
    labelled = prepare_pretrain_data(None, tmp_path / "a", n=3, size=32, num_val=0)["train"]
    folder = tmp_path / "plain"
    folder.mkdir()
    for i, it in enumerate(labelled):
        (folder / f"img{i}.png").write_bytes(open(it["image"], "rb").read())
    data = prepare_pretrain_data(folder, tmp_path, num_val=1)
    assert len(data["train"]) == 3 and data["val"] == [] and "label" not in data["train"][0]


def test_real_drive_listing(real_data):
    drive = real_data("retina", "drive")
    data = prepare_pretrain_data(drive, "unused", num_val=2, check=False)
    assert len(data["train"]) == 38 and len(data["val"]) == 2
    assert data["val"][0]["label"].endswith(".gif") and set(data["train"][0]) == {"image", "label", "key"}


def test_options_are_checked_by_name(tmp_path):
    ok = validate_pretrain_options(bundle_root=str(tmp_path), epochs=2, shape_prior="true", dataset_dir=None)
    assert ok["shape_prior"] is True and ok["epochs"] == 2
    with pytest.raises(TypeError, match="'epochs'"):
        validate_pretrain_options(epochs="abc")
    with pytest.raises(ValueError, match="'batch_size'"):
        validate_pretrain_options(batch_size=1)
    with pytest.raises(ValueError, match="'dataset_dir'.*existing folder"):
        validate_pretrain_options(dataset_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown option"):
        validate_pretrain_options(epoch=3)


def test_run_settings_record_the_budget_and_slices_only_where_they_change_the_training(tmp_path):
    names = ("seed", "dataset_dir", "data_kind", "num_val", "spatial_dims", "in_channels", "spatial_size", "features",
             "embed_dim", "num_clusters", "assignment_activation", "batch_size", "learning_rate", "patch_weight",
             "mixup_weight", "region_weight", "entropy_weight", "patch_temperature", "region_temperature",
             "grid_size", "shape_prior")  # fmt: skip
    options = {name: 1 for name in names} | {"shape_prior": False}
    data = {"train": [{"key": "a"}, {"key": "b"}], "val": []}
    plain = {"max_steps": None, "warmup_steps": 0, "min_lr_ratio": 0.0, "optimizer_name": "Adam", "weight_decay": 0.0}
    before = local_discrimination_run_settings(options, data)["pretrain"]
    assert local_discrimination_run_settings(options, data, budget=plain)["pretrain"] == before  # old runs resume
    budget = {**plain, "max_steps": 30, "min_lr_ratio": 0.1}
    slices = check_local_discrimination_slice_options(None, [1, 99], 0.5, 2, 1, "heart", False, None)
    recorded = local_discrimination_run_settings(options, data, budget=budget, slice_options=slices)["pretrain"]
    assert {k: v for k, v in recorded.items() if k not in before} == {
        "max_steps": 30, "min_lr_ratio": 0.1, "intensity_range": None, "intensity_percentiles": [1.0, 99.0],
        "crop_fraction": 0.5,
    }  # fmt: skip
    with pytest.raises(ValueError, match="'in_channels' must be 1"):
        check_local_discrimination_slice_options(None, [1, 99], None, 2, 3, "heart", False, None)
    assert check_local_discrimination_slice_options(None, [1, 99], None, 2, 1, "heart", True, str(tmp_path))


def test_best_cluster_dice_picks_the_matching_cluster():
    label = torch.zeros(2, 1, 4, 4)
    label[:, :, :2] = 1  # top half
    logits = torch.zeros(2, 3, 4, 4)
    logits[:, 1, :2] = 5.0  # cluster 1 = top half (plus one stray pixel below)
    logits[:, 1, 2, 0] = 5.0
    logits[:, 2, 2:] = 4.0
    metric = BestClusterDice()
    metric.update((torch.softmax(logits, 1), label))
    assert metric.compute() == pytest.approx(2 * 16 / (18 + 16))
    assert metric.best_cluster == 1
    output = {"pred": {"assignment": torch.softmax(logits, 1)}, "label": label}
    assert metric._output_transform(output)[1] is label
    metric.reset()
    with pytest.raises(ValueError, match="at least one update"):
        metric.compute()
    with pytest.raises(ValueError, match="label shape"):
        metric.update((torch.softmax(logits, 1), label[:, :, :2]))


def test_export_backbone_loads_into_basicunet_and_maps_are_written(tmp_path):
    net = LocalDiscriminationNet(2, 3, embed_dim=4, num_clusters=3, features=FEATURES)
    path = export_backbone(net, tmp_path / "models" / "model.pt", info={"features": list(FEATURES)})
    assert (tmp_path / "models" / "model_info.json").is_file()
    target = BasicUNet(2, 3, 2, features=FEATURES)
    report = load_pretrained(target, path)
    assert report["matched"] == len(target.state_dict()) - 2  # all but final_conv weight and bias
    torch.testing.assert_close(target.conv_0.conv_0.conv.weight, net.backbone.conv_0.conv_0.conv.weight)
    with pytest.raises(TypeError, match="backbone_state_dict"):
        export_backbone(target, tmp_path / "x.pt")

    items = prepare_pretrain_data(None, tmp_path, n=3, size=32, num_val=0)["train"]
    transform = Compose([
        LoadImaged(["image", "label"], reader="PILReader", image_only=True, ensure_channel_first=True),
        ScaleIntensityd("image"),
        Resized("image", (32, 32)),
        EnsureTyped("image", dtype=torch.float32, track_meta=False),
    ])
    written = save_cluster_maps(net, items, transform, tmp_path / "eval", num_images=2)
    assert len(written) == 2
    panel = read_image(written[0]).array
    assert panel.shape == (32, 96, 3) and net.training


def test_prior_masks_and_loss_logger(tmp_path):
    masks = load_prior_masks(None, tmp_path, (32, 32), n=3)
    assert masks.shape == (3, 1, 32, 32) and set(np.unique(masks.numpy())) <= {0.0, 1.0} and masks.sum() > 0
    with pytest.raises(ValueError, match="prior mask folder"):
        load_prior_masks(tmp_path / "missing", tmp_path, (32, 32))
    with pytest.raises(ValueError, match="2D"):
        load_prior_masks(None, tmp_path, (8, 8, 8))
    with pytest.raises(TypeError, match="last_components"):
        LossComponentsLogger(torch.nn.MSELoss())
