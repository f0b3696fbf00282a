"""Toy-size smoke tests of benchmarks/label_efficiency.py on synthetic data (the real numbers are in BENCHMARKS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import label_efficiency as le  # noqa: E402
from _label_efficiency_train import augment_views, flip_rot90, pretrained_exclude  # noqa: E402

from monai_cluster.data import make_synthetic_dermoscopy, make_synthetic_heart  # noqa: E402
from monai_cluster.transforms.flip_rotate.array import undo_flip_rot90  # noqa: E402

TINY = [
    "--image-size", "32", "--seeds", "0", "1", "--pretrain-steps", "2", "--ae-steps", "2", "--pretrain-batch", "8",
    "--finetune-steps", "4", "--finetune-batch", "4", "--eval-every", "2", "--eval-last", "2", "--log-every", "1",
    "--save-every", "1", "--num-clusters", "2", "4", "--features", "4", "4", "8", "8", "16", "4", "--no-hd95",
]


def test_flip_rot90_is_undone_exactly():
    x = torch.rand(6, 3, 8, 8)
    views, record = flip_rot90(x, torch.Generator().manual_seed(0))
    assert not torch.equal(views, x)
    assert torch.equal(undo_flip_rot90(views, record), x)


def test_two_views_share_the_crop():
    x = torch.rand(4, 1, 16, 16)
    views, records = augment_views(x, torch.Generator().manual_seed(1))
    a, b = (undo_flip_rot90(views[k], r) for k, r in zip(("image", "image_1"), records))
    assert a.shape == x.shape
    # intensity-only difference after undoing the geometry: the two aligned views stay strongly correlated
    corr = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
    assert corr > 0.5


def test_labeled_subset_is_seeded_and_named():
    groups = np.repeat(np.arange(5), 3)
    idx, units = le.labeled_subset(groups, 2, seed=3)
    again, _ = le.labeled_subset(groups, 2, seed=3)
    assert np.array_equal(idx, again) and len(idx) == 6 and len(units) == 2
    with pytest.raises(ValueError, match="number of labeled units"):
        le.labeled_subset(groups, 6, seed=0)
    assert pretrained_exclude("simclr", "upcat_3") == ("final_conv", "upcat_4", "upcat_3", "upcat_2", "upcat_1")
    assert pretrained_exclude("cluster_guided", "upcat_3") == ("final_conv", "upcat_2", "upcat_1")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="--label-fraction"):
        le.parse_args(["--label-fraction", "1.5"])
    with pytest.raises(ValueError, match="--eval-last"):
        le.parse_args(["--finetune-steps", "10", "--eval-every", "5", "--eval-last", "3"])


def test_dermoscopy_run_is_paired_and_resumable(tmp_path):
    make_synthetic_dermoscopy(tmp_path / "derm", n=10, size=32, seed=0)
    out = tmp_path / "out.json"
    argv = ["--dataset", "dermoscopy", "--train-dir", str(tmp_path / "derm"), "--unlabeled-dir", "--num-test", "4",
            "--num-labeled", "2", "--out", str(out), "--work-dir", str(tmp_path / "work"), *TINY]
    result = le.main(argv)
    runs = result["runs"]
    assert len(runs) == 2 * 4
    for seed in (0, 1):
        per = {r["method"]: r for r in runs if r["seed"] == seed}
        assert set(per) == set(le.METHODS)
        assert len({tuple(r["labeled_units"]) for r in per.values()}) == 1  # same labeled subset for every method
        assert per["random"]["loaded_tensors"] == 0
        assert 0 < per["simclr"]["loaded_tensors"] < per["cluster_guided"]["loaded_tensors"]
        assert all(0.0 <= r["dice"] <= 1.0 and len(r["dice_evals"]) == 2 for r in per.values())
    summary = {(r["num_labeled"], r["variant"]): r for r in result["summary"]}
    diff = summary[(2, "cluster_guided@2")]["dice_diff_to_random"]
    assert diff["n"] == 2 and diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    saved = json.loads(out.read_text())
    assert saved["config_hash"] == result["config_hash"]
    assert saved["pretrain"]["pseudo_classes"]["num_clusters"] == [2, 4]
    windows = saved["pretrain"]["cluster_guided"]["windows"]
    assert windows[-1]["step"] == 2 and "local" in windows[-1] and "acc" in windows[-1]
    # a second call reuses checkpoints and finished runs: the same numbers, nothing retrained
    again = le.main(argv)
    assert [r["dice"] for r in again["runs"]] == [r["dice"] for r in runs]


def test_heart_slices_use_partitions(tmp_path):
    make_synthetic_heart(tmp_path / "heart", n=4, size=24, seed=0)
    out = tmp_path / "heart.json"
    argv = ["--dataset", "heart", "--train-dir", str(tmp_path / "heart"), "--num-test", "1", "--num-labeled", "1",
            "--methods", "random", "global_local", "--partitions", "2", "--out", str(out),
            "--work-dir", str(tmp_path / "work"), *TINY]
    argv[argv.index("--seeds") + 1 : argv.index("--seeds") + 3] = ["0"]
    result = le.main(argv)
    assert result["data"]["labeled_units"] == 3 and result["data"]["test_volumes"] == 1
    assert {r["variant"] for r in result["runs"]} == {"random", "global_local@2"}
    assert result["runs"][0]["loaded_tensors"] == 0 and result["runs"][1]["loaded_tensors"] > 0
