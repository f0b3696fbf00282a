"""End to end: MONAI's SupervisedTrainer with MultiViewd + PseudoClassd, MultiViewPrepareBatch and the pretraining
network and loss, on a tiny synthetic dermoscopy set (2D) and tiny in-memory volumes sliced to 2D (3D -> 2D)."""

from __future__ import annotations

import numpy as np
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.networks.nets import UNet
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    RandAdjustContrastd,
    RandGaussianNoised,
    RandScaleIntensityd,
    ScaleIntensityd,
)

from monai_cluster.clustering import PseudoClassTable
from monai_cluster.data import make_synthetic_dermoscopy
from monai_cluster.engines import MultiViewPrepareBatch
from monai_cluster.handlers import NonFiniteLossHandler, PseudoClassUpdateHandler
from monai_cluster.losses import (
    ClusterGuidedContrastiveLoss,
    ContrastivePretrainLoss,
    GlobalContrastiveLoss,
    LocalContrastiveLoss,
)
from monai_cluster.networks import ContrastivePretrainNet
from monai_cluster.transforms import MultiViewd, PseudoClassd, RandSliced, SlicePartitiond



def _net(in_channels: int, **kwargs) -> ContrastivePretrainNet:
    """A ContrastivePretrainNet around a small MONAI UNet (fast on 16 x 16 images)."""
    torch.manual_seed(0)
    backbone = UNet(2, in_channels, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
    return ContrastivePretrainNet(
        2, in_channels, backbone=backbone, encoder_layer="model.1.submodule.1.submodule", decoder_layer="model.1",
        global_dim=16, **kwargs
    )


def _intensity_views(keys="image"):
    return [
        RandScaleIntensityd(keys, factors=0.3, prob=1.0),
        RandAdjustContrastd(keys, gamma=(0.7, 1.4), prob=1.0),
        RandGaussianNoised(keys, std=0.05, prob=1.0),
    ]


def _trainer(net: ContrastivePretrainNet, dataset: Dataset, loss: ContrastivePretrainLoss):
    """A 2-epoch SupervisedTrainer with MultiViewPrepareBatch; returns it and the lists its iterations fill."""
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=DataLoader(dataset, batch_size=4, shuffle=False, num_workers=0),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-2),
        loss_function=loss,
        prepare_batch=MultiViewPrepareBatch(num_views=2),
        decollate=False,
    )
    losses, targets = [], []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _(engine):
        losses.append(float(engine.state.output["loss"].detach()))
        targets.append(engine.state.output["label"])

    return trainer, losses, targets


def _changed_parameters(net: torch.nn.Module, before: dict) -> list[str]:
    return [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]


def test_cluster_guided_pretraining_two_epochs(tmp_path):
    data = make_synthetic_dermoscopy(tmp_path / "derm", n=8, size=16, seed=0)
    keys = [d["key"] for d in data]
    fine = np.arange(len(keys)) % 4
    table = PseudoClassTable(keys, np.stack([fine // 2, fine], axis=1), (2, 4), "index")
    lookup = PseudoClassd(table)
    load = [LoadImaged("image", image_only=True), EnsureChannelFirstd("image"), ScaleIntensityd("image")]
    transform = Compose([*load, MultiViewd("image", _intensity_views(), intensity_only=True), lookup])
    transform.set_random_state(0)
    net = _net(3, dense_dim=8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = ContrastivePretrainLoss(ClusterGuidedContrastiveLoss(0.5), LocalContrastiveLoss(0.5, num_locations=16))
    trainer, losses, targets = _trainer(net, Dataset(data, transform), loss)
    NonFiniteLossHandler().attach(trainer)
    updater = PseudoClassUpdateHandler(
        interval=1,
        feature_network=net,
        data=data,
        feature_transform=Compose(load),
        num_clusters=(2, 4),
        table_path=tmp_path / "pseudo_classes.csv",
        transforms=lookup,
    )
    updater.attach(trainer)
    trainer.run()

    assert len(losses) == 4 and all(np.isfinite(losses))
    assert np.mean(losses[2:]) < np.mean(losses[:2]), losses
    changed = _changed_parameters(net, before)
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("global_head.") for k in changed)
    assert any(k.startswith("dense_head.") for k in changed)
    assert targets[0]["pseudo_class"].tolist() == np.stack([fine // 2, fine], axis=1)[:4].tolist()
    assert targets[0]["partition"] is None
    # the handler re-clustered after epoch 1 (the epoch-2 batches used its table) and after epoch 2
    assert lookup.table is updater.table and lookup.table is not table
    assert updater.table.feature_model == "ContrastivePretrainNet at epoch 2"
    assert (tmp_path / "pseudo_classes.csv").is_file()
    assert 0 <= trainer.state.metrics["pseudo_class_changed"] <= len(keys)


def test_partition_pretraining_on_slices_of_volumes():
    rng = np.random.default_rng(0)
    volumes = [
        {"image": rng.random((1, 16, 16, 8), dtype=np.float32), "volume_id": np.int64(v)} for v in range(4)
    ]
    transform = Compose(
        [RandSliced("image"), SlicePartitiond(4), MultiViewd("image", _intensity_views(), intensity_only=True)]
    ).set_random_state(1)
    net = _net(1, encoder_only=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer, losses, targets = _trainer(
        net, Dataset(volumes, transform), ContrastivePretrainLoss(GlobalContrastiveLoss(0.5))
    )
    trainer.run()
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any(k.startswith("backbone.") for k in _changed_parameters(net, before))
    assert targets[0]["partition"].shape == (4,) and targets[0]["volume_id"].tolist() == [0, 1, 2, 3]
    assert targets[0]["pseudo_class"] is None
    assert int(targets[0]["partition"].max()) < 4
