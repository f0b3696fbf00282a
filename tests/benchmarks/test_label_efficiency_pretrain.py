"""The label-efficiency benchmark's pretraining: the bundle's views, losses and schedules, snapshots and resume."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _label_efficiency_train as pre  # noqa: E402
from _label_efficiency_data import BenchData  # noqa: E402

from monai_cluster.networks import load_pretrained  # noqa: E402

FEATURES = (4, 4, 8, 8, 16, 4)


def _data(n: int = 24, size: int = 32) -> BenchData:
    rng = np.random.RandomState(0)
    volume, slices = np.repeat(np.arange(n // 6), 6), np.tile(np.arange(6), n // 6)
    x = rng.rand(n, 1, size, size).astype(np.float32)
    return BenchData(
        name="heart", num_classes=4, pretrain=x, pretrain_keys=[f"v{v}/s{s}" for v, s in zip(volume, slices)],
        train_x=x, train_y=np.zeros((n, size, size), np.int64), train_group=volume, test_x=x[:2],
        test_y=np.zeros((2, size, size), np.int64), test_volume=np.zeros(2, np.int64), pretrain_slice=slices,
        pretrain_num_slices=np.full(n, 6), pretrain_volume=volume,
    )


def _args(**kw) -> types.SimpleNamespace:
    base = dict(features=list(FEATURES), pretrain_batch=6, pretrain_lr=1e-3, pretrain_seed=0, temperature=0.1,
                local_weight=1.0, local_locations=8, local_region=1, decoder_layer="upcat_3", mask_level=0,
                num_clusters=[2, 4], partitions=3, ae_steps=3, local_steps=2, local_lr=1e-3, crop_scale=[0.35, 1.0],
                ld_batch=4, ld_steps_factor=1.0, log_every=2, save_every=2)
    base.update(kw)
    return types.SimpleNamespace(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every pretrained method once at toy size, snapshots at 2 and 4 steps."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("pretrain")
    data, args = _data(), _args()
    pre.pseudo_classes(data.pretrain, data.pretrain_keys, (2, 4), 3, 6, 0, folder / "pseudo_classes.csv")
    logs = {m: pre.pretrain(m, data, None, args, folder, [2, 4]) for m in pre.PRETRAINED_METHODS}
    return folder, data, logs


def test_every_method_saves_basicunet_snapshots_that_load_into_the_fine_tuning_network(trained):
    folder, data, logs = trained
    fresh = BasicUNet(2, 1, 4, features=FEATURES).state_dict()
    for method in pre.PRETRAINED_METHODS:
        for steps in (2, 4):
            net = BasicUNet(2, 1, 4, features=FEATURES)
            report = load_pretrained(net, folder / f"{method}_{steps}.pt",
                                     exclude=pre.pretrained_exclude(method, "upcat_3"), min_matched=0.9)
            assert report["matched"] > 0, method
        state = torch.load(folder / f"{method}_4.pt", weights_only=True)["model"]
        assert not torch.equal(state["conv_0.conv_0.conv.weight"], fresh["conv_0.conv_0.conv.weight"]) or (
            method == "local_discrimination"  # seeded differently: compare against its own first snapshot below
        )
        first = torch.load(folder / f"{method}_2.pt", weights_only=True)["model"]
        assert any(not torch.equal(state[k], first[k]) for k in state), f"{method} did not train from step 2 to 4"


def test_losses_and_views_are_the_bundle_ones(trained):
    _, _, logs = trained
    joint = logs["cluster_guided"]["stage1"]["windows"][-1]
    assert {"global", "local", "acc"} <= set(joint)  # global + local on geometric views
    assert set(logs["simclr"]["stage1"]["windows"][-1]) >= {"global", "acc"}
    assert "local" not in logs["simclr"]["stage1"]["windows"][-1]
    staged = logs["cluster_guided_staged"]
    assert "local" not in staged["stage1"]["windows"][-1] and staged["schedule"] == "staged"
    assert all("local" in s["windows"][-1] and "global" not in s["windows"][-1] for s in staged["stage2"].values())
    assert {"patch", "region"} <= set(logs["local_discrimination"]["stage1"]["windows"][-1])


def test_staged_local_stage_keeps_the_encoder_of_stage_one(trained):
    folder, _, _ = trained
    for steps in (2, 4):
        stage1 = torch.load(folder / f"cluster_guided_staged_stage1_{steps}.pt", weights_only=True)["model"]
        final = torch.load(folder / f"cluster_guided_staged_{steps}.pt", weights_only=True)["model"]
        encoder = [k for k in final if k.startswith(("conv_0.", "down_"))]
        decoder = [k for k in final if k.startswith(("upcat_4.", "upcat_3."))]
        assert all(torch.equal(final[k], stage1[k]) for k in encoder)
        assert any(not torch.equal(final[k], stage1[k]) for k in decoder)
        assert all(torch.equal(final[k], stage1[k]) for k in final if k.startswith(("upcat_2.", "upcat_1.")))


def test_global_local_gets_slice_partitions_and_cluster_guided_the_table(trained):
    folder, data, _ = trained
    batches = pre._ViewBatches(data, "global_local", "geometric", _args(), None, 0)
    inputs, targets = batches(torch.arange(6))
    assert inputs.shape == (12, 1, 32, 32) and targets["partition"].tolist() == [0, 0, 1, 1, 2, 2]
    assert targets["volume_id"].tolist() == [0] * 6 and targets["geometry"].shape == (2, 6, 3, 3)
    guided = pre._ViewBatches(data, "cluster_guided", "geometric", _args(), folder / "pseudo_classes.csv", 0)
    _, targets = guided(torch.arange(6))
    assert targets["pseudo_class"].shape == (6, 2) and targets["partition"] is None
    both = pre._ViewBatches(data, "cluster_guided_gd", "geometric", _args(), folder / "pseudo_classes.csv", 0)
    _, targets = both(torch.arange(6))  # G_D with cluster guidance: partitions, volumes and pseudo-classes
    assert targets["pseudo_class"].shape == (6, 2) and targets["partition"].tolist() == [0, 0, 1, 1, 2, 2]
    loss = pre._global_loss("cluster_guided_gd", _args(mask_level=1))
    assert isinstance(loss, pre.GlobalContrastiveLoss) and loss.strategy == "G_D" and loss.level == 1
    aligned = pre._ViewBatches(data, None, "intensity", _args(), None, 0)  # the local stage of the staged schedule
    assert aligned(torch.arange(6))[1]["geometry"] is None


def test_a_killed_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    data = _data()
    straight = tmp_path / "straight"
    straight.mkdir()
    pre.pretrain("global_local", data, None, _args(), straight, [4])
    killed = tmp_path / "killed"
    killed.mkdir()
    calls = {"n": 0}
    original = pre._ViewBatches.__call__

    def dying(self, idx):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill at step 4")
        return original(self, idx)

    monkeypatch.setattr(pre._ViewBatches, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        pre.pretrain("global_local", data, None, _args(), killed, [4])
    monkeypatch.setattr(pre._ViewBatches, "__call__", original)
    assert not (killed / "global_local_4.pt").exists()
    log = pre.pretrain("global_local", data, None, _args(), killed, [4])
    assert log["stage1"]["step"] == 4
    a = torch.load(straight / "global_local_4.pt", weights_only=True)["model"]
    b = torch.load(killed / "global_local_4.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_methods_and_errors():
    assert pre.base_method("cluster_guided_staged") == "cluster_guided"
    assert pre.needs_pseudo_classes(["simclr", "cluster_guided_staged"])
    assert not pre.needs_pseudo_classes(["simclr", "global_local"])
    assert pre.needs_pseudo_classes(["cluster_guided_gd"])
    assert pre.pretrained_exclude("simclr", "upcat_3") == ("final_conv", "upcat_4", "upcat_3", "upcat_2", "upcat_1")
    assert pre.pretrained_exclude("cluster_guided_staged", "upcat_3") == ("final_conv", "upcat_2", "upcat_1")
    assert pre.pretrained_exclude("local_discrimination", "upcat_3") == ("final_conv",)
    with pytest.raises(ValueError, match="method must be one of"):
        pre.pretrain("byol", _data(), None, _args(), Path("."), [2])
