"""Tests for PseudoClass / PseudoClassd: lookups, table swaps, worker behaviour and every error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, list_data_collate
from monai.transforms import Compose, RandGaussianNoised

from monai_cluster.clustering import PseudoClassTable, write_pseudo_class_table
from monai_cluster.transforms import MultiViewd, PseudoClass, PseudoClassd, PseudoClassD, PseudoClassDict

KEYS = [f"images/IMG{i:03d}.png" for i in range(6)]
FINE = np.array([0, 1, 2, 3, 1, 2], dtype=np.int64)


def _table(fine: np.ndarray = FINE) -> PseudoClassTable:
    labels = np.stack([fine // 2, fine], axis=1)  # nested: each fine class lies in one coarse class
    return PseudoClassTable(KEYS, labels, (2, 4), "test features")


def _expected(i: int, fine: np.ndarray = FINE) -> list[int]:
    return [int(fine[i] // 2), int(fine[i])]


def test_lookup_attaches_int64_levels():
    t = PseudoClassd(_table())
    for i, key in enumerate(KEYS):
        out = t({"image": np.zeros((1, 4, 4)), "key": key})
        assert isinstance(out["pseudo_class"], np.ndarray)
        assert out["pseudo_class"].dtype == np.int64 and out["pseudo_class"].shape == (2,)
        assert out["pseudo_class"].tolist() == _expected(i)
    out["pseudo_class"][:] = 99  # the attached array is a copy, not a view into the table
    assert t({"key": KEYS[-1]})["pseudo_class"].tolist() == _expected(5)
    assert PseudoClass(_table())(KEYS[3]).tolist() == _expected(3)
    assert PseudoClassD is PseudoClassd and PseudoClassDict is PseudoClassd


def test_custom_fields_and_batch_collation():
    t = PseudoClassd(_table(), key_field="id", output_key="pc")
    batch = list_data_collate([t({"id": k}) for k in KEYS[:4]])
    assert batch["pc"].dtype == torch.int64 and batch["pc"].shape == (4, 2)
    assert batch["pc"].tolist() == [_expected(i) for i in range(4)]


def test_table_from_path_and_set_table(tmp_path):
    path = tmp_path / "tables" / "pseudo_classes.csv"
    write_pseudo_class_table(_table(), path)
    for source in (path, str(path)):
        assert PseudoClassd(source)({"key": KEYS[2]})["pseudo_class"].tolist() == _expected(2)
    t = PseudoClassd(path)
    new_fine = np.array([3, 3, 2, 0, 1, 0], dtype=np.int64)
    t.set_table(_table(new_fine))
    assert t({"key": KEYS[0]})["pseudo_class"].tolist() == _expected(0, new_fine)
    write_pseudo_class_table(_table(FINE[::-1].copy()), path)
    t.set_table(path)
    assert t({"key": KEYS[0]})["pseudo_class"].tolist() == _expected(0, FINE[::-1])


@pytest.mark.parametrize("dims", [2, 3])
def test_after_multiview_in_a_chain(dims):
    chain = Compose([MultiViewd("image", RandGaussianNoised("image", prob=1.0)), PseudoClassd(_table())])
    out = chain({"image": np.zeros((1,) + (4,) * dims, dtype=np.float32), "key": KEYS[1]})
    assert out["pseudo_class"].tolist() == _expected(1)
    assert out["image_1"].shape == (1,) + (4,) * dims


@pytest.mark.parametrize("persistent, sees_new", [(False, True), (True, False)])
def test_workers_see_a_swapped_table_only_without_persistent_workers(persistent, sees_new):
    t = PseudoClassd(_table())
    loader = DataLoader(
        Dataset([{"key": k} for k in KEYS], transform=t), batch_size=6, num_workers=1, persistent_workers=persistent
    )
    assert next(iter(loader))["pseudo_class"][:, 1].tolist() == FINE.tolist()
    new_fine = (FINE + 1) % 4
    t.set_table(_table(new_fine))
    expected = new_fine if sees_new else FINE
    assert next(iter(loader))["pseudo_class"][:, 1].tolist() == expected.tolist()


def test_errors(tmp_path):
    t = PseudoClassd(_table())
    with pytest.raises(ValueError, match="images/UNKNOWN.png"):
        t({"key": "images/UNKNOWN.png"})
    with pytest.raises(ValueError, match="key_field 'key'"):
        t({"image": np.zeros((1, 4, 4))})
    with pytest.raises(ValueError, match="'case_id'"):
        PseudoClassd(_table(), key_field="case_id")({"key": KEYS[0]})
    with pytest.raises(TypeError, match="key must be a str"):
        t({"key": 3})
    with pytest.raises(TypeError, match="table"):
        PseudoClassd({"images/a.png": [0, 1]})
    with pytest.raises(TypeError, match="table"):
        t.set_table(None)
    with pytest.raises((ValueError, FileNotFoundError), match="missing.csv"):
        PseudoClassd(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("key,level_0\nimages/a.png,0\n")
    with pytest.raises(ValueError):
        PseudoClassd(Path(bad))
