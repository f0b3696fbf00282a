"""The left-atrium 3D benchmark driver end to end at toy size: split, both pretrainings, paired fine-tunings,
the ceiling, scores in mm, statistics, plot, records copy and resume (finished runs skipped)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_driver():
    spec = importlib.util.spec_from_file_location("la_3d_bench", REPO / "benchmarks" / "la_3d.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["la_3d_bench"] = module
    spec.loader.exec_module(module)
    return module


def _toy_la(root: Path, n: int = 6) -> Path:
    """``n`` uint8 volumes of 32 x 20 x 16 at 1.25 mm with a bright ellipsoid labeled 1, the shared folder's layout."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([1.25, 1.25, 1.25, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (32, 20, 16)], indexing="ij"))
    for i in range(n):
        centre = np.array([16, 10, 8]) + rng.integers(-2, 3, size=3)
        radii = np.array([6, 5, 4]) + rng.integers(0, 2, size=3)
        label = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
        image = np.clip(60 + 120 * label + rng.normal(0, 20, label.shape), 0, 255).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"case{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), root / "labels" / f"case{i:02d}.nii.gz")
    return root


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("la3d")
    data = _toy_la(tmp / "la")
    driver = _load_driver()
    argv = ["--toy", "--data-dir", str(data), "--seeds", "0", "1", "--work-dir", str(tmp / "work"),
            "--out", str(tmp / "results" / "la3d_toy.json"), "--records", str(tmp / "records"), "--threads", "1"]
    results = driver.main(argv)
    return driver, argv, results, tmp


def test_split_pool_and_test_disjoint(toy_run):
    _, _, results, tmp = toy_run
    split = results["split"]
    pool = {e["image"] for e in split["training"]}
    test = {e["image"] for e in split["validation"]}
    assert len(test) == 2 and len(pool) == 4 and not pool & test
    # the bundles read the same split the results record
    assert json.loads((tmp / "work" / "split.json").read_text())["validation"] == split["validation"]
    assert json.loads((tmp / "records" / "la3d_toy_split.json").read_text()) == split


def test_runs_paired_and_scored_in_mm(toy_run):
    _, _, results, _ = toy_run
    runs = results["runs"]
    assert set(runs) == {f"{m}/n2/s{s}" for m in ("random", "simclr", "cluster_guided") for s in (0, 1)} | {
        "random/nall/s0"
    }
    pool = {e["image"] for e in results["split"]["training"]}
    test = {e["image"] for e in results["split"]["validation"]}
    for seed in (0, 1):  # the bundle drew the labeled volumes: the same for every method at a seed, from the pool
        keys = {tuple(runs[f"{m}/n2/s{seed}"]["labeled_keys"]) for m in ("random", "simclr", "cluster_guided")}
        assert len(keys) == 1 and len(next(iter(keys))) == 2 and set(next(iter(keys))) <= pool
    assert sorted(runs["random/nall/s0"]["labeled_keys"]) == sorted(pool)
    for run in runs.values():
        assert run["distance_unit"] == "mm"
        assert {p["key"] for p in run["per_image"]} == test
        assert 0.0 <= run["dice"] <= 1.0
        assert run["jaccard"] == pytest.approx(np.mean([p["jaccard"][0] for p in run["per_image"]]))
    # pretrained runs loaded the pretraining's weights, random ones did not
    assert runs["simclr/n2/s0"]["transfer"]["matched"]
    assert runs["random/n2/s0"]["transfer"] is None
    assert set(results["pretrain"]) == {"simclr", "cluster_guided"}


def test_statistics_plot_records(toy_run):
    driver, _, results, tmp = toy_run
    paired = results["summary"]["paired"]["cluster_guided-random/n2"]
    runs = results["runs"]
    diffs = [runs[f"cluster_guided/n2/s{s}"]["dice"] - runs[f"random/n2/s{s}"]["dice"] for s in (0, 1)]
    assert paired["dice"]["mean"] == pytest.approx(np.mean(diffs))
    assert paired["seeds"] == [0, 1]
    assert "cluster_guided - random" in driver.format_report(results["summary"])
    assert (tmp / "records" / "la3d_paired.png").stat().st_size > 0
    assert json.loads((tmp / "records" / "la3d_toy.json").read_text())["runs"].keys() == runs.keys()


def test_resume_skips_finished_runs(toy_run, monkeypatch):
    driver, argv, results, _ = toy_run

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(driver, "fine_tune", refuse)
    monkeypatch.setattr(driver, "pretrain", refuse)
    again = driver.main(argv)
    assert again["runs"] == results["runs"]


def test_protocols_are_chosen_by_name_and_the_gpu_one_differs_only_in_size():
    driver = _load_driver()
    assert driver.parse_args(["--toy"]).protocol == "toy" and driver.parse_args([]).protocol == "cpu"
    assert driver.parse_args(["--protocol", "gpu"]).protocol == "gpu"
    with pytest.raises(ValueError, match="--toy and --protocol gpu"):
        driver.parse_args(["--toy", "--protocol", "gpu"])
    cpu, gpu = driver.PROTOCOL, driver.PROTOCOL_GPU
    assert {k: v for k, v in gpu.items() if k not in ("pretrain", "finetune")} == {
        k: v for k, v in cpu.items() if k not in ("pretrain", "finetune")}  # split, seeds, epochs: the same
    assert gpu["pretrain"]["epochs"] == cpu["pretrain"]["epochs"] and gpu["finetune"]["features"][1] == 32
    assert all(s % 16 == 0 for s in gpu["pretrain"]["image_size"] + gpu["finetune"]["roi_size"])


def test_semi_supervised_variants_pair_with_labeled_only_runs(toy_run):
    """``--semi-supervised copy_paste`` adds ``method+copy_paste`` runs on the same labeled volumes, trained with
    the pool's other volumes unlabelled (never a test volume), paired by seed with the labeled-only runs."""
    driver, argv, results, tmp = toy_run
    out = tmp / "results" / "la3d_toy_semi.json"
    out.write_text((tmp / "results" / "la3d_toy.json").read_text())  # the finished labeled-only runs, reused
    argv = [*argv[: argv.index("--out")], "--out", str(out), *argv[argv.index("--out") + 2:]]
    semi = driver.main([*argv, "--seeds", "0", "--methods", "random", "cluster_guided",
                        "--semi-supervised", "none", "copy_paste"])  # fmt: skip
    runs = semi["runs"]
    assert set(runs) - set(results["runs"]) == {"random+copy_paste/n2/s0", "cluster_guided+copy_paste/n2/s0"}
    for method in ("random", "cluster_guided"):
        run = runs[f"{method}+copy_paste/n2/s0"]
        assert run["semi_supervised"] == "copy_paste" and run["variant"] == f"{method}+copy_paste"
        assert run["labeled_keys"] == runs["random/n2/s0"]["labeled_keys"]
        assert run["num_unlabeled"] == 2  # the 4 pool volumes less the 2 labeled; the 2 test volumes never
        assert {p["key"] for p in run["per_image"]} == {e["image"] for e in semi["split"]["validation"]}
    assert runs["cluster_guided+copy_paste/n2/s0"]["transfer"]["matched"]
    assert runs["random/n2/s0"].get("semi_supervised", "none") == "none"
    paired = semi["summary"]["paired"]
    diff = runs["random+copy_paste/n2/s0"]["dice"] - runs["random/n2/s0"]["dice"]
    assert paired["random+copy_paste-random/n2"]["dice"]["mean"] == pytest.approx(diff)
    assert paired["random+copy_paste-random/n2"]["goal_met"] is None  # the +0.03 goal is the pretraining's
    assert paired["cluster_guided+copy_paste-random+copy_paste/n2"]["seeds"] == [0]
    assert "random+copy_paste" in driver.format_report(semi["summary"])
