"""Sharded feature extraction and stage 2 under torchrun with 2 gloo processes: the same table as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_cluster.clustering import extract_features, extract_features_sharded, shard_bounds
from monai_cluster.workflows import build_autoencoder, cluster_pseudo_classes

REPO = Path(__file__).resolve().parents[2]
N = 13  # odd: the two shards differ in size (7 and 6)

WORKER = r'''
import json, sys
from pathlib import Path
import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, sys.argv[3])
from test_distributed_features import make_items, make_network
from monai_cluster.clustering import extract_features_sharded
from monai_cluster.workflows import cluster_pseudo_classes

dist.init_process_group("gloo")
rank, out, mode = dist.get_rank(), Path(sys.argv[1]), sys.argv[2]
items = make_items(bad_key="img10" if mode == "bad" else None)
try:
    features, keys = extract_features_sharded(make_network(), items, batch_size=3, progress=False)
    if rank == 0:
        np.save(out / "features.npy", features)
        (out / "keys.json").write_text(json.dumps(keys))
    else:
        assert features is None and keys is None
    table = cluster_pseudo_classes(make_network(), items, None, out / "table.csv", num_clusters=(2, 4), batch_size=3)
    result = {"keys": table.keys, "labels": table.labels.tolist()}
except ValueError as err:
    result = {"error": str(err)}
(out / f"rank{rank}.json").write_text(json.dumps(result))
dist.destroy_process_group()
'''


def make_items(bad_key: str | None = None) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(N):
        image = torch.rand(1, 16, 16, generator=g) + (i % 3)  # three groups of brightness
        if f"img{i:02d}" == bad_key:
            image[0, 0, 0] = float("nan")
        items.append({"image": image, "key": f"img{i:02d}"})
    return items


def make_network():
    torch.manual_seed(0)
    return build_autoencoder(2, 1, (4, 8), image_size=(16, 16))


def _torchrun(tmp_path: Path, mode: str) -> list[dict]:
    (tmp_path / "test_distributed_features.py").write_text(Path(__file__).read_text())
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("LOCAL_RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path), mode, str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_shard_bounds_cover_every_item_once():
    for n in (0, 1, 2, 7, 13):
        for world in (1, 2, 3, 8):
            covered = [i for r in range(world) for i in range(*shard_bounds(n, r, world))]
            assert covered == list(range(n)), (n, world)


def test_two_gloo_ranks_give_the_single_process_features_and_table(tmp_path):
    single_features, single_keys = extract_features(make_network(), make_items(), batch_size=3, progress=False)
    single = cluster_pseudo_classes(make_network(), make_items(), None, tmp_path / "single.csv", (2, 4), batch_size=3)
    ranks = _torchrun(tmp_path, "good")
    np.testing.assert_allclose(np.load(tmp_path / "features.npy"), single_features, rtol=1e-6, atol=1e-6)
    assert json.loads((tmp_path / "keys.json").read_text()) == single_keys == [f"img{i:02d}" for i in range(N)]
    for result in ranks:  # every rank holds the table one process makes
        assert result["keys"] == single.keys
        assert result["labels"] == single.labels.tolist()
    assert len(set(map(tuple, single.labels.tolist()))) >= 2  # a real partition, not one cluster


def test_a_bad_image_on_one_rank_fails_every_rank_with_its_key(tmp_path):
    ranks = _torchrun(tmp_path, "bad")
    for result in ranks:  # img10 lies in rank 1's shard; rank 0 must not wait forever for it
        assert "failed on rank(s) 1" in result["error"] and "img10" in result["error"]


def test_single_process_is_plain_extraction_and_bad_arguments():
    a, keys = extract_features_sharded(make_network(), make_items(), batch_size=4, progress=False)
    b, _ = extract_features(make_network(), make_items(), batch_size=4, progress=False)
    np.testing.assert_array_equal(a, b)
    assert keys[0] == "img00"
