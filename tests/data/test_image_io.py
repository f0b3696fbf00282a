import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from monai_cluster.data import read_image, split_extension, write_nifti, write_png


@pytest.mark.parametrize(
    "name, expected",
    [
        ("case.nii.gz", ("case", ".nii.gz")),
        ("Case.NII.GZ", ("Case", ".NII.GZ")),
        ("IMD002.png", ("IMD002", ".png")),
        ("a.b.JPG", ("a.b", ".JPG")),
        ("notes.txt", ("notes.txt", "")),
        (".png", (".png", "")),
    ],
)
def test_split_extension(name, expected):
    assert split_extension(name) == expected


@pytest.mark.parametrize("mode, shape, channels", [("L", (7, 9), 1), ("RGB", (7, 9, 3), 3), ("RGBA", (7, 9, 4), 4)])
def test_read_2d(tmp_path, mode, shape, channels):
    arr = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(tmp_path / "x.png")
    img = read_image(tmp_path / "x.png")
    assert np.array_equal(img.array, arr)
    assert img.spatial_shape == (7, 9) and img.channels == channels and img.spatial_dims == 2


def test_read_nifti_3d_and_4d(tmp_path):
    vol = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    write_nifti(vol, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "v.nii.gz")
    img = read_image(tmp_path / "v.nii.gz")
    assert np.array_equal(img.array, vol) and img.spatial_shape == (4, 5, 6) and img.channels == 1
    assert np.allclose(nib.load(tmp_path / "v.nii.gz").affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    four = np.zeros((4, 5, 6, 2), dtype=np.float32)
    write_nifti(four, np.eye(4), tmp_path / "v4.nii")
    img = read_image(tmp_path / "v4.nii")
    assert img.spatial_shape == (4, 5, 6) and img.channels == 2 and img.spatial_dims == 3


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_read_itk_in_xyz_order(tmp_path, ext):
    zyx = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(zyx), str(tmp_path / f"v{ext}"))
    img = read_image(tmp_path / f"v{ext}")
    assert img.spatial_shape == (5, 4, 3) and img.channels == 1
    assert np.array_equal(img.array, zyx.transpose(2, 1, 0))


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported image extension"):
        read_image(tmp_path / "x.txt")
    write_png(np.zeros((40, 40, 3), dtype=np.uint8) + 7, tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"t\.png: cannot decode"):
        read_image(tmp_path / "t.png")
    write_nifti(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4), tmp_path / "c.nii.gz")
    raw = gzip.decompress((tmp_path / "c.nii.gz").read_bytes())
    (tmp_path / "c.nii.gz").write_bytes(gzip.compress(raw[: len(raw) - 100]))  # valid gzip, short data
    with pytest.raises(ValueError, match=r"c\.nii\.gz: cannot decode"):
        read_image(tmp_path / "c.nii.gz")


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match="array must be uint8"):
        write_png(np.zeros((4, 4), dtype=np.float32), tmp_path / "x.png")
    with pytest.raises(ValueError, match="array must be uint8"):
        write_png(np.zeros((4, 4, 2), dtype=np.uint8), tmp_path / "x.png")
    with pytest.raises(ValueError, match="affine must be a"):
        write_nifti(np.zeros((4, 4, 4)), np.eye(3), tmp_path / "x.nii.gz")
    assert not list(tmp_path.iterdir())
