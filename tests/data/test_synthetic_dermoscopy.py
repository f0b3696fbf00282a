import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_cluster.data import SYNTHETIC_DERMOSCOPY_KINDS, make_synthetic_dermoscopy, render_dermoscopy


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_listing_and_csv(tmp_path):
    items = make_synthetic_dermoscopy(tmp_path / "syn", n=5, size=(40, 56), seed=1)
    assert [it["key"] for it in items] == [f"images/SYN{i:04d}.png" for i in range(5)]
    for it in items:
        assert set(it) == {"image", "label", "key", "diagnosis"}
        assert Path(it["image"]).is_absolute() and Path(it["image"]) == tmp_path / "syn" / it["key"]
        assert Path(it["label"]) == tmp_path / "syn" / "masks" / (Path(it["key"]).stem + "_lesion.png")
        image, mask = np.asarray(Image.open(it["image"])), np.asarray(Image.open(it["label"]))
        assert image.shape == (40, 56, 3) and image.dtype == np.uint8
        assert mask.shape == (40, 56) and set(np.unique(mask).tolist()) == {0, 255}
        assert it["diagnosis"] in SYNTHETIC_DERMOSCOPY_KINDS
    with open(tmp_path / "syn" / "diagnosis.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image_name", "diagnosis"]
    assert rows[1:] == [[Path(it["key"]).stem, it["diagnosis"]] for it in items]
    # atomic writes leave no temporary files behind
    assert not [p for p in (tmp_path / "syn").rglob(".*")]


def test_deterministic_for_a_seed(tmp_path):
    make_synthetic_dermoscopy(tmp_path / "a", n=4, size=32, seed=7)
    make_synthetic_dermoscopy(tmp_path / "b", n=4, size=32, seed=7)
    make_synthetic_dermoscopy(tmp_path / "c", n=4, size=32, seed=8)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_kinds_are_balanced(tmp_path):
    items = make_synthetic_dermoscopy(tmp_path, n=10, size=16, seed=0, hair_probability=0.0)
    counts = Counter(it["diagnosis"] for it in items)
    assert set(counts) == set(SYNTHETIC_DERMOSCOPY_KINDS)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_the_three_kinds_are_visibly_different():
    """Lesion size and colour statistics separate the kinds, so there are clusters to find."""
    rng = np.random.default_rng(0)
    area, blue_minus_red, brightness = {}, {}, {}
    for kind in SYNTHETIC_DERMOSCOPY_KINDS:
        stats = []
        for _ in range(12):
            image, mask = render_dermoscopy(rng, kind, (64, 64), hair_probability=0.0)
            rgb = image[mask > 0].astype(float).mean(0)
            stats.append(((mask > 0).mean(), rgb[2] - rgb[0], rgb.mean()))
        area[kind], blue_minus_red[kind], brightness[kind] = (np.array(s) for s in zip(*stats))
    # blue-black lesions are bluer than red; the brown ones are clearly redder than blue
    assert blue_minus_red["blue_black"].min() > 0
    assert blue_minus_red["compact_brown"].max() < -30 and blue_minus_red["irregular_tan"].max() < -30
    # small compact lesions, medium blue-black ones, large irregular ones
    assert area["compact_brown"].max() < area["blue_black"].min()
    assert area["irregular_tan"].mean() > 1.5 * area["blue_black"].mean()
    # the light-brown kind is brighter than the compact brown one
    assert brightness["compact_brown"].max() < brightness["irregular_tan"].min()


def test_hairs_are_dark_thin_lines_outside_the_mask():
    dark = {}
    for probability in (0.0, 1.0):
        image, mask = render_dermoscopy(np.random.default_rng(4), "compact_brown", (64, 64), probability)
        outside = image[mask == 0].astype(float).mean(1)
        dark[probability] = (outside < 90).mean()
    assert dark[0.0] == 0.0
    assert 0.005 < dark[1.0] < 0.3


def test_mask_follows_the_lesion():
    image, mask = render_dermoscopy(np.random.default_rng(2), "blue_black", (64, 64), 0.0)
    inside, outside = image[mask > 0].astype(float).mean(), image[mask == 0].astype(float).mean()
    assert inside < outside - 60


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 0}, ValueError, "n must be"),
        ({"n": 2.5}, TypeError, "n must be"),
        ({"size": 8}, ValueError, r"size\[0\]"),
        ({"size": (32, 32, 3)}, ValueError, "size must be an int or a sequence of 2"),
        ({"seed": "zero"}, TypeError, "seed"),
        ({"hair_probability": 1.5}, ValueError, "hair_probability"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_synthetic_dermoscopy(tmp_path, **{"n": 2, "size": 32, **kwargs})


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        render_dermoscopy(np.random.default_rng(0), "melanoma", (32, 32))
