"""The heart_ct_segmentation bundle at toy size: 3D train, sliding-window evaluate, NIfTI inference, checks, export."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, verify_net_in_out

from monai_cluster.data import HEART_LABELS
from monai_cluster.workflows.segmentation_bundle import bundle_workflow, run_bundle, torchrun_command

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "heart_ct_segmentation"
CONFIGS = BUNDLE / "configs"
FEATURES = [4, 4, 8, 8, 16, 4]
TOY = {
    "synthetic_n": 3,
    "synthetic_size": 32,
    "roi_size": [32, 32, 32],
    "features": FEATURES,
    "device": "cpu",
}


def _workflow(root: Path, configs=("train.json",), **overrides):
    return bundle_workflow(BUNDLE, configs, bundle_root=root, **{**TOY, **overrides})


def _run(root: Path, configs=("train.json",), **overrides):
    return run_bundle(BUNDLE, configs, bundle_root=root, **{**TOY, **overrides})


def _dice_from_written_masks(mask_dir: Path, items: list[dict], num_classes: int) -> list[list[float]]:
    """Per item, the foreground Dice ``2|P & L| / (|P| + |L|)`` (1 when both are empty) of the mask inference wrote
    for its image against its label file, by hand."""
    out = []
    for item in items:
        (mask,) = [p for p in mask_dir.glob("*.nii.gz") if p.name.endswith("__" + Path(item["image"]).name)]
        pred = np.asarray(nib.load(mask).dataobj)
        label = np.asarray(nib.load(item["label"]).dataobj).round().astype(int)
        assert pred.shape == label.shape, mask
        dice = []
        for c in range(1, num_classes):
            p, t = pred == c, label == c
            dice.append(1.0 if p.sum() + t.sum() == 0 else 2.0 * (p & t).sum() / (p.sum() + t.sum()))
        out.append(dice)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("heart")
    workflow = _run(root, epochs=2, val_interval=1, use_pretrained=False)
    return {"root": root, "data": workflow.parser.get_parsed_content("data")}


def test_train_evaluate_with_mmwhs_classes(trained):
    root = trained["root"]
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state["final_conv.weight"].shape[:2] == (8, FEATURES[-1])  # 8 classes, 3D kernel
    assert state["final_conv.weight"].ndim == 5
    _run(root, configs=("train.json", "evaluate.json"))
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == len(trained["data"]["val"]) == 1
    assert list(metrics["per_class"]) == [HEART_LABELS[i] for i in range(1, 8)]
    assert len(metrics["per_image"][0]["dice"]) == 7
    # the Dice the bundle reports equals one recomputed by hand from the mask inference writes for that volume
    # (same network, same sliding windows) and the label file
    _run(root, configs=("inference.json",), output_dir=str(root / "eval_masks"))
    (dice,) = _dice_from_written_masks(root / "eval_masks" / "masks", trained["data"]["val"], 8)
    np.testing.assert_allclose(metrics["per_image"][0]["dice"], dice, atol=1e-6)
    assert metrics["mean_dice"] == pytest.approx(np.mean(dice))
    assert metrics["per_class"][HEART_LABELS[1]]["dice"]["mean"] == pytest.approx(dice[0])


def test_inference_writes_nifti_with_the_input_affine(trained):
    root = trained["root"]
    _run(root, configs=("inference.json",), roi_size=[32, 32, 16])  # sliding windows over each volume
    masks = sorted((root / "outputs" / "masks").glob("*.nii.gz"))
    assert len(masks) == 3 and len(list((root / "outputs" / "overlays").glob("*.png"))) == 3
    assert masks[0].name.startswith("images__")  # named by the key, folders joined by "__"
    source = nib.load(root / "synthetic_data" / "images" / masks[0].name.split("__")[-1])
    pred = nib.load(masks[0])
    assert pred.shape == source.shape
    np.testing.assert_allclose(pred.affine, source.affine)
    assert np.asarray(pred.dataobj).max() < 8


def test_labels_outside_num_classes_stop_before_training(tmp_path):
    with pytest.raises(RuntimeError) as info:  # in initialize, before anything is built or written
        _workflow(tmp_path, num_classes=4, use_pretrained=False)  # the phantoms have labels 1..7
    cause = str(info.value.__cause__)
    assert "labels/heart_000.nii.gz" in cause and "[0, 4)" in cause
    assert not (tmp_path / "models").exists()


def test_mismatched_pretrained_checkpoint_is_a_clear_error(tmp_path):
    from monai.networks.nets import BasicUNet

    path = tmp_path / "pretrain_2d.pt"
    torch.save(BasicUNet(2, 3, 2, features=FEATURES).state_dict(), path)  # a 2D RGB checkpoint
    with pytest.raises(RuntimeError) as info:  # in initialize, before anything is written
        _workflow(tmp_path, use_pretrained=True, pretrained_path=str(path))
    message = str(info.value.__cause__)
    assert str(path) in message and "another shape" in message


def test_acdc_mri_with_four_classes(real_data, tmp_path):
    acdc = real_data("heart", "acdc")
    dataset = tmp_path / "acdc"
    for sub in ("images", "labels"):
        (dataset / sub).mkdir(parents=True)
        for name in ("patient001_frame01.nii.gz", "patient002_frame01.nii.gz", "patient003_frame01.nii.gz"):
            (dataset / sub / name).symlink_to(acdc / sub / name)  # links, the data is not copied
    workflow = _run(
        tmp_path / "root",
        dataset_dir=str(dataset),
        num_classes=4,
        intensity="mri",
        roi_size=[64, 64, 16],
        epochs=1,
        use_pretrained=False,
    )
    state = torch.load(tmp_path / "root" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state["final_conv.weight"].shape[0] == 4
    train_dice = workflow.parser.get_parsed_content("train#trainer").state.metrics["train_mean_dice"]
    assert 0.0 < train_dice < 1.0  # foreground was predicted somewhere, not everywhere right
    # on the real volumes too, the evaluated Dice is the Dice of the masks inference writes (MRI scaling, 3 classes)
    mri = {"dataset_dir": str(dataset), "num_classes": 4, "intensity": "mri", "roi_size": [64, 64, 16]}
    _run(tmp_path / "root", configs=("train.json", "evaluate.json"), eval_split="all", **mri)
    metrics = json.loads((tmp_path / "root" / "eval" / "metrics.json").read_text())
    _run(tmp_path / "root", configs=("inference.json",), output_dir=str(tmp_path / "masks"), **mri)
    items = workflow.parser.get_parsed_content("data")["all"]
    by_key = {Path(record["key"]).name: record["dice"] for record in metrics["per_image"]}
    expected = _dice_from_written_masks(tmp_path / "masks" / "masks", items, 4)
    assert len(by_key) == len(items) == 3
    for item, dice in zip(items, expected):
        np.testing.assert_allclose(by_key[Path(item["image"]).name], dice, atol=1e-6)


def test_verify_net_in_out_and_torchscript_export(trained, tmp_path):
    common = {"meta_file": str(CONFIGS / "metadata.json"), "config_file": str(CONFIGS / "inference.json")}
    verify_net_in_out(net_id="network_def", device="cpu", features=FEATURES, **common)  # n=1: the smallest input
    ts_path = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(trained["root"] / "models" / "model.pt"),
        features=FEATURES,
        **common,
    )
    scripted = torch.jit.load(str(ts_path))
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert scripted(x).shape == (1, 8, 32, 32, 32)


def test_multi_gpu_overlay_runs_with_two_cpu_processes(tmp_path):
    settings = {**TOY, "synthetic_n": 4, "epochs": 1, "val_interval": 1, "use_pretrained": False, "backend": "gloo"}
    settings.pop("device")  # the overlay picks each rank's device from the backend
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = torchrun_command(BUNDLE, master_port=29644, bundle_root=str(tmp_path), **settings)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
