"""Issue 24, class 6: atomically written outputs get the permission bits a plain ``open`` gives (``0o666 & ~umask``),
not ``tempfile.mkstemp``'s ``0o600``, and a failed write still leaves no file.

Each test sets the process umask and restores it, so the modes asserted are the umask's, not the machine's default.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat

import numpy as np
import pytest
import torch

from monai_cluster.clustering import PseudoClassTable, extract_features, write_pseudo_class_table
from monai_cluster.utils import atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_json
from monai_cluster.utils.io import current_umask, open_file_mode

UMASKS = [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)]


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _plain_open_mode(path) -> int:
    """What ``open(path, "w")`` gives a new file under the current umask: the reference the writers must match."""
    with open(path, "w", encoding="utf-8"):
        pass
    mode = _mode(path)
    os.unlink(path)
    return mode


@pytest.mark.parametrize("mask,expected", UMASKS)
def test_current_umask_and_open_file_mode_follow_the_umask(tmp_path, mask, expected):
    with _umask(mask):
        assert current_umask() == mask
        assert open_file_mode() == expected == _plain_open_mode(tmp_path / "plain")
        assert os.umask(mask) == mask  # reading it left it as it was


@pytest.mark.parametrize("mask,expected", UMASKS)
def test_atomic_write_json_gets_the_umask_mode(tmp_path, mask, expected):
    with _umask(mask):
        atomic_write_json({"a": 1}, tmp_path / "x.json")
    assert _mode(tmp_path / "x.json") == expected
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


@pytest.mark.parametrize("mask,expected", UMASKS)
def test_atomic_torch_save_and_bytes_get_the_umask_mode(tmp_path, mask, expected):
    with _umask(mask):
        atomic_torch_save({"w": torch.ones(2)}, tmp_path / "sub" / "m.pt")
        atomic_write_bytes(b"\x89PNG", tmp_path / "img.png")
    assert _mode(tmp_path / "sub" / "m.pt") == expected
    assert _mode(tmp_path / "img.png") == expected
    assert torch.equal(torch.load(tmp_path / "sub" / "m.pt")["w"], torch.ones(2))


@pytest.mark.parametrize("mask,expected", UMASKS[:2])
def test_replacing_a_private_file_gives_the_umask_mode(tmp_path, mask, expected):
    """A result an older writer left ``0o600`` becomes group-readable when it is written again."""
    dest = tmp_path / "autoencoder.pt"
    dest.write_bytes(b"old")
    os.chmod(dest, 0o600)
    with _umask(mask):
        atomic_torch_save({"w": torch.zeros(1)}, dest)
    assert _mode(dest) == expected


@pytest.mark.parametrize("mask,expected", UMASKS[:2])
def test_pseudo_class_table_csv_gets_the_umask_mode(tmp_path, mask, expected):
    table = PseudoClassTable(["a", "b", "c"], np.array([[0, 0], [0, 1], [1, 2]]), num_clusters=(2, 3), feature_model="tiny")
    with _umask(mask):
        path = write_pseudo_class_table(table, tmp_path / "pseudo_classes.csv")
    assert _mode(path) == expected


class _Encoder(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


@pytest.mark.parametrize("mask,expected", UMASKS[:2])
def test_memory_mapped_features_get_the_umask_mode(tmp_path, mask, expected):
    data = [{"image": torch.full((1, 2, 2), float(i)), "key": f"k{i}"} for i in range(3)]
    out = tmp_path / "features.npy"
    with _umask(mask):
        feats, keys = extract_features(_Encoder(), data, batch_size=2, progress=False, out_path=out)
    assert _mode(out) == expected
    assert keys == ["k0", "k1", "k2"] and feats.shape == (3, 4)


def test_a_failed_write_still_leaves_no_file(tmp_path):
    with _umask(0o002):
        with pytest.raises(RuntimeError, match="crash"):
            with atomic_write(tmp_path / "x.json") as handle:
                handle.write("{")
                raise RuntimeError("crash mid-write")
        with pytest.raises(TypeError):
            atomic_write_json({"a": object()}, tmp_path / "y.json")  # not JSON serialisable, fails mid-dump
        with pytest.raises(TypeError, match="PseudoClassTable"):
            write_pseudo_class_table({"a": 1}, tmp_path / "t.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file_and_its_mode(tmp_path):
    dest = tmp_path / "x.json"
    dest.write_text("old")
    os.chmod(dest, 0o640)
    with _umask(0o022), pytest.raises(RuntimeError):
        with atomic_write(dest) as handle:
            handle.write("half")
            raise RuntimeError("crash mid-write")
    assert dest.read_text() == "old" and _mode(dest) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
