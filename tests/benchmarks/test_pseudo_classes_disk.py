"""benchmarks/pseudo_classes.py --part disk at toy size: features written to a .npy, clustered from the map."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _pseudo_classes_disk as disk  # noqa: E402


def test_written_once_then_clustered_from_the_memory_map(tmp_path):
    report = disk.run(6000, 16, tmp_path, seeds=[0], timeout=300)
    path = Path(report["path"])
    x = np.load(path, mmap_mode="r")
    assert x.shape == (6000, 16) and x.dtype == np.float32
    assert np.load(path.with_suffix(".labels.npy")).shape == (6000,)
    assert not list(tmp_path.glob(".*partial*"))  # nothing half-written left
    (row,) = report["rows"]
    assert row["n"] == 6000 and row["seconds"] > 0 and row["peak_rss_gb"] > 0
    assert row["ari_coarse"] > 0.9 and row["ari_fine"] > 0.9  # 64 well-separated planted components
    assert report["met"] is True
    stamp = path.stat().st_mtime_ns
    disk.write_mixture(path, 6000, 16)  # a complete file of the right shape is kept
    assert path.stat().st_mtime_ns == stamp
