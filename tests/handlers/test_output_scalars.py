"""OutputScalars: the loss and the named scalar terms of an iteration output, for MONAI's TensorBoardStatsHandler."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import TensorBoardStatsHandler

from monai_cluster.handlers import OutputScalars


def test_picks_the_loss_and_the_terms_present_as_floats():
    pick = OutputScalars(["kept_fraction", "loss_consistency", "absent"])
    output = {"loss": torch.tensor(0.75), "kept_fraction": 0.25, "loss_consistency": torch.tensor([0.5]), "pred": 1}
    assert pick(output) == {"train_loss": 0.75, "train_kept_fraction": 0.25, "train_loss_consistency": 0.5}
    # a decollated output (a list of per-sample dicts repeating the scalars) reads its first item
    assert pick([{"loss": 1.0, "kept_fraction": 0.5}, {"loss": 1.0, "kept_fraction": 0.5}]) == {
        "train_loss": 1.0, "train_kept_fraction": 0.5}  # fmt: skip
    assert OutputScalars(loss_tag="loss", prefix="semi/")({"loss": 2, "x": 1}) == {"loss": 2.0}


@pytest.mark.parametrize(
    "keys, output, error, match",
    [
        ("kept_fraction", {"loss": 1.0}, TypeError, "keys must be a sequence of strings"),
        ([1], {"loss": 1.0}, TypeError, "keys must be a sequence of strings"),
        (["x"], {"x": 1.0}, ValueError, r"'loss' entry, got \['x'\]"),
        (["x"], torch.tensor(1.0), ValueError, "'loss' entry, got Tensor"),
        (["x"], {"loss": 1.0, "x": torch.ones(2, 2)}, ValueError, r"term 'x' must be a scalar, got a tensor of shape \(2, 2\)"),
        (["x"], {"loss": 1.0, "x": "high"}, ValueError, "term 'x' must be a scalar, got str"),
    ],
)
def test_bad_keys_or_outputs_are_named(keys, output, error, match):
    with pytest.raises(error, match=match):
        OutputScalars(keys)(output)


def test_monai_tensorboard_handler_writes_each_term_under_its_own_tag():
    written = []

    class Writer:
        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

    engine = Engine(lambda e, b: {"loss": torch.tensor(float(b)), "kept_fraction": b / 10})
    TensorBoardStatsHandler(
        summary_writer=Writer(), epoch_log=False, output_transform=OutputScalars(["kept_fraction"])
    ).attach(engine)
    engine.run([1, 2], max_epochs=1)
    assert written == [("train_kept_fraction", 0.1, 1), ("train_loss", 1.0, 1), ("train_kept_fraction", 0.2, 2),
                       ("train_loss", 2.0, 2)]  # fmt: skip
