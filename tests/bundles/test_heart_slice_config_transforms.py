"""The heart slices overlay's transform chains, spelled out in ``train_slices.json``, give the tensors the library's
``slice_segmentation_transforms`` gave.

The overlay lists every step as a ``_target_`` entry (issue 21, item 3); before, it called
``slice_segmentation_transforms`` for the training, validation and unlabelled chains. For a synthetic volume and fixed
seeds the chain built from the config must give the same tensors as the function, for every combination the overlay
allows (percentile scaling or a fixed ``intensity_range``, ``crop_fraction`` or none, ``augment`` on or off, square
or oblong ``image_size``): the random chains with the same random draws, the validation chain identically (also
under ``evaluate_slices.json``).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser

from monai_cluster.workflows.segmentation_slices import slice_segmentation_transforms

from _chain_checks import assert_same_chains

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "heart_ct_segmentation" / "configs"
SEEDS = (0, 7, 12345)
# (image_size, intensity_range, intensity_percentiles, crop_fraction, augment)
OPTIONS = [
    ([32, 32], None, [0.5, 99.5], None, True),
    ([48, 32], None, [1.0, 99.0], 0.8, True),
    ([32, 48], [-300, 500], [0.5, 99.5], None, True),
    ([32, 32], [-250.5, 400.0], [0.5, 99.5], 0.9, False),
]
IDS = ["percentiles", "percentiles-crop", "range", "range-crop-no-augment"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    """A 40 x 30 x 6 volume (oblong slices: the resize, pad and crop show) with an oblique affine, a label map with
    classes 0 to 3, and the slice item the overlay's listing gives (extra entries pass through)."""
    root = tmp_path_factory.mktemp("volume")
    rng = np.random.default_rng(5)
    image = rng.uniform(-1000.0, 1200.0, (40, 30, 6)).astype(np.float32)
    label = np.zeros((40, 30, 6), np.uint8)
    label[5:20, 4:18] = 1
    label[18:34, 12:26] = 2
    label[25:30, 3:9, 2:5] = 3
    affine = np.diag([1.2, 1.2, 8.0, 1.0])
    for name, array in (("image", image), ("label", label)):
        nib.save(nib.Nifti1Image(array, affine), str(root / f"{name}.nii.gz"))
    return {"image": str(root / "image.nii.gz"), "label": str(root / "label.nii.gz"), "slice": 3, "volume_id": "p01"}


def _overrides(image_size, intensity_range, percentiles, crop_fraction, augment) -> dict:
    return {"image_size": image_size, "intensity_range": intensity_range, "intensity_percentiles": percentiles,
            "crop_fraction": crop_fraction, "augment": augment}  # fmt: skip


def _parsed(configs: list[str], id: str, root: Path, overrides: dict):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    parser.update({"bundle_root": str(root), "dataset_dir": None, **overrides})
    return parser.get_parsed_content(id)


def _old(mode: str, options: tuple):
    image_size, intensity_range, percentiles, crop_fraction, augment = options
    return slice_segmentation_transforms(mode, image_size, intensity_range, percentiles, crop_fraction, augment)


@pytest.mark.parametrize("chain", ["train", "unlabeled"])
@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_random_chains_draw_as_the_function(sample, tmp_path, options, chain):
    new = _parsed(["train.json", "train_slices.json"], f"{chain}#preprocessing", tmp_path, _overrides(*options))
    item = dict(sample) if chain == "train" else {k: v for k, v in sample.items() if k != "label"}
    outputs = []
    for seed in SEEDS:
        outputs += assert_same_chains(new, _old(chain, options), item, draws=3, seed=seed)
    assert all(o["image"].shape == (1, *options[0]) and sorted(o) == sorted(item) for o in outputs)
    assert all(o["label"].shape == (1, *options[0]) for o in outputs if "label" in o)
    if options[-1]:  # the draws differ: the comparison is not vacuous
        assert len({o["image"].numpy().tobytes() for o in outputs}) > 1


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_validation_chain_is_the_function(sample, tmp_path, options):
    old = _old("val", options)
    for configs in (["train.json", "train_slices.json"], ["train.json", "train_slices.json", "evaluate_slices.json"]):
        new = _parsed(configs, "validate#preprocessing", tmp_path, _overrides(*options))
        out = assert_same_chains(new, old, dict(sample))[0]
        assert out["image"].shape == out["label"].shape == (1, *options[0]) and out["volume_id"] == "p01"


def test_no_slice_config_calls_the_transform_function():
    for path in CONFIGS.glob("*slices.json"):
        assert "slice_segmentation_transforms" not in path.read_text(), path.name
