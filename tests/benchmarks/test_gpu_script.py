"""benchmarks/gpu/label_efficiency.sh at toy size on the CPU: both protocols through the bundles in one go, with
a semi-supervised variant beside labeled-only fine-tuning (SEMI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_la_3d import _toy_la
from test_label_efficiency import _acdc_like

REPO = Path(__file__).resolve().parents[2]


def test_gpu_script_runs_both_protocols_through_the_bundles_at_toy_size(tmp_path):
    acdc, la = _acdc_like(tmp_path / "acdc", depth=4), _toy_la(tmp_path / "la")
    out = tmp_path / "gpu"
    env = dict(
        os.environ, PY=sys.executable, DEVICE="cpu", SIZE="32", PRE_STEPS="2", SEEDS="0 1", LABELED="1",
        CURVE_LABELED="1 2", CURVE_STEPS="2 4", CURVE_EVERY="2", METHODS="simclr", TRAIN_DIR=str(acdc), OUT=str(out),
        OMP_NUM_THREADS="1", SEMI="none copy_paste", LA_ARGS=f"--toy --data-dir {la} --seeds 0 --methods random simclr --no-ceiling",
        EXTRA="--num-test 5 --val-patients 2 --eval-every 1 --eval-last 2 --ae-steps 2 --num-clusters 2 4 "
              "--pretrain-batch 8 --finetune-batch 4 --local-locations 8 --features 4 4 8 8 16 4",
    )  # fmt: skip
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "label_efficiency.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    curve = json.loads((out / "acdc_curve.json").read_text())
    assert {(e["num_labeled"], e["budget"]) for e in curve["curve"]} == {(1, 2), (1, 4), (2, 2), (2, 4)}
    # the rule's choice is what the fine-tuning used: the shortest budget within 0.005 of the best at 2 patients
    means = {b: sum(e["dice"] for e in curve["curve"] if e["num_labeled"] == 2 and e["budget"] == b) for b in (2, 4)}
    expect = min(b for b in (2, 4) if means[b] >= max(means.values()) - 0.005)
    chosen = (out / "acdc_finetune_steps.txt").read_text().split()
    assert chosen[:2] == [f"1:{expect}", f"2:{expect}"] and "fine-tuning steps by the pre-registered rule" in proc.stdout
    result = json.loads((out / "acdc_label_efficiency_gpu.json").read_text())
    runs = {(r["variant"], r["seed"]): r for r in result["runs"]}
    variants = ("random", "simclr@2", "random+copy_paste", "simclr@2+copy_paste")
    assert set(runs) == {(v, s) for v in variants for s in (0, 1)}
    assert all(r["steps"] == expect and r["num_labeled"] == 1 for r in runs.values())
    assert runs[("random+copy_paste", 1)]["labeled_patients"] == runs[("random", 1)]["labeled_patients"]
    assert runs[("random+copy_paste", 1)]["semi_supervised"] == "copy_paste" and runs[("random", 1)]["unlabeled_slices"] == 0
    assert runs[("random", 0)]["labeled_patients"] == runs[("simclr@2", 0)]["labeled_patients"]
    assert "simclr@2" in (out / "acdc_label_efficiency_gpu.md").read_text() and (out / "acdc_paired.png").is_file()
    la3d = json.loads((out / "la3d_gpu.json").read_text())
    assert set(la3d["runs"]) == {f"{m}{s}/n2/s0" for m in ("random", "simclr") for s in ("", "+copy_paste")}
    assert set(la3d["pretrain"]) == {"simclr"}
    assert "total" in proc.stdout
