"""Toy-size tests of ``local_discrimination_retina.py`` through the bundles: pairing, records, resume, refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_cluster.data import make_synthetic_fundus

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _ld_retina_bundles as ldb  # noqa: E402
import local_discrimination_retina as ldr  # noqa: E402

TOY = [
    "--image-size", "64", "--crop", "32", "--ft-crop", "32", "--features", "4", "4", "8", "8", "16", "4",
    "--clusters", "3", "--grid", "2", "--ld-steps", "3", "--ld-batch", "2", "--ae-steps", "3", "--cg-steps", "2",
    "--cg-batch", "2", "--cg-levels", "2", "3", "--ft-steps", "4", "--ft-batch", "2", "--labeled", "2",
    "--seeds", "0", "1", "--inits", "random", "ld", "cg_encoder",
]  # fmt: skip


def _retina_like(root: Path) -> Path:
    """DRIVE (4 training, 2 test images with vessel and field-of-view masks) and CHASE_DB1 (2 images) layouts."""
    items = make_synthetic_fundus(root / "synthetic", n=8, size=48, seed=3)
    fov = np.zeros((48, 48), np.uint8)
    fov[4:44, 4:44] = 255
    names = [("training", f"{21 + i}", "training") for i in range(4)] + [("testing", f"0{i + 1}", "test") for i in range(2)]
    for item, (sub, number, word) in zip(items, names):
        folder = root / "drive" / sub
        for name in ("images", "1st_manual", "mask"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        Image.open(item["image"]).save(folder / "images" / f"{number}_{word}.tif")
        Image.open(item["label"]).save(folder / "1st_manual" / f"{number}_manual1.gif")
        Image.fromarray(fov).save(folder / "mask" / f"{number}_{word}_mask.gif")
    (root / "chase_db1").mkdir()
    for item, eye in zip(items[6:], "LR"):
        Image.open(item["image"]).convert("RGB").save(root / "chase_db1" / f"Image_01{eye}.jpg")
        Image.open(item["label"]).save(root / "chase_db1" / f"Image_01{eye}_1stHO.png")
    return root


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ld_retina")
    argv = [*TOY, "--data-root", str(_retina_like(tmp / "retina")), "--out", str(tmp / "ld.json"),
            "--work-dir", str(tmp / "work")]  # fmt: skip
    return tmp, argv, ldr.main(argv)


def test_runs_are_paired_by_seed_and_read_from_the_bundles(toy_run):
    tmp, argv, record = toy_run
    assert record["pipeline"] == "bundles" and record["data"] == {"pool_images": 6, "train_images": 4, "test_images": 2}
    runs = {(r["init"], r["seed"]): r for r in record["finetune"]}
    assert set(runs) == {(i, s) for i in ("random", "ld", "cg_encoder") for s in (0, 1)}
    for seed in (0, 1):  # the bundle's seed picks the labeled images, the same for every initialisation
        labeled = {tuple(runs[(init, seed)]["labeled"]) for init in ("random", "ld", "cg_encoder")}
        assert len(labeled) == 1 and len(next(iter(labeled))) == 2
    assert runs[("random", 0)]["loaded_tensors"] == 0
    assert runs[("ld", 0)]["loaded_tensors"] > runs[("cg_encoder", 0)]["loaded_tensors"] > 0  # encoder only
    for run in runs.values():
        assert sorted(run["dice_evals"]) == ["2", "3", "4"]  # 80, 90 and 100% of the steps, rounded
        assert run["test_images"] == 2 and 0 <= run["dice"] <= 1
        assert run["dice"] == pytest.approx(np.mean(list(run["dice_evals"].values())))
    assert record["pretrain_ld"]["iterations"] == 3 and record["pretrain_ld"]["overrides"]["crop_size"] == [32, 32]
    assert record["pretrain_cg"]["iterations"] == 2 and record["pretrain_cg"]["overrides"]["max_steps"] == 2
    assert len(list((tmp / "work" / "pool" / "images").iterdir())) == 6  # DRIVE training + CHASE_DB1, no test image
    unsup = record["unsupervised"]
    assert set(unsup) == {"ld_pretrained", "ld_untrained", "kmeans_rgb", "reference_all_fov_dice"}
    assert all(0 <= unsup[k]["test_dice_best"] <= 1 for k in ("ld_pretrained", "kmeans_rgb"))
    rows = {r["init"]: r for r in record["summary"]}
    assert rows["ld"]["diff_to_random"]["n"] == 2 and rows["random"]["diff_to_random"] is None
    diffs = [runs[("ld", s)]["dice"] - runs[("random", s)]["dice"] for s in (0, 1)]
    assert rows["ld"]["diff_to_random"]["mean"] == pytest.approx(np.mean(diffs))
    assert json.loads((tmp / "ld.json").read_text())["settings_hash"] == record["settings_hash"]


def test_a_rerun_skips_finished_runs(toy_run, monkeypatch):
    _, argv, record = toy_run

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ldb, "run_bundle", refuse)
    monkeypatch.setattr(ldb, "bundle_workflow", refuse)
    again = ldr.main(argv)
    assert again["finetune"] == record["finetune"] and again["pretrain_ld"] == record["pretrain_ld"]


def test_a_bad_option_is_refused_by_the_bundle_naming_it(toy_run):
    tmp, argv, _ = toy_run
    args = ldr.parse_args([*argv[: argv.index("--ft-crop")], "--ft-crop", "80", *argv[argv.index("--ft-crop") + 2 :]])
    split = json.loads((tmp / "work" / "finetune_datalist.json").read_text())
    assert len(split["training"]) == 4 and len(split["validation"]) == 2
    info = {"datalist": str(tmp / "work" / "finetune_datalist.json"), "fov_dir": str(tmp / "retina" / "drive" / "testing" / "mask")}
    with pytest.raises(Exception) as err:
        ldb.finetune(args, info, 0, "random", None, tmp / "bad")
    text, cause = [], err.value
    while cause is not None:
        text.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    assert "'crop_size'" in " | ".join(text)
