"""Catalogue of bad bundle inputs: overrides of the wrong type or range, dataset folders with a bad file, and
pretrained weights that are missing or belong to something else.

Each row builds a bundle's ``ConfigWorkflow`` in-process at toy size (as ``python -m monai.bundle run`` does),
runs ``initialize`` and ``run``, and checks that the root cause of the failure has the right type and a message
naming the input and what was expected, and that the failure came before any training step: no weights,
checkpoints or TensorBoard logs exist under the bundle root afterwards.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.networks.nets import BasicUNet, SegResNet, UNet

from monai_cluster.data import write_nifti, write_png
from monai_cluster.utils import atomic_torch_save

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
FEATURES = [4, 4, 8, 8, 16, 4]
PRETRAIN_TOY = {
    "device": "cpu",
    "image_size": [32, 32],
    "features": FEATURES,
    "autoencoder_channels": [4, 8, 8, 8],
    "autoencoder_epochs": 1,
    "epochs": 1,
    "batch_size": 2,
    "num_clusters": [2, 3],
    "local_num_locations": 8,
}
FINETUNE_TOY = {
    "device": "cpu",
    "image_size": 32,
    "features": FEATURES,
    "batch_size": 2,
    "epochs": 1,
    "val_interval": 1,
}
SMALL_TOY = {"device": "cpu", "epochs": 1}
TOYS = {
    "cluster_contrastive_pretrain": PRETRAIN_TOY,
    "dermoscopy_segmentation": FINETUNE_TOY,
    "heart_ct_segmentation": {**SMALL_TOY, "use_pretrained": False},
    "local_discrimination_pretrain": SMALL_TOY,
    "image_clustering": SMALL_TOY,
}
N_PAIRS = 6


def _ph2_folder(root: Path) -> Path:
    """Six 32x32 RGB images with binary 0/255 lesion masks in the PH2 layout."""
    for i in range(N_PAIRS):
        rng = np.random.default_rng(i)
        write_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), root / "images" / f"IMD00{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 8 + i : 20 + i] = 255
        write_png(mask, root / "masks" / f"IMD00{i}_lesion.png")
    return root


@pytest.fixture(scope="module")
def _clean_dataset(tmp_path_factory) -> Path:
    return _ph2_folder(tmp_path_factory.mktemp("clean") / "ph2")


@dataclass(frozen=True)
class BundleCase:
    """``prepare(work) -> overrides`` sets up files under ``work`` (a dataset copy at ``work / "data"``)."""

    id: str
    bundle: str
    error: type[BaseException]
    match: str
    overrides: dict = field(default_factory=dict)
    prepare: Callable[[Path], dict] | None = None


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _truncated_image(work: Path) -> dict:
    _truncate(work / "data" / "images" / "IMD003.png")
    return {"dataset_dir": str(work / "data")}


def _grey_image(work: Path) -> dict:
    write_png(np.zeros((32, 32), np.uint8), work / "data" / "images" / "IMD002.png")
    return {"dataset_dir": str(work / "data")}


def _mask_of_another_size(work: Path) -> dict:
    write_png(np.zeros((24, 32), np.uint8), work / "data" / "masks" / "IMD004_lesion.png")
    return {"dataset_dir": str(work / "data"), "use_pretrained": False}


def _label_outside_classes(work: Path) -> dict:
    write_png(np.full((32, 32), 2, np.uint8), work / "data" / "masks" / "IMD001_lesion.png")
    return {"dataset_dir": str(work / "data"), "use_pretrained": False}


def _unpaired_image(work: Path) -> dict:
    (work / "data" / "masks" / "IMD005_lesion.png").unlink()
    return {"dataset_dir": str(work / "data"), "use_pretrained": False}


def _volumes_one_with_nan(work: Path) -> dict:
    for i in range(3):
        volume = np.random.default_rng(i).random((16, 16, 16), dtype=np.float32) * 100
        if i == 1:
            volume[3, 4, 5] = np.nan
        write_nifti(volume, np.eye(4), work / "volumes" / "images" / f"heart_{i}.nii.gz")
        write_nifti(np.zeros((16, 16, 16), np.uint8), np.eye(4), work / "volumes" / "labels" / f"heart_{i}.nii.gz")
    return {"dataset_dir": str(work / "volumes")}


def _weights(work: Path, state: dict, name: str = "model.pt") -> dict:
    atomic_torch_save(state, work / name)
    return {"dataset_dir": str(work / "data"), "use_pretrained": True, "pretrained_path": str(work / name)}


def _missing_weights(work: Path) -> dict:
    return {"dataset_dir": str(work / "data"), "use_pretrained": True, "pretrained_path": str(work / "no" / "model.pt")}


def _weights_of_another_network(work: Path) -> dict:
    return _weights(work, UNet(2, 3, 2, (4, 8), (2,)).state_dict())


def _weights_of_grey_network(work: Path) -> dict:
    return _weights(work, BasicUNet(2, 1, 2, features=FEATURES).state_dict())


def _weights_of_another_backbone(work: Path) -> dict:
    return _weights(work, SegResNet(2, init_filters=8, in_channels=3, out_channels=2).state_dict())


def _training_checkpoint_instead_of_model(work: Path) -> dict:
    state = {"format": "monai_cluster training checkpoint v1", "epoch": 3, "state": {"network": {}}, "extra": {}}
    return _weights(work, state, "checkpoint_epoch0003.pt")


def _corrupt_weights(work: Path) -> dict:
    out = _weights(work, BasicUNet(2, 3, 2, features=FEATURES).state_dict())
    _truncate(work / "model.pt")
    return out


CASES = [
    # ---------------------------------------------------------------- pretraining bundle: overrides
    BundleCase(
        "pretrain-epochs-not-a-number",
        "cluster_contrastive_pretrain",
        TypeError,
        r"option 'epochs' \(--epochs\) must be an integer >= 1, got str 'abc'",
        {"epochs": "abc"},
    ),
    BundleCase(
        "pretrain-negative-learning-rate",
        "cluster_contrastive_pretrain",
        ValueError,
        r"option 'learning_rate' \(--learning_rate\) must be a finite number > 0(\.0)?, got float -0.1",
        {"learning_rate": -0.1},
    ),
    BundleCase(
        "pretrain-zero-temperature",
        "cluster_contrastive_pretrain",
        ValueError,
        r"option 'temperature' \(--temperature\) must be a finite number > 0(\.0)?, got float 0.0",
        {"temperature": 0.0},
    ),
    BundleCase(
        "pretrain-resume-not-a-boolean",
        "cluster_contrastive_pretrain",
        TypeError,
        r"option 'resume' \(--resume\) must be a boolean \(true or false\), got str 'maybe'",
        {"resume": "maybe"},
    ),
    BundleCase(
        "pretrain-batch-of-one",
        "cluster_contrastive_pretrain",
        ValueError,
        r"option 'batch_size' \(--batch_size\) must be an integer >= 2, got int 1",
        {"batch_size": 1},
    ),
    BundleCase(
        "pretrain-batch-larger-than-the-dataset",
        "cluster_contrastive_pretrain",
        ValueError,
        r"option 'batch_size' \(--batch_size\) must be at most the number of unlabeled images per process "
        r"\(6 images over 1 process\(es\) = 6\), got 16",
        {"batch_size": 16},
    ),
    BundleCase(
        "pretrain-num-clusters-not-a-list",
        "cluster_contrastive_pretrain",
        TypeError,
        r"option 'num_clusters' \(--num_clusters\) must be a non-empty list of integers >= 2, got str '8,64'",
        {"num_clusters": "8,64"},
    ),
    BundleCase(
        "pretrain-level-outside-num-clusters",
        "cluster_contrastive_pretrain",
        ValueError,
        r"option 'pseudo_class_level' must index one of the 2 levels of num_clusters \[2, 3\]",
        {"pseudo_class_level": 5},
    ),
    BundleCase(
        "pretrain-unknown-backbone",
        "cluster_contrastive_pretrain",
        ValueError,
        r"option 'backbone' \(--backbone\) must be one of \['basic_unet', 'segresnet', 'swin_unetr'\], got str 'vit'",
        {"backbone": "vit"},
    ),
    BundleCase(
        "pretrain-swin-image-size-not-a-multiple-of-32",
        "cluster_contrastive_pretrain",
        ValueError,
        r"image_size \[48, 48\] must be a multiple of 32 on every axis for backbone 'swin_unetr'",
        {"backbone": "swin_unetr", "image_size": [48, 48]},
    ),
    BundleCase(
        "pretrain-segresnet-init-filters-not-a-multiple-of-8",
        "cluster_contrastive_pretrain",
        ValueError,
        r"init_filters=12 must be a multiple of 8 for backbone 'segresnet'",
        {"backbone": "segresnet", "init_filters": 12},
    ),
    # ---------------------------------------------------------------- pretraining bundle: data
    BundleCase(
        "pretrain-dataset-dir-missing",
        "cluster_contrastive_pretrain",
        ValueError,
        r"root \S+does_not_exist does not exist or is not a folder",
        prepare=lambda work: {"dataset_dir": str(work / "does_not_exist")},
    ),
    BundleCase(
        "pretrain-dataset-with-truncated-image",
        "cluster_contrastive_pretrain",
        ValueError,
        r"(?s)check_dataset found 1 problem.*IMD003.png: cannot decode the file \(OSError: image file is truncated",
        prepare=_truncated_image,
    ),
    BundleCase(
        "pretrain-dataset-with-grey-image",
        "cluster_contrastive_pretrain",
        ValueError,
        r"(?s)image \S+IMD002.png: expected 3 channel\(s\), got 1",
        prepare=_grey_image,
    ),
    # ---------------------------------------------------------------- the other bundles
    BundleCase(
        "local-discrimination-epochs-not-a-number",
        "local_discrimination_pretrain",
        TypeError,
        r"option 'epochs' \(--epochs\) must be an integer >= 1, got str 'abc'",
        {"epochs": "abc"},
    ),
    BundleCase(
        "local-discrimination-dataset-with-truncated-image",
        "local_discrimination_pretrain",
        ValueError,
        r"(?s)check_dataset found 1 problem.*IMD003.png: cannot decode the file",
        prepare=_truncated_image,
    ),
    BundleCase(
        "image-clustering-unknown-method",
        "image_clustering",
        ValueError,
        r"option 'method' \(--method\) must be one of \['contrastive_ae', 'dvc'\], got str 'kmeans'",
        {"method": "kmeans"},
    ),
    BundleCase(
        "image-clustering-dataset-with-truncated-image",
        "image_clustering",
        ValueError,
        r"IMD003.png: cannot decode the file \(OSError: image file is truncated",
        prepare=_truncated_image,
    ),
    BundleCase(
        "heart-ct-volume-with-nan",
        "heart_ct_segmentation",
        ValueError,
        r"image \S+heart_1.nii.gz: must be finite, but 1 of 4096 values are NaN or Inf",
        prepare=_volumes_one_with_nan,
    ),
    # ---------------------------------------------------------------- fine-tune bundle: overrides
    BundleCase(
        "finetune-use-pretrained-not-a-boolean",
        "dermoscopy_segmentation",
        TypeError,
        r"option 'use_pretrained' \(--use_pretrained\) must be a boolean \(true or false\), got str 'perhaps'",
        {"use_pretrained": "perhaps"},
    ),
    BundleCase(
        "finetune-one-class",
        "dermoscopy_segmentation",
        ValueError,
        r"option 'num_classes' \(--num_classes\) must be an integer >= 2, got int 1",
        {"num_classes": 1},
    ),
    BundleCase(
        "finetune-image-size-as-text",
        "dermoscopy_segmentation",
        TypeError,
        r"option 'image_size' \(--image_size\) must be an integer >= 16, got str 'big'",
        {"image_size": "big"},
    ),
    BundleCase(
        "finetune-unknown-backbone",
        "dermoscopy_segmentation",
        ValueError,
        r"option 'backbone' \(--backbone\) must be one of \['basic_unet', 'segresnet', 'swin_unetr'\], got str 'unet'",
        {"backbone": "unet"},
    ),
    BundleCase(
        "heart-ct-swin-roi-not-a-multiple-of-32",
        "heart_ct_segmentation",
        ValueError,
        r"roi_size \[48, 48, 48\] must be a multiple of 32 on every axis for backbone 'swin_unetr'.*"
        r"e\.g\. roi_size \[64, 64, 64\]",
        {"backbone": "swin_unetr"},
    ),
    # ---------------------------------------------------------------- fine-tune bundle: data
    BundleCase(
        "finetune-mask-of-another-size",
        "dermoscopy_segmentation",
        ValueError,
        r"label \S+IMD004_lesion.png: expected the spatial shape \(32, 32\) of its image \S+IMD004.png, got \(24, 32\)",
        prepare=_mask_of_another_size,
    ),
    BundleCase(
        "finetune-label-outside-num-classes",
        "dermoscopy_segmentation",
        ValueError,
        r"label \S+IMD001_lesion.png: values must lie in \[0, 2\) \(or \{0, 255\} for a binary mask\), found \[2\]",
        prepare=_label_outside_classes,
    ),
    BundleCase(
        "finetune-image-without-mask",
        "dermoscopy_segmentation",
        ValueError,
        r"1 image\(s\) in \S+images without a mask: IMD005.png",
        prepare=_unpaired_image,
    ),
    # ---------------------------------------------------------------- fine-tune bundle: pretrained weights
    BundleCase(
        "finetune-pretrained-path-missing",
        "dermoscopy_segmentation",
        ValueError,
        r"\S+no/model.pt.*(does not exist|not found).*--use_pretrained false",
        prepare=_missing_weights,
    ),
    BundleCase(
        "finetune-pretrained-weights-of-another-network",
        "dermoscopy_segmentation",
        ValueError,
        r"0 of \d+ tensors of BasicUNet matched in \S+model.pt",
        prepare=_weights_of_another_network,
    ),
    BundleCase(
        "finetune-pretrained-weights-with-other-in-channels",
        "dermoscopy_segmentation",
        ValueError,
        r"\S+model.pt have another shape than in BasicUNet.*checkpoint \(4, 1, 3, 3\) vs network \(4, 3, 3, 3\)",
        prepare=_weights_of_grey_network,
    ),
    BundleCase(
        "finetune-pretrained-weights-of-another-backbone",
        "dermoscopy_segmentation",
        ValueError,
        r"pretrained_path \S+model.pt was pretrained with backbone 'segresnet' \(from its tensor names\), but this "
        r"bundle builds 'basic_unet' \(BasicUNet\); set --backbone segresnet",
        prepare=_weights_of_another_backbone,
    ),
    BundleCase(
        "finetune-pretrained-path-is-a-training-checkpoint",
        "dermoscopy_segmentation",
        ValueError,
        r"checkpoint_epoch0003.pt is not a state dict "
        r".*got a mapping with keys \['format', 'epoch', 'state', 'extra'\]",
        prepare=_training_checkpoint_instead_of_model,
    ),
    BundleCase(
        "finetune-pretrained-weights-truncated",
        "dermoscopy_segmentation",
        ValueError,
        r"pretrained checkpoint '\S+model.pt' could not be read as a torch file",
        prepare=_corrupt_weights,
    ),
]


def _root_cause(err: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type ``kind`` in the ``__cause__``/``__context__`` chain (MONAI wraps them)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _written(root: Path) -> list[str]:
    """Training outputs under the bundle root (weights, checkpoints, TensorBoard logs, temp files)."""
    patterns = ("*.pt", "*.pth", "*.tmp", "events.out.tfevents*", "*.csv")
    return sorted(str(p.relative_to(root)) for pattern in patterns for p in root.rglob(pattern))


def test_bundle_catalogue_is_large_and_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 25


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_bundle_input_fails_before_training(case: BundleCase, tmp_path, _clean_dataset):
    shutil.copytree(_clean_dataset, tmp_path / "data")
    root = tmp_path / "bundle"
    root.mkdir()
    overrides = dict(case.overrides)
    if case.prepare is not None:
        overrides.update(case.prepare(tmp_path))
    overrides.setdefault("dataset_dir", str(tmp_path / "data"))
    if case.bundle == "dermoscopy_segmentation":
        overrides.setdefault("use_pretrained", False)
    toy = TOYS[case.bundle]
    configs = REPO / "bundles" / case.bundle / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=False,
        bundle_root=str(root),
        **{**toy, **overrides},
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
        workflow.run()
    cause = _root_cause(info.value, case.error)
    assert cause is not None, f"expected {case.error.__name__} in the chain of {info.value!r}"
    assert re.search(case.match, str(cause)), str(cause)
    assert _written(root) == []
