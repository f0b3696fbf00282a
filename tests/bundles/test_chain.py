"""The chain at toy size: cluster_contrastive_pretrain writes models/model.pt, dermoscopy_segmentation starts from it.

Proves that the fine-tune network holds exactly the pretrained tensors when its first training step starts
(every tensor but the task head ``final_conv``), that training then moves them, and that a missing or
mismatched ``pretrained_path`` is an error naming the file, never a silent random start. The same chain runs for
every registered ``backbone`` (BasicUNet, SegResNet, SwinUNETR) in 2D (dermoscopy) and in 3D (the ``train_3d.json``
overlay, then heart_ct_segmentation), and a checkpoint of another backbone is refused naming both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from monai_cluster.networks import BACKBONES, ContrastivePretrainNet, build_pretrain_net
from monai_cluster.workflows.segmentation_bundle import bundle_workflow, run_bundle
from monai_cluster.workflows.segmentation_network import encoder_tensor_names

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "bundles" / "cluster_contrastive_pretrain"
FINETUNE = REPO / "bundles" / "dermoscopy_segmentation"
FINETUNE_3D = REPO / "bundles" / "heart_ct_segmentation"
FEATURES = [4, 4, 8, 8, 16, 4]
PRETRAIN_TOY = {
    "synthetic_n": 6,
    "synthetic_size": 32,
    "image_size": [32, 32],
    "features": FEATURES,
    "autoencoder_channels": [4, 8, 8, 8],
    "autoencoder_epochs": 1,
    "epochs": 1,
    "batch_size": 3,
    "num_clusters": [2, 3],
    "local_num_locations": 8,
    "device": "cpu",
}
FINETUNE_TOY = {"synthetic_n": 6, "synthetic_size": 32, "image_size": 32, "features": FEATURES, "device": "cpu"}


def _finetune(root: Path, **overrides):
    return bundle_workflow(FINETUNE, bundle_root=root, **{**FINETUNE_TOY, **overrides})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """Run the pretraining bundle's default chain (autoencoder, pseudo-classes, contrastive) at toy size."""
    bundles = tmp_path_factory.mktemp("bundles")
    run_bundle(PRETRAIN, bundle_root=bundles / "cluster_contrastive_pretrain", **PRETRAIN_TOY)
    model = bundles / "cluster_contrastive_pretrain" / "models" / "model.pt"
    assert model.is_file()
    return model


def test_finetune_starts_from_the_pretrained_tensors(pretrained):
    expected = torch.load(pretrained, map_location="cpu", weights_only=True)
    # the default pretrained_path: <bundle_root>/../cluster_contrastive_pretrain/models/model.pt
    workflow = _finetune(pretrained.parents[2] / "dermoscopy_segmentation", epochs=1, use_pretrained=True)
    network = workflow.parser.get_parsed_content("network")
    report = network.pretrained_report
    assert report["matched"] == report["total"] == len(expected) - 2  # all but final_conv weight and bias
    assert report["excluded"] == ["final_conv.weight", "final_conv.bias"]

    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.network is network
    at_first_step = {}

    @trainer.on(Events.ITERATION_STARTED(once=1))
    def snapshot(engine):
        at_first_step.update({k: v.detach().clone() for k, v in engine.network.state_dict().items()})

    workflow.run()
    workflow.finalize()
    encoder = encoder_tensor_names(network)
    assert len(encoder) > 20
    for key, value in expected.items():
        if key.startswith("final_conv"):
            continue
        assert torch.equal(at_first_step[key], value), f"{key} does not hold the pretrained tensor at the first step"
    after = network.state_dict()
    moved = [k for k in encoder if after[k].is_floating_point() and not torch.equal(after[k], expected[k])]
    assert len(moved) > len(encoder) // 2  # fine-tuning trained the pretrained encoder


def test_checkpoint_built_from_contrastive_pretrain_net_loads(tmp_path):
    """The contract without the pretraining bundle: backbone_state_dict() of the wrapper is what the bundle loads."""
    wrapper = ContrastivePretrainNet(2, 3, features=FEATURES)
    path = tmp_path / "cluster_contrastive_pretrain" / "models" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save(wrapper.backbone_state_dict(), path)
    network = _finetune(tmp_path / "dermoscopy_segmentation", use_pretrained=True).parser.get_parsed_content(
        "network"
    )
    for key in encoder_tensor_names(network):
        assert torch.equal(network.state_dict()[key], wrapper.backbone.state_dict()[key])


def test_missing_pretrained_path_is_an_error(tmp_path):
    missing = tmp_path / "cluster_contrastive_pretrain" / "models" / "model.pt"
    with pytest.raises(RuntimeError) as info:  # refused in initialize, before anything is written
        _finetune(tmp_path / "dermoscopy_segmentation", use_pretrained=True)
    assert isinstance(info.value.__cause__, ValueError)
    assert str(missing) in str(info.value.__cause__) and "run the pretraining bundle first" in str(info.value.__cause__)


def test_mismatched_pretrained_checkpoint_is_an_error(pretrained, tmp_path):
    wider = [8, 8, 16, 16, 32, 8]  # another network than the one pretrained
    with pytest.raises(RuntimeError) as info:  # refused in initialize, before anything is written
        _finetune(tmp_path, use_pretrained=True, pretrained_path=str(pretrained), features=wider)
    message = str(info.value.__cause__)
    assert str(pretrained) in message and "another shape" in message and "features" in message


# the smallest of each backbone (option overrides) and the 2D / 3D training sizes it accepts
BACKBONE_TOY = {
    "basic_unet": ({"features": FEATURES}, [32, 32], [32, 32, 32]),
    "segresnet": ({"init_filters": 8}, [32, 32], [32, 32, 32]),
    # SwinUNETR downsamples by 32 and instance-normalises its bottleneck: at least two bottleneck voxels
    "swin_unetr": ({"feature_size": 12, "depths": [1, 1, 1, 1]}, [64, 64], [32, 32, 64]),
}
PRETRAIN_3D_TOY = {**PRETRAIN_TOY, "synthetic_n": 4, "batch_size": 2}
FINETUNE_3D_TOY = {"synthetic_n": 3, "synthetic_size": 32, "num_samples": 1, "device": "cpu"}


def _chain(root: Path, backbone: str, spatial_dims: int) -> tuple[Path, object]:
    """Pretrain ``backbone`` (whole default chain, one epoch per stage), then build its fine-tune workflow."""
    options, size_2d, size_3d = BACKBONE_TOY[backbone]
    if spatial_dims == 2:
        pretrain_configs, models, finetune, toy = ("train.json",), "models", FINETUNE, FINETUNE_TOY
        size = {"image_size": size_2d[0]}
        pretrain = {**PRETRAIN_TOY, "image_size": size_2d}
    else:
        pretrain_configs, models = ("train.json", "train_3d.json"), "models_3d"
        finetune, toy = FINETUNE_3D, FINETUNE_3D_TOY
        size = {"roi_size": size_3d}
        pretrain = {**PRETRAIN_3D_TOY, "image_size": size_3d}
    run_bundle(PRETRAIN, pretrain_configs, bundle_root=root / "cluster_contrastive_pretrain", backbone=backbone,
               **{**pretrain, **options})  # fmt: skip
    model = root / "cluster_contrastive_pretrain" / models / "model.pt"
    # the fine-tune bundle's default pretrained_path: <bundle_root>/../cluster_contrastive_pretrain/<models>/model.pt
    workflow = bundle_workflow(finetune, bundle_root=root / finetune.name, backbone=backbone, epochs=1,
                               use_pretrained=True, **{**toy, **size, **options})  # fmt: skip
    return model, workflow


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_chain_for_each_backbone(tmp_path, backbone, spatial_dims):
    """pretrain --backbone X, fine-tune --backbone X: all but the head loaded, the encoder trained further."""
    model, workflow = _chain(tmp_path, backbone, spatial_dims)
    expected = torch.load(model, map_location="cpu", weights_only=True)
    summary = json.loads((model.parent / "pretrain_summary.json").read_text())
    assert summary["backbone"] == backbone  # recorded next to the weights

    network = workflow.parser.get_parsed_content("network")
    spec = BACKBONES[backbone]
    assert isinstance(network, spec.network) and set(expected) == set(network.state_dict())
    report = network.pretrained_report
    head = [k for k in expected if k.split(".")[0] in spec.head]
    assert head and sorted(report["excluded"]) == sorted(head)
    assert report["matched"] == report["total"] == len(expected) - len(head)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    at_first_step = {}

    @trainer.on(Events.ITERATION_STARTED(once=1))
    def snapshot(engine):
        at_first_step.update({k: v.detach().clone() for k, v in engine.network.state_dict().items()})

    workflow.run()
    workflow.finalize()
    for key in set(expected) - set(head):
        assert torch.equal(at_first_step[key], expected[key]), f"{key} does not hold the pretrained tensor"
    encoder = [k for k in encoder_tensor_names(network) if expected[k].is_floating_point()]
    assert len(encoder) >= 8
    after = network.state_dict()
    moved = [k for k in encoder if not torch.equal(after[k], expected[k])]
    assert len(moved) > len(encoder) // 2  # fine-tuning trained the pretrained encoder

    # the same checkpoint into a fine-tune bundle of another backbone: refused, naming both
    other = "segresnet" if backbone == "basic_unet" else "basic_unet"
    finetune = FINETUNE if spatial_dims == 2 else FINETUNE_3D
    with pytest.raises(RuntimeError) as info:  # refused in initialize, before anything is written
        bundle_workflow(finetune, bundle_root=tmp_path / "other", backbone=other, use_pretrained=True,
                        pretrained_path=str(model), device="cpu")  # fmt: skip
    message = str(info.value.__cause__)
    assert isinstance(info.value.__cause__, ValueError)
    assert f"was pretrained with backbone {backbone!r}" in message and f"builds {other!r}" in message
    assert str(model) in message and f"--backbone {backbone}" in message


def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    """Without the pretraining bundle: a SwinUNETR checkpoint into the default (BasicUNet) dermoscopy bundle."""
    wrapper = build_pretrain_net("swin_unetr", 2, 3, feature_size=12, depths=(1, 1, 1, 1))
    path = tmp_path / "swin.pt"
    torch.save(wrapper.backbone_state_dict(), path)
    with pytest.raises(RuntimeError) as info:  # refused in initialize, before anything is written
        _finetune(tmp_path / "dermoscopy_segmentation", use_pretrained=True, pretrained_path=str(path))
    message = str(info.value.__cause__)
    assert isinstance(info.value.__cause__, ValueError) and str(path) in message
    assert "backbone 'swin_unetr' (from its tensor names), but this bundle builds 'basic_unet'" in message
    assert "set --backbone swin_unetr" in message and "--use_pretrained false" in message


def test_backbone_recorded_in_the_summary_is_refused_too(tmp_path):
    """Tensor names no backbone claims (here a DDP-prefixed state dict): the pretraining's summary decides."""
    wrapper = build_pretrain_net("segresnet", 2, 3, init_filters=8)
    state = {f"module.{k}": v for k, v in wrapper.backbone_state_dict().items()}
    models = tmp_path / "cluster_contrastive_pretrain" / "models"
    models.mkdir(parents=True)
    torch.save(state, models / "model.pt")
    (models / "pretrain_summary.json").write_text(json.dumps({"backbone": "segresnet", "model": "elsewhere/model.pt"}))
    with pytest.raises(RuntimeError) as info:
        _finetune(tmp_path / "dermoscopy_segmentation", use_pretrained=True).parser.get_parsed_content("network")
    message = str(info.value.__cause__)
    assert "was pretrained with backbone 'segresnet'" in message and "pretrain_summary.json" in message
