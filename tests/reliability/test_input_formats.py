"""Issue 24, class 4: what each real input format means, decided and tested on tiny files written here.

MedMNIST label encodings ((N,), (N, 1), one-hot, multi-label), 2D image modes (L, LA, RGB, RGBA, P, I;16),
volumes (3D vs 4D, integer vs float) and label masks (0/255, 0/1, multi-class): each either loads with the
documented meaning or is refused before training by a ValueError naming the file and what was expected.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_cluster.data import check_dataset, load_medmnist_npz, medmnist_class_ids, read_intensity_image
from monai_cluster.workflows._image_clustering_data import load_clustering_data, load_image_items


def _npz(path, labels, images=None):
    n = len(labels)
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8), dtype=np.uint8) if images is None else images
    np.savez(path, train_images=images, train_labels=np.asarray(labels))
    return path


# ---- MedMNIST label encodings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, ids, encoding",
    [
        ([0, 2, 1, 2], [0, 2, 1, 2], "class ids"),
        ([[0], [2], [1], [2]], [0, 2, 1, 2], "class ids"),
        ([[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]], [0, 2, 1, 2], "one-hot"),
        ([[True, False], [False, True], [True, False], [False, True]], [0, 1, 0, 1], "one-hot"),
    ],
)
def test_npz_single_label_encodings_give_class_ids(tmp_path, labels, ids, encoding):
    path = _npz(tmp_path / "set.npz", labels)
    _, loaded = load_medmnist_npz(path, "train")
    got, kind = medmnist_class_ids(loaded)
    assert kind == encoding and got.tolist() == ids and got.dtype == np.int64
    data = load_clustering_data(path, tmp_path, npz_split="train")
    assert data.labels.tolist() == ids and len(data.class_names) == max(ids) + 1


def test_npz_multi_label_is_clustered_without_labels(tmp_path, caplog):
    """The crash of the issue: (N, L) multi-label labels (ChestMNIST) reached the metrics after training."""
    path = _npz(tmp_path / "chest.npz", [[1, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 1]])
    _, labels = load_medmnist_npz(path, "train")
    assert labels.shape == (4, 3) and medmnist_class_ids(labels) == (None, "multi-label")
    with caplog.at_level(logging.WARNING):
        data = load_clustering_data(path, tmp_path, npz_split="train")
    assert data.labels is None and data.class_names is None and data.images.shape == (4, 1, 8, 8)
    assert "multi-label labels (4, 3)" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize(
    "labels, pattern",
    [
        ([0, -1, 1, 2], r"chest.npz' train_labels must hold class ids >= 0, found \[-1\]"),
        ([0.0, 1.0, 1.5, 2.0], r"chest.npz' train_labels must hold integers .*got dtype float64"),
        ([[0, 2], [1, 0], [0, 1], [1, 1]], r"chest.npz' train_labels has shape \(4, 2\), so it must be a 0/1 indicator "
         r"matrix .*found the values \[2\]"),
        ([[[0]], [[1]], [[0]], [[1]]], r"chest.npz' train_labels must be \(N,\), \(N, 1\) or \(N, L\) .*\(4, 1, 1\)"),
    ],
)
def test_npz_bad_labels_are_refused_naming_the_file(tmp_path, labels, pattern):
    path = _npz(tmp_path / "chest.npz", labels)
    with pytest.raises(ValueError, match=pattern):
        load_medmnist_npz(path, "train")
    with pytest.raises(ValueError, match=pattern):
        load_clustering_data(path, tmp_path, npz_split="train")


def test_npz_image_layouts(tmp_path):
    grey_axis = np.zeros((2, 8, 8, 1), np.uint8)
    images, _ = load_medmnist_npz(_npz(tmp_path / "a.npz", [0, 1], grey_axis))
    assert images.shape == (2, 1, 8, 8)  # (N, H, W, 1) is grey 2D, not volumes of depth 1
    rgba = np.zeros((2, 8, 8, 4), np.uint8)
    path = _npz(tmp_path / "b.npz", [0, 1], rgba)
    with pytest.raises(ValueError, match=r"b.npz' train_images has shape \(2, 8, 8, 4\): .* grey-alpha/RGBA images or "
                                         r"volumes of depth 4; pass spatial_dims=3"):  # fmt: skip
        load_medmnist_npz(path)
    assert load_medmnist_npz(path, spatial_dims=3)[0].shape == (2, 1, 8, 8, 4)


# ---- 2D image modes ----------------------------------------------------------------------------------------------


def _png(path, mode):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    if mode == "L":
        img = Image.fromarray(grey, "L")
    elif mode == "LA":
        img = Image.fromarray(np.stack([grey, np.full_like(grey, 7)], -1), "LA")
    elif mode in ("RGB", "RGBA"):
        img = Image.fromarray(rng.integers(0, 256, (8, 8, len(mode)), dtype=np.uint8), mode)
    elif mode == "P":
        img = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB").quantize(colors=4)
    elif mode == "P-grey":
        img = Image.fromarray(grey, "L").convert("P")
    elif mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 200)  # PIL picks mode I;16
    img.save(path)
    return path


@pytest.mark.parametrize(
    "mode, channels",
    [("L", 1), ("LA", 1), ("RGB", 3), ("RGBA", 3), ("P", 3), ("P-grey", 1), ("I;16", 1)],
)
def test_each_image_mode_means_its_intensities(tmp_path, mode, channels):
    path = _png(tmp_path / "img.png", mode)
    image = read_intensity_image(path)
    assert image.channels == channels
    with Image.open(path) as img:
        shown = np.asarray(img.convert("RGB" if channels == 3 else "L")) if mode != "I;16" else np.asarray(img)
    if mode == "I;16":
        assert image.array.max() > 255  # 16-bit values kept, scaled per image by the loader
    else:
        assert np.array_equal(image.array, shown)  # the colours, not palette indices, not alpha
    data = load_image_items([{"image": str(path), "key": "img.png"}], tmp_path, spatial_size=8)
    assert data.images.shape == (1, channels, 8, 8)
    assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1
    if mode == "I;16":
        assert float(data.images.min()) == 0 and float(data.images.max()) == 1


def test_mixed_grey_and_colour_folder_is_clustered_in_colour(tmp_path):
    items = [{"image": str(_png(tmp_path / f"{m}.png", m)), "key": m} for m in ("LA", "RGBA", "P-grey")]
    data = load_image_items(items, tmp_path, spatial_size=8)
    assert data.images.shape == (3, 3, 8, 8)
    assert bool((data.images[0, 0] == data.images[0, 1]).all())  # the grey image repeated


def test_palette_image_for_an_rgb_network_is_refused_with_its_mode(tmp_path):
    """Segmentation/pretraining read images with MONAI's loader (palette indices): refused before training."""
    path = _png(tmp_path / "p.png", "P")
    with pytest.raises(ValueError, match=r"p.png: expected 3 channel\(s\), got 1 .*PIL mode 'P'.*convert it to RGB"):
        check_dataset([{"image": str(path)}], channels=3)
    rgba = _png(tmp_path / "rgba.png", "RGBA")
    with pytest.raises(ValueError, match=r"rgba.png: expected 3 channel\(s\), got 4 .*PIL mode 'RGBA'.*alpha"):
        check_dataset([{"image": str(rgba)}], channels=3)


# ---- volumes -----------------------------------------------------------------------------------------------------


def _nii(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def test_volumes_3d_4d_integer_and_float(tmp_path):
    ct = _nii(tmp_path / "ct.nii.gz", np.arange(8 * 8 * 8, dtype=np.int16).reshape(8, 8, 8) - 1000)
    mri = _nii(tmp_path / "mri.nii.gz", np.linspace(0, 3, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8))
    data = load_image_items([{"image": str(p), "key": p.name} for p in (ct, mri)], tmp_path, spatial_size=8)
    assert data.images.shape == (2, 1, 8, 8, 8)
    for x in data.images:  # integer and float volumes min-max scaled per volume
        assert float(x.min()) == 0 and float(x.max()) == 1
    multi = [_nii(tmp_path / f"m{i}.nii.gz", np.random.default_rng(i).random((8, 8, 8, 2), np.float32)) for i in (0, 1)]
    data = load_image_items([{"image": str(p), "key": p.name} for p in multi], tmp_path, spatial_size=8)
    assert data.images.shape == (2, 2, 8, 8, 8)  # every channel of a 4D volume kept, none invented or dropped


def test_volumes_with_different_channels_are_refused(tmp_path):
    one = _nii(tmp_path / "one.nii.gz", np.zeros((8, 8, 8), np.float32))
    two = _nii(tmp_path / "two.nii.gz", np.zeros((8, 8, 8, 4), np.float32))
    with pytest.raises(ValueError, match=r"volume \S+two.nii.gz has 4 channel\(s\) but \S+one.nii.gz has 1"):
        load_image_items([{"image": str(p), "key": p.name} for p in (one, two)], tmp_path)


def test_volume_with_nan_is_refused(tmp_path):
    vol = np.zeros((8, 8, 8), np.float32)
    vol[1, 2, 3] = np.nan
    path = _nii(tmp_path / "nan.nii.gz", vol)
    with pytest.raises(ValueError, match=r"image \S+nan.nii.gz: 1 of 512 values are NaN or Inf"):
        load_image_items([{"image": str(path), "key": "nan"}], tmp_path)


# ---- label masks -------------------------------------------------------------------------------------------------


def _pair(tmp_path, mask, name="m.png"):
    image = tmp_path / "i.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    Image.fromarray(mask).save(tmp_path / name)
    return [{"image": str(image), "label": str(tmp_path / name)}]


@pytest.mark.parametrize("values", [(0, 255), (0, 1)])
def test_binary_masks_as_0_255_or_0_1(tmp_path, values):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = values[1]
    assert check_dataset(_pair(tmp_path, mask), num_classes=2, channels=3)["label_values"] == list(values)


def test_mask_values_that_fit_no_reading_are_refused(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0], mask[1, 1] = 255, 1  # neither 0/1 nor 0/255
    with pytest.raises(ValueError, match=r"label \S+m.png: values must lie in \[0, 2\) \(or \{0, 255\} .*\[255\]"):
        check_dataset(_pair(tmp_path, mask), num_classes=2)
    multi = np.zeros((8, 8), np.uint8)
    multi[0, :3] = [1, 2, 3]
    assert check_dataset(_pair(tmp_path, multi), num_classes=4)["label_values"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"label \S+m.png: values must lie in \[0, 3\), found \[3\]"):
        check_dataset(_pair(tmp_path, multi), num_classes=3)
    binary = np.where(multi > 0, 255, 0).astype(np.uint8)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 4\), found \[255\]"):
        check_dataset(_pair(tmp_path, binary), num_classes=4)  # 0/255 means binary only


# ---- the image_clustering bundle end to end on MedMNIST label encodings ----------------------------------------


@pytest.mark.bundle
@pytest.mark.parametrize("encoding", ["one-hot", "multi-label"])
def test_image_clustering_bundle_runs_to_the_end_on_each_label_encoding(tmp_path, encoding):
    """The issue's crash came after training; both encodings now reach every output (metrics only with classes)."""
    import json
    from pathlib import Path

    from monai.bundle import ConfigWorkflow

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16), dtype=np.uint8)
    labels = np.eye(2, dtype=np.uint8)[[0, 1] * 4] if encoding == "one-hot" else rng.integers(0, 2, (8, 3))
    labels[0] = [1, 1, 1][: labels.shape[1]] if encoding == "multi-label" else labels[0]
    npz = tmp_path / "set.npz"
    np.savez(npz, train_images=images, train_labels=labels)
    configs = Path(__file__).resolve().parents[2] / "bundles" / "image_clustering" / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"), workflow_type="train",
        bundle_root=str(tmp_path / "run"), dataset_dir=str(npz), npz_split="train", num_clusters=2, epochs=1,
        cluster_epochs=1, prototype_epochs=1, batch_size=4, channels=[4, 8], latent_dim=4, progress=False,
        montage_per_cluster=2, budget_images=None,
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    assert (tmp_path / "run" / "eval" / "clusters.csv").is_file()
    metrics = tmp_path / "run" / "eval" / "metrics.json"
    if encoding == "one-hot":
        assert json.loads(metrics.read_text())["classes"] == ["0", "1"]
    else:
        assert not metrics.exists()
