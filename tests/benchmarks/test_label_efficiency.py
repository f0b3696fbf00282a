"""Toy-size smoke tests of benchmarks/label_efficiency.py on synthetic data (the real numbers are in BENCHMARKS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import label_efficiency as le  # noqa: E402
from _label_efficiency_data import load_heart, pathology_group, stratified_split  # noqa: E402
from _label_efficiency_finetune import augment_pair, segmentation_metrics, steps_for  # noqa: E402
from _label_efficiency_train import pretrained_exclude  # noqa: E402

from monai_cluster.data import make_synthetic_dermoscopy  # noqa: E402

TINY = [
    "--image-size", "32", "--seeds", "0", "1", "--pretrain-steps", "2", "--ae-steps", "2", "--pretrain-batch", "8",
    "--finetune-steps", "4", "--finetune-batch", "4", "--eval-every", "2", "--eval-last", "2", "--log-every", "1",
    "--save-every", "1", "--local-steps", "2", "--num-clusters", "2", "4", "--features", "4", "4", "8", "8", "16", "4", "--no-hd95",
]
#: two patients per ACDC pathology group (the group is given by the patient number)
PATIENTS = (1, 2, 21, 22, 41, 42, 61, 62, 81, 82)


def _acdc_like(root: Path, patients=PATIENTS, size: int = 24, depth: int = 3) -> Path:
    """Tiny cine-MRI-like volumes ``patientNNN_frame01/02`` with RV (1), myocardium (2) and LV (3) discs."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for p in patients:
        for frame in (1, 2):
            cy, cx = size / 2 + rng.uniform(-1, 1, 2)
            r = size * rng.uniform(0.12, 0.18)
            d = np.hypot(yy - cy, xx - cx)
            lab = np.zeros((size, size), np.uint8)
            lab[np.hypot(yy - cy, xx - cx - 2.2 * r) < 1.1 * r] = 1
            lab[d < 1.6 * r] = 2
            lab[d < r] = 3
            img = np.choose(lab, [0.3, 0.8, 0.2, 0.9]) + rng.normal(0, 0.05, lab.shape)
            vol_img = np.repeat(img[..., None], depth, axis=2).astype(np.float32)
            vol_lab = np.repeat(lab[..., None], depth, axis=2)
            name = f"patient{p:03d}_frame{frame:02d}.nii.gz"
            nib.save(nib.Nifti1Image(vol_img, np.eye(4)), root / "images" / name)
            nib.save(nib.Nifti1Image(vol_lab, np.eye(4)), root / "labels" / name)
    return root


def test_stratified_split_takes_four_per_group():
    names = [f"patient{i:03d}" for i in range(1, 101) if i % 10 not in (3, 4, 9)]  # 70 patients, 14 per group
    strata = np.array([pathology_group(n) for n in names])
    assert np.bincount(strata).tolist() == [14] * 5
    train, test = stratified_split(strata, 20, seed=0)
    assert np.bincount(strata[test]).tolist() == [4] * 5
    assert len(train) == 50 and not set(train) & set(test)
    again, other = stratified_split(strata, 20, seed=0)[1], stratified_split(strata, 20, seed=1)[1]
    assert np.array_equal(test, again) and not np.array_equal(test, other)
    # uneven: 7 from 5 groups of 14 -> the two extra picks go to two different groups
    assert sorted(np.bincount(strata[stratified_split(strata, 7, seed=3)[1]])) == [1, 1, 1, 2, 2]
    assert pathology_group("patient101_frame01.nii.gz") is None and pathology_group("patient100") == 4
    with pytest.raises(ValueError, match="num_test"):
        stratified_split(strata, 70, seed=0)


def test_labeled_subset_is_seeded_stratified_and_named():
    groups = np.repeat(np.arange(10), 3)
    idx, units = le.labeled_subset(groups, 2, seed=3)
    again, _ = le.labeled_subset(groups, 2, seed=3)
    assert np.array_equal(idx, again) and len(idx) == 6 and len(units) == 2
    strata = np.repeat(np.arange(5), 2)
    for seed in range(5):
        _, two = le.labeled_subset(groups, 2, seed, strata)
        _, five = le.labeled_subset(groups, 5, seed, strata)
        assert len(set(strata[two])) == 2 and sorted(strata[five]) == [0, 1, 2, 3, 4]
        assert set(two) <= set(five)  # the round-robin draw is nested
    with pytest.raises(ValueError, match="number of labeled units"):
        le.labeled_subset(groups, 11, seed=0)
    assert pretrained_exclude("simclr", "upcat_3") == ("final_conv", "upcat_4", "upcat_3", "upcat_2", "upcat_1")
    assert pretrained_exclude("cluster_guided", "upcat_3") == ("final_conv", "upcat_2", "upcat_1")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="--label-fraction"):
        le.parse_args(["--label-fraction", "1.5"])
    with pytest.raises(ValueError, match="--eval-last"):
        le.parse_args(["--finetune-steps", "10", "--eval-every", "5", "--eval-last", "3"])
    with pytest.raises(ValueError, match="--finetune-steps"):
        le.parse_args(["--finetune-steps", "2:x"])
    table = le.parse_args(["--dataset", "heart", "--finetune-steps", "2:300", "500"]).steps_table
    assert steps_for(table, 2) == 300 and steps_for(table, 50) == 500
    with pytest.raises(ValueError, match="no entry for 8"):
        steps_for({2: 300}, 8)


def test_metrics_per_structure_on_hand_made_maps():
    truth = np.zeros((2, 8, 8), np.int64)
    truth[:, 1:4, 1:4] = 1  # RV: 9 px per slice
    truth[:, 5:7, 5:7] = 3  # LV: 4 px per slice; no myocardium anywhere
    pred = truth.copy()
    pred[:, 1, 1:4] = 0  # RV loses 3 of 9 -> Dice 2*6/(6+9) = 0.8
    pred[1, 0, 0] = 2  # a false myocardium pixel in slice 1 only -> Dice 0 for the Myo of that volume
    volume = np.array([0, 1])
    m = segmentation_metrics(pred, truth, volume, ["RV", "Myo", "LV"], hd95=True)
    assert m["dice_per_class"]["RV"] == pytest.approx(0.8)
    assert m["dice_per_class"]["LV"] == pytest.approx(1.0)
    assert m["dice_per_class"]["Myo"] == pytest.approx(0.0)  # defined in volume 1 only
    assert m["dice"] == pytest.approx(np.mean([np.mean([0.8, 1.0]), np.mean([0.8, 0.0, 1.0])]))
    assert m["hd95_per_class"]["LV"] == pytest.approx(0.0) and m["hd95_per_class"]["RV"] == pytest.approx(1.0)
    assert m["hd95_per_class"]["Myo"] is None  # absent from the truth: no HD95
    empty = segmentation_metrics(np.zeros_like(truth), truth, np.zeros(2), ["RV", "Myo", "LV"])
    assert empty["dice"] == 0.0 and empty["hd95_per_class"]["RV"] == pytest.approx(np.sqrt(4 + 64 + 64))
    with pytest.raises(ValueError, match="same shape|one shape"):
        segmentation_metrics(pred[:1], truth, volume, ["RV", "Myo", "LV"])


def test_augmentation_moves_labels_with_images():
    x = torch.zeros(4, 1, 16, 16)
    x[:, :, 4:9, 3:12] = 1.0
    y = (x[:, 0] > 0.5).long() * 2
    gen = torch.Generator().manual_seed(0)
    xa, ya = augment_pair(x, y, gen, "flip")
    assert torch.equal((xa[:, 0] > 0.5).long() * 2, ya)  # flips alone: exact correspondence
    xa, ya = augment_pair(x, y, torch.Generator().manual_seed(0), "full")
    assert ya.dtype == torch.long and set(ya.unique().tolist()) <= {0, 2} and not torch.equal(ya, y)
    same = augment_pair(x, y, torch.Generator().manual_seed(0), "full")
    assert torch.equal(same[0], xa) and torch.equal(same[1], ya)  # one seed, one augmentation
    with pytest.raises(ValueError, match="augmentation mode"):
        augment_pair(x, y, gen, "elastic")


def test_heart_split_keeps_patients_whole(tmp_path):
    root = _acdc_like(tmp_path / "acdc")
    data = load_heart(str(root), None, size=16, num_test=5, seed=0, crop=0.9)
    assert len(data.info["test"]) == 5 and sorted(data.info["test_groups"]) == [0, 1, 2, 3, 4]
    assert not set(data.info["test"]) & set(data.info["train"])
    assert len(np.unique(data.test_volume)) == 10 and data.num_groups == 5  # both frames of each patient
    assert data.train_strata.tolist() == sorted(pathology_group(n) for n in data.info["train"])
    assert data.class_names == ["RV", "Myo", "LV"]
    assert len(data.pretrain_volume) == len(data.train_x) and data.pretrain_num_slices.max() == 3
    # with a test folder, every patient of the train folder is in the pool
    held_out = _acdc_like(tmp_path / "test", patients=(3, 23))
    both = load_heart(str(root), str(held_out), size=16, num_test=5, seed=0, crop=0.9)
    assert both.num_groups == len(PATIENTS) and both.info["test"] == ["patient003", "patient023"]
    with pytest.raises(ValueError, match="crop"):
        load_heart(str(root), None, size=16, num_test=5, seed=0, crop=1.5)


def test_learning_curve_writes_json_table_and_plot(tmp_path):
    root = _acdc_like(tmp_path / "acdc")
    out = tmp_path / "curve.json"
    argv = ["--dataset", "heart", "--pipeline", "tensors", "--train-dir", str(root), "--num-test", "2", "--methods", "random",
            "--learning-curve", "--val-patients", "3", "--curve-labeled", "1", "0", "--curve-steps", "4", "6",
            "--curve-every", "2", "--out", str(out), "--work-dir", str(tmp_path / "work"), *TINY]
    argv[argv.index("--seeds") + 1 : argv.index("--seeds") + 3] = ["0"]
    result = le.main(argv)
    assert len(result["validation"]["units"]) == 3
    assert {(e["num_labeled"], e["budget"]) for e in result["curve"]} == {(1, 4), (1, 6), (5, 4), (5, 6)}
    longest = [e for e in result["curve"] if e["budget"] == 6][0]
    assert [e["step"] for e in longest["evals"]] == [2, 4, 6] and longest["dice_evals"] == [
        round(e["dice"], 4) for e in longest["evals"][-2:]]
    assert set(longest["dice_per_class"]) == {"RV", "Myo", "LV"}
    table = out.with_suffix(".md").read_text()
    assert "| 4 |" in table and "| 6 |" in table and "5 labeled" in table
    assert out.with_suffix(".png").stat().st_size > 1000
    assert json.loads(out.read_text())["config_hash"] == result["config_hash"]
    with pytest.raises(ValueError, match="--methods random"):
        le.main([*argv, "--methods", "random", "simclr"])


def test_heart_random_end_to_end(tmp_path):
    root = _acdc_like(tmp_path / "acdc")
    out = tmp_path / "heart.json"
    argv = ["--dataset", "heart", "--pipeline", "tensors", "--train-dir", str(root), "--num-test", "5", "--num-labeled", "1", "5",
            "--methods", "random", "--out", str(out), "--work-dir", str(tmp_path / "work"), *TINY]
    argv[argv.index("--finetune-steps") + 1] = "1:4"
    argv[argv.index("--finetune-steps") + 1 : argv.index("--finetune-steps") + 1] = ["5:6"]
    result = le.main(argv)
    runs = {(r["num_labeled"], r["seed"]): r for r in result["runs"]}
    assert set(runs) == {(1, 0), (1, 1), (5, 0), (5, 1)}
    assert runs[(1, 0)]["steps"] == 4 and runs[(5, 0)]["steps"] == 6
    assert runs[(5, 0)]["labeled_units"] == runs[(5, 1)]["labeled_units"] == [0, 1, 2, 3, 4]
    assert len(runs[(1, 0)]["labeled_patients"]) == 1 and runs[(1, 0)]["loaded_tensors"] == 0
    rows = {r["num_labeled"]: r for r in result["summary"]}
    assert set(rows[5]["dice_per_class"]) == {"RV", "Myo", "LV"} and rows[5]["dice"]["n"] == 2
    table = le.format_table(result["summary"], "patients")
    assert "| RV | Myo | LV |" in table and "| 5 | random | 2 |" in table
    assert "Chaitanya" not in le.reference_line(result["summary"], "patients")  # no 2-patient setting


def _t_interval(diffs) -> tuple[float, float, float, float]:
    """Mean, sd and the t 95% interval of ``diffs``, by hand from scipy's t quantile."""
    from scipy import stats

    diffs = np.asarray(diffs, dtype=float)
    n, mean = len(diffs), float(diffs.mean())
    sd = float(np.sqrt(((diffs - mean) ** 2).sum() / (n - 1)))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
    return mean, sd, mean - half, mean + half


def test_summaries_pair_by_seed():
    def run(n, seed, variant, dice):
        steps = None if variant == "random" else 10
        return {"num_labeled": n, "seed": seed, "variant": variant, "dice": dice, "hd95": 1.0,
                "pretrain_steps": steps, "dice_per_class": {"RV": dice, "LV": dice - 0.1}}

    # per-seed gains with real spread (not a constant offset, whose sd of 0 makes any interval a point), seeds
    # listed in another order for each variant so that pairing by position would give other differences
    seed_base = [0.50, 0.62, 0.41, 0.55]
    gain = {"random": [0.0, 0.0, 0.0, 0.0], "simclr@10": [0.02, -0.01, 0.05, 0.00],
            "cluster_guided@10": [0.06, 0.01, 0.09, -0.02]}  # fmt: skip
    order = {"random": [0, 1, 2, 3], "simclr@10": [3, 1, 0, 2], "cluster_guided@10": [2, 0, 3, 1]}
    runs = [run(n, s, v, base + seed_base[s] + gain[v][s])
            for n, base in ((2, 0.0), (50, 0.3)) for v in gain for s in order[v]]  # fmt: skip
    rows, pairwise = le.summarize(runs)
    diff = {(r["num_labeled"], r["variant"]): r for r in rows}[(2, "cluster_guided@10")]["dice_diff_to_random"]
    mean, sd, low, high = _t_interval(gain["cluster_guided@10"])
    assert sd > 0.04  # the interval has a width to check
    assert diff["n"] == 4 and diff["mean"] == pytest.approx(mean) and diff["sd"] == pytest.approx(sd)
    assert diff["ci95"] == pytest.approx([low, high])
    assert low < 0 < high  # this spread over 4 seeds does not exclude 0, though the mean gain is +0.035
    guided_vs_simclr = [a - b for a, b in zip(gain["cluster_guided@10"], gain["simclr@10"])]
    mean, sd, low, high = _t_interval(guided_vs_simclr)
    ((row,),) = [[p for p in pairwise if p["num_labeled"] == 2]]
    assert (row["a"], row["b"]) == ("cluster_guided@10", "simclr@10")
    assert row["dice"]["mean"] == pytest.approx(mean) and row["dice"]["ci95"] == pytest.approx([low, high])
    assert row["per_class"]["LV"]["ci95"] == pytest.approx([low, high])  # per structure, the same seeds paired
    assert "cluster_guided@10 − simclr@10" in le.format_pairwise(pairwise, "patients")
    line = le.reference_line(rows, "patients")
    assert "Chaitanya" in line and f"random {0.52 / 0.82:.1%}" in line  # mean of seed_base, without and with +0.3


def test_dermoscopy_run_is_paired_and_resumable(tmp_path):
    make_synthetic_dermoscopy(tmp_path / "derm", n=10, size=32, seed=0)
    out = tmp_path / "out.json"
    argv = ["--dataset", "dermoscopy", "--pipeline", "tensors", "--train-dir", str(tmp_path / "derm"), "--unlabeled-dir",
            "--num-test", "4", "--num-labeled", "2", "--out", str(out), "--work-dir", str(tmp_path / "work"), *TINY]
    result = le.main(argv)
    runs = result["runs"]
    assert len(runs) == 2 * len(le.METHODS)
    for seed in (0, 1):
        per = {r["method"]: r for r in runs if r["seed"] == seed}
        assert set(per) == set(le.METHODS)
        assert len({tuple(r["labeled_units"]) for r in per.values()}) == 1  # same labeled subset for every method
        assert per["random"]["loaded_tensors"] == 0
        assert 0 < per["simclr"]["loaded_tensors"] < per["cluster_guided"]["loaded_tensors"]
        assert all(0.0 <= r["dice"] <= 1.0 and len(r["dice_evals"]) == 2 for r in per.values())
        assert set(per["random"]["dice_per_class"]) == {"lesion"}
    summary = {(r["num_labeled"], r["variant"]): r for r in result["summary"]}
    diff = summary[(2, "cluster_guided@2")]["dice_diff_to_random"]
    assert diff["n"] == 2 and diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    assert any(p["a"] == "cluster_guided@2" and p["b"] == "simclr@2" for p in result["pairwise"])
    saved = json.loads(out.read_text())
    assert saved["config_hash"] == result["config_hash"]
    assert saved["pretrain"]["pseudo_classes"]["num_clusters"] == [2, 4]
    windows = saved["pretrain"]["cluster_guided"]["stage1"]["windows"]
    assert windows[-1]["step"] == 2 and "local" in windows[-1] and "acc" in windows[-1]
    # a second call reuses checkpoints and finished runs: the same numbers, nothing retrained
    again = le.main(argv)
    assert [r["dice"] for r in again["runs"]] == [r["dice"] for r in runs]


def test_plot_paired_writes_one_panel_per_setting(tmp_path):
    from _label_efficiency_plots import plot_paired

    runs = [{"num_labeled": n, "seed": s, "variant": v, "dice": 0.5 + 0.01 * s + (0.05 if v != "random" else 0)}
            for n in (1, 2) for s in range(3) for v in ("random", "cluster_guided@3000")]  # fmt: skip
    path = plot_paired(runs, tmp_path / "paired.png")
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] > 1.6 * image.size[1]  # two panels side by side (one would be narrower than tall)
    with pytest.raises(ValueError, match="runs is empty"):
        plot_paired([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    from _label_efficiency_plots import _order

    variants = ["simclr@3000", "cluster_guided@10000", "random", "cluster_guided@3000"]
    assert sorted(variants, key=lambda v: _order(v, "random")) == [
        "random", "cluster_guided@3000", "cluster_guided@10000", "simclr@3000"
    ]
