"""benchmarks/pretrain_step.py at toy size: it drives the real bundle and a bare loop and reports both."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import pretrain_step  # noqa: E402


def test_toy_run_times_bundle_and_bare_loop(tmp_path):
    out = tmp_path / "step.json"
    report = pretrain_step.main(
        ["--toy", "--dims", "2", "--variants", "cluster_guided", "unguided", "--rounds", "1", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"cluster_guided", "unguided"}
    for row in rows.values():
        assert row["inputs_shape"] == [8, 3, 32, 32]  # two views of a batch of 4, view-major
        assert row["steps_counted"] == 2  # 8 images, batch 4, one counted round
        assert 0 < row["bundle_fetch_s"] < row["bundle_step_s"]
        assert 0 < row["bundle_iteration_s"] < row["bundle_step_s"]
        assert row["bare_step_s"] > 0 and row["ratio"] == pytest.approx(row["bundle_step_s"] / row["bare_step_s"])
    (guidance,) = report["guidance"]
    assert guidance["dims"] == 2 and guidance["bundle_ratio"] > 0
    assert set(report["goals"]) == {"bundle_within_1.15x_of_bare", "cluster_guided_within_1.05x_of_unguided"}


def test_3d_and_bad_rounds(tmp_path):
    report = pretrain_step.main(["--toy", "--dims", "3", "--variants", "simclr", "--rounds", "1",
                                 "--out", str(tmp_path / "s.json")])
    assert report["rows"][0]["inputs_shape"] == [8, 1, 32, 32, 32]
    assert report["guidance"] == [] and report["goals"]["cluster_guided_within_1.05x_of_unguided"] is None
    with pytest.raises(SystemExit):
        pretrain_step.main(["--rounds", "0"])
