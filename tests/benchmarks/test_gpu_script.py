"""benchmarks/gpu/label_efficiency.sh at toy size on the CPU: pretrain, fine-tune, merge and report in one go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_label_efficiency import _acdc_like

REPO = Path(__file__).resolve().parents[2]


def test_gpu_script_runs_the_whole_protocol_at_toy_size(tmp_path):
    data = _acdc_like(tmp_path / "acdc")
    out = tmp_path / "gpu"
    env = dict(
        os.environ, PY=sys.executable, DEVICE="cpu", SIZE="32", STEPS="2", SEEDS="0", LABELED="1", FT_STEPS="4",
        WORKERS="0", TRAIN_DIR=str(data), OUT=str(out), METHODS="simclr cluster_guided_staged", OMP_NUM_THREADS="1",
        EXTRA="--num-test 5 --eval-every 2 --eval-last 2 --ae-steps 2 --num-clusters 2 4 --features 4 4 8 8 16 4",
    )
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "label_efficiency.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "label_efficiency_gpu.json").read_text())
    variants = {r["variant"] for r in result["runs"]}
    # snapshots at a tenth, three tenths and all of STEPS (here 1, 1, 2): a pretraining-length curve
    assert variants == {"random", "simclr@1", "simclr@2", "cluster_guided_staged@1", "cluster_guided_staged@2"}
    assert all(r["num_labeled"] == 1 and r["seed"] == 0 for r in result["runs"])
    table = (out / "label_efficiency_gpu.md").read_text()
    assert "cluster_guided_staged@2" in table and "paired diff to random" in table
    assert "total" in proc.stdout
