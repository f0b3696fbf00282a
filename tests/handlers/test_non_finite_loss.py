"""Tests for NonFiniteLossHandler: it stops on NaN/Inf before any checkpoint saver writes the broken step."""

from __future__ import annotations

import os

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointSaver
from torch import nn

from monai_cluster.handlers import NonFiniteLossHandler
from monai_cluster.handlers.non_finite_loss import loss_from_output


class _PoisonedLoss(nn.Module):
    """MSE that returns NaN from the ``bad_call``-th call on (1-based)."""

    def __init__(self, bad_call: int, value: float = float("nan")) -> None:
        super().__init__()
        self.bad_call, self.value, self.calls = bad_call, value, 0

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = nn.functional.mse_loss(pred, target)
        return loss * self.value if self.calls >= self.bad_call else loss


def _trainer(loss: nn.Module, epochs: int, iters_per_epoch: int = 2) -> SupervisedTrainer:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1))
    data = [{"image": torch.randn(2, 1, 8, 8), "label": torch.randn(2, 1, 8, 8)} for _ in range(iters_per_epoch)]
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=loss,
        decollate=False,
    )


def _snapshot(folder) -> dict[str, tuple[int, bytes]]:
    return {name: (os.stat(folder / name).st_mtime_ns, (folder / name).read_bytes()) for name in os.listdir(folder)}


def test_epoch_checkpoint_of_last_good_epoch_untouched(tmp_path):
    trainer = _trainer(_PoisonedLoss(bad_call=5), epochs=4)  # calls 1-4 are epochs 1-2, call 5 is epoch 3 iteration 5
    saver = CheckpointSaver(str(tmp_path), {"net": trainer.network}, save_interval=1, n_saved=None, save_final=True)
    saver.attach(trainer)
    snapshots = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: snapshots.append(_snapshot(tmp_path)))
    NonFiniteLossHandler().attach(trainer)  # attached after the saver on purpose
    with pytest.raises(FloatingPointError, match=r"nan.*epoch 3, iteration 5"):
        trainer.run()
    assert trainer.state.epoch == 3 and trainer.state.iteration == 5
    assert len(snapshots) == 2
    assert _snapshot(tmp_path) == snapshots[-1], "checkpoint files changed after the non-finite step"
    assert sorted(os.listdir(tmp_path)) == ["net_epoch=1.pt", "net_epoch=2.pt"]  # no 'final' checkpoint of NaN weights
    weights = torch.load(tmp_path / "net_epoch=2.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not all(torch.isfinite(p).all() for p in trainer.network.parameters())  # the NaN step did happen


def test_iteration_saver_attached_first_never_sees_the_bad_iteration(tmp_path):
    trainer = _trainer(_PoisonedLoss(bad_call=3, value=float("inf")), epochs=3)
    CheckpointSaver(str(tmp_path), {"net": trainer.network}, save_interval=1, epoch_level=False, n_saved=None).attach(
        trainer
    )
    NonFiniteLossHandler().attach(trainer)
    with pytest.raises(FloatingPointError, match=r"inf.*epoch 2, iteration 3"):
        trainer.run()
    assert sorted(os.listdir(tmp_path)) == ["net_iteration=1.pt", "net_iteration=2.pt"]


def test_finite_training_runs_to_the_end_and_other_errors_pass_through(tmp_path):
    trainer = _trainer(_PoisonedLoss(bad_call=10**6), epochs=2)
    NonFiniteLossHandler().attach(trainer)
    NonFiniteLossHandler().attach(trainer)  # a second handler is harmless
    trainer.run()
    assert trainer.state.epoch == 2

    def broken(engine, batch):
        raise RuntimeError("boom in the step")

    engine = Engine(broken)
    NonFiniteLossHandler().attach(engine)  # the only EXCEPTION_RAISED handler: it must not swallow the error
    with pytest.raises(RuntimeError, match="boom"):
        engine.run([0, 1])

    # with a final-checkpoint saver behind it, an unrelated error still reaches the saver
    trainer = _trainer(_PoisonedLoss(bad_call=10**6), epochs=1)
    trainer.loss_function = lambda pred, target: (_ for _ in ()).throw(RuntimeError("loss crashed"))
    CheckpointSaver(str(tmp_path), {"net": trainer.network}, save_final=True).attach(trainer)
    NonFiniteLossHandler().attach(trainer)
    with pytest.raises(RuntimeError, match="loss crashed"):
        trainer.run()
    assert any("final" in name for name in os.listdir(tmp_path))


def test_tensor_and_custom_outputs():
    handler = NonFiniteLossHandler(output_transform=lambda out: out[1])
    engine = Engine(lambda e, b: (None, torch.tensor([1.0, float("nan"), float("nan")])))
    handler.attach(engine)
    with pytest.raises(FloatingPointError, match="2 of 3"):
        engine.run([0])
    assert loss_from_output([{"loss": 1.5}, {"loss": 1.5}]) == 1.5
    assert loss_from_output(torch.tensor(2.0)) == 2.0
    with pytest.raises(ValueError, match="loss"):
        loss_from_output({"pred": 1})


def test_errors():
    with pytest.raises(TypeError, match="output_transform"):
        NonFiniteLossHandler(output_transform="loss")
    with pytest.raises(TypeError, match="engine"):
        NonFiniteLossHandler().attach(object())
    engine = Engine(lambda e, b: {"loss": "not a number"})
    NonFiniteLossHandler().attach(engine)
    with pytest.raises(TypeError, match="loss"):
        engine.run([0])
