"""The local_discrimination_pretrain bundle's transform chains, spelled out in its configs, give the tensors the old
expressions gave.

The configs list every step as a ``_target_`` entry (issue 21, item 3); before, ``train.json`` added the training
crop through a Python expression (``[RandSpatialCropd(...)] if crop_size else []``) and ``train_slices.json`` called
``slice_base_transforms``. Each old chain is rebuilt here from the old config text (the expression put back over
the new entry), and for a synthetic image and fixed seeds the config's chain must give the same tensors and random
draws, for every combination the bundle allows: 2D RGB (``train.json``) and 3D (``train_3d.json``), ``crop_size`` or
none, square or oblong sizes; on slices a fixed ``intensity_range`` or percentiles, ``crop_fraction`` or none.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from _chain_checks import assert_configs_avoid, assert_same_chains, refusal

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "local_discrimination_pretrain" / "configs"
SEEDS = (0, 7, 12345)
OLD_TRAIN = {
    "_target_": "Compose",
    "transforms": "$@preprocessing + ([monai.transforms.RandSpatialCropd('image', @options['crop_size'], "
    "random_size=False)] if @options['crop_size'] else []) + [@train#views]",
}
OLD_SLICES = (
    "$monai_cluster.workflows.slice_base_transforms(@options['spatial_size'], intensity_range="
    "@slice_options['intensity_range'], percentiles=@slice_options['intensity_percentiles'], "
    "crop_fraction=@slice_options['crop_fraction'])"
)
# (configs, overrides) for every combination the bundle allows
CASES = {
    "2d": (["train.json"], {"spatial_size": [32, 32]}),
    "2d-crop": (["train.json"], {"spatial_size": [48, 32], "crop_size": [16, 32]}),
    "3d": (["train.json", "train_3d.json"], {"spatial_size": [16, 24, 16]}),
    "3d-crop": (["train.json", "train_3d.json"], {"spatial_size": [24, 24, 24], "crop_size": [16, 16, 16]}),
    "slices-percentiles": (["train.json", "train_slices.json"], {"spatial_size": [32, 32]}),
    "slices-percentiles-crop": (
        ["train.json", "train_slices.json"],
        {"spatial_size": [48, 32], "intensity_percentiles": [1.0, 99.0], "crop_fraction": 0.8, "crop_size": [32, 16]},
    ),
    "slices-range": (["train.json", "train_slices.json"], {"spatial_size": [32, 48], "intensity_range": [-300, 500]}),
    "slices-range-crop": (
        ["train.json", "train_slices.json"],
        {"spatial_size": [32, 32], "intensity_range": [-250.5, 400.0], "crop_fraction": 0.9},
    ),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict:
    """An oblong RGB image with a mask (2D), a volume with a label (3D) and a slice item of a volume (slices)."""
    root = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / "image.png")
    mask = np.zeros((40, 56), np.uint8)
    mask[8:30, 10:40] = 255
    Image.fromarray(mask).save(root / "label.png")
    volume = rng.uniform(-1000.0, 1200.0, (40, 30, 20)).astype(np.float32)
    label = (volume > 600).astype(np.uint8)
    for name, array in (("volume", volume), ("volume_label", label)):
        nib.save(nib.Nifti1Image(array, np.diag([1.2, 1.2, 3.0, 1.0])), str(root / f"{name}.nii.gz"))
    return {
        "2d": {"image": str(root / "image.png"), "label": str(root / "label.png")},
        "3d": {"image": str(root / "volume.nii.gz"), "label": str(root / "volume_label.nii.gz")},
        "slices": {"image": str(root / "volume.nii.gz"), "slice": 7, "key": "v#s07", "volume_id": "v"},
    }


def _parser(configs: list[str], root: Path, overrides: dict, old: bool = False) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    parser.update({"bundle_root": str(root), "dataset_dir": None, **overrides})
    if old:
        parser["train#transform"] = OLD_TRAIN
        if "train_slices.json" in configs:
            parser["preprocessing"] = OLD_SLICES
    return parser


@pytest.mark.parametrize("case", list(CASES))
def test_chains_give_the_old_tensors_and_draws(samples, tmp_path, case):
    configs, overrides = CASES[case]
    new, old = _parser(configs, tmp_path, overrides), _parser(configs, tmp_path, overrides, old=True)
    item = samples[case.split("-")[0]]
    train_item = {k: v for k, v in item.items() if k != "label"}  # the config drops the labels for training
    outputs = []
    for seed in SEEDS:
        outputs += assert_same_chains(new.get_parsed_content("train#transform"), old.get_parsed_content("train#transform"), train_item, draws=2, seed=seed)
    size = overrides.get("crop_size") or overrides["spatial_size"]
    assert all(o["image"].shape[1:] == tuple(size) for o in outputs)
    assert len({o["image"].numpy().tobytes() for o in outputs}) > 1  # the draws differ: not vacuous
    out = assert_same_chains(new.get_parsed_content("eval_transform"), old.get_parsed_content("eval_transform"), item)[0]
    assert out["image"].shape[1:] == tuple(overrides["spatial_size"])


def test_a_slice_size_off_the_grid_is_still_refused(samples, tmp_path):
    configs = ["train.json", "train_slices.json"]
    messages = [
        refusal(_parser(configs, tmp_path, {"spatial_size": [40, 40]}, old=old).get_parsed_content, "eval_transform")
        for old in (False, True)
    ]
    assert messages[0] == messages[1] and "multiple of 16" in messages[0]


def test_no_config_builds_its_chains_in_python():
    assert_configs_avoid(CONFIGS, ["slice_base_transforms", "RandSpatialCropd("])
