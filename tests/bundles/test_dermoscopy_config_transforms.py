"""The dermoscopy bundle's transform chains, spelled out in its configs, give the tensors the library function gave.

The configs list every step as a ``_target_`` entry (issue 21, item 3); before, they called
``dermoscopy_transforms`` (and ``unlabeled_transforms``). For a synthetic sample and fixed seeds the chain built
from the config must give the same tensors as the function, for every combination the bundle allows (``crop_size``
or none, ``fov_dir`` or none): the training chain with the same random draws, the others identically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Activationsd, AsDiscreted, Compose, Lambda
from PIL import Image

from monai_cluster.transforms import NoMetaRandomCompose
from monai_cluster.workflows.segmentation_transforms import dermoscopy_transforms, restrict_to_fov
from monai_cluster.workflows.semi_supervised import unlabeled_transforms

from _chain_checks import assert_same_chains

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "dermoscopy_segmentation" / "configs"
SEEDS = (0, 7, 12345)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    """A 40 x 56 RGB image (not square: a transposed read would show), a 0/255 mask and a field of view."""
    root = tmp_path_factory.mktemp("sample")
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    mask[8:30, 10:40] = 255
    fov = np.zeros((40, 56), np.uint8)
    fov[:, :30] = 255
    for name, array in (("image.png", image), ("label.png", mask), ("fov.png", fov)):
        Image.fromarray(array).save(root / name)
    (root / "fov_dir").mkdir()
    return {"root": root, **{key: str(root / f"{key}.png") for key in ("image", "label", "fov")}}


def _parsed(config: str, id: str, root: Path, **overrides):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / config))
    parser.update({"bundle_root": str(root), "dataset_dir": None, **overrides})
    return parser.get_parsed_content(id)


@pytest.mark.parametrize("image_size, crop_size", [(32, None), (48, None), (48, 32), (32, 32)])
def test_train_chain_draws_as_the_function(sample, tmp_path, image_size, crop_size):
    new = _parsed("train.json", "train#preprocessing", tmp_path, image_size=image_size, crop_size=crop_size)
    old = dermoscopy_transforms("train", image_size, crop_size=crop_size)
    item = {"image": sample["image"], "label": sample["label"]}
    outputs = []
    for seed in SEEDS:
        outputs += assert_same_chains(new, old, item, draws=6, seed=seed)
    size = crop_size or image_size
    assert all(o["image"].shape == (3, size, size) and o["label"].shape == (1, size, size) for o in outputs)
    assert len({o["image"].numpy().tobytes() for o in outputs}) > 1  # the draws differ: the comparison is not vacuous


@pytest.mark.parametrize("fov", [False, True])
def test_validation_chain_is_the_function(sample, tmp_path, fov):
    overrides = {"image_size": 32, "fov_dir": str(sample["root"] / "fov_dir") if fov else None}
    new = _parsed("train.json", "validate#preprocessing", tmp_path, **overrides)
    old = dermoscopy_transforms("val", 32, fov=fov)
    keys = ("image", "label", "fov") if fov else ("image", "label")  # attach_fov_masks adds "fov" only with fov_dir
    out = assert_same_chains(new, old, {key: sample[key] for key in keys})[0]
    assert set(out) == set(keys) and out["image"].shape == (3, 32, 32)
    assert_same_chains(new, old, {"image": sample["image"]})  # the label (and the field of view) optional
    # evaluate.json scores with the same chain
    merged = ConfigParser()
    merged.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    merged.update({"bundle_root": str(tmp_path), **overrides})
    assert_same_chains(merged.get_parsed_content("validate#preprocessing"), old, {key: sample[key] for key in keys})


def test_validation_postprocessing_is_the_per_sample_one_restricted_to_the_fov(tmp_path):
    """The evaluator's chain: per decollated sample, softmax, argmax and one-hot, then the field of view (the
    trainer's chain works on the whole batch instead, see ``test_cheap_training_step.py``)."""
    new = _parsed("train.json", "validate#postprocessing", tmp_path)
    per_sample = [Activationsd("pred", softmax=True), AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=2)]
    old = Compose(per_sample + [Lambda(restrict_to_fov)])
    pred = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0))
    label = (torch.arange(30).reshape(1, 6, 5) % 3 == 0).float()
    fov = (torch.arange(30).reshape(1, 6, 5) < 18).float()
    for item in ({"pred": pred, "label": label}, {"pred": pred, "label": label, "fov": fov}):
        assert_same_chains(new, old, item)


def test_inference_chain_is_the_function(sample, tmp_path):
    new = _parsed("inference.json", "preprocessing", tmp_path, image_size=48)
    old = dermoscopy_transforms("infer", 48)
    assert_same_chains(new, old, {"image": sample["image"]})
    assert_same_chains(new, old, {"image": sample["image"], "label": sample["label"]})


@pytest.mark.parametrize("fov", [False, True])
def test_unlabeled_chain_draws_as_the_function(sample, tmp_path, fov):
    overrides = {"image_size": 32, "fov_dir": str(sample["root"] / "fov_dir") if fov else None}
    new = _parsed("train.json", "unlabeled#preprocessing", tmp_path, **overrides)
    assert isinstance(new, NoMetaRandomCompose) and new.first_random == len(new.transforms) - 3  # the loading cached, flips untracked
    old = NoMetaRandomCompose(unlabeled_transforms("dermoscopy", 32).transforms)  # the function's chain, run alike
    outputs = []
    for seed in SEEDS:
        outputs += assert_same_chains(new, old, {"image": sample["image"]}, draws=4, seed=seed)
    assert len({o["image"].numpy().tobytes() for o in outputs}) > 1


def test_no_config_calls_the_transform_functions():
    for path in CONFIGS.glob("*.json"):
        text = path.read_text()
        assert "dermoscopy_transforms(" not in text and "unlabeled_transforms(" not in text, path.name
