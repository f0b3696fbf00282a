"""The ``amp`` option of every training bundle (issue 20): MONAI's mixed precision on CUDA, bfloat16 autocast on a
CPU with native bfloat16 (through :class:`~monai_cluster.inferers.AutocastInferer`), float32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from monai_cluster.inferers import AutocastInferer
from monai_cluster.utils import precision
from monai_cluster.workflows.segmentation_bundle import bundle_workflow, run_bundle

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
FEATURES = [4, 4, 8, 8, 16, 4]
PRETRAIN_TOY = {
    "synthetic_n": 6, "synthetic_size": 32, "image_size": [32, 32], "features": FEATURES,
    "autoencoder_channels": [4, 8, 8, 8], "autoencoder_epochs": 1, "epochs": 1, "batch_size": 3,
    "num_clusters": [2, 3], "local_num_locations": 8, "device": "cpu", "use_pseudo_classes": False,
}  # fmt: skip
LD_TOY = {
    "synthetic_n": 5, "synthetic_size": 32, "num_val": 1, "spatial_size": [32, 32], "features": FEATURES,
    "embed_dim": 4, "num_clusters": 3, "grid_size": 4, "epochs": 1, "val_interval": 1, "batch_size": 2,
    "num_cluster_maps": 2, "device": "cpu",
}  # fmt: skip
# bundle -> (settings, the engines whose forward passes run under the option)
BUNDLES = {
    "cluster_contrastive_pretrain": (PRETRAIN_TOY, ("train#trainer", "train_local#trainer")),
    "dermoscopy_segmentation": (
        {"synthetic_n": 6, "synthetic_size": 32, "image_size": 32, "features": FEATURES, "device": "cpu",
         "use_pretrained": False},
        ("train#trainer", "validate#evaluator"),
    ),
    "heart_ct_segmentation": (
        {"synthetic_n": 3, "synthetic_size": 32, "roi_size": [32, 32, 32], "features": FEATURES, "device": "cpu",
         "use_pretrained": False},
        ("train#trainer", "validate#evaluator"),
    ),
    "local_discrimination_pretrain": (LD_TOY, ("train#trainer", "validate#evaluator")),
}  # fmt: skip


@pytest.fixture
def cpu_bf16(monkeypatch):
    def set_(value: bool) -> None:
        monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: value)

    return set_


@pytest.mark.parametrize("has_bf16", [True, False])
@pytest.mark.parametrize("bundle", list(BUNDLES))
def test_amp_on_a_cpu(tmp_path, cpu_bf16, bundle, has_bf16):
    cpu_bf16(has_bf16)
    settings, engines = BUNDLES[bundle]
    workflow = bundle_workflow(REPO / "bundles" / bundle, bundle_root=tmp_path, **settings, amp=True)
    for name in engines:
        engine = workflow.parser.get_parsed_content(name)
        assert engine.amp is False, name  # MONAI's own amp is autocast("cuda"): off on a CPU
        assert isinstance(engine.inferer, AutocastInferer), name
        assert engine.inferer.enabled is has_bf16 and engine.inferer.dtype == torch.bfloat16, name
    if bundle == "heart_ct_segmentation":  # validation keeps its sliding window inside the autocast
        assert isinstance(workflow.parser.get_parsed_content("validate#evaluator").inferer.inferer, SlidingWindowInferer)


@pytest.mark.parametrize("bundle", list(BUNDLES))
def test_amp_default_is_float32(tmp_path, cpu_bf16, bundle):
    cpu_bf16(True)
    settings, engines = BUNDLES[bundle]
    workflow = bundle_workflow(REPO / "bundles" / bundle, bundle_root=tmp_path, **settings)
    for name in engines:
        engine = workflow.parser.get_parsed_content(name)
        assert engine.amp is False and engine.inferer.enabled is False, name


@pytest.mark.parametrize("bundle", [*BUNDLES, "image_clustering"])
def test_bad_amp_is_refused_before_anything_is_written(tmp_path, bundle):
    settings = BUNDLES[bundle][0] if bundle in BUNDLES else {"epochs": 1, "progress": False}
    root = tmp_path / "run"
    with pytest.raises(Exception) as info:
        bundle_workflow(REPO / "bundles" / bundle, bundle_root=root, **settings, amp="yes")
    err = info.value
    while err.__cause__ is not None:
        err = err.__cause__
    assert isinstance(err, TypeError) and "amp must be a bool" in str(err)
    assert not (root / "models").exists() and not (root / "models_3d").exists()


def test_image_clustering_passes_amp_to_its_trainer(tmp_path, cpu_bf16):
    cpu_bf16(True)
    settings = {"epochs": 1, "cluster_epochs": 1, "prototype_epochs": 1, "batch_size": 4, "channels": [4, 8],
                "latent_dim": 4, "progress": False, "montage_per_cluster": 2}  # fmt: skip
    workflow = bundle_workflow(REPO / "bundles" / "image_clustering", bundle_root=tmp_path, **settings, amp=True)
    assert workflow.parser.get_parsed_content("train#trainer").amp is True
    workflow = bundle_workflow(REPO / "bundles" / "image_clustering", bundle_root=tmp_path / "b", **settings)
    assert workflow.parser.get_parsed_content("train#trainer").amp is False


def test_pretraining_trains_in_bfloat16(tmp_path, cpu_bf16):
    """One toy epoch of the pretraining bundle with bfloat16 autocast: the network ran in bfloat16, the loss saw
    float32 outputs and was finite, and the weights moved."""
    cpu_bf16(True)
    workflow = bundle_workflow(
        REPO / "bundles" / "cluster_contrastive_pretrain", bundle_root=tmp_path, **PRETRAIN_TOY, amp=True
    )
    trainer, network = workflow.parser.get_parsed_content("train#trainer"), workflow.parser.get_parsed_content("network")
    before = {k: v.clone() for k, v in network.state_dict().items()}
    seen = []
    hook = network.register_forward_hook(lambda m, i, o: seen.append((torch.is_autocast_enabled("cpu"), o["global"].dtype)))
    workflow.run()
    hook.remove()
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)  # the network ran in bfloat16
    assert trainer.state.output["pred"]["global"].dtype == torch.float32  # the inferer handed float32 on
    loss = trainer.state.output["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    moved = [k for k, v in network.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(moved) > len(before) // 2


@pytest.mark.parametrize("bundle, configs", [
    ("cluster_contrastive_pretrain", ("train.json", "train_slices.json")),
    ("dermoscopy_segmentation", ("train.json", "evaluate.json")),
    ("heart_ct_segmentation", ("train.json", "evaluate.json")),
])  # fmt: skip
def test_overlays_check_amp_too(tmp_path, bundle, configs):
    """Overlays that replace ``initialize`` keep the up-front check of ``amp``."""
    settings = {k: v for k, v in BUNDLES[bundle][0].items() if k not in ("image_size", "synthetic_size")}
    with pytest.raises(Exception) as info:
        bundle_workflow(REPO / "bundles" / bundle, configs, bundle_root=tmp_path, **settings, amp="yes")
    err = info.value
    while err.__cause__ is not None:
        err = err.__cause__
    assert "amp must be a bool" in str(err)
