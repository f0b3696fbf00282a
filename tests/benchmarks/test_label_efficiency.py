"""The protocol of benchmarks/label_efficiency.py at toy size: arguments, summaries, plots, and the records of the
removed in-memory pipeline (read and reported, never rerun). The toy runs through the bundles are in
``test_label_efficiency_bundles.py``; the real numbers are in BENCHMARKS.md."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import label_efficiency as le  # noqa: E402
from _label_efficiency_finetune import steps_for  # noqa: E402

RECORDS = ROOT / "benchmarks" / "records"
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
    with pytest.raises(ValueError, match="--epochs: the bundle pipeline budgets fine-tuning in steps"):
        le.parse_args(["--dataset", "heart", "--epochs", "3"])
    with pytest.raises(ValueError, match="--no-hd95: the bundles always score HD95"):
        le.parse_args(["--dataset", "heart", "--no-hd95"])
    # the records' settings are still parsed where only results are read
    assert le.parse_args(["--dataset", "heart", "--epochs", "3", "--no-hd95", "--report-only"]).hd95 is False


def test_pipeline_tensors_is_refused_naming_the_commit_that_holds_it():
    with pytest.raises(ValueError, match=r"--pipeline tensors: the in-memory pipeline .* was removed.*cf400c9"):
        le.parse_args(["--dataset", "heart", "--pipeline", "tensors"])
    assert not hasattr(le.parse_args(["--dataset", "heart", "--pipeline", "bundles"]), "pipeline")
    assert le.TENSORS_COMMIT == "cf400c9" and "git show cf400c9:benchmarks/_label_efficiency_train.py" in le.REMOVED


#: the pieces of the ACDC comparison of 2026-12-04 (benchmarks/records/README.md: "Regenerate the heart table")
HEART_64 = [
    "--dataset", "heart", "--image-size", "64", "--heart-crop", "0.66", "--local-steps", "1000", "--ld-batch", "8",
    "--ld-steps-factor", "0.5", "--num-labeled", "1", "2", "--pretrain-steps", "1000", "3000", "10000", "--methods",
    "random", "simclr", "global_local", "cluster_guided", "cluster_guided_gd", "--seeds", *map(str, range(10)),
    "--train-dir", "/work/shared/data/heart/acdc",  # the records' folder (read from no disk: only their hash)
]  # fmt: skip
HEART_64_PIECES = [*(f"le_heart_ft_n1_{m}.json" for m in ("cg", "cg10k", "gl", "random", "simclr")),
                   *(f"le_heart_ft_n2_{m}.json" for m in ("random", "simclr", "gl", "cg", "cg1k", "cg10k", "cggd"))]


def test_the_in_memory_records_are_merged_and_reported_under_their_own_hash(tmp_path, capsys):
    merge = [str(RECORDS / name) for name in HEART_64_PIECES]
    result = le.main([*HEART_64, "--report-only", "--merge", *merge, "--out", str(tmp_path / "h.json"),
                      "--plot", str(tmp_path / "h.png")])  # fmt: skip
    committed = json.loads((RECORDS / "label_efficiency_heart_64.json").read_text())
    assert "pipeline" not in result["config"] and result["config_hash"] == committed["config_hash"] == "8f7eae96559b"
    assert len(result["runs"]) == len(committed["runs"]) == 119
    rows = {(r["num_labeled"], r["variant"]): r for r in result["summary"]}
    expected = {(r["num_labeled"], r["variant"]): r for r in committed["summary"]}
    assert rows == expected  # the same statistics as the committed summary (rows in another order)
    assert rows[(2, "cluster_guided@3000")]["dice_diff_to_random"]["mean"] == pytest.approx(0.0172, abs=5e-4)
    assert "| 2 | cluster_guided@3000 | 10 |" in capsys.readouterr().out and (tmp_path / "h.png").is_file()
    # the written report is read again by the next --report-only under the same hash
    again = le.main([*HEART_64, "--report-only", "--out", str(tmp_path / "h.json")])
    assert again["config_hash"] == "8f7eae96559b" and len(again["runs"]) == 119


def test_an_in_memory_record_is_not_rerun_nor_overwritten(tmp_path):
    record = json.loads((RECORDS / "le_heart_ft_n2_random.json").read_text())
    out = tmp_path / "n2_random.json"
    shutil.copy(RECORDS / "le_heart_ft_n2_random.json", out)
    argv = shlex.split(record["command"])[2:]
    argv = [*argv[: argv.index("--out")], "--train-dir", record["config"]["train_dir"][0], "--out", str(out)]
    refused = re.escape(str(out)) + r": the in-memory pipeline .* not rerun or extended.*cf400c9"
    with pytest.raises(ValueError, match=refused):
        le.main(argv)
    with pytest.raises(ValueError, match=r"le_heart_ft_n2_random.json: the in-memory pipeline .*cf400c9"):
        le.main([*argv[:-1], str(tmp_path / "new.json"), "--merge", str(RECORDS / "le_heart_ft_n2_random.json")])
    with pytest.raises(ValueError, match=r"hash 8f7eae96559b\) is not these arguments'"):
        le.main([*argv, "--report-only", "--eval-last", "3"])  # another configuration would overwrite it
    assert json.loads(out.read_text()) == record  # refused before anything was written
    reported = le.main([*argv, "--report-only"])
    assert reported["config_hash"] == record["config_hash"] and reported["runs"] == record["runs"]


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
