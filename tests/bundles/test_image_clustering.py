"""The image_clustering bundle end to end at toy size: synthetic 2D (CAE), synthetic 3D (DVC) and bad overrides."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "image_clustering"
CONFIGS = BUNDLE / "configs"
TINY = {"epochs": 1, "cluster_epochs": 1, "prototype_epochs": 1, "batch_size": 4, "channels": [4, 8], "latent_dim": 4,
        "progress": False, "montage_per_cluster": 2, "budget_images": None}  # fmt: skip

pytestmark = pytest.mark.bundle


def _workflow(bundle_root: Path, extra_configs: tuple[str, ...] = (), **overrides):
    from monai.bundle import ConfigWorkflow

    files = [str(CONFIGS / "train.json"), *(str(CONFIGS / name) for name in extra_configs)]
    return ConfigWorkflow(
        config_file=files, meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
        bundle_root=str(bundle_root), **{**TINY, **overrides},
    )  # fmt: skip


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def test_metadata_and_config_keys():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"] and {"inputs", "outputs"} <= set(meta["network_data_format"])
    train = json.loads((CONFIGS / "train.json").read_text())
    assert {"bundle_root", "dataset_dir", "device", "network_def", "epochs", "method", "num_clusters"} <= set(train)
    assert train["dataset_dir"] is None and train["method"] == "contrastive_ae"
    assert (BUNDLE / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert (BUNDLE / "configs" / "logging.conf").is_file() and (BUNDLE / "docs" / "README.md").is_file()


def test_synthetic_2d_contrastive_ae(tmp_path):
    workflow = _workflow(tmp_path, synthetic_n=9, synthetic_size=32, spatial_size=16)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    with open(tmp_path / "eval" / "clusters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and rows[0]["key"].startswith("images/SYN") and {r["cluster"] for r in rows} <= {"0", "1", "2"}
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["classes"]) == {"blue_black", "compact_brown", "irregular_tan"}  # synthetic lesion kinds
    assert 0.0 <= metrics["nmi"] <= 1.0 and 1 / 3 <= metrics["accuracy"] <= 1.0
    for name in ("latent_space.png", "cluster_montage.png", "cluster_samples.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 1000
    assert (tmp_path / "models" / "model.pt").is_file() and (tmp_path / "models" / "centroids.pt").is_file()
    assert any((tmp_path / "runs" / "contrastive_ae").iterdir())
    assert (tmp_path / "synthetic_data" / "diagnosis.csv").is_file()


def test_contrastive_ae_reference_recipe_with_the_prototype_phase(tmp_path):
    """Ferrante et al.'s recipe: their projection head, reconstruction weight 0.2, the prototype phase, and the
    clusters read from the trained prototypes."""
    import torch

    workflow = _workflow(tmp_path, synthetic_n=9, synthetic_size=32, spatial_size=16, projection_head="reference",
                         recon_weight=0.2, prototype_epochs=2, cluster_method="prototypes",
                         prototype_assignment="hard")  # fmt: skip
    workflow.initialize()
    workflow.run()
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["prototype_epochs"] == 2 and summary["cluster_method"] == "prototypes"
    assert summary["final_prototype_reconstruction"] > 0
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state["prototypes"].shape == (3, 4) and bool(state["prototypes_set"])
    assert state["from_latent.weight"].shape[1] == 4 + 3  # the decoder reads [z, assignment]
    assert state["projection.layers.4.weight"].shape == (4, 8)  # 3 plain layers: latent -> 8 -> 8 -> latent
    torch.testing.assert_close(torch.load(tmp_path / "models" / "centroids.pt", weights_only=True)["centroids"].float(),
                               state["prototypes"])  # fmt: skip


def test_synthetic_3d_dvc_overlay(tmp_path):
    workflow = _workflow(
        tmp_path, ("train_3d.json",), method="dvc", synthetic_n=3, synthetic_size=16, spatial_size=16, batch_size=3
    )
    workflow.initialize()
    workflow.run()
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["method"] == "dvc" and summary["image_shape"] == [1, 16, 16, 16] and summary["num_clusters"] == 2
    assert not (tmp_path / "eval" / "metrics.json").exists()  # heart phantoms have no classes
    assert (tmp_path / "eval" / "clusters.csv").read_text().splitlines()[0] == "key,cluster,confidence"


@pytest.mark.parametrize(
    "override, message",
    [
        ({"method": "kmeans"}, r"option 'method' \(--method\) must be one of"),
        ({"num_clusters": 1}, r"option 'num_clusters' \(--num_clusters\) must be an integer >= 2"),
        ({"epochs": "abc"}, r"option 'epochs' \(--epochs\) must be an integer >= 1"),
        ({"dataset_dir": "/no/such/folder"}, r"option 'dataset_dir' \(--dataset_dir\) must be an existing folder"),
        ({"projection_head": "byol"}, r"option 'projection_head' \(--projection_head\) must be one of"),
        ({"prototype_epochs": -1}, r"option 'prototype_epochs' \(--prototype_epochs\) must be an integer >= 0"),
        ({"prototype_assignment": "fuzzy"}, r"option 'prototype_assignment' \(--prototype_assignment\) must be"),
        ({"recon_weight": -0.5}, r"option 'recon_weight' \(--recon_weight\) must be"),
        ({"cluster_method": "gmm"}, r"option 'cluster_method' \(--cluster_method\) must be one of"),
        ({"contrastive": False}, r"option 'prototype_epochs' \(--prototype_epochs\) 1 needs contrastive training"),
        ({"view_augment": "mixup"}, r"option 'view_augment' \(--view_augment\) must be one of"),
        ({"method": "dvc", "view_augment": "flip_rot90"}, r"option 'view_augment' .* is a contrastive_ae setting"),
    ],
)
def test_bad_overrides_fail_before_anything_is_written(tmp_path, override, message):
    workflow = _workflow(tmp_path / "root", **override)
    with pytest.raises(Exception) as info:
        workflow.initialize()
    assert isinstance(_root_cause(info.value), (ValueError, TypeError))
    assert re.search(message, str(_root_cause(info.value)))
    assert not (tmp_path / "root").exists()


def test_plain_autoencoder_and_flip_rot90_views_through_the_config(tmp_path):
    """contrastive false: the autoencoder stage alone (its checkpoint, no cae stage); view_augment reaches the CAE."""
    workflow = _workflow(tmp_path / "ae", synthetic_n=6, synthetic_size=32, spatial_size=16, contrastive=False,
                         prototype_epochs=0)  # fmt: skip
    workflow.initialize()
    workflow.run()
    summary = json.loads((tmp_path / "ae" / "eval" / "summary.json").read_text())
    assert summary["contrastive"] is False and summary["final_loss"] == summary["final_reconstruction"]
    assert [p.name for p in (tmp_path / "ae" / "models" / "checkpoints").iterdir()] == ["autoencoder"]  # no "cae"
    record = json.loads((tmp_path / "ae" / "models" / "run_settings.json").read_text())
    assert record["stages"]["train"]["contrastive"] is False
    workflow = _workflow(tmp_path / "fr", synthetic_n=6, synthetic_size=32, spatial_size=16, view_augment="flip_rot90")
    workflow.initialize()
    assert workflow.parser.get_parsed_content("train#trainer").view_augment == "flip_rot90"
    wide = _workflow(tmp_path / "wide", synthetic_n=6, synthetic_size=32, spatial_size=[16, 32], view_augment="flip_rot90")
    with pytest.raises(Exception) as info:
        wide.initialize()  # refused by the preflight, before anything is written
    assert "option 'view_augment' 'flip_rot90' needs square images" in str(_root_cause(info.value))
    assert not (tmp_path / "wide" / "models").exists()


@pytest.mark.parametrize("method", ["contrastive_ae", "dvc"])
def test_resume_continues_to_the_weights_of_an_uninterrupted_run(tmp_path, method):
    import torch

    def run(root, **overrides):
        workflow = _workflow(root, synthetic_n=8, synthetic_size=32, spatial_size=16, method=method, **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        return torch.load(root / "models" / "model.pt", weights_only=True)

    whole = run(tmp_path / "whole", epochs=3)
    run(tmp_path / "cut", epochs=2)  # as if killed after epoch 2 (every epoch is checkpointed)
    assert (tmp_path / "cut" / "models" / "checkpoints").is_dir()
    resumed = run(tmp_path / "cut", epochs=3, resume=True)
    assert set(whole) == set(resumed) and all(torch.equal(whole[k], resumed[k]) for k in whole)
    with pytest.raises(Exception) as info:
        run(tmp_path / "cut", epochs=3, resume=True, learning_rate=0.01)
    assert "'learning_rate': outputs made with 0.001, this run asks for 0.01" in str(_root_cause(info.value))


@pytest.mark.parametrize("method", ["contrastive_ae", "dvc"])
def test_multi_gpu_overlay_with_two_gloo_processes(tmp_path, method):
    import os
    import subprocess
    import sys

    import torch

    configs = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
           "run", "--config_file", configs, "--logging_file", str(CONFIGS / "logging.conf"),
           "--bundle_root", str(tmp_path), "--backend", "gloo", "--method", method, "--synthetic_n", "10",
           "--synthetic_size", "32", "--spatial_size", "16", "--epochs", "2", "--cluster_epochs", "2",
           "--batch_size", "4", "--channels", "[4, 8]", "--latent_dim", "4", "--progress", "false",
           "--montage_per_cluster", "2"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(BUNDLE.parents[1]))
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=BUNDLE.parents[1])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    with open(tmp_path / "eval" / "clusters.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 10  # rank 0 clustered every image
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert (tmp_path / "models" / "checkpoints").is_dir()


def test_small_folders_train_the_budgeted_number_of_steps(tmp_path):
    """budget_images: a folder smaller than the budget trains proportionally more epochs (the measured defaults came
    from 1,000 images; in epochs alone a 468-image folder was undertrained); null keeps plain epochs."""
    from monai_cluster.workflows.image_clustering import scaled_epochs

    assert scaled_epochs(40, 468, 1000) == 86 and scaled_epochs(20, 468, 1000) == 43
    assert scaled_epochs(40, 1000, 1000) == 40 and scaled_epochs(40, 3000, 1000) == 40  # large folders: as configured
    assert scaled_epochs(0, 10, 1000) == 0 and scaled_epochs(40, 10, None) == 40
    with pytest.raises(ValueError, match="budget_images"):
        scaled_epochs(40, 10, 0)
    settings = {**TINY, "epochs": 2, "cluster_epochs": 1, "prototype_epochs": 1, "synthetic_n": 10}
    trainer = _workflow(tmp_path / "a", **{**settings, "budget_images": 25})
    trainer.initialize()
    built = trainer.parser.get_parsed_content("train#trainer")
    assert (built.epochs, built.cluster_epochs, built.prototype_epochs) == (5, 3, 3)  # x 25 / 10, rounded up
    plain = _workflow(tmp_path / "b", **{**settings, "budget_images": None})
    plain.initialize()
    built = plain.parser.get_parsed_content("train#trainer")
    assert (built.epochs, built.cluster_epochs, built.prototype_epochs) == (2, 1, 1)
    bad = _workflow(tmp_path / "c", **{**settings, "budget_images": -3})
    with pytest.raises(Exception) as info:
        bad.initialize()
    assert "budget_images" in str(_root_cause(info.value))


@pytest.mark.parametrize("method", ["contrastive_ae", "dvc"])
def test_dataset_and_network_entries_build_what_the_library_calls_build(tmp_path, method):
    """``dataset`` and ``network_def`` are ``_target_`` entries (issue 21, item 3) that call the same functions with
    the same arguments as the former ``$`` expressions: same images, same network and initial weights."""
    import torch
    from monai.bundle import ConfigParser

    from monai_cluster.workflows.image_clustering import build_clustering_network, load_clustering_data

    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["dataset"]["_target_"].endswith(".load_clustering_data")
    assert train["network_def"]["_target_"].endswith(".build_clustering_network")
    settings = {**TINY, "method": method, "synthetic_n": 6, "synthetic_size": 24, "spatial_size": 16, "seed": 3,
                "projection_head": "reference"}  # fmt: skip
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(tmp_path), **settings})
    dataset = parser.get_parsed_content("dataset")
    direct = load_clustering_data(None, tmp_path, spatial_size=16, synthetic_kind="dermoscopy", synthetic_n=6,
                                  synthetic_size=24, seed=3)  # fmt: skip
    assert torch.equal(dataset.images, direct.images) and dataset.keys == direct.keys
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    torch.manual_seed(0)
    expected = build_clustering_network(method, direct.image_shape, 3, latent_dim=4, channels=[4, 8], strides=[2, 2],
                                        projection_head="reference", prototype_epochs=1, prototype_temperature=1.0)  # fmt: skip
    assert type(network) is type(expected)
    state, reference = network.state_dict(), expected.state_dict()
    assert list(state) == list(reference) and all(torch.equal(state[k], reference[k]) for k in state)
