"""benchmarks/image_clustering.py at toy size, every trained method through the image-clustering bundle (the real
numbers are in BENCHMARKS.md): scores recomputed from the bundle's assignments, paired training, resume, refusals."""

from __future__ import annotations

import csv
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import image_clustering as ic  # noqa: E402

from monai_cluster.clustering import clustering_scores, kmeans  # noqa: E402
from monai_cluster.data.image_io import write_png  # noqa: E402

TOY = ["--chest-n", "16", "--epochs", "1", "--dvc-cluster-epochs", "1", "--latent-dim", "4", "--channels", "4", "8",
       "--batch-size", "8", "--seeds", "0"]  # fmt: skip


def _defaults() -> dict:
    return {"dvc_recon": "mse", "cae_augment": "default", "cae_recon_weight": 1.0, "cae_head": "simclr",
            "cae_prototype_epochs": 0, "cae_prototype_assignment": "soft"}  # fmt: skip


def _fake_data(root: Path) -> Path:
    """A PneumoniaMNIST-format file (two classes, bright squares in opposite corners) and a 6-image PH2 folder."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        images[labels == 0, 2:14, 2:14] = 230
        images[labels == 1, 14:26, 14:26] = 230
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.uint8)[:, None]
    (root / "chest_xray").mkdir(parents=True)
    np.savez(root / "chest_xray" / "pneumoniamnist_balanced.npz", **arrays)
    ph2 = root / "dermoscopy" / "ph2"
    rows = ["image_name,diagnosis"]
    for i, diagnosis in enumerate(["Common Nevus", "Atypical Nevus", "Melanoma"] * 2):
        image = rng.integers(100, 200, (20, 20, 3)).astype(np.uint8)
        image[5:15, 5:15] = (40 * i) % 255
        write_png(image, ph2 / "images" / f"IMD{i:03d}.png")
        rows.append(f"IMD{i:03d},{diagnosis}")
    (ph2 / "diagnosis.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    """One run of every method on the toy chest subset, seed 0 (the CAE with flip/rotation views)."""
    tmp = tmp_path_factory.mktemp("ic_bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("MONAI_CLUSTER_DATA", str(_fake_data(tmp / "data")))
    argv = [*TOY, "--datasets", "chest", "--cae-augment", "flip_rot90", "--out", str(tmp / "ic.json"),
            "--work-dir", str(tmp / "work")]  # fmt: skip
    assert ic.main(argv) == 0
    yield {"argv": argv, "out": tmp / "ic.json", "work": tmp / "work", "tmp": tmp}
    mp.undo()


def test_every_method_runs_and_is_scored_from_the_assignments(chest):
    record = json.loads(chest["out"].read_text())
    runs = {r["method"]: r for r in record["runs"]}
    assert list(runs) == list(ic.METHODS) and record["driver"] == "bundle"
    with np.load(chest["work"] / "data" / "pneumoniamnist_balanced_n16.npz") as subset:
        images, y = subset["train_images"], subset["train_labels"][:, 0]
    assert images.dtype == np.uint8 and images.shape == (16, 28, 28) and np.bincount(y).tolist() == [8, 8]
    assert record["datasets"]["chest"]["counts"] == [8, 8] and record["datasets"]["chest"]["count"] == 16
    for method, run in runs.items():
        labels = np.array([int(c) for c in run["assignments"]])
        scores = clustering_scores(y, labels)
        assert all(run[m] == pytest.approx(scores[m], abs=1e-12) for m in ic.METRICS), method
        assert run["cluster_sizes"] == np.bincount(labels, minlength=2).tolist()
        if method == "kmeans_raw":
            continue
        bundle = run["bundle"]
        with open(Path(bundle["root"]) / "eval" / "clusters.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["key"] for r in rows] == [f"train/{i:05d}" for i in range(16)]
        assert "".join(r["cluster"] for r in rows) == run["assignments"]  # the bundle's own clusters, in order
        assert bundle["metrics"]["nmi"] == pytest.approx(run["nmi"], abs=1e-12)
        assert bundle["overrides"]["seed"] == 0 and bundle["overrides"]["epochs"] == 1
        assert bundle["overrides"]["budget_images"] is None and bundle["version"] == ic.bundle_version()
        assert bundle["command"].startswith("python -m monai.bundle run --config_file bundles/image_clustering/")
    raw = kmeans((images.reshape(16, -1) / np.float32(255)).astype(np.float32), 2, seed=0)[0]
    assert runs["kmeans_raw"]["assignments"] == "".join(map(str, raw))
    options = {m: runs[m]["bundle"]["overrides"] for m in ic.TRAINED}
    assert options["ae_kmeans"]["contrastive"] is False and options["ae_kmeans"]["prototype_epochs"] == 0
    assert runs["ae_kmeans"]["bundle"]["summary"]["contrastive"] is False
    assert options["cae"]["view_augment"] == "flip_rot90" and options["cae"]["cluster_method"] == "kmeans"
    assert options["cae_prototypes"]["cluster_method"] == "prototypes"
    assert (options["dvc"]["method"], options["dvc"]["cluster_beta"], options["dvc_prior"]["cluster_beta"]) == (
        "dvc", 0.0, 1.0)  # fmt: skip
    assert "--cluster_beta 1.0" in runs["dvc_prior"]["bundle"]["command"]
    weights = [torch.load(Path(runs[m]["bundle"]["root"]) / "models" / "model.pt", weights_only=True)
               for m in ("cae", "cae_prototypes")]  # fmt: skip
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # one seed, one trained network
    assert not (Path(runs["cae"]["bundle"]["root"]) / "models" / "checkpoints").exists()


def test_resume_skips_finished_runs_and_refuses_other_settings(chest, monkeypatch):
    out = chest["tmp"] / "resumed.json"
    out.write_text(chest["out"].read_text())
    calls = []
    real = ic.run_bundle
    monkeypatch.setattr(ic, "run_bundle", lambda *a, **k: calls.append(k["bundle_root"]) or real(*a, **k))
    argv = [*chest["argv"][:-4], "--out", str(out), "--work-dir", str(chest["work"])]
    assert ic.main(argv) == 0 and calls == []  # every run is in the file already
    assert ic.main([*argv, "--seeds", "0", "1", "--methods", "kmeans_raw", "dvc"]) == 0
    assert [Path(c).name for c in calls] == ["dvc_s1"]
    record = json.loads(out.read_text())
    assert len(record["runs"]) == 8 and len(record["invocations"]) == 3
    assert [(r["method"], r["seed"]) for r in record["runs"][-2:]] == [("kmeans_raw", 1), ("dvc", 1)]
    with pytest.raises(ValueError, match=r"other settings \(epochs: recorded 1, now 2\)"):
        ic.main([*argv, "--epochs", "2"])
    assert ic.main([*argv, "--epochs", "2", "--methods", "kmeans_raw", "--fresh"]) == 0
    assert [r["method"] for r in json.loads(out.read_text())["runs"]] == ["kmeans_raw"]
    old = chest["tmp"] / "old.json"
    old.write_text(json.dumps({"args": {}, "runs": []}))
    with pytest.raises(ValueError, match="direct engine calls"):
        ic.main([*argv[:-4], "--out", str(old), "--work-dir", str(chest["work"])])


def test_unknown_methods_are_refused_naming_them(capsys):
    import argparse

    args = argparse.Namespace(epochs=1, batch_size=8, lr=1e-3, latent_dim=4, channels=[4], strides=[2], device="cpu")
    with pytest.raises(ValueError, match=r"method 'kmeans_gmm' has no bundle run"):
        ic.bundle_overrides("kmeans_gmm", 2, 0, args, {})
    with pytest.raises(ValueError, match=r"method 'kmeans_raw' has no bundle run"):
        ic.bundle_overrides("kmeans_raw", 2, 0, args, {})
    with pytest.raises(SystemExit):
        ic.main(["--methods", "gmm"])
    assert "invalid choice: 'gmm'" in capsys.readouterr().err


def test_ph2_folder_at_a_fixed_size_and_the_recorded_command_reruns_the_run(chest, monkeypatch):
    out, work = chest["tmp"] / "ph2.json", chest["tmp"] / "work_ph2"
    argv = [*TOY, "--datasets", "ph2", "--ph2-size", "16", "--methods", "ae_kmeans", "--out", str(out),
            "--work-dir", str(work)]  # fmt: skip
    assert ic.main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["bundle"]["overrides"]["spatial_size"] == [16, 16] and len(run["assignments"]) == 6
    words = shlex.split(run["bundle"]["command"])
    assert words[:4] == ["python", "-m", "monai.bundle", "run"]
    words[words.index("--bundle_root") + 1] = str(chest["tmp"] / "rerun")
    import fire
    from monai.bundle import run as bundle_run

    monkeypatch.chdir(ROOT)
    fire.Fire({"run": bundle_run}, command=words[3:])  # the command line as `python -m monai.bundle` parses it
    assert (chest["tmp"] / "rerun" / "eval" / "clusters.csv").read_text() == (
        Path(run["bundle"]["root"]) / "eval" / "clusters.csv").read_text()  # fmt: skip


def test_variants_get_their_own_rows():
    defaults = _defaults()
    assert ic.variant_name("cae", defaults) == "cae"
    assert ic.variant_name("cae", {**defaults, "cae_recon_weight": 0.2}) == "cae+recon_weight=0.2"
    assert ic.variant_name("cae_prototypes", {**defaults, "cae_augment": "flip_rot90"}) == "cae_prototypes+flip_rot90"
    assert ic.variant_name("dvc_prior", {**defaults, "dvc_recon": "bce"}) == "dvc_prior+bce"
    old_record = {k: v for k, v in defaults.items() if k != "dvc_recon"}  # before --dvc-recon: BCE was used
    assert ic.variant_name("dvc", old_record) == "dvc+bce"
    reference = {**defaults, "cae_head": "reference", "cae_prototype_epochs": 20, "cae_prototype_assignment": "hard"}
    assert ic.variant_name("cae", reference) == "cae+head=reference+prototype_epochs=20+hard_update"
    assert ic.variant_name("dvc", {**defaults, "tag": "epochs=60"}) == "dvc+epochs=60"
    assert ic.variant_name("dvc", {**defaults, "cae_recon_weight": 0.2}) == "dvc"  # a CAE setting: not a DVC variant


def test_paired_differences_per_seed():
    runs = [{"dataset": "chest", "method": m, "seed": s, "nmi": v}
            for m, vals in (("a", [0.5, 0.6, 0.7]), ("b", [0.4, 0.6, 0.5])) for s, v in enumerate(vals)]
    runs.append({"dataset": "chest", "method": "a", "seed": 9, "nmi": 1.0})  # b lacks seed 9: not paired
    runs = runs[::-1]  # pairing goes by seed, not by position
    (row,) = ic.paired(runs, ["a:b"])
    assert row["n"] == 3 and row["a_ahead"] == 2
    # the differences 0.1, 0.0, 0.2: sd 0.1 and the t interval mean +- t(0.975, 2) * sd / sqrt(3), by hand
    from scipy.stats import t

    half = t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert np.isclose(row["mean"], 0.1) and np.isclose(row["sd"], 0.1)
    np.testing.assert_allclose(row["ci95"], [0.1 - half, 0.1 + half], rtol=1e-9)
    assert row["ci95"][0] < 0 < row["ci95"][1]  # three seeds with this spread do not exclude 0
    assert ic.paired(runs, ["a:zzz"]) == []
    import pytest

    with pytest.raises(ValueError, match="method_a:method_b"):
        ic.paired(runs, ["a-b"])
