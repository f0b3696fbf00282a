"""The local_discrimination_pretrain bundle at toy size: 2D run and its outputs, shape prior, bad overrides, 3D."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.networks.nets import BasicUNet

from monai_cluster.networks import load_pretrained
from monai_cluster.workflows import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "local_discrimination_pretrain" / "configs"
FEATURES = [4, 4, 8, 8, 16, 4]
TOY = {
    "synthetic_n": 5,
    "synthetic_size": 32,
    "num_val": 1,
    "spatial_size": [32, 32],
    "features": FEATURES,
    "embed_dim": 4,
    "num_clusters": 3,
    "grid_size": 4,
    "epochs": 1,
    "val_interval": 1,
    "batch_size": 2,
    "num_cluster_maps": 2,
    "device": "cpu",
}


def _run(root: Path, configs=("train.json",), **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / c) for c in configs],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        bundle_root=str(root),
        **{**TOY, **overrides},
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def _error_chain(err: BaseException) -> str:
    text = []
    while err is not None:
        text.append(str(err))
        err = err.__cause__ or err.__context__
    return " | ".join(text)


def test_2d_run_writes_basicunet_weights_maps_logs_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    initial = BasicUNet(2, 3, 2, features=FEATURES)
    workflow = _run(tmp_path)
    model = tmp_path / "models" / "model.pt"
    target = BasicUNet(2, 3, 2, features=FEATURES)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_pretrained(target, model)
    assert report["matched"] == len(before) - 2  # every tensor but final_conv
    state = torch.load(model, weights_only=True)
    net = workflow.parser.get_parsed_content("network")
    torch.testing.assert_close(state["conv_0.conv_0.conv.weight"], net.backbone.conv_0.conv_0.conv.weight)
    assert not torch.equal(target.conv_0.conv_0.conv.weight, initial.conv_0.conv_0.conv.weight)
    # the dermoscopy fine-tune bundle's loader (BasicUNet, in_channels=3) starts from these tensors
    from monai_cluster.workflows.segmentation_network import initialize_network

    finetune = initialize_network(BasicUNet(2, 3, 2, features=FEATURES), "cpu", "true", str(model))
    assert finetune.pretrained_report["matched"] == report["matched"]
    torch.testing.assert_close(finetune.down_4.convs.conv_1.conv.weight, net.backbone.down_4.convs.conv_1.conv.weight)
    maps = sorted((tmp_path / "eval" / "cluster_maps").glob("*.png"))
    assert len(maps) == 2
    assert list((tmp_path / "runs").glob("events.out.tfevents.*"))
    assert list((tmp_path / "runs" / "loss_terms").glob("events.out.tfevents.*"))
    checkpoints = list_checkpoints(tmp_path / "models")
    assert len(checkpoints) == 1 and load_checkpoint(checkpoints[0])["epoch"] == 1
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    assert 0.0 < evaluator.state.metrics["val_best_cluster_dice"] <= 1.0
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert set(trainer.state.loss_components) >= {"patch", "mixup", "region", "entropy", "total"}


def test_shape_prior_switch_trains_the_discriminator(tmp_path):
    workflow = _run(tmp_path, shape_prior=True, num_val=0, prior_mask_dir=None)
    loss = workflow.parser.get_parsed_content("loss")
    assert loss.weights["shape_prior"] == 1.0 and "shape_prior" in loss.last_components
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.shape_prior_d_loss > 0


def test_warmup_epochs_train_patch_and_mixup_first(tmp_path):
    seen = []
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        bundle_root=str(tmp_path), **{**TOY, "epochs": 2, "warmup_epochs": 1, "num_val": 0},
    )  # fmt: skip
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    loss = workflow.parser.get_parsed_content("loss")
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append((e.state.epoch, tuple(sorted(loss.last_components))))
    )
    workflow.run()
    workflow.finalize()
    assert {terms for epoch, terms in seen if epoch == 1} == {("mixup", "patch", "total")}
    assert {terms for epoch, terms in seen if epoch == 2} == {("entropy", "mixup", "patch", "region", "total")}
    default = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        bundle_root=str(tmp_path / "d"), **{**TOY, "epochs": 20},
    )  # fmt: skip
    assert default.parser.get_parsed_content("warmup_epochs") == 5  # a quarter of the epochs by default


@pytest.mark.parametrize(
    ("override", "message"),
    [({"epochs": "abc"}, "'epochs'"), ({"dataset_dir": "/no/such/folder"}, "'dataset_dir'"),
     ({"shape_prior": "maybe"}, "'shape_prior'"), ({"epochs": 2, "warmup_epochs": 2}, "'warmup_epochs'")],
)
def test_bad_overrides_fail_before_training_naming_the_option(tmp_path, override, message):
    with pytest.raises(Exception) as info:
        _run(tmp_path, **override)
    assert message in _error_chain(info.value)
    assert not (tmp_path / "models").exists()


def test_3d_overlay(tmp_path):
    _run(tmp_path, configs=("train.json", "train_3d.json"), spatial_size=[32, 32, 32], synthetic_n=4, grid_size=2,
         features=[2, 2, 4, 4, 8, 2], synthetic_size=32)
    target = BasicUNet(3, 1, 2, features=[2, 2, 4, 4, 8, 2])
    assert load_pretrained(target, tmp_path / "models" / "model.pt")["matched"] == len(target.state_dict()) - 2
    assert len(list((tmp_path / "eval" / "cluster_maps").glob("*.png"))) == 2


def test_multi_gpu_overlay_with_two_gloo_processes(tmp_path):
    import json
    import os
    import subprocess
    import sys

    configs = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", configs, "--logging_file", str(CONFIGS / "logging.conf")]
    settings = {k: v for k, v in TOY.items() if k != "device"}  # the overlay picks each rank's device
    settings.update(synthetic_n=6, epochs=2, warmup_epochs=1)
    for key, value in settings.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    cmd += ["--bundle_root", str(tmp_path), "--backend", "gloo"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.count("Engine run finished") >= 2  # both ranks trained (plus rank 0's validation runs)
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    net = BasicUNet(2, 3, 2, features=FEATURES)
    assert set(state) | {"final_conv.weight", "final_conv.bias"} == set(net.state_dict())
    assert [p.name for p in list_checkpoints(tmp_path / "models")] == ["checkpoint_epoch0002.pt"]
    assert len(list((tmp_path / "eval" / "cluster_maps").glob("*.png"))) == 2
    # the shape prior is refused under the overlay, naming the option
    refused = subprocess.run(
        cmd + ["--shape_prior", "true"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode != 0 and "option 'shape_prior' (--shape_prior) is not supported" in (
        refused.stdout + refused.stderr
    )


def test_resume_in_a_new_workflow_equals_an_uninterrupted_run(tmp_path):
    """A run stopped after epoch 1 and resumed by a fresh workflow (as a new process would) ends with the weights of
    an uninterrupted 2-epoch run. Before the fix the views transform held one random source fewer when fresh than
    after its first call, and every resume was refused."""
    _run(tmp_path / "whole", epochs=2, val_interval=2)
    _run(tmp_path / "cut", epochs=1, val_interval=2)
    _run(tmp_path / "cut", epochs=2, val_interval=2, resume=True)
    whole = torch.load(tmp_path / "whole" / "models" / "model.pt", map_location="cpu", weights_only=False)
    cut = torch.load(tmp_path / "cut" / "models" / "model.pt", map_location="cpu", weights_only=False)
    whole, cut = whole.get("state_dict", whole), cut.get("state_dict", cut)
    assert set(whole) == set(cut) and len(whole) > 10
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key
