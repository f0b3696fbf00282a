"""Tests for PseudoClassUpdateHandler and count_changed: re-clustering, table swap, counts and every error."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_cluster.clustering import PseudoClassTable, read_pseudo_class_table
from monai_cluster.handlers import PseudoClassUpdateHandler, count_changed
from monai_cluster.transforms import PseudoClassd

SPATIAL = {2: (6, 6), 3: (4, 4, 4)}
N = 12


class _MeanNet(nn.Module):
    """Features: per-channel mean and max of a 1x1 convolution; records the mode and grad state it ran in."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 2, 1)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        y = self.conv(x).flatten(2)
        return torch.cat([y.mean(2), y.amax(2)], dim=1)


def _data(dims: int) -> list[dict]:
    """Three well separated brightness groups of four images each."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(N):
        level = [0.0, 5.0, 10.0][i % 3]
        image = torch.from_numpy(level + 0.01 * rng.standard_normal((1, *SPATIAL[dims])).astype(np.float32))
        items.append({"image": image, "key": f"images/{i:02d}.png"})
    return items


def _groups() -> np.ndarray:
    return np.arange(N) % 3


def _table(fine: np.ndarray, coarse: np.ndarray | None = None) -> PseudoClassTable:
    coarse = (fine > 0).astype(np.int64) if coarse is None else coarse
    return PseudoClassTable([f"images/{i:02d}.png" for i in range(N)], np.stack([coarse, fine], 1), (2, 3), "t")


def _brute_force_changes(old: np.ndarray, new: np.ndarray) -> int:
    """Smallest number of samples whose class differs under any one-to-one renaming of the new classes."""
    old_ids, new_ids = sorted(set(old)), sorted(set(new))
    best = len(new)
    for image in itertools.permutations(old_ids + [-1] * len(new_ids), len(new_ids)):
        mapping = dict(zip(new_ids, image))
        best = min(best, sum(mapping[b] != a for a, b in zip(old, new)))
    return best


def test_count_changed_matches_brute_force_and_ignores_renumbering():
    rng = np.random.default_rng(1)
    base = _table(_groups())
    renamed = _table((_groups() + 1) % 3, coarse=1 - base.labels[:, 0])  # the same partitions, other ids
    assert count_changed(base, renamed) == [0, 0]
    for _ in range(5):
        fine = rng.integers(0, 3, N)
        fine[:3] = [0, 1, 2]
        new = _table(fine)
        expected = [_brute_force_changes(base.labels[:, lvl], new.labels[:, lvl]) for lvl in range(2)]
        assert count_changed(base, new) == expected
    assert count_changed(None, base) == [N, N]
    one_level = PseudoClassTable(base.keys, base.labels[:, 1:], (3,), "t")
    assert count_changed(one_level, base) == [N, N]
    partial = PseudoClassTable(base.keys[:6], base.labels[:6], (2, 3), "t")
    assert count_changed(partial, base) == [6, 6]  # the six unknown keys count as changed


@pytest.mark.parametrize("dims", [2, 3])
def test_updates_every_epoch_and_swaps_the_table(tmp_path, dims):
    data = _data(dims)
    net = _MeanNet(dims)
    initial = _table((_groups() + 2) % 3)  # the true grouping, renumbered
    lookups = [PseudoClassd(initial), PseudoClassd(initial, output_key="pc")]
    path = tmp_path / "tables" / "pseudo.csv"
    handler = PseudoClassUpdateHandler(
        interval=2,
        feature_network=net,
        data=data,
        num_clusters=(2, 3),
        table_path=path,
        transforms=lookups,
        batch_size=5,
    )
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    net.train()
    engine.run([0], max_epochs=5)
    assert len(net.calls) == 2 * 3  # epochs 2 and 4, three batches of at most 5 each
    assert all(call == (False, False) for call in net.calls)  # eval mode, no gradients
    assert net.training and all(p.grad is None for p in net.parameters())
    table = read_pseudo_class_table(path, expected_keys=[d["key"] for d in data])
    assert table == handler.table and table.feature_model == "_MeanNet at epoch 4"
    assert all(t.table is handler.table for t in lookups)
    assert handler.last_changed == [0, 0] and engine.state.metrics["pseudo_class_changed"] == 0
    fine = table.labels[:, 1]
    assert len(set(fine)) == 3 and all(len(set(fine[_groups() == g])) == 1 for g in range(3))
    sample = lookups[1]({"key": "images/04.png"})
    assert sample["pc"].tolist() == table.lookup("images/04.png").tolist()
    assert sorted(os.listdir(path.parent)) == ["pseudo.csv"]  # atomic write: no temporary files left


def test_iteration_level_first_update_counts_everything(tmp_path):
    handler = PseudoClassUpdateHandler(
        interval=3,
        feature_network=_MeanNet(2),
        data=_data(2),
        num_clusters=(3,),
        table_path=tmp_path / "t.csv",
        epoch_level=False,
        feature_model_name="mean net",
        feature_fn=lambda model, x: model(x)[:, :2],
    )
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    updates = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: updates.append(handler.last_changed))
    engine.run(range(4), max_epochs=2)  # iterations 3 and 6
    assert updates[2] == [N] and updates[5] == [0] and updates[1] is None
    assert read_pseudo_class_table(tmp_path / "t.csv").feature_model == "mean net"


def test_update_without_engine_and_interval_zero(tmp_path):
    handler = PseudoClassUpdateHandler(
        feature_network=_MeanNet(2), data=_data(2), num_clusters=(2, 3), table_path=tmp_path / "t.csv"
    )
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    assert not engine.has_event_handler(handler)
    table = handler.update()
    assert table.feature_model == "_MeanNet" and (tmp_path / "t.csv").is_file()
    assert handler.last_changed == [N, N]


def test_errors(tmp_path):
    net, data, path = _MeanNet(2), _data(2), tmp_path / "t.csv"
    with pytest.raises(ValueError, match="interval"):
        PseudoClassUpdateHandler(interval=-1)
    with pytest.raises(TypeError, match="feature_network"):
        PseudoClassUpdateHandler(interval=1, data=data, table_path=path)
    with pytest.raises(ValueError, match="data"):
        PseudoClassUpdateHandler(interval=1, feature_network=net, table_path=path)
    with pytest.raises(ValueError, match="table_path"):
        PseudoClassUpdateHandler(interval=1, feature_network=net, data=data)
    with pytest.raises(ValueError, match="num_clusters"):
        PseudoClassUpdateHandler(num_clusters=(8, 4))
    with pytest.raises(TypeError, match="num_clusters"):
        PseudoClassUpdateHandler(num_clusters="8,64")
    with pytest.raises(TypeError, match="transforms"):
        PseudoClassUpdateHandler(transforms=[lambda d: d])
    with pytest.raises(TypeError, match="feature_fn"):
        PseudoClassUpdateHandler(feature_fn=3)
    with pytest.raises(ValueError, match="feature_network, data and table_path"):
        PseudoClassUpdateHandler().update()
    too_many = PseudoClassUpdateHandler(
        interval=1, feature_network=net, data=data[:2], num_clusters=(2, 3), table_path=path
    )
    with pytest.raises(ValueError, match="num_clusters"):
        too_many.update()
    assert not path.exists()  # a failed update writes nothing
