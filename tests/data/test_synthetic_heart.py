from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from monai_cluster.data import HEART_LABELS, make_synthetic_heart, render_heart


def _load(path):
    img = nib.load(path)
    return np.asanyarray(img.dataobj), img


def test_files_dtypes_affine_and_listing(heart_set):
    folder, items = heart_set
    assert [it["key"] for it in items] == ["images/heart_000.nii.gz", "images/heart_001.nii.gz"]
    for it in items:
        assert set(it) == {"image", "label", "key"}
        assert Path(it["image"]) == folder / it["key"]
        assert Path(it["label"]) == folder / "labels" / Path(it["key"]).name
        image, img = _load(it["image"])
        label, lab = _load(it["label"])
        assert image.shape == label.shape == (40, 44, 48)
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert np.allclose(np.diag(img.affine), [1.5, 1.5, 1.5, 1.0])
        assert np.allclose(img.affine, lab.affine)
        # centred: the middle voxel sits at the world origin
        centre = img.affine @ np.array([(s - 1) / 2 for s in image.shape] + [1.0])
        assert np.allclose(centre[:3], 0.0)


def test_all_seven_structures_with_sensible_hounsfield_units(heart_set):
    assert list(HEART_LABELS) == [1, 2, 3, 4, 5, 6, 7]
    for it in heart_set[1]:
        image, _ = _load(it["image"])
        label, _ = _load(it["label"])
        assert set(np.unique(label).tolist()) == set(range(8))
        for value in (1, 2, 3, 4, 6, 7):  # contrast-filled blood pools, away from partial-volume borders
            interior = binary_erosion(label == value)
            assert interior.sum() > 0 and 240 < np.median(image[interior]) < 360, HEART_LABELS[value]
        assert 60 < np.median(image[label == 5]) < 160  # myocardium
        assert np.median(image[0, 0, :]) < -900  # air in the corner, outside the body
        lungs = image[(label == 0) & (image > -940) & (image < -600)]  # above air, below soft tissue
        assert lungs.size > 0.1 * image.size and -880 < np.median(lungs) < -760
        # the myocardium wraps the LV: every LV voxel's x-neighbours are LV or myocardium
        lv = label == 1
        assert set(np.unique(label[1:][lv[:-1]]).tolist()) <= {1, 5}


def test_cases_differ_and_seed_is_deterministic(tmp_path, heart_set):
    first, second = (_load(it["label"])[0] for it in heart_set[1])
    assert (first != second).mean() > 0.01  # per-case perturbation
    a = make_synthetic_heart(tmp_path / "a", n=1, size=24, seed=9)
    b = make_synthetic_heart(tmp_path / "b", n=1, size=24, seed=9)
    c = make_synthetic_heart(tmp_path / "c", n=1, size=24, seed=10)
    for key in ("image", "label"):
        assert Path(a[0][key]).read_bytes() == Path(b[0][key]).read_bytes()
    assert Path(a[0]["image"]).read_bytes() != Path(c[0]["image"]).read_bytes()


def test_spacing_is_stored(tmp_path):
    items = make_synthetic_heart(tmp_path, n=1, size=16, spacing=0.8)
    assert np.allclose(nib.load(items[0]["image"]).header.get_zooms(), 0.8)


def test_render_returns_arrays():
    image, label = render_heart(np.random.default_rng(0), (20, 24, 28))
    assert image.shape == label.shape == (20, 24, 28)
    assert image.min() >= -1024 and image.max() <= 3071


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 0}, ValueError, "n must be"),
        ({"size": (32, 32)}, ValueError, "size must be an int or a sequence of 3"),
        ({"size": 8}, ValueError, r"size\[0\]"),
        ({"spacing": 0.0}, ValueError, "spacing"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_synthetic_heart(tmp_path, **{"n": 1, "size": 16, **kwargs})
