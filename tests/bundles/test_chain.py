"""The chain at toy size: cluster_contrastive_pretrain writes models/model.pt, dermoscopy_segmentation starts from it.

Proves that the fine-tune network holds exactly the pretrained tensors when its first training step starts
(every tensor but the task head ``final_conv``), that training then moves them, and that a missing or
mismatched ``pretrained_path`` is an error naming the file, never a silent random start.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from monai_cluster.networks import ContrastivePretrainNet
from monai_cluster.workflows.segmentation_bundle import bundle_workflow, run_bundle
from monai_cluster.workflows.segmentation_network import encoder_tensor_names

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "bundles" / "cluster_contrastive_pretrain"
FINETUNE = REPO / "bundles" / "dermoscopy_segmentation"
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
    workflow = _finetune(tmp_path / "dermoscopy_segmentation", use_pretrained=True)
    with pytest.raises(RuntimeError) as info:
        workflow.parser.get_parsed_content("network")
    assert isinstance(info.value.__cause__, ValueError)
    assert str(missing) in str(info.value.__cause__) and "run the pretraining bundle first" in str(info.value.__cause__)


def test_mismatched_pretrained_checkpoint_is_an_error(pretrained, tmp_path):
    wider = [8, 8, 16, 16, 32, 8]  # another network than the one pretrained
    workflow = _finetune(tmp_path, use_pretrained=True, pretrained_path=str(pretrained), features=wider)
    with pytest.raises(RuntimeError) as info:
        workflow.parser.get_parsed_content("network")
    message = str(info.value.__cause__)
    assert str(pretrained) in message and "another shape" in message and "features" in message
