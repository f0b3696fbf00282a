"""The dermoscopy_segmentation bundle at toy size: train, evaluate, inference, checks, export, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ckpt_export, verify_net_in_out
from PIL import Image

from monai_cluster.workflows.segmentation_bundle import bundle_workflow, run_bundle, torchrun_command

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "dermoscopy_segmentation"
CONFIGS = BUNDLE / "configs"
FEATURES = [4, 4, 8, 8, 16, 4]
TOY = {
    "synthetic_n": 8,
    "synthetic_size": 48,
    "image_size": 32,
    "features": FEATURES,
    "batch_size": 8,
    "device": "cpu",
}


def _workflow(root: Path, configs=("train.json",), **overrides):
    return bundle_workflow(BUNDLE, configs, bundle_root=root, **{**TOY, **overrides})


def _run(root: Path, configs=("train.json",), **overrides):
    return run_bundle(BUNDLE, configs, bundle_root=root, **{**TOY, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train 4 epochs from scratch at toy size; record the losses and the starting weights."""
    root = tmp_path_factory.mktemp("dermoscopy")
    workflow = _workflow(root, epochs=4, val_interval=2, use_pretrained=False, learning_rate=0.01)
    network = workflow.parser.get_parsed_content("network")
    start = {k: v.clone() for k, v in network.state_dict().items()}
    trainer = workflow.parser.get_parsed_content("train#trainer")
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    workflow.run()
    workflow.finalize()
    data = workflow.parser.get_parsed_content("data")
    return {"root": root, "losses": losses, "start": start, "data": data, "metrics": dict(trainer.state.metrics)}


def test_train_writes_model_logs_and_learns(trained):
    root = trained["root"]
    losses = trained["losses"]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert {"model.pt", "model_best.pt"} <= {p.name for p in (root / "models").iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in (root / "runs").rglob("*"))
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(trained["start"])  # BasicUNet's own keys, no wrapper
    changed = [k for k in state if state[k].is_floating_point() and not torch.equal(state[k], trained["start"][k])]
    assert len(changed) > len(state) // 2
    # 8 synthetic images: 2 held out (val_fraction 0.2), 6 labelled training images, disjoint
    train_keys = {d["key"] for d in trained["data"]["train"]}
    val_keys = {d["key"] for d in trained["data"]["val"]}
    assert len(train_keys) == 6 and len(val_keys) == 2 and not train_keys & val_keys


def test_evaluate_writes_dice_and_hd95(trained):
    root = trained["root"]
    workflow = _workflow(root, configs=("train.json", "evaluate.json"))
    seen = {}  # the evaluator's own (post-processed, one-hot) predictions and labels, per key

    def keep(engine):
        for out, item in zip(engine.state.output, engine.state.batch):
            seen[str(item["key"])] = (out["pred"].argmax(0).numpy(), out["label"].argmax(0).numpy())

    workflow.parser.get_parsed_content("validate#evaluator").add_event_handler(Events.ITERATION_COMPLETED, keep)
    workflow.run()
    workflow.finalize()
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and set(seen) == {r["key"] for r in metrics["per_image"]}
    # the written Dice equals 2|P & L| / (|P| + |L|) of the lesion, recomputed by hand from what the network predicted
    for record in metrics["per_image"]:
        pred, label = (a == 1 for a in seen[record["key"]])
        assert label.any(), record["key"]
        assert record["dice"] == [pytest.approx(2.0 * (pred & label).sum() / (pred.sum() + label.sum()), abs=1e-6)]
    assert metrics["mean_dice"] == pytest.approx(np.mean([r["dice"][0] for r in metrics["per_image"]]))
    assert {r["key"] for r in metrics["per_image"]} == {d["key"] for d in trained["data"]["val"]}
    assert set(metrics["per_class"]) == {"lesion"}
    assert metrics["split"] == "val" and metrics["checkpoint"].endswith("model.pt")


def test_inference_writes_masks_at_input_size_and_overlays(trained):
    root = trained["root"]
    _run(root, configs=("inference.json",))
    masks = sorted((root / "outputs" / "masks").glob("*.png"))
    overlays = sorted((root / "outputs" / "overlays").glob("*.png"))
    assert len(masks) == 8 and len(overlays) == 8
    mask = np.asarray(Image.open(masks[0]))
    assert mask.shape == (48, 48)  # the input's size, not the 32 px network size
    assert set(np.unique(mask).tolist()) <= {0, 255}


def test_label_fraction_keeps_a_seeded_subset(tmp_path):
    # use_pretrained false: initialize checks that the pretrained checkpoint fits, and none was pretrained here
    data = _workflow(tmp_path, label_fraction=0.5, seed=3, use_pretrained=False).parser.get_parsed_content("data")
    again = _workflow(tmp_path, num_labeled=3, seed=3, use_pretrained=False)
    assert len(data["train"]) == 3 and data["train"] == again.parser.get_parsed_content("data")["train"]


def test_bad_file_stops_before_training(tmp_path):
    dataset = tmp_path / "data"
    (dataset / "images").mkdir(parents=True)
    (dataset / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 50 * i, np.uint8)).save(dataset / "images" / f"IMD00{i}.png")
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(dataset / "masks" / f"IMD00{i}_lesion.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(dataset / "masks" / "IMD001_lesion.png")
    with pytest.raises(RuntimeError) as info:  # in initialize, before anything is built or written
        _workflow(tmp_path / "root", dataset_dir=str(dataset), use_pretrained=False)
    assert "IMD001_lesion.png" in str(info.value.__cause__) and "spatial shape" in str(info.value.__cause__)
    assert not (tmp_path / "root" / "models").exists()


def test_missing_pretrained_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(RuntimeError) as info:  # in initialize, before anything is written
        _workflow(tmp_path, use_pretrained=True, pretrained_path=str(missing))
    message = str(info.value.__cause__)
    assert str(missing) in message and "--use_pretrained false" in message


def test_bad_override_names_the_option(tmp_path):
    with pytest.raises(RuntimeError) as info:
        _workflow(tmp_path, epochs="abc")
    assert "epochs" in str(info.value.__cause__)


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
    from monai.networks.nets import BasicUNet

    eager = BasicUNet(2, 3, 2, features=FEATURES)
    eager.load_state_dict(torch.load(trained["root"] / "models" / "model.pt", weights_only=True))
    eager.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), eager(x), atol=1e-5)


def test_multi_gpu_overlay_runs_with_two_cpu_processes(tmp_path):
    settings = {**TOY, "epochs": 1, "val_interval": 1, "use_pretrained": False, "backend": "gloo"}
    settings.pop("device")  # the overlay picks each rank's device from the backend
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = torchrun_command(BUNDLE, master_port=29643, bundle_root=str(tmp_path), **settings)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # rank 0 saved the unwrapped network
    assert "val_mean_dice" in result.stdout + result.stderr


def test_resume_after_a_kill_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    """Checkpoints hold the random states (global RNGs, the augmentation transforms), saved after validation."""
    settings = {"epochs": 3, "val_interval": 1, "use_pretrained": False, "batch_size": 4}
    whole = _workflow(tmp_path / "whole", **settings)
    whole.run()
    whole.finalize()
    cut = _workflow(tmp_path / "cut", **settings)
    trainer = cut.parser.get_parsed_content("train#trainer")

    def crash(engine):
        raise KeyboardInterrupt("simulated kill in the middle of epoch 2")

    per_epoch = len(cut.parser.get_parsed_content("train#dataloader"))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=per_epoch + 1), crash)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    resumed = _workflow(tmp_path / "cut", resume=True, **settings)
    resumed.run()
    resumed.finalize()
    a = whole.parser.get_parsed_content("network").state_dict()
    b = resumed.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
