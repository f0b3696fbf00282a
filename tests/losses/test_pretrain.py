import itertools
import math

import pytest
import torch
from torch import nn

from monai_cluster.losses import (
    ClusterGuidedContrastiveLoss,
    ContrastivePretrainLoss,
    GlobalContrastiveLoss,
    LocalContrastiveLoss,
    cluster_guided_nt_xent,
    global_contrastive_loss,
    local_contrastive_loss,
)


def _preds(b=4, views=2, spatial=(4, 4)):
    return {"global": torch.randn(views * b, 6), "dense": torch.randn(views * b, 3, *spatial)}


@pytest.mark.parametrize("spatial", [(4, 4), (3, 3, 3)])
def test_weighted_sum_of_cluster_and_local_terms(spatial):
    preds = _preds(spatial=spatial)
    pseudo = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3]])
    loss = ContrastivePretrainLoss(
        ClusterGuidedContrastiveLoss(0.2, level=-1), LocalContrastiveLoss(0.3, num_locations=100), 0.5, 2.0
    )
    value = loss(preds, {"pseudo_class": pseudo, "partition": None})
    g = cluster_guided_nt_xent(preds["global"][:4], preds["global"][4:], pseudo, 0.2, level=-1)
    d = local_contrastive_loss(preds["dense"][:4], preds["dense"][4:], 0.3, num_locations=100)
    assert math.isclose(value.item(), 0.5 * g.item() + 2.0 * d.item(), rel_tol=1e-6)
    assert loss.last_components == pytest.approx({"global": g.item(), "local": d.item(), "total": value.item()})


def test_partitions_and_volume_ids_reach_the_global_loss():
    preds = _preds()
    parts, vols = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    loss = ContrastivePretrainLoss(GlobalContrastiveLoss(0.1))
    with_vol = loss(preds, {"pseudo_class": None, "partition": parts, "volume_id": vols})
    ref = global_contrastive_loss(preds["global"][:4], preds["global"][4:], parts, vols, 0.1)
    assert math.isclose(with_vol.item(), ref.item(), rel_tol=1e-6)
    simclr = loss(preds, None)
    ref = cluster_guided_nt_xent(preds["global"][:4], preds["global"][4:])
    assert math.isclose(simclr.item(), ref.item(), rel_tol=1e-6)
    # pseudo-classes guide Chaitanya's global loss too (same-class samples leave the negatives)
    pseudo = torch.tensor([[0, 0], [1, 2], [1, 3], [0, 1]])
    guided = ContrastivePretrainLoss(GlobalContrastiveLoss(0.1, level=0))
    value = guided(preds, {"pseudo_class": pseudo, "partition": parts, "volume_id": vols})
    ref = global_contrastive_loss(preds["global"][:4], preds["global"][4:], parts, vols, 0.1, pseudo_classes=pseudo,
                                  level=0)  # fmt: skip
    assert math.isclose(value.item(), ref.item(), rel_tol=1e-6)
    assert not math.isclose(value.item(), with_vol.item(), rel_tol=1e-6)


def test_three_views_average_all_pairs():
    preds = _preds(b=3, views=3)
    loss = ContrastivePretrainLoss(ClusterGuidedContrastiveLoss(0.5), num_views=3)
    views = preds["global"].split(3)
    pairs = itertools.combinations(range(3), 2)
    ref = sum(cluster_guided_nt_xent(views[i], views[j], temperature=0.5) for i, j in pairs)
    assert math.isclose(loss(preds).item(), ref.item() / 3, rel_tol=1e-6)


def test_zero_weight_skips_term_and_its_key():
    loss = ContrastivePretrainLoss(ClusterGuidedContrastiveLoss(), LocalContrastiveLoss(), local_weight=0.0)
    value = loss({"global": torch.randn(8, 5)})
    assert torch.isfinite(value) and set(loss.last_components) == {"global", "total"}
    local_only = ContrastivePretrainLoss(local_loss=LocalContrastiveLoss(num_locations=8))
    local_only({"dense": torch.randn(4, 2, 4, 4)})
    assert set(local_only.last_components) == {"local", "total"}


def test_trains_a_network_with_monai_supervised_trainer():
    from monai.engines import SupervisedTrainer

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.proj = nn.Linear(4, 8)

        def forward(self, x):
            dense = self.conv(x)
            return {"global": self.proj(dense.mean(dim=(2, 3))), "dense": dense, "pooled": dense.mean(dim=(2, 3))}

    images = torch.rand(4, 1, 8, 8)
    batch = {
        "image": images,
        "image_1": images + 0.1 * torch.randn_like(images),
        "pseudo_class": torch.tensor([[0], [1], [0], [1]]),
    }

    def prepare_batch(batchdata, device=None, non_blocking=False, **kwargs):
        inputs = torch.cat([batchdata["image"], batchdata["image_1"]])
        return inputs, {"pseudo_class": batchdata["pseudo_class"], "partition": None}

    net = TinyNet()
    before = [p.detach().clone() for p in net.parameters()]
    loss = ContrastivePretrainLoss(ClusterGuidedContrastiveLoss(0.2), LocalContrastiveLoss(0.2, num_locations=16))
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch, batch],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=loss,
        prepare_batch=prepare_batch,
        decollate=False,
    )
    trainer.run()
    assert math.isfinite(trainer.state.output["loss"].item())
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))
    assert set(loss.last_components) == {"global", "local", "total"}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "at least one active term"),
        ({"global_loss": ClusterGuidedContrastiveLoss(), "global_weight": 0.0}, ValueError, "at least one active term"),
        (
            {
                "global_loss": ClusterGuidedContrastiveLoss(),
                "local_loss": LocalContrastiveLoss(),
                "global_weight": 0,
                "local_weight": 0,
            },
            ValueError,
            "at least one active term",
        ),
        ({"global_loss": ClusterGuidedContrastiveLoss(), "global_weight": -1.0}, ValueError, "global_weight"),
        ({"local_loss": LocalContrastiveLoss(), "local_weight": "1"}, TypeError, "local_weight"),
        ({"global_loss": ClusterGuidedContrastiveLoss(), "num_views": 1}, ValueError, "num_views"),
        ({"global_loss": "nt_xent"}, TypeError, "global_loss"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ContrastivePretrainLoss(**kwargs)


@pytest.mark.parametrize(
    "preds, targets, error, match",
    [
        (torch.randn(8, 5), None, TypeError, "preds"),
        ({"dense": torch.randn(8, 2, 4, 4)}, None, ValueError, "'global'"),
        ({"global": torch.randn(7, 5), "dense": torch.randn(7, 2, 4, 4)}, None, ValueError, "num_views"),
        ({"global": torch.randn(8, 5), "dense": torch.randn(8, 2, 4, 4)}, [1, 2], TypeError, "targets"),
        (
            {"global": torch.randn(8, 5), "dense": torch.randn(8, 2, 4, 4)},
            {"pseudo_class": torch.zeros(3, 1, dtype=torch.long)},
            ValueError,
            "pseudo_classes",
        ),
    ],
)
def test_forward_errors(preds, targets, error, match):
    loss = ContrastivePretrainLoss(ClusterGuidedContrastiveLoss(), LocalContrastiveLoss(num_locations=4))
    with pytest.raises(error, match=match):
        loss(preds, targets)


def test_non_scalar_component_is_an_error():
    loss = ContrastivePretrainLoss(ClusterGuidedContrastiveLoss(reduction="none"))
    with pytest.raises(ValueError, match="global_loss must return a scalar"):
        loss({"global": torch.randn(8, 5)})
