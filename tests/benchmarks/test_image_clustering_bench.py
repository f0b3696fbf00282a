"""Toy-size checks of benchmarks/image_clustering.py's methods (the real numbers are in BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import image_clustering as ic  # noqa: E402


def _args(**over) -> argparse.Namespace:
    base = {"batch_size": 8, "lr": 3e-3, "epochs": 2, "dvc_cluster_epochs": 2, "dvc_recon": "mse", "latent_dim": 4,
            "channels": [4, 8], "strides": [2, 2], "temperature": 0.5, "prototype_temperature": 1.0,
            "cae_augment": "default", "cae_recon_weight": 1.0, "cae_head": "simclr", "cae_prototype_epochs": 0,
            "cae_prototype_assignment": "soft"}  # fmt: skip
    return argparse.Namespace(**{**base, **over})


def _images(n=16, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.1, (n, 1, size, size)).astype(np.float32)
    x[: n // 2, :, :8, :8] = 0.9
    x[n // 2 :, :, 8:, 8:] = 0.9
    return x


def test_cae_and_cae_prototypes_share_one_training_and_dvc_variants_differ(monkeypatch):
    x, args = _images(), _args()
    calls = []
    real = ic.train_cae
    monkeypatch.setattr(ic, "train_cae", lambda *a, **k: calls.append(1) or real(*a, **k))
    ic._CAE_CACHE.clear()
    kmeans_labels = ic.run_method("cae", x, 2, 0, args)
    prototype_labels = ic.run_method("cae_prototypes", x, 2, 0, args)
    assert len(calls) == 1  # the second method reuses the trained network
    assert kmeans_labels.shape == prototype_labels.shape == (16,)
    ic.run_method("cae", x, 2, 1, args)  # another seed trains again
    assert len(calls) == 2
    authors = ic.run_method("dvc", x, 2, 0, args)
    prior = ic.run_method("dvc_prior", x, 2, 0, args)
    assert authors.shape == prior.shape == (16,)
    assert set(ic.METHODS) >= {"cae_prototypes", "dvc_prior"}


def test_variants_get_their_own_rows_and_the_recon_weight_reaches_train_cae(monkeypatch, tmp_path):
    defaults = vars(_args())
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
    seen = []
    real = ic.train_cae
    monkeypatch.setattr(ic, "train_cae", lambda *a, **k: seen.append(k["recon_weight"]) or real(*a, **k))
    ic._CAE_CACHE.clear()
    ic.run_method("cae", _images(), 2, 0, _args(cae_recon_weight=0.2))
    assert seen == [0.2]


def test_reference_cae_trains_the_prototype_phase_and_clusters_by_its_prototypes(monkeypatch):
    seen = {}
    real = ic.train_cae
    monkeypatch.setattr(ic, "train_cae", lambda model, *a, **k: seen.update(model=model, **k) or real(model, *a, **k))
    ic._CAE_CACHE.clear()
    args = _args(cae_head="reference", cae_prototype_epochs=2, cae_prototype_assignment="hard")
    labels = ic.run_method("cae_prototypes", _images(), 2, 0, args)
    model = seen["model"]
    assert seen["prototype_epochs"] == 2 and seen["prototype_assignment"] == "hard"
    assert model.num_prototypes == 2 and model.projection.out_features == 4 and not model.projection.norm
    z = model.encode(__import__("torch").from_numpy(_images())).detach()
    assert np.array_equal(labels, (z @ model.prototypes.t()).argmax(1).numpy())


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
