"""LocalDiscriminationWarmupHandler: the clustering terms join after warmup_epochs, also after a resume."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from monai_cluster.handlers import LocalDiscriminationWarmupHandler, ShapePriorHandler
from monai_cluster.losses import LocalDiscriminationLoss, ShapePriorLoss
from monai_cluster.networks.blocks.shape_prior import ShapePriorDiscriminator


def _engine(loss, log):
    def step(engine, _):
        log.append((engine.state.epoch, loss.clustering_active))

    return Engine(step)


def test_stage_per_epoch_and_pauses_the_discriminator():
    loss = LocalDiscriminationLoss()
    disc = ShapePriorDiscriminator(2, 3)
    shape_prior = ShapePriorLoss(disc, 0)
    sp_handler = ShapePriorHandler(shape_prior, torch.optim.Adam(disc.parameters()), torch.rand(2, 1, 8, 8))
    handler = LocalDiscriminationWarmupHandler(loss, 2, shape_prior_handler=sp_handler)
    pauses, log = [], []
    engine = _engine(loss, log)
    handler.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: pauses.append(sp_handler.paused))
    engine.run([0, 1], max_epochs=4)
    assert [active for _, active in log] == [False, False, False, False, True, True, True, True]
    assert pauses == [True] * 4 + [False] * 4
    assert [handler.in_warmup(e) for e in (1, 2, 3)] == [True, True, False]


def test_resumed_engine_lands_in_the_right_stage_and_zero_means_no_warmup():
    loss = LocalDiscriminationLoss()
    log = []
    engine = _engine(loss, log)
    LocalDiscriminationWarmupHandler(loss, 3).attach(engine)
    engine.state.epoch, engine.state.max_epochs = 3, 5  # as a checkpoint restores it: epochs 4 and 5 remain
    engine.state.iteration = 3 * 2
    engine.run([0, 1], max_epochs=5)
    assert [e for e, _ in log] == [4, 4, 5, 5] and all(active for _, active in log)
    loss.set_clustering_active(False)
    log.clear()
    engine = _engine(loss, log)
    LocalDiscriminationWarmupHandler(loss, 0).attach(engine)
    engine.run([0], max_epochs=1)
    assert log == [(1, True)]


def test_errors():
    with pytest.raises(TypeError, match="loss must be a LocalDiscriminationLoss"):
        LocalDiscriminationWarmupHandler(torch.nn.MSELoss(), 1)
    with pytest.raises(ValueError, match="warmup_epochs"):
        LocalDiscriminationWarmupHandler(LocalDiscriminationLoss(), -1)
    with pytest.raises(ValueError, match="patch_weight or mixup_weight"):
        LocalDiscriminationWarmupHandler(LocalDiscriminationLoss(patch_weight=0, mixup_weight=0), 1)
    with pytest.raises(TypeError, match="shape_prior_handler"):
        LocalDiscriminationWarmupHandler(LocalDiscriminationLoss(), 1, shape_prior_handler=object())
