"""The image-clustering procedures run on MONAI/Ignite engines: handlers see their events, errors name the input."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import Trainer

from monai_cluster.engines import train_autoencoder, train_cae, train_dvc
from monai_cluster.engines.step_trainer import StepForward, StepTrainer
from monai_cluster.networks.nets.contrastive_autoencoder import ContrastiveAutoEncoder
from monai_cluster.networks.nets.dvc import DeepVariationalClustering


class EventRecorder:
    """An ignite handler recording the engine, the epoch of every iteration and each output's keys."""

    def __init__(self) -> None:
        self.engines, self.iterations, self.keys = [], [], set()

    def attach(self, engine) -> None:
        self.engines.append(engine)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)

    def record(self, engine) -> None:
        self.iterations.append(engine.state.epoch)
        self.keys |= set(engine.state.output)


def _cae(prototypes=None):
    torch.manual_seed(0)
    return ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4, 8), strides=(2, 2), proj_dim=8,
                                  num_prototypes=prototypes)  # fmt: skip


def test_cae_phases_and_autoencoder_run_on_ignite_engines_that_take_handlers(blobs):
    x, _ = blobs(n_per_class=4)  # 12 images, batches of 8 and 4: two iterations per epoch
    recorder = EventRecorder()
    train_cae(_cae(3), x, epochs=2, prototype_epochs=1, batch_size=8, progress=False, handlers=[recorder])
    assert len(recorder.engines) == 2 and all(isinstance(e, Trainer) for e in recorder.engines)  # one per phase
    assert recorder.iterations == [1, 1, 2, 2, 1, 1]
    assert {"loss", "contrastive", "reconstruction", "batch_size"} <= recorder.keys
    recorder = EventRecorder()
    train_autoencoder(_cae(), x, epochs=3, batch_size=8, progress=False, handlers=[recorder])
    assert recorder.iterations == [1, 1, 2, 2, 3, 3]


def test_dvc_stages_run_on_ignite_engines_and_the_tol_stop_terminates_the_engine(blobs):
    x, _ = blobs(n_per_class=4)
    recorder = EventRecorder()
    torch.manual_seed(0)
    model = DeepVariationalClustering(2, (1, 16, 16), latent_dim=4, num_clusters=3, channels=(4, 8), strides=(2, 2))
    result = train_dvc(model, x, pretrain_epochs=1, cluster_epochs=20, update_interval=2, tol=1.0, batch_size=8,
                       progress=False, handlers=[recorder])  # fmt: skip
    assert len(recorder.engines) == 2 and all(isinstance(e, StepTrainer) for e in recorder.engines)
    # the second refresh (start of epoch 2) changes < 100% of the labels: the engine stops before training epoch 2
    assert result.stop_reason == "tol" and result.epochs_run == 2
    assert recorder.engines[1].state.epoch == 3 and recorder.engines[1].should_terminate
    assert recorder.iterations == [1, 1] + [1, 1, 2, 2]
    assert {"loss", "clustering", "kl", "reconstruction"} <= recorder.keys


def test_step_trainer_checks_its_arguments_and_stops_on_a_non_finite_loss():
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = [torch.ones(2, 2)]
    with pytest.raises(TypeError, match="step must be callable"):
        StepTrainer("cpu", 1, data, opt, step=3)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        StepTrainer("cpu", 1, data, net, step=lambda b: ({"loss": net(b).sum()}, 2))
    with pytest.raises(TypeError, match="amp must be a bool"):
        StepTrainer("cpu", 1, data, opt, step=lambda b: ({"loss": net(b).sum()}, 2), amp="yes")
    with pytest.raises(TypeError, match="fn must be callable"):
        StepForward(net, None)
    trainer = StepTrainer("cpu", 2, data, opt, step=lambda b: ({"loss": net(b).sum() * float("nan")}, 2), name="toy")
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) in toy epoch 0"):
        trainer.run()
