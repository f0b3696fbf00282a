"""The local_discrimination_pretrain bundle's train_slices.json at toy size: local discrimination on the 2D slices of
synthetic heart volumes with a step budget, exact resume, bad options refused, weights for the heart slice overlay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from monai_cluster.workflows import bundle_workflow, run_bundle

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
LD = REPO / "bundles" / "local_discrimination_pretrain"
HEART = REPO / "bundles" / "heart_ct_segmentation"
SLICES = ("train.json", "train_slices.json")
FEATURES = [4, 4, 8, 8, 16, 4]
TOY = {
    "synthetic_n": 2,
    "synthetic_size": [32, 32, 16],  # 2 volumes x 16 slices: 4 steps per epoch at batch 8
    "spatial_size": [32, 32],
    "features": FEATURES,
    "embed_dim": 4,
    "num_clusters": 3,
    "grid_size": 4,
    "batch_size": 8,
    "num_cluster_maps": 1,
    "crop_fraction": 0.9,
    "max_steps": 6,
    "warmup_steps": 2,
    "min_lr_ratio": 0.1,
    "device": "cpu",
}


def _cause(err: BaseException) -> BaseException:
    while isinstance(err, RuntimeError) and err.__cause__ is not None:
        err = err.__cause__
    return err


def test_slices_train_within_the_budget_and_load_into_the_heart_slice_overlay(tmp_path):
    root = tmp_path / "local_discrimination_pretrain"
    workflow = bundle_workflow(LD, SLICES, root, **TOY)
    network = workflow.parser.get_parsed_content("network")
    before = {k: v.clone() for k, v in network.backbone_state_dict().items()}
    workflow.run()
    workflow.finalize()
    models = root / "models_slices"
    state = torch.load(models / "model.pt", weights_only=True)
    assert set(state) == set(before) and any(not torch.equal(state[k], before[k]) for k in state)
    info = json.loads((models / "model_info.json").read_text())
    assert info["iterations"] == 6 and info["epochs"] == 2 and info["max_steps"] == 6
    assert set(info["last_loss_components"]) >= {"patch", "mixup", "region", "entropy", "total"}  # every term
    optimizer = workflow.parser.get_parsed_content("optimizer")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # the cosine ends at min_lr_ratio * lr
    items = workflow.parser.get_parsed_content("data")["train"]
    assert len(items) == 32 and all("#s" in it["key"] for it in items)  # one item per slice, images only
    sample = workflow.parser.get_parsed_content("train#dataset")[0]
    assert sample["image"].shape == sample["image_1"].shape == (1, 32, 32)  # two views of one slice
    record = json.loads((models / "run_settings.json").read_text())["stages"]["pretrain"]
    assert record["crop_fraction"] == 0.9 and record["intensity_percentiles"] == [0.5, 99.5]
    assert record["max_steps"] == 6 and "optimizer_name" not in record  # Adam, as before the option
    assert not (root / "models").exists() and len(list((root / "eval_slices" / "cluster_maps").glob("*.png"))) == 1

    heart = bundle_workflow(
        HEART, SLICES, tmp_path / "heart_ct_segmentation", synthetic_n=4, synthetic_size=[40, 48, 16],
        image_size=[32, 32], features=FEATURES, epochs=1, batch_size=8, num_labeled=2, device="cpu",
        pretrained_path=str(models / "model.pt"), pretrained_exclude=["final_conv"],
    )  # fmt: skip
    net = heart.parser.get_parsed_content("network")
    assert net.pretrained_report["matched"] == len(state)  # every tensor but the fresh final_conv
    for name, tensor in net.state_dict().items():
        if not name.startswith("final_conv"):
            assert torch.equal(tensor.cpu(), state[name]), name


def test_resume_after_a_stop_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    """Stopped after epoch 1 of a 6-step budget (4 steps per epoch) and resumed by a fresh workflow, as a new process
    would: the schedule, the views' and the mixup's random draws continue, so the weights equal an uninterrupted run."""
    run_bundle(LD, SLICES, tmp_path / "whole", **TOY)
    cut = bundle_workflow(LD, SLICES, tmp_path / "cut", **TOY)

    def stop(engine):
        raise KeyboardInterrupt("stopped after epoch 1")

    cut.parser.get_parsed_content("train#trainer").add_event_handler(Events.EPOCH_STARTED(once=2), stop)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    assert not (tmp_path / "cut" / "models_slices" / "model.pt").exists()
    run_bundle(LD, SLICES, tmp_path / "cut", resume=True, **TOY)
    whole = torch.load(tmp_path / "whole" / "models_slices" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "models_slices" / "model.pt", weights_only=True)
    assert set(whole) == set(resumed) and len(whole) > 10
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    with pytest.raises(RuntimeError) as refused:  # another budget is another schedule: not the same run
        bundle_workflow(LD, SLICES, tmp_path / "cut", resume=True, **{**TOY, "max_steps": 8}).run()
    assert "max_steps" in str(_cause(refused.value))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"crop_fraction": 1.5}, "'crop_fraction'"),
        ({"intensity_percentiles": [99.5, 0.5]}, "'intensity_percentiles'"),
        ({"data_kind": "fundus"}, "'data_kind'"),
        ({"spatial_dims": 3}, "'spatial_dims'"),
        ({"max_steps": 0}, "'max_steps'"),
        ({"max_steps": None, "warmup_steps": 2}, "'warmup_steps'"),
        ({"optimizer_name": "Lion"}, "'optimizer_name'"),
        ({"max_steps": 3, "warmup_steps": 0, "warmup_epochs": 1}, "'warmup_epochs'"),
        ({"shape_prior": True}, "'prior_mask_dir'"),
    ],
)
def test_bad_options_are_refused_before_training_naming_them(tmp_path, override, message):
    with pytest.raises(RuntimeError) as refused:
        bundle_workflow(LD, SLICES, tmp_path, **{**TOY, **override})
    assert message in str(_cause(refused.value))
    assert not (tmp_path / "models_slices").exists()
