"""Issue 24, classes 1, 2 and 5: options checked before anything is written, degenerate settings refused, resume
only of the same run.

Class 1: a finished run's outputs stay byte-identical when a later run is refused for an option that only a later
stage used to check, and when a later stage fails. Class 2: settings under which a loss has no negatives or no
weight to move, or an option string outside its values, are refused with the reason. Class 5: a resume, or a stage
run on an earlier stage's outputs, refuses outputs made with other defining settings, naming both values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import monai_cluster.workflows as workflows
from monai_cluster.workflows import RECORD_NAME, check_slice_options, run_bundle

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "bundles" / "cluster_contrastive_pretrain"
CLUSTERING = REPO / "bundles" / "image_clustering"
TOY = {
    "synthetic_n": 6, "synthetic_size": 32, "image_size": [32, 32], "features": [4, 4, 8, 8, 16, 4],
    "autoencoder_channels": [4, 8, 8, 8], "autoencoder_epochs": 1, "epochs": 1, "batch_size": 3,
    "num_clusters": [2, 3], "local_num_locations": 8, "device": "cpu",
}  # fmt: skip
CLUSTER_TOY = {"synthetic_n": 8, "synthetic_size": 32, "spatial_size": 16, "epochs": 1, "cluster_epochs": 1,
               "batch_size": 4, "progress": False, "device": "cpu", "budget_images": None}  # fmt: skip


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _message(err: BaseException) -> str:
    texts = []
    while err is not None:
        texts.append(str(err))
        err = err.__cause__ or err.__context__
    return " | ".join(texts)


@pytest.fixture(scope="module")
def finished_pretrain(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain_done")
    run_bundle(PRETRAIN, bundle_root=root, **TOY)
    return root


@pytest.fixture(scope="module")
def finished_clustering(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clustering_done")
    run_bundle(CLUSTERING, bundle_root=root, **CLUSTER_TOY)
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _refused(bundle: Path, root: Path, run_id: str = "run", **overrides) -> str:
    with pytest.raises(Exception) as info:
        run_bundle(bundle, bundle_root=root, run_id=run_id, **overrides)
    return _message(info.value)


# ------------------------------------------------------------------------------ class 1: checked before any write

@pytest.mark.parametrize(
    "overrides, option",
    [
        ({"num_clusters": [2, 30]}, "num_clusters"),  # was refused by stage 2, after stage 1 replaced autoencoder.pt
        ({"local_region_size": 64}, "local_region_size"),  # was refused by the local loss in stage 3
        ({"autoencoder_strides": [2, 2]}, "autoencoder_strides"),  # 4 channels, 2 strides
        ({"decoder_layer": "upcat_9"}, "decoder_layer"),  # the example: a layer the backbone lacks
        ({"intensity_range": [255.0, 0.0]}, "intensity_range"),
    ],
)
def test_pretrain_late_options_refused_before_the_previous_outputs_change(finished_pretrain, tmp_path, overrides, option):
    root = _copy(finished_pretrain, tmp_path / "root")
    before = _files(root / "models")
    message = _refused(PRETRAIN, root, **{**TOY, **overrides})
    assert f"option '{option}'" in message, message
    assert _files(root / "models") == before


def test_a_failing_later_stage_puts_the_previous_outputs_back(finished_pretrain, tmp_path, monkeypatch):
    root = _copy(finished_pretrain, tmp_path / "root")
    before = _files(root / "models")

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure in the contrastive stage")

    monkeypatch.setattr(workflows, "run_pretrain", fail)
    message = _refused(PRETRAIN, root, **{**TOY, "seed": 3})  # stages 1 and 2 rewrite autoencoder.pt and the table
    assert "simulated failure" in message
    assert _files(root / "models") == before
    assert not (root / "models" / ".previous_run").exists()


@pytest.mark.parametrize(
    "overrides, option",
    [
        ({"method": "dvc", "tol": 2.0}, "tol"),  # the example, once refused after DVC's pretraining
        ({"method": "contrastive_ae", "recon": "bce"}, "recon"),
        ({"strides": [2, 2], "spatial_size": 18}, "spatial_size"),
        ({"channels": [8, 16, 16], "strides": [2, 2]}, "strides"),
        ({"num_clusters": 9}, "num_clusters"),  # more clusters than the 8 images
        ({"gamma": -1.0, "method": "dvc"}, "gamma"),
    ],
)
def test_clustering_late_options_refused_before_the_previous_outputs_change(finished_clustering, tmp_path, overrides,
                                                                            option):
    root = _copy(finished_clustering, tmp_path / "root")
    before = _files(root / "models") | _files(root / "eval")
    message = _refused(CLUSTERING, root, **{**CLUSTER_TOY, **overrides})
    assert f"option '{option}'" in message, message
    assert _files(root / "models") | _files(root / "eval") == before


# ------------------------------------------------------------------------------ class 2: degenerate settings

@pytest.mark.parametrize(
    "overrides, option, reason",
    [
        ({"schedule": "staged", "decoder_layer": "down_3"}, "decoder_layer", "no backbone weight"),  # issue example
        ({"local_num_locations": 1}, "local_num_locations", "has none"),
        ({"use_pseudo_classes": False, "recluster_interval": 1}, "recluster_interval", "no pseudo-classes"),
        ({"recluster_interval": 5}, "recluster_interval", "never re-cluster"),
        ({"local_region_size": 32}, "local_region_size", "at least 2 regions"),
        ({"schedule": "together"}, "schedule", "must be one of"),
    ],
)
def test_pretrain_degenerate_settings_refused(tmp_path, overrides, option, reason):
    message = _refused(PRETRAIN, tmp_path, **{**TOY, **overrides})
    assert f"option '{option}'" in message and reason in message, message
    assert not (tmp_path / "models").exists()


def test_slices_with_one_partition_have_no_negatives():
    options = {"global_strategy": "G_D", "num_partitions": 1, "intensity_range": None,
               "intensity_percentiles": [0.5, 99.5], "use_pseudo_classes": False, "spatial_dims": 2, "in_channels": 1,
               "crop_fraction": None}
    with pytest.raises(ValueError, match=r"option 'num_partitions'.*would have none"):
        check_slice_options(**options)
    assert check_slice_options(**{**options, "global_strategy": "G_R"})["num_partitions"] == 1  # SimCLR: fine


@pytest.mark.parametrize(
    "overrides, option",
    [
        ({"method": "dvc", "cluster_method": "prototypes"}, "cluster_method"),  # silently ignored before
        ({"npz_split": "training"}, "npz_split"),
        ({"method": "dvc", "recon": "l1"}, "recon"),
    ],
)
def test_clustering_settings_outside_their_values_refused(tmp_path, overrides, option):
    message = _refused(CLUSTERING, tmp_path, **{**CLUSTER_TOY, **overrides})
    assert f"option '{option}'" in message, message
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------------------------ class 5: resume is the same run

@pytest.mark.parametrize(
    "overrides, setting, recorded, asked",
    [
        ({"seed": 1}, "seed", "0", "1"),  # the example
        ({"temperature": 0.2}, "temperature", "0.1", "0.2"),
        ({"num_clusters": [2, 4]}, "num_clusters", "[2, 3]", "[2, 4]"),
        ({"decoder_layer": "upcat_2"}, "decoder_layer", "None", "'upcat_2'"),
        ({"synthetic_n": 7}, "data", "'count': 6", "'count': 7"),
    ],
)
def test_resume_refuses_the_outputs_of_another_run(finished_pretrain, tmp_path, overrides, setting, recorded, asked):
    root = _copy(finished_pretrain, tmp_path / "root")
    before = _files(root / "models")
    message = _refused(PRETRAIN, root, **{**TOY, **overrides, "resume": True})
    assert f"'{setting}': outputs made with" in message and recorded in message and asked in message, message
    assert _files(root / "models") == before


def test_resume_of_the_same_run_with_more_epochs_is_accepted(finished_pretrain, tmp_path):
    root = _copy(finished_pretrain, tmp_path / "root")
    workflow = run_bundle(PRETRAIN, bundle_root=root, **{**TOY, "epochs": 2, "resume": True, "num_workers": 0})
    assert workflow.parser.get_parsed_content("train#trainer").state.epoch == 2


def test_a_stage_run_alone_refuses_an_earlier_stage_of_other_settings(tmp_path):
    run_bundle(PRETRAIN, bundle_root=tmp_path, run_id="run_autoencoder", **TOY)
    message = _refused(PRETRAIN, tmp_path, run_id="run_cluster", **{**TOY, "autoencoder_learning_rate": 0.01})
    assert "'autoencoder_learning_rate': outputs made with 0.002, this run asks for 0.01" in message, message


def test_resume_refuses_outputs_without_a_record(finished_pretrain, tmp_path):
    root = _copy(finished_pretrain, tmp_path / "root")
    (root / "models" / RECORD_NAME).unlink()
    message = _refused(PRETRAIN, root, **{**TOY, "resume": True})
    assert "no record of the settings" in message, message


def test_clustering_resume_refuses_another_method_or_cluster_count(finished_clustering, tmp_path):
    root = _copy(finished_clustering, tmp_path / "root")
    message = _refused(CLUSTERING, root, **{**CLUSTER_TOY, "num_clusters": 4, "resume": True})
    assert "'num_clusters': outputs made with 3, this run asks for 4" in message, message
    message = _refused(CLUSTERING, root, **{**CLUSTER_TOY, "method": "dvc", "resume": True})
    assert "'method': outputs made with 'contrastive_ae', this run asks for 'dvc'" in message, message
