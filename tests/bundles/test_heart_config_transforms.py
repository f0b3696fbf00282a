"""The heart bundle's 3D transform chains, spelled out in its configs, give the tensors the library functions gave.

The configs list every step as a ``_target_`` entry (issue 21, item 3); before, they called ``heart_transforms`` (and
``unlabeled_transforms('heart', ...)``). For a synthetic volume and fixed seeds the chain built from the config must
give the same tensors as the function, for every combination the bundle allows (``intensity`` ct, with its
``ct_window``, or mri; ``roi_size``, ``num_classes``, ``num_samples``; the label given or not): the training and
unlabelled chains with the same random draws (crops and intensity jitter), the others identically.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser

from monai_cluster.workflows.segmentation_transforms import heart_transforms
from monai_cluster.workflows.semi_supervised import unlabeled_transforms

from _chain_checks import assert_same_chains

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "heart_ct_segmentation" / "configs"
SEEDS = (0, 7, 12345)
# (intensity, ct_window, roi_size, num_classes, num_samples): ct and mri, a cubic and a non-cubic roi (the volume's
# second axis, 14, is padded), the MM-WHS and the ACDC class counts
OPTIONS = [
    ("ct", [-300, 500], 16, 4, 2),
    ("ct", [-100.5, 250.0], [16, 24, 16], 8, 1),
    ("mri", [-300, 500], [16, 16, 16], 4, 3),
    ("mri", [-300, 500], [24, 16, 16], 8, 2),
]
pytestmark = pytest.mark.filterwarnings("ignore:no available indices of class")  # 8 classes on a 4-class label map


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    """A 20 x 14 x 22 volume in Hounsfield-like units (a transposed read or a missed pad would show) with an oblique
    affine, and a label map with classes 0 to 3."""
    root = tmp_path_factory.mktemp("volume")
    rng = np.random.default_rng(3)
    image = rng.uniform(-1000.0, 1200.0, (20, 14, 22)).astype(np.float32)
    label = np.zeros((20, 14, 22), np.uint8)
    label[3:10, 2:9, 4:12] = 1
    label[10:17, 5:12, 8:18] = 2
    label[12:15, 1:4, 15:20] = 3
    affine = np.diag([1.5, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-10.0, 4.0, 7.5)
    for name, array in (("image", image), ("label", label)):
        nib.save(nib.Nifti1Image(array, affine), str(root / f"{name}.nii.gz"))
    return {key: str(root / f"{key}.nii.gz") for key in ("image", "label")}


def _overrides(intensity, ct_window, roi_size, num_classes, num_samples) -> dict:
    return {"intensity": intensity, "ct_window": ct_window, "roi_size": roi_size, "num_classes": num_classes,
            "num_samples": num_samples}  # fmt: skip


def _parsed(configs: list[str], id: str, root: Path, overrides: dict):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    parser.update({"bundle_root": str(root), "dataset_dir": None, **overrides})
    return parser.get_parsed_content(id)


@pytest.mark.parametrize("chain", ["train", "unlabeled"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"{o[0]}-{o[2]}-{o[3]}-{o[4]}")
def test_random_chains_draw_as_the_functions(sample, tmp_path, options, chain):
    """The training chain (image and label) and the unlabelled one (the image alone): the same crops and jitter."""
    intensity, ct_window, roi_size, num_classes, num_samples = options
    new = _parsed(["train.json"], f"{chain}#preprocessing", tmp_path, _overrides(*options))
    args = (roi_size, num_classes, intensity, ct_window, num_samples)
    if chain == "train":
        old, item = heart_transforms("train", *args), dict(sample)
    else:
        old, item = unlabeled_transforms("heart", *args), {"image": sample["image"]}
    outputs = []
    for seed in SEEDS:
        outputs += assert_same_chains(new, old, item, draws=2, seed=seed)
    roi = (roi_size,) * 3 if isinstance(roi_size, int) else tuple(roi_size)
    assert len(outputs) == len(SEEDS) * 2 * num_samples
    assert all(o["image"].shape == (1, *roi) and sorted(o) == sorted(item) for o in outputs)
    assert all(o["label"].shape == (1, *roi) for o in outputs if "label" in o)
    assert len({o["image"].numpy().tobytes() for o in outputs}) > 1  # the draws differ: the comparison is not vacuous


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"{o[0]}-{o[2]}-{o[3]}-{o[4]}")
def test_validation_and_evaluation_chains_are_the_function(sample, tmp_path, options):
    intensity, ct_window, roi_size, num_classes, _ = options
    old = heart_transforms("val", roi_size, num_classes, intensity, ct_window)
    for configs in (["train.json"], ["train.json", "evaluate.json"]):  # evaluate.json scores with the same chain
        new = _parsed(configs, "validate#preprocessing", tmp_path, _overrides(*options))
        out = assert_same_chains(new, old, dict(sample))[0]
        assert out["image"].shape == out["label"].shape == (1, 20, 14, 22)  # the whole volume on its own grid
        assert float(out["image"].min()) == 0.0 and float(out["image"].max()) == 1.0
        assert_same_chains(new, old, {"image": sample["image"]})  # the label optional


@pytest.mark.parametrize("options", OPTIONS[:3:2], ids=lambda o: o[0])
def test_inference_chain_is_the_function(sample, tmp_path, options):
    intensity, ct_window, roi_size, num_classes, _ = options
    overrides = {k: v for k, v in _overrides(*options).items() if k != "num_samples"}
    new = _parsed(["inference.json"], "preprocessing", tmp_path, overrides)
    old = heart_transforms("infer", roi_size, num_classes, intensity, ct_window)
    assert_same_chains(new, old, {"image": sample["image"]})
    assert_same_chains(new, old, dict(sample))


@pytest.mark.parametrize(
    "config, id, overrides, name",
    [
        ("train.json", "train#preprocessing", {"intensity": "pet"}, "intensity"),
        ("train.json", "unlabeled#preprocessing", {"num_samples": 0}, "num_samples"),
        ("train.json", "validate#preprocessing", {"roi_size": [16, 16]}, "roi_size"),
        ("inference.json", "preprocessing", {"ct_window": [500, -300]}, "ct_window"),
    ],
)
def test_a_wrong_option_is_still_refused_naming_it(tmp_path, config, id, overrides, name):
    """The chains read the checked ``options``, so a bad value stops the parse with the option's own message."""
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps the error of a failing "$" expression
        _parsed([config], id, tmp_path, overrides)
    cause = raised.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, ValueError) and f"option '{name}'" in str(cause)


def test_no_config_calls_the_transform_functions():
    for path in CONFIGS.glob("*.json"):
        text = path.read_text()
        assert "heart_transforms(" not in text and "unlabeled_transforms(" not in text, path.name
