"""Issue 24, classes 1, 2 and 5 for local_discrimination_pretrain, dermoscopy_segmentation and heart_ct_segmentation.

Class 1: an option that only a later step used to refuse is refused in ``initialize``, and a finished run's
``models/`` and ``eval/`` stay byte-identical (also when training fails after it began). Class 2: settings under which
a term, the clustering head or the training split would train nothing are refused with the reason. Class 5: a resume
with another seed, data, network or loss setting is refused naming both values, and so is an evaluate or inference
run on a model trained with other network settings. Every case asserts that the message names the option.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import monai_cluster.workflows.local_discrimination as local_discrimination
from monai_cluster.workflows import RECORD_NAME, run_bundle
from test_upfront_identity import _copy, _message  # the helpers of the classes' first bundles (same folder)

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
LD = REPO / "bundles" / "local_discrimination_pretrain"
DERM = REPO / "bundles" / "dermoscopy_segmentation"
HEART = REPO / "bundles" / "heart_ct_segmentation"
FEATURES = [4, 4, 8, 8, 16, 4]
LD_TOY = {"synthetic_n": 5, "synthetic_size": 32, "num_val": 1, "spatial_size": [32, 32], "features": FEATURES,
          "embed_dim": 4, "num_clusters": 3, "grid_size": 4, "epochs": 1, "val_interval": 1, "batch_size": 2,
          "num_cluster_maps": 2, "device": "cpu"}  # fmt: skip
DERM_TOY = {"synthetic_n": 8, "synthetic_size": 48, "image_size": 32, "features": FEATURES, "batch_size": 4,
            "epochs": 1, "val_interval": 1, "use_pretrained": False, "device": "cpu"}  # fmt: skip
HEART_TOY = {"synthetic_n": 3, "synthetic_size": 32, "roi_size": [32, 32, 32], "features": FEATURES, "epochs": 1,
             "val_interval": 1, "use_pretrained": False, "device": "cpu"}  # fmt: skip
INFER = ("epochs", "val_interval", "use_pretrained", "batch_size")


def _files(*folders: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder.parent)): p.read_bytes()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _refused(bundle: Path, root: Path, configs=("train.json",), **overrides) -> str:
    with pytest.raises(Exception) as info:
        run_bundle(bundle, list(configs), bundle_root=root, **overrides)
    return _message(info.value)


@pytest.fixture(scope="module")
def finished_ld(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ld_done")
    run_bundle(LD, bundle_root=root, **LD_TOY)
    return root


@pytest.fixture(scope="module")
def finished_derm(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("derm_done")
    run_bundle(DERM, bundle_root=root, **DERM_TOY)
    run_bundle(DERM, ["train.json", "evaluate.json"], bundle_root=root, **DERM_TOY)
    return root


@pytest.fixture(scope="module")
def finished_heart(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("heart_done")
    run_bundle(HEART, bundle_root=root, **HEART_TOY)
    run_bundle(HEART, ["train.json", "evaluate.json"], bundle_root=root, **HEART_TOY)
    return root


# ------------------------------------------------------------------------------ class 1: checked before any write

@pytest.mark.parametrize(
    "overrides, option",
    [
        ({"shape_prior": True, "shape_prior_cluster": 3}, "shape_prior_cluster"),  # 3 clusters: 0..2
        ({"grid_size": 64}, "grid_size"),  # more patches per axis than the 32 pixels
        ({"grid_size": [4, 4, 4]}, "grid_size"),  # three axes for a 2D run
        ({"batch_size": 5}, "batch_size"),  # 4 training images
        ({"num_val": 4}, "num_val"),  # leaves 1 image to pretrain on
        ({"shape_prior": True, "prior_mask_dir": "/no/such/masks"}, "prior_mask_dir"),
        ({"assignment_activation": "tanh"}, "assignment_activation"),
    ],
)
def test_ld_late_options_refused_before_the_previous_outputs_change(finished_ld, tmp_path, overrides, option):
    root = _copy(finished_ld, tmp_path / "root")
    before = _files(root / "models", root / "eval")
    message = _refused(LD, root, **{**LD_TOY, **overrides})
    assert option in message, message
    assert _files(root / "models", root / "eval") == before


def test_ld_failure_after_training_began_puts_the_previous_outputs_back(finished_ld, tmp_path, monkeypatch):
    root = _copy(finished_ld, tmp_path / "root")
    before = _files(root / "models", root / "eval")

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure while writing the cluster maps")

    monkeypatch.setattr(local_discrimination, "save_cluster_maps", fail)
    message = _refused(LD, root, **{**LD_TOY, "seed": 3})  # training rewrote the checkpoint and model.pt
    assert "simulated failure" in message
    assert _files(root / "models", root / "eval") == before
    assert not (root / "models" / ".previous_run").exists()


@pytest.mark.parametrize(
    "bundle, toy, finished, overrides, option",
    [
        ("derm", DERM_TOY, "finished_derm", {"val_fraction": 1.5}, "val_fraction"),
        ("derm", DERM_TOY, "finished_derm", {"num_labeled": 9}, "num_labeled"),  # 6 training items
        ("derm", DERM_TOY, "finished_derm", {"num_classes": 3}, "num_classes"),  # binary masks
        ("derm", DERM_TOY, "finished_derm", {"label_fraction": 2.0}, "label_fraction"),
        ("derm", DERM_TOY, "finished_derm", {"num_workers": -1}, "num_workers"),  # was refused by the DataLoader
        ("heart", HEART_TOY, "finished_heart", {"sw_overlap": 1.0}, "sw_overlap"),  # was refused after training
        ("heart", HEART_TOY, "finished_heart", {"num_classes": 9}, "num_classes"),  # phantoms hold 8 classes
        ("heart", HEART_TOY, "finished_heart", {"roi_size": [80, 32, 32]}, "roi_size"),  # volumes of 32
        ("heart", HEART_TOY, "finished_heart", {"ct_window": [500, -300]}, "ct_window"),
        ("heart", HEART_TOY, "finished_heart", {"sw_batch_size": 0}, "sw_batch_size"),  # was refused at validation
        ("heart", HEART_TOY, "finished_heart", {"use_pretrained": True, "pretrained_path": "/no/model.pt"},
         "pretrained_path"),
    ],
)
def test_segmentation_late_options_refused_before_the_previous_outputs_change(
    request, tmp_path, bundle, toy, finished, overrides, option
):
    root = _copy(request.getfixturevalue(finished), tmp_path / "root")
    before = _files(root / "models", root / "eval")
    message = _refused(DERM if bundle == "derm" else HEART, root, **{**toy, **overrides})
    assert option in message, message
    assert _files(root / "models", root / "eval") == before


def test_segmentation_failure_during_training_puts_the_previous_outputs_back(finished_derm, tmp_path):
    root = _copy(finished_derm, tmp_path / "root")
    before = _files(root / "models", root / "eval")
    # a learning rate that makes the loss non-finite stops the run in training, after the first checkpoints
    message = _refused(DERM, root, **{**DERM_TOY, "learning_rate": 1e30, "epochs": 3})
    assert "loss" in message.lower(), message
    assert _files(root / "models", root / "eval") == before
    assert not (root / "models" / ".previous_run").exists()


def test_evaluate_and_inference_failures_keep_the_previous_results(finished_heart, tmp_path):
    root = _copy(finished_heart, tmp_path / "root")
    before = _files(root / "models", root / "eval")
    message = _refused(HEART, root, ("train.json", "evaluate.json"), **{**HEART_TOY, "sw_overlap": 1.0})
    assert "sw_overlap" in message, message
    message = _refused(HEART, root, ("inference.json",), **{k: v for k, v in HEART_TOY.items() if k not in INFER},
                       sw_overlap=2.0)  # fmt: skip
    assert "sw_overlap" in message, message
    assert _files(root / "models", root / "eval") == before


# ------------------------------------------------------------------------------ class 2: degenerate settings

@pytest.mark.parametrize(
    "overrides, option, reason",
    [
        ({"num_clusters": 1}, "num_clusters", ">= 2"),
        ({"grid_size": 1}, "grid_size", "one patch per image"),
        ({"region_weight": 0.0, "entropy_weight": 0.0}, "region_weight", "stay random"),
        ({"patch_weight": 0.0, "mixup_weight": 0.0, "warmup_epochs": 1, "epochs": 2}, "warmup_epochs",
         "train nothing"),
        ({"shape_prior": True, "shape_prior_weight": 0.0}, "shape_prior_weight", "never reach the network"),
        ({"patch_weight": 0.0, "mixup_weight": 0.0, "region_weight": 0.0, "entropy_weight": 0.0, "warmup_epochs": 0},
         "patch_weight", "train nothing"),
    ],
)
def test_ld_degenerate_settings_refused(tmp_path, overrides, option, reason):
    message = _refused(LD, tmp_path, **{**LD_TOY, **overrides})
    assert option in message and reason in message, message
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "bundle, toy, overrides, option, reason",
    [
        ("derm", DERM_TOY, {"val_fraction": 0.95}, "val_fraction", "leaves no training item"),
        ("derm", DERM_TOY, {"label_fraction": 0.0}, "label_fraction", "keep 0 labelled"),
        ("derm", DERM_TOY, {"label_fraction": 0.5, "num_labeled": 2}, "num_labeled", "silently win"),
        ("derm", DERM_TOY, {"partial_transfer": True}, "partial_transfer", "no pretrained tensor"),
        ("heart", HEART_TOY, {"val_fraction": 0.9}, "val_fraction", "leaves no training item"),
        ("heart", HEART_TOY, {"intensity": "pet"}, "intensity", "must be one of"),
    ],
)
def test_segmentation_degenerate_settings_refused(tmp_path, bundle, toy, overrides, option, reason):
    message = _refused(DERM if bundle == "derm" else HEART, tmp_path, **{**toy, **overrides})
    assert option in message and reason in message, message
    assert not (tmp_path / "models").exists()


def test_evaluate_of_an_empty_split_refused(finished_derm, tmp_path):
    root = _copy(finished_derm, tmp_path / "root")
    before = _files(root / "eval")
    message = _refused(DERM, root, ("train.json", "evaluate.json"), **{**DERM_TOY, "val_fraction": 0.0})
    assert "eval_split" in message and "holds no item" in message, message
    assert _files(root / "eval") == before


# ------------------------------------------------------------------------------ class 5: resume is the same run

@pytest.mark.parametrize(
    "overrides, setting, recorded, asked",
    [
        ({"seed": 1}, "seed", "0", "1"),
        ({"patch_temperature": 0.2}, "patch_temperature", "0.1", "0.2"),
        ({"num_clusters": 4}, "num_clusters", "3", "4"),
        ({"embed_dim": 8}, "embed_dim", "4", "8"),
        ({"synthetic_n": 6}, "data", "'count': 4", "'count': 5"),
    ],
)
def test_ld_resume_refuses_the_outputs_of_another_run(finished_ld, tmp_path, overrides, setting, recorded, asked):
    root = _copy(finished_ld, tmp_path / "root")
    before = _files(root / "models", root / "eval")
    message = _refused(LD, root, **{**LD_TOY, **overrides, "resume": True})
    assert f"'{setting}': outputs made with" in message and recorded in message and asked in message, message
    assert _files(root / "models", root / "eval") == before


@pytest.mark.parametrize(
    "bundle, toy, finished, overrides, setting, recorded, asked",
    [
        ("derm", DERM_TOY, "finished_derm", {"seed": 1}, "seed", "0", "1"),
        ("derm", DERM_TOY, "finished_derm", {"features": [8, 8, 16, 16, 32, 8]}, "features", "[4, 4, 8, 8, 16, 4]",
         "[8, 8, 16, 16, 32, 8]"),
        ("derm", DERM_TOY, "finished_derm", {"num_labeled": 3}, "num_labeled", "None", "3"),
        ("heart", HEART_TOY, "finished_heart", {"intensity": "mri"}, "intensity", "'ct'", "'mri'"),
        ("heart", HEART_TOY, "finished_heart", {"num_samples": 1}, "num_samples", "2", "1"),
        ("heart", HEART_TOY, "finished_heart", {"synthetic_n": 4}, "data", "'count': 2", "'count': 3"),
    ],
)
def test_segmentation_resume_refuses_the_outputs_of_another_run(
    request, tmp_path, bundle, toy, finished, overrides, setting, recorded, asked
):
    root = _copy(request.getfixturevalue(finished), tmp_path / "root")
    before = _files(root / "models", root / "eval")
    message = _refused(DERM if bundle == "derm" else HEART, root, **{**toy, **overrides, "resume": True})
    assert f"'{setting}': outputs made with" in message and recorded in message and asked in message, message
    assert _files(root / "models", root / "eval") == before


def test_segmentation_resume_refuses_outputs_without_a_record(finished_derm, tmp_path):
    root = _copy(finished_derm, tmp_path / "root")
    (root / "models" / RECORD_NAME).unlink()
    message = _refused(DERM, root, **{**DERM_TOY, "resume": True})
    assert "no record of the settings" in message, message


@pytest.mark.parametrize(
    "bundle, toy, finished, configs, overrides, setting",
    [
        ("derm", DERM_TOY, "finished_derm", ("train.json", "evaluate.json"), {"features": [8, 8, 16, 16, 32, 8]},
         "features"),
        ("derm", DERM_TOY, "finished_derm", ("inference.json",), {"image_size": 48}, "image_size"),
        ("heart", HEART_TOY, "finished_heart", ("train.json", "evaluate.json"), {"ct_window": [-100, 300]},
         "ct_window"),
        ("heart", HEART_TOY, "finished_heart", ("inference.json",), {"backbone": "segresnet"}, "backbone"),
    ],
)
def test_evaluate_and_inference_refuse_a_model_of_other_network_settings(
    request, tmp_path, bundle, toy, finished, configs, overrides, setting
):
    root = _copy(request.getfixturevalue(finished), tmp_path / "root")
    before = _files(root / "models", root / "eval")
    settings = {**toy, **overrides}
    if configs == ("inference.json",):
        settings = {k: v for k, v in settings.items() if k not in INFER}
    message = _refused(DERM if bundle == "derm" else HEART, root, configs, **settings)
    assert f"'{setting}': trained with" in message and "this run asks for" in message, message
    assert _files(root / "models", root / "eval") == before
    assert not (root / "outputs").exists()
