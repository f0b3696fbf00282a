"""The volume-slices chain through bundles: every pretraining method on slices, then 2D fine-tuning and evaluation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_cluster.clustering import read_pseudo_class_table
from monai_cluster.losses import GlobalContrastiveLoss
from monai_cluster.workflows import bundle_workflow, run_bundle

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "bundles" / "cluster_contrastive_pretrain"
HEART = REPO / "bundles" / "heart_ct_segmentation"
FEATURES = [4, 4, 8, 8, 16, 4]
PRETRAIN_TOY = {
    "synthetic_n": 3,
    "synthetic_size": [32, 32, 16],
    "image_size": [32, 32],
    "features": FEATURES,
    "autoencoder_channels": [4, 8, 8, 8],
    "autoencoder_epochs": 1,
    "num_clusters": [2, 3],
    "epochs": 1,
    "local_epochs": 1,
    "batch_size": 8,
    "local_num_locations": 8,
    "device": "cpu",
}
SLICES = ("train.json", "train_slices.json")
HEART_TOY = {
    "synthetic_n": 4,
    "synthetic_size": [40, 48, 16],
    "image_size": [32, 32],
    "features": FEATURES,
    "epochs": 1,
    "val_interval": 1,
    "batch_size": 8,
    "num_labeled": 2,
    "device": "cpu",
}
METHODS = {
    "simclr": {"global_strategy": "G_R", "use_pseudo_classes": False, "local_weight": 0.0},
    "cluster_guided": {"global_strategy": "G_R", "use_pseudo_classes": True},
    "G_D": {"global_strategy": "G_D", "use_pseudo_classes": False},
    "G_D-": {"global_strategy": "G_D-", "use_pseudo_classes": False},
    "G_R": {"global_strategy": "G_R", "use_pseudo_classes": False},
    "G_D_masked": {"global_strategy": "G_D", "use_pseudo_classes": True},
    "cluster_guided_staged": {"global_strategy": "G_R", "use_pseudo_classes": True, "schedule": "staged"},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_pretraining_method_on_slices(tmp_path, method):
    settings = {**PRETRAIN_TOY, **METHODS[method]}
    workflow = bundle_workflow(PRETRAIN, SLICES, tmp_path, **settings)
    loss = workflow.parser.get_parsed_content("loss#global_loss")
    assert isinstance(loss, GlobalContrastiveLoss) and loss.strategy == settings["global_strategy"]
    received = []
    forward = loss.forward

    def recording_forward(z1, z2, partitions=None, volume_ids=None, pseudo_classes=None):
        received.append((partitions, pseudo_classes))
        return forward(z1, z2, partitions, volume_ids, pseudo_classes=pseudo_classes)

    loss.forward = recording_forward
    workflow.run()
    workflow.finalize()

    models = tmp_path / "models_slices"
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    BasicUNet(2, 1, 2, features=FEATURES).load_state_dict(state, strict=True)
    items = workflow.parser.get_parsed_content("unlabeled_items")
    assert received and all(p is not None and p.shape == (8,) for p, _ in received)
    record = json.loads((models / "run_settings.json").read_text())["stages"]
    if settings["use_pseudo_classes"]:
        table = read_pseudo_class_table(models / "pseudo_classes.csv", expected_keys=[it["key"] for it in items])
        assert len(table) == 48 and table.num_clusters == (2, 3)  # one row per slice, keyed <volume>#sNN
        assert all(pc is not None and pc.shape == (8, 2) for _, pc in received)
        assert (models / "autoencoder.pt").is_file() and set(record) == {"autoencoder", "cluster", "pretrain"}
    else:
        assert all(pc is None for _, pc in received)
        assert not (models / "autoencoder.pt").exists() and not (models / "pseudo_classes.csv").exists()
        assert set(record) == {"pretrain"}
    assert record["pretrain"]["global_strategy"] == settings["global_strategy"]
    staged = settings.get("schedule") == "staged"
    assert len(list((models / "checkpoints" / "local").glob("checkpoint_epoch*.pt"))) == (1 if staged else 0)


def test_slice_stages_run_on_their_own_and_need_pseudo_classes(tmp_path):
    def run(run_id, **overrides):
        return run_bundle(PRETRAIN, SLICES, tmp_path, run_id=run_id, **{**PRETRAIN_TOY, **overrides})

    with pytest.raises(RuntimeError) as refused:
        run("run_cluster")
    assert re.search(r"stage 'run_cluster' of train_slices.json needs option 'use_pseudo_classes'",
                     str(refused.value.__cause__))  # fmt: skip
    run("run_autoencoder", use_pseudo_classes=True)
    models = tmp_path / "models_slices"
    assert sorted(p.name for p in models.iterdir()) == ["autoencoder.pt", "run_settings.json"]
    run("run_cluster", use_pseudo_classes=True)
    assert read_pseudo_class_table(models / "pseudo_classes.csv").keys[0] == "images/heart_000.nii.gz#s00"
    run("run_pretrain", use_pseudo_classes=True)
    assert (models / "model.pt").is_file()


def test_pretrain_on_slices_then_fine_tune_and_evaluate_per_volume(tmp_path):
    run_bundle(PRETRAIN, SLICES, tmp_path / "cluster_contrastive_pretrain", **PRETRAIN_TOY)
    pretrained = torch.load(tmp_path / "cluster_contrastive_pretrain" / "models_slices" / "model.pt", weights_only=True)

    root = tmp_path / "heart_ct_segmentation"
    workflow = bundle_workflow(HEART, SLICES, root, **HEART_TOY)
    network = workflow.parser.get_parsed_content("network")
    report = network.pretrained_report
    assert report["matched"] == len(pretrained) - 2  # every tensor but the task head (final_conv weight and bias)
    for name, tensor in network.state_dict().items():
        if not name.startswith("final_conv"):
            assert torch.equal(tensor.cpu(), pretrained[name]), name
    data = workflow.parser.get_parsed_content("data")
    selection = data["selection"]
    assert len(selection["labeled"]) == 2 and len(selection["val"]) == 1  # patients, not slices
    assert {it["patient"] for it in data["train"]} == set(selection["labeled"])
    assert len(data["train"]) == 2 * 16 and all("#s" in it["key"] for it in data["train"])
    batch = workflow.parser.get_parsed_content("train#dataset")[0]
    assert batch["image"].shape == (1, 32, 32) and batch["label"].shape == (1, 32, 32)
    workflow.run()
    workflow.finalize()
    models = root / "models_slices"
    assert (models / "model.pt").is_file()
    assert json.loads((models / "selection.json").read_text())["labeled"] == selection["labeled"]

    evaluation = run_bundle(HEART, (*SLICES, "evaluate_slices.json"), root, **HEART_TOY)
    metrics = json.loads((root / "eval_slices" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(evaluation.parser.get_parsed_content("evaluate")))
    assert metrics["num_volumes"] == 1 and metrics["hd95_unit"] == "mm"  # the phantoms carry 1.5 mm voxels
    assert set(metrics["dice"]) == {"left_ventricle", "right_ventricle", "left_atrium", "right_atrium", "myocardium",
                                    "aorta", "pulmonary_artery"}  # fmt: skip
    assert metrics["volumes"][0]["patient"] == selection["val"][0]
    assert 0.0 <= metrics["mean_dice"] <= 1.0


@pytest.mark.parametrize(
    "override, error, match",
    [
        ({"num_labeled": 0}, ValueError, r"option 'num_labeled' \(--num_labeled\)"),
        ({"num_labeled": 4}, ValueError, r"option 'num_labeled' \(--num_labeled\) counts patients: 4 asked"),
        ({"crop_fraction": 2}, ValueError, r"option 'crop_fraction'"),
        ({"val_fraction": 0}, ValueError, r"option 'val_fraction'"),
        ({"image_size": [20, 20]}, ValueError, r"image_size"),
        ({"split_seed": -1}, ValueError, r"option 'split_seed'"),
    ],
)
def test_fine_tune_on_slices_refuses_bad_options_naming_them(tmp_path, override, error, match):
    with pytest.raises(RuntimeError) as raised:
        bundle_workflow(HEART, SLICES, tmp_path, **{**HEART_TOY, "use_pretrained": False, **override})
    cause = raised.value.__cause__
    while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, error), repr(cause)
    assert re.search(match, str(cause)), str(cause)
    assert not (tmp_path / "models_slices").exists()
