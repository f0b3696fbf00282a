"""Catalogue of bad files: image folders, images, masks, volumes, pseudo-class tables and checkpoints.

Each row corrupts a fresh copy of a tiny PH2-style folder (``images/IMD00k.png`` + ``masks/IMD00k_lesion.png``,
32x32 RGB) or writes a bad file next to it, then calls the library; the error type and a message naming the
file and what was expected are checked. The last part checks that a write interrupted by an exception leaves
no half-written file: the previous version stays intact and no temporary file remains.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet, UNet
from PIL import Image

from monai_cluster.clustering import PseudoClassTable, read_pseudo_class_table, write_pseudo_class_table
from monai_cluster.data import check_dataset, list_image_mask_pairs, list_images, read_image, write_nifti, write_png
from monai_cluster.networks import ContrastivePretrainNet, load_pretrained
from monai_cluster.utils import atomic_torch_save, atomic_write, atomic_write_json

_FEATURES = (4, 4, 8, 8, 16, 4)
N_PAIRS = 4


def _write_pair(root: Path, index: int, size: int = 32) -> None:
    rng = np.random.default_rng(index)
    write_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), root / "images" / f"IMD00{index}.png")
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    write_png(mask, root / "masks" / f"IMD00{index}_lesion.png")


@pytest.fixture(scope="module")
def _pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ph2")
    for i in range(N_PAIRS):
        _write_pair(root, i)
    volumes = root.parent / (root.name + "_volumes")
    rng = np.random.default_rng(0)
    write_nifti(rng.random((8, 8, 8), dtype=np.float32), np.eye(4), volumes / "images" / "heart_0.nii.gz")
    write_nifti(np.zeros((8, 8, 8), np.uint8), np.eye(4), volumes / "labels" / "heart_0.nii.gz")
    return root


@pytest.fixture
def dataset(_pristine, tmp_path) -> Path:
    """A fresh copy of the PH2-style folder; ``dataset.parent / 'volumes'`` holds a one-volume NIfTI set."""
    shutil.copytree(_pristine, tmp_path / "ph2")
    shutil.copytree(_pristine.parent / (_pristine.name + "_volumes"), tmp_path / "volumes")
    return tmp_path / "ph2"


def _pairs(root: Path) -> list[dict]:
    return list_image_mask_pairs(root)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _volume(root: Path, value: float) -> list[dict]:
    arr = np.random.default_rng(1).random((8, 8, 8), dtype=np.float32)
    arr[1, 2, 3] = value
    write_nifti(arr, np.eye(4), root.parent / "volumes" / "images" / "heart_0.nii.gz")
    return list_image_mask_pairs(root.parent / "volumes")


# --------------------------------------------------------------------------------------------- data folders


def _truncated_png(root: Path):
    _truncate(root / "images" / "IMD001.png")
    return check_dataset(_pairs(root))


def _junk_png(root: Path):
    (root / "images" / "IMD001.png").write_bytes(b"this is not an image")
    return check_dataset(_pairs(root))


def _mask_of_another_size(root: Path):
    write_png(np.zeros((16, 16), np.uint8), root / "masks" / "IMD002_lesion.png")
    return check_dataset(_pairs(root), num_classes=2)


def _label_outside_num_classes(root: Path):
    write_png(np.full((32, 32), 3, np.uint8), root / "masks" / "IMD002_lesion.png")
    return check_dataset(_pairs(root), num_classes=2)


def _rgb_mask(root: Path):
    write_png(np.zeros((32, 32, 3), np.uint8), root / "masks" / "IMD003_lesion.png")
    return check_dataset(_pairs(root), num_classes=2)


def _grey_image_in_rgb_set(root: Path):
    write_png(np.zeros((32, 32), np.uint8), root / "images" / "IMD000.png")
    return check_dataset(_pairs(root), channels=3)


def _empty_image_folder(root: Path):
    for path in (root / "images").iterdir():
        path.unlink()
    return _pairs(root)


def _empty_folder_unlabeled(root: Path):
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    return list_images(root / "empty")


def _image_without_mask(root: Path):
    (root / "masks" / "IMD002_lesion.png").unlink()
    return _pairs(root)


def _mask_without_image(root: Path):
    shutil.copy(root / "masks" / "IMD000_lesion.png", root / "masks" / "IMD099_lesion.png")
    return _pairs(root)


def _two_images_one_mask(root: Path):
    (root / "images" / "IMD001.png").rename(root / "images" / "IMD001.jpg")  # PIL decodes by content
    _write_pair(root, 1)
    return _pairs(root)


def _missing_root(root: Path):
    return list_image_mask_pairs(root / "does_not_exist")


def _unknown_layout(root: Path):
    (root / "images").rename(root / "pictures")
    return _pairs(root)


def _file_deleted_after_listing(root: Path):
    items = _pairs(root)
    (root / "images" / "IMD000.png").unlink()
    return check_dataset(items)


def _unsupported_extension(root: Path):
    (root / "scan.dcm").write_bytes(b"DICM")
    return read_image(root / "scan.dcm")


def _fractional_float_mask(root: Path):
    mask = np.zeros((8, 8, 8), np.float32)
    mask[0, 0, 0] = 0.5
    write_nifti(mask, np.eye(4), root.parent / "volumes" / "labels" / "heart_0.nii.gz")
    return check_dataset(list_image_mask_pairs(root.parent / "volumes"), num_classes=8)


def _volume_where_2d_expected(root: Path):
    return check_dataset(list_image_mask_pairs(root.parent / "volumes"), spatial_dims=2)


def _truncated_nifti(root: Path):
    _truncate(root.parent / "volumes" / "images" / "heart_0.nii.gz")
    return check_dataset(list_image_mask_pairs(root.parent / "volumes"))


def _gzip_of_garbage_nifti(root: Path):
    (root.parent / "volumes" / "images" / "heart_0.nii.gz").write_bytes(gzip.compress(b"\x00" * 400))
    return check_dataset(list_image_mask_pairs(root.parent / "volumes"))


@dataclass(frozen=True)
class FileCase:
    """``call(dataset_root)`` corrupts the copy and calls the library; it must raise ``error`` matching ``match``."""

    id: str
    call: Callable[[Path], object]
    error: type[BaseException]
    match: str


DATA_CASES = [
    FileCase(
        "truncated-png",
        _truncated_png,
        ValueError,
        r"IMD001.png: cannot decode the file \(OSError: image file is truncated",
    ),
    FileCase(
        "junk-bytes-named-png",
        _junk_png,
        ValueError,
        r"IMD001.png: cannot decode the file \(UnidentifiedImageError",
    ),
    FileCase(
        "mask-of-another-size",
        _mask_of_another_size,
        ValueError,
        r"label \S+IMD002_lesion.png: expected the spatial shape \(32, 32\) of its image \S+IMD002.png, got \(16, 16\)",
    ),
    FileCase(
        "label-values-outside-num-classes",
        _label_outside_num_classes,
        ValueError,
        r"label \S+IMD002_lesion.png: values must lie in \[0, 2\) \(or \{0, 255\} for a binary mask\), found \[3\]",
    ),
    FileCase(
        "rgb-mask",
        _rgb_mask,
        ValueError,
        r"label \S+IMD003_lesion.png: expected a single-channel mask, got 3 channels",
    ),
    FileCase(
        "grey-image-in-rgb-set",
        _grey_image_in_rgb_set,
        ValueError,
        r"(?s)check_dataset found 1 problem.*image \S+IMD000.png: expected 3 channel\(s\), got 1",
    ),
    FileCase("empty-image-folder", _empty_image_folder, ValueError, r"image folder \S+images holds no image files"),
    FileCase(
        "folder-without-images",
        _empty_folder_unlabeled,
        ValueError,
        r"no image files under \S+empty with extensions",
    ),
    FileCase(
        "image-without-mask",
        _image_without_mask,
        ValueError,
        r"1 image\(s\) in \S+images without a mask: IMD002.png \(layout 'ph2': a mask's name is the image's stem",
    ),
    FileCase(
        "mask-without-image",
        _mask_without_image,
        ValueError,
        r"1 mask\(s\) in \S+masks without an image: IMD099_lesion.png",
    ),
    FileCase(
        "two-images-share-one-mask",
        _two_images_one_mask,
        ValueError,
        r"mask \S+IMD001_lesion.png pairs with several images in \S+images: \['IMD001.jpg', 'IMD001.png'\]",
    ),
    FileCase("missing-root", _missing_root, ValueError, r"root \S+does_not_exist does not exist or is not a folder"),
    FileCase(
        "unknown-layout",
        _unknown_layout,
        ValueError,
        r"no known dataset layout under \S+ph2: looked for imagesTr/",
    ),
    FileCase(
        "file-deleted-after-listing",
        _file_deleted_after_listing,
        ValueError,
        r"items\[0\]\['image'\]: file not found: \S+IMD000.png",
    ),
    FileCase(
        "unsupported-extension",
        _unsupported_extension,
        ValueError,
        r"scan.dcm: unsupported image extension; expected one of",
    ),
    FileCase(
        "nan-in-volume",
        lambda root: check_dataset(_volume(root, np.nan)),
        ValueError,
        r"image \S+heart_0.nii.gz: must be finite, but 1 of 512 values are NaN or Inf",
    ),
    FileCase(
        "inf-in-volume",
        lambda root: check_dataset(_volume(root, -np.inf)),
        ValueError,
        r"image \S+heart_0.nii.gz: must be finite, but 1 of 512 values are NaN or Inf",
    ),
    FileCase(
        "fractional-label-values",
        _fractional_float_mask,
        ValueError,
        r"label \S+heart_0.nii.gz: must hold integer class values, found non-integers such as \[0.5\]",
    ),
    FileCase(
        "volume-where-2d-expected",
        _volume_where_2d_expected,
        ValueError,
        r"image \S+heart_0.nii.gz: expected 2 spatial dimensions, got spatial shape \(8, 8, 8\)",
    ),
    FileCase("truncated-nifti", _truncated_nifti, ValueError, r"heart_0.nii.gz: cannot decode the file \(EOFError"),
    FileCase("garbage-nifti", _gzip_of_garbage_nifti, ValueError, r"heart_0.nii.gz: cannot decode the file"),
    FileCase(
        "empty-listing",
        lambda root: check_dataset([]),
        ValueError,
        r"items must hold at least one sample, got an empty listing",
    ),
]

# ------------------------------------------------------------------------------------------ pseudo-class tables

_KEYS = [f"images/IMD00{i}.png" for i in range(N_PAIRS)]


def _table_file(root: Path) -> Path:
    table = PseudoClassTable(_KEYS, np.array([[0, 0], [0, 1], [1, 2], [1, 2]]), (2, 3), "test features")
    return write_pseudo_class_table(table, root / "pseudo_classes.csv")


def _edit_table(root: Path, edit: Callable[[str], str]) -> Path:
    path = _table_file(root)
    path.write_text(edit(path.read_text()))
    return path


def _binary_table(root: Path) -> PseudoClassTable:
    path = _table_file(root)
    path.write_bytes(b"\xff\xfe\x00\x81 binary")
    return read_pseudo_class_table(path)


def _replaced(old: str, new: str) -> Callable[[Path], PseudoClassTable]:
    """A case that replaces ``old`` by ``new`` in a valid table file, then reads it."""
    return lambda root: read_pseudo_class_table(_edit_table(root, lambda s: s.replace(old, new)))


TABLE_CASES = [
    FileCase(
        "table-truncated",
        lambda root: read_pseudo_class_table(_edit_table(root, lambda s: s[: s.rindex("images/IMD002")])),
        ValueError,
        r"pseudo_classes.csv, line 4: the header says num_rows: 4 but the file holds 2 row\(s\) "
        r"\(truncated or edited\?\)",
    ),
    FileCase(
        "table-non-integer-value",
        _replaced("IMD001.png,0,1", "IMD001.png,0,x"),
        ValueError,
        r"pseudo_classes.csv, line 7: level_1 value 'x' is not an integer",
    ),
    FileCase(
        "table-value-outside-num-clusters",
        _replaced("IMD001.png,0,1", "IMD001.png,0,7"),
        ValueError,
        r"pseudo_classes.csv, line 7: level_1 value 7 is outside \[0, 3\) \(num_clusters=3\)",
    ),
    FileCase(
        "table-duplicated-key",
        _replaced("IMD003.png", "IMD002.png"),
        ValueError,
        r"pseudo_classes.csv, line 9: key 'images/IMD002.png' is duplicated \(first in row 2\)",
    ),
    FileCase(
        "table-wrong-column-header",
        _replaced("key,level_0,level_1", "key,level_0"),
        ValueError,
        r"pseudo_classes.csv, line 5: expected the column header key,level_0,level_1 for 2 level\(s\)",
    ),
    FileCase(
        "table-plain-csv",
        lambda root: read_pseudo_class_table(_edit_table(root, lambda s: "key,level_0\nimages/IMD000.png,0\n")),
        ValueError,
        r"pseudo_classes.csv, line 1: expected '# monai_cluster pseudo-class table v1', got 'key,level_0'",
    ),
    FileCase(
        "table-binary-file",
        _binary_table,
        ValueError,
        r"pseudo_classes.csv: not a UTF-8 text file .*not a pseudo-class table",
    ),
    FileCase(
        "table-missing",
        lambda root: read_pseudo_class_table(root / "nope.csv"),
        ValueError,
        r"pseudo-class table \S+nope.csv does not exist",
    ),
    FileCase(
        "table-from-another-dataset",
        lambda root: read_pseudo_class_table(_table_file(root), expected_keys=[*_KEYS, "images/IMD777.png"]),
        ValueError,
        r"table from \S+pseudo_classes.csv \(4 rows\) lacks 1 of the 5 dataset keys, e.g. \['images/IMD777.png'\]",
    ),
]

# ---------------------------------------------------------------------------------------------- checkpoints


def _unet2d(in_channels: int = 1) -> BasicUNet:
    return BasicUNet(2, in_channels, 2, features=_FEATURES)


def _nan_weights() -> dict:
    state = _unet2d().state_dict()
    state["down_1.convs.conv_0.conv.weight"][0, 0, 0, 0] = float("nan")
    return state


def _saved(root: Path, obj) -> Path:
    torch.save(obj, root / "ckpt.pt")
    return root / "ckpt.pt"


CHECKPOINT_CASES = [
    FileCase(
        "checkpoint-of-another-network",
        lambda root: load_pretrained(_unet2d(), _saved(root, UNet(2, 1, 2, (4, 8), (2,)).state_dict())),
        ValueError,
        r"0 of \d+ tensors of BasicUNet matched in \S+ckpt.pt: checkpoint keys look like \['model.0.conv.weight'",
    ),
    FileCase(
        "checkpoint-of-3d-network-into-2d",
        lambda root: load_pretrained(_unet2d(), _saved(root, BasicUNet(3, 1, 2, features=_FEATURES).state_dict())),
        ValueError,
        r"tensor\(s\) of \S+ckpt.pt have another shape than in BasicUNet"
        r".*checkpoint \(4, 1, 3, 3, 3\) vs network \(4, 1, 3, 3\)",
    ),
    FileCase(
        "checkpoint-with-other-in-channels",
        lambda root: load_pretrained(_unet2d(), _saved(root, _unet2d(in_channels=3).state_dict())),
        ValueError,
        r"1 tensor\(s\) of \S+ckpt.pt have another shape"
        r".*conv_0.conv_0.conv.weight: checkpoint \(4, 3, 3, 3\) vs network \(4, 1, 3, 3\)",
    ),
    FileCase(
        "checkpoint-of-whole-pretrain-wrapper",
        lambda root: load_pretrained(
            _unet2d(), _saved(root, ContrastivePretrainNet(2, 1, features=_FEATURES, global_dim=8).state_dict())
        ),
        ValueError,
        r"0 of \d+ tensors of BasicUNet matched.*pass prefix_map=\{'backbone.': ''\}",
    ),
    FileCase(
        "checkpoint-path-does-not-exist",
        lambda root: load_pretrained(_unet2d(), root / "models" / "model.pt"),
        ValueError,
        r"pretrained checkpoint '\S+models/model.pt' does not exist \(or is not a file\)",
    ),
    FileCase(
        "checkpoint-corrupt",
        lambda root: (root / "bad.pt").write_bytes(b"\x80garbage" * 8) and load_pretrained(_unet2d(), root / "bad.pt"),
        ValueError,
        r"pretrained checkpoint '\S+bad.pt' could not be read as a torch file",
    ),
    FileCase(
        "checkpoint-truncated",
        lambda root: _truncate(_saved(root, _unet2d().state_dict())) or load_pretrained(_unet2d(), root / "ckpt.pt"),
        ValueError,
        r"pretrained checkpoint '\S+ckpt.pt' could not be read as a torch file",
    ),
    FileCase(
        "checkpoint-of-a-diverged-run",
        lambda root: load_pretrained(_unet2d(), _saved(root, _nan_weights())),
        ValueError,
        r"1 tensor\(s\) of \S+ckpt.pt hold NaN or Inf, e.g. \['down_1.convs.conv_0.conv.weight'\]: the weights come "
        r"from a run that diverged",
    ),
    FileCase(
        "checkpoint-without-weights",
        lambda root: load_pretrained(_unet2d(), _saved(root, {"epoch": 3, "optimizer": {"lr": 0.1}})),
        ValueError,
        r"ckpt.pt is not a state dict \(a mapping of names to tensors"
        r".*got a mapping with keys \['epoch', 'optimizer'\]",
    ),
]

ALL_FILE_CASES = DATA_CASES + TABLE_CASES + CHECKPOINT_CASES


def test_file_catalogue_is_large_and_ids_are_unique():
    ids = [case.id for case in ALL_FILE_CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 35


def test_pristine_copy_is_valid(dataset):
    """The corruptions above are the only reason the cases fail: the untouched copy passes every check."""
    summary = check_dataset(_pairs(dataset), num_classes=2, channels=3, spatial_dims=2)
    assert summary["num_items"] == N_PAIRS and summary["label_values"] == [0, 255]
    assert check_dataset(list_image_mask_pairs(dataset.parent / "volumes"), spatial_dims=3)["num_items"] == 1
    assert read_pseudo_class_table(_table_file(dataset), expected_keys=_KEYS).keys == _KEYS
    assert load_pretrained(_unet2d(), _saved(dataset, _unet2d().state_dict()))["matched"] > 0


@pytest.mark.parametrize("case", ALL_FILE_CASES, ids=lambda case: case.id)
def test_bad_file_raises_clear_error(case: FileCase, dataset: Path):
    with pytest.raises(case.error, match=case.match):
        case.call(dataset)


# ------------------------------------------------------------------------------- nothing half-written on failure


def _leftovers(folder: Path) -> list[str]:
    """Temporary files the atomic writers might have left (they are named ``.<name>.<random>.tmp``)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("."))


class _FailingKeys(list):
    """Keys that fail after ``n`` rows while a table is written (a full disk, an interrupted job)."""

    def __init__(self, keys, n: int) -> None:
        super().__init__(keys)
        self.n = n

    def __iter__(self):
        for i, key in enumerate(list.__iter__(self)):
            if i == self.n:
                raise OSError(28, "No space left on device (simulated)")
            yield key


def test_interrupted_table_write_keeps_previous_table(tmp_path):
    old = PseudoClassTable(["a", "b"], np.array([[0, 0], [1, 1]]), (2, 3), "epoch 1")
    path = write_pseudo_class_table(old, tmp_path / "pseudo_classes.csv")
    before = path.read_bytes()
    new = PseudoClassTable([f"k{i}" for i in range(100)], np.zeros((100, 2), np.int64), (2, 3), "epoch 2")
    new.keys = _FailingKeys(new.keys, n=50)
    with pytest.raises(OSError, match="No space left on device"):
        write_pseudo_class_table(new, path)
    assert path.read_bytes() == before
    assert read_pseudo_class_table(path) == old
    assert _leftovers(tmp_path) == []


def test_interrupted_first_table_write_leaves_no_file(tmp_path):
    new = PseudoClassTable([f"k{i}" for i in range(10)], np.zeros((10, 1), np.int64), (2,), "m")
    new.keys = _FailingKeys(new.keys, n=5)
    with pytest.raises(OSError):
        write_pseudo_class_table(new, tmp_path / "sub" / "pseudo_classes.csv")
    assert not (tmp_path / "sub" / "pseudo_classes.csv").exists()
    assert _leftovers(tmp_path) == []


def test_failed_checkpoint_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    atomic_torch_save({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    # a large tensor is written first, then pickling the lambda fails halfway through the file
    with pytest.raises(Exception, match="lambda|pickle|local object"):
        atomic_torch_save({"big": torch.zeros(200_000), "bad": lambda: None}, path)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert _leftovers(tmp_path) == []


def test_failed_json_write_keeps_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json({"dice": 0.8}, path)
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic_write_json({"dice": 0.9, "bad": object()}, path)
    assert json.loads(path.read_text()) == {"dice": 0.8}
    assert _leftovers(tmp_path) == []


def test_exception_inside_atomic_write_block(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as handle:
            handle.write("half of it")
            raise KeyboardInterrupt
    assert not path.exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((8, 8), np.float32), r"array must be uint8 \(H, W\) or \(H, W, 3\), got float32 \(8, 8\)"),
        (np.zeros((8, 8, 4), np.uint8), r"array must be uint8 \(H, W\) or \(H, W, 3\), got uint8 \(8, 8, 4\)"),
    ],
)
def test_bad_png_array_writes_nothing(tmp_path, array, match):
    with pytest.raises(ValueError, match=match):
        write_png(array, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_bad_affine_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"affine must be a \(4, 4\) matrix, got shape \(3, 3\)"):
        write_nifti(np.zeros((4, 4, 4)), np.eye(3), tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_pil_can_read_what_write_png_wrote(tmp_path):
    """Guard for the fixture: the PNGs the cases corrupt are real images to begin with."""
    write_png(np.full((4, 4, 3), 7, np.uint8), tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as img:
        assert img.size == (4, 4) and img.mode == "RGB"
