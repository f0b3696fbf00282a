"""The cluster_contrastive_pretrain bundle at toy size: chain, stages, SimCLR mode, bad overrides, resume, DDP, 3D."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.networks.nets import BasicUNet

from monai_cluster.clustering import read_pseudo_class_table
from monai_cluster.workflows import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cluster_contrastive_pretrain"
CONFIGS = BUNDLE / "configs"
FEATURES = [4, 4, 8, 8, 16, 4]
TOY = {
    "synthetic_n": 6,
    "synthetic_size": 32,
    "image_size": [32, 32],
    "features": FEATURES,
    "autoencoder_channels": [4, 8, 8, 8],
    "autoencoder_epochs": 1,
    "epochs": 2,
    "batch_size": 3,
    "num_clusters": [2, 3],
    "local_num_locations": 8,
    "device": "cpu",
}


def _workflow(root: Path, run_id: str = "run", configs=("train.json",), **overrides) -> ConfigWorkflow:
    settings = {**TOY, **overrides}
    return ConfigWorkflow(
        config_file=[str(CONFIGS / c) for c in configs],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        run_id=run_id,
        bundle_root=str(root),
        **settings,
    )


def _run(root: Path, run_id: str = "run", configs=("train.json",), **overrides) -> ConfigWorkflow:
    workflow = _workflow(root, run_id, configs, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def _cli_args(settings: dict) -> list[str]:
    args = []
    for key, value in settings.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return args


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("LOCAL_RANK", None)
    return env


def _assert_basicunet_checkpoint(path: Path, spatial_dims: int, in_channels: int) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = BasicUNet(spatial_dims, in_channels, 2, features=FEATURES)
    assert set(state) == set(net.state_dict())
    net.load_state_dict(state, strict=True)
    return state


def test_default_chain_via_monai_bundle_run(tmp_path):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json")]
    cmd += ["--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    cmd += ["--bundle_root", str(tmp_path), *_cli_args(TOY)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    models = tmp_path / "models"
    state = _assert_basicunet_checkpoint(models / "model.pt", 2, 3)
    fresh = BasicUNet(2, 3, 2, features=FEATURES).state_dict()
    assert not torch.equal(state["conv_0.conv_0.conv.weight"], fresh["conv_0.conv_0.conv.weight"])
    table = read_pseudo_class_table(models / "pseudo_classes.csv")
    assert len(table) == 6 and table.num_clusters == (2, 3)
    assert [p.name for p in list_checkpoints(models / "checkpoints")] == [
        "checkpoint_epoch0001.pt",
        "checkpoint_epoch0002.pt",
    ]
    summary = json.loads((models / "pretrain_summary.json").read_text())
    assert summary["epochs"] == 2 and len(summary["losses"]) == 2
    assert all(set(epoch) >= {"global", "local", "total"} for epoch in summary["losses"])
    assert list((tmp_path / "runs" / "pretrain").glob("events.out.tfevents.*"))
    assert list((tmp_path / "runs" / "autoencoder").glob("events.out.tfevents.*"))
    assert "pretrain epoch 2/2" in proc.stdout + proc.stderr


def test_stages_run_on_their_own(tmp_path):
    with pytest.raises(RuntimeError) as missing:
        _run(tmp_path, "run_pretrain")
    assert "pseudo_classes.csv does not exist; run the clustering stage first" in str(missing.value.__cause__)
    with pytest.raises(RuntimeError) as no_autoencoder:
        _run(tmp_path, "run_cluster")
    assert "autoencoder.pt do not exist; run the autoencoder stage first" in str(no_autoencoder.value.__cause__)

    _run(tmp_path, "run_autoencoder")
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["autoencoder.pt", "run_settings.json"]
    _run(tmp_path, "run_cluster")
    assert (models / "pseudo_classes.csv").is_file() and not (models / "model.pt").exists()
    workflow = _run(tmp_path, "run_pretrain")
    _assert_basicunet_checkpoint(models / "model.pt", 2, 3)
    assert workflow.parser.get_parsed_content("train#trainer").state.epoch == 2


def test_simclr_mode_needs_no_table(tmp_path):
    workflow = _run(tmp_path, "run_pretrain", use_pseudo_classes=False, local_weight=0.0)
    assert workflow.parser.get_parsed_content("pseudo_class_transform") is None
    assert not (tmp_path / "models" / "pseudo_classes.csv").exists()
    _assert_basicunet_checkpoint(tmp_path / "models" / "model.pt", 2, 3)
    extra = load_checkpoint(list_checkpoints(tmp_path / "models" / "checkpoints")[-1])["extra"]
    assert extra["pseudo_class_table"] is None


@pytest.mark.parametrize(
    "override, error, match",
    [
        ({"epochs": "abc"}, TypeError, r"option 'epochs' \(--epochs\) must be an integer >= 1, got str 'abc'"),
        ({"learning_rate": -1}, ValueError, r"option 'learning_rate' .* finite number > 0.0, got float -1.0"),
        ({"use_pseudo_classes": "maybe"}, TypeError, r"option 'use_pseudo_classes'.*boolean"),
        ({"pseudo_class_level": 2}, ValueError, r"option 'pseudo_class_level' must index one of the 2 levels"),
        ({"image_size": [40, 40]}, ValueError, r"option 'image_size' must be a multiple of 16"),
    ],
)
def test_bad_override_fails_before_anything_runs(tmp_path, override, error, match):
    workflow = _workflow(tmp_path, **override)
    with pytest.raises(RuntimeError) as raised:
        workflow.initialize()
        workflow.run()
    assert isinstance(raised.value.__cause__, error)
    assert re.search(match, str(raised.value.__cause__)), str(raised.value.__cause__)
    assert not (tmp_path / "models").exists() and not (tmp_path / "synthetic_data").exists()


def test_interrupted_run_resumes_to_the_same_epoch_count(tmp_path):
    _run(tmp_path, "run_autoencoder")
    _run(tmp_path, "run_cluster")  # the trainer reads the table when it is built, so build it after stage 2
    first = _workflow(tmp_path, "run_pretrain", epochs=3, recluster_interval=1)
    first.initialize()
    trainer = first.parser.get_parsed_content("train#trainer")

    def crash(engine):
        if engine.state.epoch == 2:
            raise KeyboardInterrupt("simulated kill in the middle of epoch 2")

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=4), crash)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    models = tmp_path / "models"
    assert [p.name for p in list_checkpoints(models / "checkpoints")] == ["checkpoint_epoch0001.pt"]
    assert not (models / "model.pt").exists()
    saved = load_checkpoint(models / "checkpoints" / "checkpoint_epoch0001.pt")
    assert saved["epoch"] == 1 and saved["iteration"] == 2
    assert saved["extra"]["pseudo_class_table"]["keys"] == read_pseudo_class_table(models / "pseudo_classes.csv").keys
    autoencoder_stamp = (models / "autoencoder.pt").stat().st_mtime_ns

    second = _workflow(tmp_path, epochs=3, recluster_interval=1, resume=True)
    second.initialize()
    trainer = second.parser.get_parsed_content("train#trainer")
    network = second.parser.get_parsed_content("network_def")
    starts = []
    first_conv = network.backbone.conv_0.conv_0.conv
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: starts.append((e.state.epoch, first_conv.weight.clone())))
    second.run()
    checkpointer = second.parser.get_parsed_content("train#checkpointer")
    assert checkpointer.resumed_from.name == "checkpoint_epoch0001.pt"
    assert starts[0][0] == 2
    assert torch.equal(starts[0][1], saved["state"]["network"]["backbone.conv_0.conv_0.conv.weight"])
    assert trainer.state.epoch == 3 and trainer.state.iteration == 6
    assert (models / "autoencoder.pt").stat().st_mtime_ns == autoencoder_stamp  # stage 1 not redone
    assert [p.name for p in list_checkpoints(models / "checkpoints")][-1] == "checkpoint_epoch0003.pt"
    sched = load_checkpoint(models / "checkpoints" / "checkpoint_epoch0003.pt")["state"]["lr_scheduler"]
    assert sched["last_epoch"] == 3
    _assert_basicunet_checkpoint(models / "model.pt", 2, 3)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    _run(tmp_path, epochs=1)
    models = tmp_path / "models"
    good = load_checkpoint(models / "checkpoints" / "checkpoint_epoch0001.pt")["state"]["network"]
    model_stamp = (models / "model.pt").stat().st_mtime_ns
    workflow = _workflow(tmp_path, epochs=2, resume=True)
    workflow.initialize()
    workflow.parser.get_parsed_content("loss").global_weight = float("nan")
    with pytest.raises(RuntimeError) as raised:  # the config parser wraps the error of the run expression
        workflow.run()
    assert isinstance(raised.value.__cause__, FloatingPointError)
    assert "non-finite loss nan at epoch 2" in str(raised.value.__cause__)
    assert [p.name for p in list_checkpoints(models / "checkpoints")] == ["checkpoint_epoch0001.pt"]
    kept = load_checkpoint(models / "checkpoints" / "checkpoint_epoch0001.pt")["state"]["network"]
    assert all(torch.equal(kept[k], good[k]) for k in good)
    assert (models / "model.pt").stat().st_mtime_ns == model_stamp


def test_3d_overlay(tmp_path):
    settings = {"synthetic_n": 4, "synthetic_size": 32, "image_size": [32, 32, 32], "batch_size": 2,
                "num_clusters": [2, 3], "epochs": 1}
    workflow = _run(tmp_path, configs=("train.json", "train_3d.json"), **settings)
    assert workflow.parser.get_parsed_content("network_def").spatial_dims == 3
    # the 3D overlay writes models_3d/ so it never overwrites the 2D weights the dermoscopy bundle reads
    _assert_basicunet_checkpoint(tmp_path / "models_3d" / "model.pt", 3, 1)
    assert len(read_pseudo_class_table(tmp_path / "models_3d" / "pseudo_classes.csv")) == 4
    assert not (tmp_path / "models").exists() and (tmp_path / "runs_3d").is_dir()


@pytest.mark.parametrize("schedule", ["joint", "staged"])
def test_multi_gpu_overlay_with_two_gloo_processes(tmp_path, schedule):
    configs = json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", configs, "--logging_file", str(CONFIGS / "logging.conf")]
    settings = {k: v for k, v in TOY.items() if k != "device"}  # the overlay picks each rank's device
    settings.update(batch_size=2, epochs=1, schedule=schedule, local_epochs=1)
    cmd += ["--bundle_root", str(tmp_path), "--backend", "gloo", *_cli_args(settings)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # both ranks trained every stage (the autoencoder, then pretraining: joint, or global + local)
    assert out.count("Engine run finished") == (4 if schedule == "joint" else 6)
    _assert_basicunet_checkpoint(tmp_path / "models" / "model.pt", 2, 3)
    assert [p.name for p in list_checkpoints(tmp_path / "models" / "checkpoints")] == ["checkpoint_epoch0001.pt"]
    # the overlay turns on gathering of negatives from every rank and wraps the network in DDP
    workflow = _workflow(tmp_path / "inspect", configs=("train.json", "multi_gpu_train.json"), backend="gloo")
    assert workflow.parser.get_parsed_content("loss#global_loss").gather_distributed is True
    assert workflow.parser["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_staged_schedule_trains_the_encoder_then_only_the_decoder_and_resumes(tmp_path):
    """Chaitanya's schedule: stage 1 global loss on the encoder, stage 2 local loss with the encoder frozen."""
    settings = {"schedule": "staged", "epochs": 1, "local_epochs": 2, "decoder_layer": "upcat_2"}
    _run(tmp_path, "run_autoencoder")
    _run(tmp_path, "run_cluster")
    first = _workflow(tmp_path, "run_pretrain", **settings)
    first.initialize()
    local_trainer = first.parser.get_parsed_content("train_local#trainer")
    # stage 2's views are aligned voxel by voxel; stage 1's differ in geometry
    views = first.parser.get_parsed_content("train#dataset")[0]
    aligned = first.parser.get_parsed_content("train_local#dataset")[0]
    assert "image_geometry_1" in views and "image_geometry" not in aligned

    def crash(engine):
        raise KeyboardInterrupt("simulated kill in stage 2")

    local_trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1), crash)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    models = tmp_path / "models"
    stage1 = load_checkpoint(list_checkpoints(models / "checkpoints")[-1])["state"]["network"]
    assert not (models / "model.pt").exists() and not list_checkpoints(models / "checkpoints" / "local")

    second = _workflow(tmp_path, "run_pretrain", resume=True, **settings)
    second.initialize()
    trainer = second.parser.get_parsed_content("train#trainer")
    ran_stage1 = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: ran_stage1.append(e.state.iteration))
    second.run()
    assert ran_stage1 == []  # stage 1 was finished: resume skips it
    final = _state(models / "model.pt")
    encoder = [k for k in final if k.startswith(("conv_0.", "down_"))]
    trained = [k for k in final if k.startswith(("upcat_4.", "upcat_3.", "upcat_2.")) and k.endswith("weight")]
    untouched = [k for k in final if k.startswith(("upcat_1.", "final_conv."))]
    assert encoder and trained and untouched
    assert all(torch.equal(final[k], stage1[f"backbone.{k}"]) for k in encoder)  # frozen in stage 2
    assert any(not torch.equal(final[k], stage1[f"backbone.{k}"]) for k in trained)  # stage 2 trained these
    assert all(torch.equal(final[k], stage1[f"backbone.{k}"]) for k in untouched)
    network = second.parser.get_parsed_content("network_def")
    assert all(p.requires_grad for p in network.parameters())  # the freeze is undone after stage 2
    summary = json.loads((models / "pretrain_summary.json").read_text())
    assert summary["schedule"] == "staged" and summary["local_epochs"] == 2
    assert all(set(e) == {"epoch", "global", "total"} for e in summary["losses"])
    assert all(set(e) == {"epoch", "local", "total"} for e in summary["local_losses"])
    assert list((tmp_path / "runs" / "pretrain_local").glob("events.out.tfevents.*"))


def test_autoencoder_channels_of_any_length_and_clear_errors(tmp_path):
    three = _workflow(tmp_path / "a", autoencoder_channels=[4, 8, 8])
    net = three.parser.get_parsed_content("autoencoder#network_def")
    assert net.size_divisor == 8 and len(net.encode) == 3  # one stride-2 block per channel entry
    out = net(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32)
    five = _workflow(tmp_path / "b", autoencoder_channels=[4, 4, 8, 8, 8], autoencoder_strides=[2, 2, 2, 2, 1])
    assert five.parser.get_parsed_content("autoencoder#network_def").size_divisor == 16
    for name, overrides, message in (
        ("c", {"autoencoder_channels": [4, 4, 8, 8, 8, 8]},
         "option 'image_size' [32, 32] must be divisible by the product of the autoencoder strides (64: "),
        ("d", {"autoencoder_channels": [4, 8, 8], "autoencoder_strides": [2, 2]},
         "option 'autoencoder_strides' (--autoencoder_strides) must have one entry per 'autoencoder_channels' entry"),
    ):  # fmt: skip
        with pytest.raises(Exception) as info:
            _workflow(tmp_path / name, **overrides).parser.get_parsed_content("autoencoder#network_def")
        chain, err = [], info.value
        while err is not None:
            chain.append(str(err))
            err = err.__cause__ or err.__context__
        assert any(message in text for text in chain), chain


def test_staged_schedule_on_segresnet_trains_its_decoder_blocks_only(tmp_path):
    """--backbone segresnet: stage 2 moves up_samples/up_layers up to decoder_layer, never the encoder or the head."""
    settings = {"backbone": "segresnet", "init_filters": 8, "schedule": "staged", "epochs": 1, "local_epochs": 1,
                "decoder_layer": "up_layers.1", "use_pseudo_classes": False}  # fmt: skip
    _run(tmp_path, "run_pretrain", **settings)
    models = tmp_path / "models"
    stage1 = load_checkpoint(list_checkpoints(models / "checkpoints")[-1])["state"]["network"]
    final = _state(models / "model.pt")
    assert json.loads((models / "pretrain_summary.json").read_text())["backbone"] == "segresnet"
    encoder = [k for k in final if k.startswith(("convInit.", "down_layers."))]
    trained = [k for k in final if k.startswith(("up_samples.0.", "up_layers.0.", "up_samples.1.", "up_layers.1."))]
    untouched = [k for k in final if k.startswith(("up_samples.2.", "up_layers.2.", "conv_final."))]
    assert encoder and trained and untouched and len(encoder) + len(trained) + len(untouched) == len(final)
    assert all(torch.equal(final[k], stage1[f"backbone.{k}"]) for k in encoder)  # frozen in stage 2
    assert any(not torch.equal(final[k], stage1[f"backbone.{k}"]) for k in trained)  # stage 2 trained these
    assert all(torch.equal(final[k], stage1[f"backbone.{k}"]) for k in untouched)


def test_resume_after_a_kill_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    """The checkpoint holds every random state (global RNGs, the views' transforms), so resuming is exact."""
    settings = {"epochs": 3, "recluster_interval": 1}
    for root in ("whole", "cut"):
        _run(tmp_path / root, "run_autoencoder")
        _run(tmp_path / root, "run_cluster")
    _run(tmp_path / "whole", "run_pretrain", **settings)
    first = _workflow(tmp_path / "cut", "run_pretrain", **settings)
    first.initialize()
    trainer = first.parser.get_parsed_content("train#trainer")

    def crash(engine):
        raise KeyboardInterrupt("simulated kill in the middle of epoch 2")

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), crash)  # 2 iterations per epoch
    with pytest.raises(KeyboardInterrupt):
        first.run()
    saved = load_checkpoint(tmp_path / "cut" / "models" / "checkpoints" / "checkpoint_epoch0001.pt")
    assert saved["rng"] is not None and len(saved["rng"]["sources"]) > 0  # the views' transforms were found
    _run(tmp_path / "cut", "run_pretrain", resume=True, **settings)
    whole, resumed = (_state(tmp_path / r / "models" / "model.pt") for r in ("whole", "cut"))
    assert set(whole) == set(resumed)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), "resumed weights differ from the uninterrupted run"
