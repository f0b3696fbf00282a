"""benchmarks/precision.py at toy size: bundle and bare steps per precision, FLOPs, fraction of the peak."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import precision as bench  # noqa: E402

from monai_cluster.utils import precision  # noqa: E402


def test_toy_run_reports_both_precisions(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", precision.cpu_supports_bf16)  # restored after the test
    out = tmp_path / "p.json"
    report = bench.main(["--toy", "--dims", "2", "--sizes", "32", "--tasks", "pretrain", "finetune", "--rounds", "1",
                         "--force-bf16", "--peak-size", "128", "--out", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = {(r["task"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {(t, p) for t in ("pretrain", "finetune") for p in ("fp32", "bf16")}
    for (task, _), row in rows.items():
        assert row["inputs_shape"][0] == (4 if task == "pretrain" else 2)  # two views of 2 / a batch of 2
        assert row["gflop_per_step"] > 0 and row["bundle_step_s"] > 0 and row["bare_step_s"] > 0
        assert row["bare_fraction_of_peak"] == pytest.approx(
            row["gflop_per_step"] * 1e9 / row["bare_step_s"] / report["peak_flops"][row["precision"]]
        )
    # the FLOPs of a step do not depend on the precision
    for task in ("pretrain", "finetune"):
        assert rows[(task, "bf16")]["gflop_per_step"] == pytest.approx(rows[(task, "fp32")]["gflop_per_step"])
    assert {(q["task"], q["dims"]) for q in report["ratios"]} == {("pretrain", 2), ("finetune", 2)}


def test_bf16_refused_without_native_support_unless_forced(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(bench, "cpu_supports_bf16", lambda: False)
    with pytest.raises(SystemExit):
        bench.main(["--toy", "--precisions", "fp32", "bf16", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "0"])
