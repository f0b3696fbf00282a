import json
import os

import numpy as np
import pytest
import torch

from monai_cluster.utils import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    check_embeddings,
    check_finite,
    check_labels,
    check_positive_float,
    check_positive_int,
    check_spatial_dims,
    check_spatial_tensor,
    get_data_root,
)


def test_atomic_write_replaces_only_on_success(tmp_path):
    dest = tmp_path / "table.csv"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(dest) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"], "temporary file left behind"
    with atomic_write(dest) as f:
        f.write("new")
    assert dest.read_text() == "new"


def test_atomic_torch_save_and_json(tmp_path):
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "sub" / "m.pt")
    assert torch.equal(torch.load(tmp_path / "sub" / "m.pt")["w"], torch.ones(2))
    atomic_write_json({"a": 1}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "y", "a"):
            pass


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MONAI_CLUSTER_DATA", str(tmp_path))
    assert get_data_root() == tmp_path.resolve()


def test_scalar_checks_name_the_input():
    assert check_positive_int(3, "n") == 3
    with pytest.raises(TypeError, match="num_views"):
        check_positive_int(2.5, "num_views")
    with pytest.raises(ValueError, match="num_views"):
        check_positive_int(0, "num_views")
    with pytest.raises(ValueError, match="temperature"):
        check_positive_float(0.0, "temperature")
    with pytest.raises(ValueError, match="temperature"):
        check_positive_float(float("nan"), "temperature")
    with pytest.raises(ValueError, match="spatial_dims"):
        check_spatial_dims(4)


def test_tensor_checks():
    z = torch.randn(4, 8)
    check_embeddings(z, z.clone())
    with pytest.raises(ValueError, match="same"):
        check_embeddings(z, torch.randn(4, 7))
    with pytest.raises(ValueError, match="B >= 2"):
        check_embeddings(z[:1], z[:1])
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 of 32"):
        check_embeddings(bad, z)
    with pytest.raises(TypeError, match="floating"):
        check_embeddings(z.long(), z.long())
    check_spatial_tensor(torch.zeros(1, 2, 4, 4, 4), "x", spatial_dims=3, channels=2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) for spatial_dims=2"):
        check_spatial_tensor(torch.zeros(1, 2, 4, 4, 4), "x", spatial_dims=2)
    with pytest.raises(ValueError, match="3 channel"):
        check_spatial_tensor(torch.zeros(1, 2, 4, 4), "x", spatial_dims=2, channels=3)
    with pytest.raises(ValueError, match="finite"):
        check_finite(np.array([1.0, np.inf]), "features")
    assert check_labels(np.array([1, 2]), "y").dtype == torch.long
    with pytest.raises(TypeError, match="integer"):
        check_labels(torch.zeros(3), "pseudo_classes")
    with pytest.raises(ValueError, match="B=4"):
        check_labels(torch.zeros(3, dtype=torch.long), "pseudo_classes", length=4)
