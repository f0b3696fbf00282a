"""semi_supervised under the segmentation bundles' multi_gpu_train.json: two gloo processes on the CPU draw different
unlabelled batches (a seeded DistributedSampler, given the epoch at every epoch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "dermoscopy_segmentation"
TOY = {
    "synthetic_n": 12,
    "synthetic_size": 48,
    "image_size": 32,
    "features": [4, 4, 8, 8, 16, 4],
    "batch_size": 2,
    "epochs": 3,
    "val_interval": 3,
    "use_pretrained": False,
    "label_fraction": 0.4,
    "backend": "gloo",
    "semi_supervised": "mean_teacher",
    "consistency_threshold": 0.5,
}

# run by torchrun in each rank: train through the overlay and write what the trainer drew from the unlabelled loader
RANK_SCRIPT = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from monai_cluster.workflows.segmentation_bundle import bundle_workflow

bundle, root, out, overrides = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
workflow = bundle_workflow(bundle, ("train.json", "multi_gpu_train.json"), bundle_root=root, **overrides)
trainer = workflow.parser.get_parsed_content("train#trainer")
sampler = trainer.unlabeled_data_loader.sampler
rank, drawn = dist.get_rank(), []
draw = trainer._next_unlabeled

def recording_draw():
    images = draw()
    drawn.append({"epoch": trainer.state.epoch, "sampler_epoch": sampler.epoch,
                  "sums": [round(float(s), 4) for s in images.flatten(1).sum(1)]})
    return images

trainer._next_unlabeled = recording_draw
workflow.run()
indices = [int(i) for i in sampler]
workflow.finalize()
(out / f"rank{rank}.json").write_text(json.dumps({"drawn": drawn, "indices": indices, "type": type(sampler).__name__,
                                                  "size": len(sampler.dataset)}))
"""


def test_two_ranks_draw_different_unlabelled_batches_each_epoch(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29651", str(script),
           str(BUNDLE), str(tmp_path / "root"), str(tmp_path), json.dumps(TOY)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["type"] == "DistributedSampler" for r in ranks)
    # each rank holds its own half of the unlabelled images (the last epoch's order) ...
    size = ranks[0]["size"]
    assert len(ranks[0]["indices"]) == len(ranks[1]["indices"]) == (size + 1) // 2
    assert set(ranks[0]["indices"]) | set(ranks[1]["indices"]) == set(range(size))
    if size % 2 == 0:
        assert not set(ranks[0]["indices"]) & set(ranks[1]["indices"])
    # ... so at every iteration the two ranks train on different unlabelled batches
    a, b = ranks[0]["drawn"], ranks[1]["drawn"]
    assert a and len(a) == len(b) and all(x["sums"] != y["sums"] for x, y in zip(a, b))
    # the sampler is told the epoch, so each epoch shuffles anew
    assert all(d["sampler_epoch"] == d["epoch"] for r in ranks for d in r["drawn"])
    assert {d["epoch"] for d in a} == {1, 2, 3}
