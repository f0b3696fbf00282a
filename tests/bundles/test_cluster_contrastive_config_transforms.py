"""The cluster_contrastive_pretrain bundle's transform chains, spelled out in its configs, give the tensors the library
functions gave.

The configs list every step as a ``_target_`` entry (issue 21, item 3); before, they called ``base_transforms``,
``feature_transforms``, ``autoencoder_transforms`` and ``pretrain_augmentation`` (and, on slices,
``slice_base_transforms`` and ``autoencoder_augmentation``). Each old chain is rebuilt here from the old config text
(the call put back over the new entry), and for a synthetic image and fixed seeds the config's chain must give the
same tensors and random draws, for every combination the bundle allows: RGB 2D (``train.json``) and 3D
(``train_3d.json``), square or oblong ``image_size`` and ``crop_size`` (the 90-degree rotations drop out when the
first two axes differ), pseudo-classes or none; on slices percentiles or a fixed ``intensity_range``,
``crop_fraction`` or none. The chains: feature extraction, the autoencoder's, the cache's base chain and the views of
the joint and the local stage on top of it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from _chain_checks import assert_configs_avoid, assert_same_chains, refusal

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "cluster_contrastive_pretrain" / "configs"
SEEDS = (0, 7, 12345)
W = "monai_cluster.workflows"
OLD = {
    "feature_transforms": f"${W}.feature_transforms(@spatial_dims, @options['image_size'], @intensity_range)",
    "autoencoder#transforms": f"${W}.autoencoder_transforms(@spatial_dims, @options['image_size'], @intensity_range)",
    "train#base_transforms": f"${W}.base_transforms(@spatial_dims, @options['image_size'], @intensity_range)",
    "train#preprocessing": f"${W}.pretrain_augmentation(@spatial_dims, @options['image_size'], views='geometric', "
    "pseudo_class_transform=@pseudo_class_transform, crop_scale=@options['crop_scale'], crop_size=@options['crop_size'])",
    "train_local#preprocessing": f"${W}.pretrain_augmentation(@spatial_dims, @options['image_size'], views='intensity', "
    "crop_size=@options['crop_size'])",
}
OLD_SLICES = {
    "slice_chain": f"${W}.slice_base_transforms(@options['image_size'], intensity_range=@slice_options['intensity_range'], "
    "percentiles=@slice_options['intensity_percentiles'], crop_fraction=@slice_options['crop_fraction'])",
    "feature_transforms": "$monai.transforms.Compose(@slice_chain)",
    "autoencoder#transforms": "$monai.transforms.Compose(@slice_chain + list("
    f"{W}.autoencoder_augmentation(2).transforms))",
    "train#base_transforms": "@slice_chain",
}
TABLE = (
    "$monai_cluster.transforms.PseudoClassd(monai_cluster.clustering.PseudoClassTable(keys=['a'], "
    "labels=numpy.array([[1, 2]]), num_clusters=[2, 4], feature_model='test'))"
)
# (configs, overrides, pseudo-classes) for every combination the bundle allows
CASES = {
    "2d": (["train.json"], {"image_size": [32, 32]}, True),
    "2d-oblong-crop": (["train.json"], {"image_size": [32, 48], "crop_size": [32, 32]}, False),
    "2d-crop-oblong": (["train.json"], {"image_size": [48, 48], "crop_size": [32, 48], "crop_scale": [0.5, 0.9]}, True),
    "3d": (["train.json", "train_3d.json"], {"image_size": [32, 32, 32]}, True),
    "3d-oblong-crop": (["train.json", "train_3d.json"], {"image_size": [32, 48, 32], "crop_size": [32, 32, 32]}, False),
    "slices-percentiles": (["train.json", "train_slices.json"], {"image_size": [32, 32]}, False),
    "slices-oblong-crop": (
        ["train.json", "train_slices.json"],
        {"image_size": [48, 32], "intensity_percentiles": [1.0, 99.0], "crop_fraction": 0.8, "crop_size": [32, 32]},
        False,
    ),
    "slices-range": (
        ["train.json", "train_slices.json"],
        {"image_size": [32, 48], "intensity_range": [-300, 500], "crop_fraction": 0.9},
        False,
    ),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict:
    """An oblong RGB image (2D), a CT-like volume (3D) and a slice item of it (slices), all keyed ``a``."""
    root = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(6)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / "image.png")
    volume = rng.uniform(-1000.0, 1200.0, (40, 30, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([1.2, 1.2, 3.0, 1.0])), str(root / "volume.nii.gz"))
    return {
        "2d": {"image": str(root / "image.png"), "key": "a"},
        "3d": {"image": str(root / "volume.nii.gz"), "key": "a"},
        "slices": {"image": str(root / "volume.nii.gz"), "key": "a", "slice": 7, "volume_id": "v"},
    }


def _parser(configs: list[str], root: Path, overrides: dict, pseudo: bool, old: bool = False) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    parser.update({"bundle_root": str(root), "dataset_dir": None, "use_pseudo_classes": pseudo, **overrides})
    parser["pseudo_class_transform"] = TABLE if pseudo else None  # the table a clustering stage would write
    if old:
        for key, value in {**OLD, **(OLD_SLICES if "train_slices.json" in configs else {})}.items():
            parser[key] = value
    return parser


@pytest.mark.parametrize("case", list(CASES))
def test_chains_give_the_old_tensors_and_draws(samples, tmp_path, case):
    configs, overrides, pseudo = CASES[case]
    new, old = (_parser(configs, tmp_path, overrides, pseudo, old=o) for o in (False, True))
    item = samples[case.split("-")[0]]
    features = assert_same_chains(new.get_parsed_content("feature_transforms"),
                                  old.get_parsed_content("feature_transforms"), item)[0]  # fmt: skip
    assert features["image"].shape[1:] == tuple(overrides["image_size"])
    for chain in ("autoencoder#transforms", "train#cache#transform"):
        for seed in SEEDS:
            assert_same_chains(new.get_parsed_content(chain), old.get_parsed_content(chain), item, draws=2, seed=seed)
    cached = new.get_parsed_content("train#cache#transform")(copy.deepcopy(item))
    size = tuple(overrides.get("crop_size") or overrides["image_size"])
    for chain in ("train#preprocessing", "train_local#preprocessing"):
        outputs = []
        for seed in SEEDS:
            outputs += assert_same_chains(
                new.get_parsed_content(chain), old.get_parsed_content(chain), cached, draws=2, seed=seed
            )
        assert all(o["image"].shape[1:] == o["image_1"].shape[1:] == size for o in outputs)
        assert len({o["image"].numpy().tobytes() for o in outputs}) > 1  # the draws differ: not vacuous
        assert all(("pseudo_class" in str(sorted(o))) == (pseudo and chain == "train#preprocessing") for o in outputs)


def test_a_null_intensity_range_is_refused_as_before(samples, tmp_path):
    overrides = {"image_size": [32, 32], "intensity_range": None}
    messages = [
        refusal(_parser(["train.json"], tmp_path, overrides, False, old).get_parsed_content, "feature_transforms")
        for old in (False, True)
    ]
    assert messages[0] == messages[1] and "intensity_range" in messages[0]


def test_no_config_calls_the_transform_functions():
    names = ["base_transforms(", "feature_transforms(", "autoencoder_transforms(", "pretrain_augmentation(",
             "autoencoder_augmentation(", "slice_base_transforms("]  # fmt: skip
    assert_configs_avoid(CONFIGS, names)
