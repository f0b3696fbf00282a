"""Inputs of the image-clustering workflow: a folder of images or volumes, a MedMNIST ``.npz``, or synthetic data.

Everything is loaded once into one float tensor ``(N, C, *spatial)`` in ``[0, 1]`` (the clustering procedures
refresh their targets over the whole dataset, and the sets this is meant for fit in memory), with one key per
image and, when known, integer labels and their class names.

Folder rule (:func:`monai_cluster.workflows.list_unlabeled`): every image file under the folder, recursively,
except those in mask folders (``masks/``, ``labels/``, ``labelsTr/``, ``labelsTs/``), so a PH2 folder gives its
``images/`` and ``unlabeled/`` images. Keys are paths relative to the folder. Labels come from a
PH2-style CSV (``image_name,diagnosis``, matched by file stem): ``labels_csv``, or ``diagnosis.csv`` in the folder.

What each input format means (decided here, refused before training with the file named otherwise):

- 2D files by PIL mode (:func:`monai_cluster.data.read_intensity_image`): ``1``/``L``/``LA`` one grey channel
  (alpha dropped), ``RGB``/``RGBA``/``CMYK``/``YCbCr`` three channels (alpha dropped), ``P``/``PA`` their palette
  colours (never the palette indices), ``I;16``/``I``/``F`` one channel. A folder mixing grey and colour images
  is clustered in colour (grey images repeated over three channels).
- Volumes (NIfTI, NRRD, MHA): 3D ``(X, Y, Z)`` is one channel; 4D ``(X, Y, Z, C)`` keeps its ``C`` channels, and
  every volume of the folder must have the same ``C``.
- Intensities: ``uint8`` divided by 255; any other dtype (16-bit images, integer CT, float MRI) min-max scaled
  per image; NaN or Inf refused.
- MedMNIST ``.npz`` labels (:func:`monai_cluster.data.medmnist_class_ids`): ``(N,)`` and ``(N, 1)`` class ids,
  one-hot ``(N, L)`` rows become class ids; a multi-label ``(N, L)`` archive is clustered without labels
  (no single class per image to score clusters against), with a warning naming the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from monai_cluster.data.image_io import LoadedImage, read_intensity_image, split_extension
from monai_cluster.data.listing import read_diagnosis_csv
from monai_cluster.data.medmnist import MEDMNIST_SPLITS, load_medmnist_npz, medmnist_class_ids
from monai_cluster.utils.validation import check_choice, check_positive_int
from monai_cluster.workflows.common import list_unlabeled

__all__ = ["ClusteringData", "load_clustering_data", "load_image_items"]

logger = logging.getLogger(__name__)

DEFAULT_SIZE = {2: 64, 3: 32}


@dataclass
class ClusteringData:
    """Images to cluster.

    Attributes:
        images: ``(N, C, *spatial)`` float32 in ``[0, 1]``.
        keys: ``N`` image keys (paths relative to the dataset folder, or ``"<split>/<index>"`` for an ``.npz``).
        labels: ``(N,)`` int64 class ids, or ``None``.
        class_names: names of the class ids, or ``None``.
        source: where the images came from (a folder, an ``.npz`` and split, or ``"synthetic: <folder>"``).
    """

    images: torch.Tensor
    keys: list[str]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    source: str = ""

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return self.images.ndim - 2

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Channel-first shape of one image ``(C, *spatial)``."""
        return tuple(self.images.shape[1:])


def _spatial_size(spatial_size: object, spatial_dims: int) -> tuple[int, ...]:
    if spatial_size is None:
        return (DEFAULT_SIZE[spatial_dims],) * spatial_dims
    if isinstance(spatial_size, (list, tuple)):
        if len(spatial_size) != spatial_dims:
            raise ValueError(f"spatial_size must have {spatial_dims} entries for this data, got {spatial_size!r}.")
        return tuple(check_positive_int(s, "spatial_size entry") for s in spatial_size)
    return (check_positive_int(spatial_size, "spatial_size"),) * spatial_dims


def _to_unit_range(array: np.ndarray, path: object = "") -> np.ndarray:
    """8-bit data divided by 255; anything else min-max scaled per image (CT, MRI, 16-bit); NaN/Inf refused."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"image {path}: expected integer or floating-point intensities, got dtype {array.dtype}.")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"image {path}: {bad} of {array.size} values are NaN or Inf; expected finite intensities.")
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize ``(B, C, *spatial)``: area averaging when shrinking, (tri)linear otherwise."""
    if tuple(x.shape[2:]) == size:
        return x
    if all(s <= t for s, t in zip(size, x.shape[2:])):
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear" if len(size) == 2 else "trilinear", align_corners=False)


def _read_labels(csv_path: Path, keys: list[str]) -> tuple[np.ndarray, list[str]]:
    table = read_diagnosis_csv(csv_path)
    stems = [split_extension(Path(key).name)[0] for key in keys]
    missing = [key for key, stem in zip(keys, stems) if stem not in table]
    if missing:
        raise ValueError(
            f"labels_csv {csv_path} has no row for {len(missing)} of {len(keys)} images (e.g. {missing[:3]}); "
            "every image needs an 'image_name' row (its file name without extension)."
        )
    classes = sorted({table[stem] for stem in stems})
    return np.asarray([classes.index(table[stem]) for stem in stems], dtype=np.int64), classes


def _channel_first(path: object, image: LoadedImage, channels: int) -> torch.Tensor:
    """``(channels, *spatial)`` float32 in ``[0, 1]``; a grey image repeated over ``channels``."""
    array = _to_unit_range(np.asarray(image.array), path)
    if image.channels == 1:
        array = array.reshape(image.spatial_shape)[None]
    else:
        array = np.moveaxis(array.reshape(*image.spatial_shape, image.channels), -1, 0)
    x = torch.from_numpy(np.ascontiguousarray(array)).float()
    return x.expand(channels, *x.shape[1:]) if x.shape[0] == 1 and channels > 1 else x


def load_image_items(
    items: list[dict], root: str | os.PathLike, spatial_size: object = None, labels_csv: str | os.PathLike | None = None
) -> ClusteringData:
    """Load the images (or volumes) of a listing into one tensor, with labels from a CSV when there is one.

    Args:
        items: ``{"image", "key"}`` dicts (e.g. from :func:`monai_cluster.workflows.list_unlabeled`).
        root: the dataset folder (where ``diagnosis.csv`` is looked for).
        spatial_size: size every image is resized to (int or one entry per axis); ``None``: 64 (2D) or 32 (3D).
        labels_csv: ``image_name,diagnosis`` CSV; ``None`` uses ``<root>/diagnosis.csv`` when it exists.

    Returns:
        :class:`ClusteringData` with images ``(N, C, *spatial)``: ``C`` is 1 or 3 for 2D files (by PIL mode, see the
        module docstring) and the volumes' own channel count for 3D.

    Raises:
        ValueError: for images of different spatial rank, volumes of different channel counts, an unreadable file
            or one holding NaN/Inf (named), a missing ``labels_csv`` or a CSV without a row for some image.
    """
    root = Path(root)
    loaded = [(item["image"], read_intensity_image(item["image"])) for item in items]
    dims = {image.spatial_dims for _, image in loaded}
    if len(dims) != 1:
        raise ValueError(f"dataset_dir {root} mixes 2D images and 3D volumes; cluster one kind at a time.")
    spatial_dims = dims.pop()
    size = _spatial_size(spatial_size, spatial_dims)
    if spatial_dims == 2:
        channels = 3 if any(image.channels == 3 for _, image in loaded) else 1
    else:
        first_path, first = loaded[0]
        other = next(((p, im) for p, im in loaded if im.channels != first.channels), None)
        if other is not None:
            raise ValueError(
                f"volume {other[0]} has {other[1].channels} channel(s) but {first_path} has {first.channels}; "
                "every volume of dataset_dir must have the same channels (3D, or 4D (X, Y, Z, C) with one C)."
            )
        channels = first.channels
    tensors = [_resize(_channel_first(path, image, channels)[None], size)[0] for path, image in loaded]
    keys = [item["key"] for item in items]
    labels = class_names = None
    csv_path = Path(labels_csv) if labels_csv else root / "diagnosis.csv"
    if labels_csv and not csv_path.is_file():
        raise ValueError(f"labels_csv {csv_path} does not exist.")
    if csv_path.is_file():
        labels, class_names = _read_labels(csv_path, keys)
    return ClusteringData(torch.stack(tensors).clamp_(0, 1), keys, labels, class_names, str(root))


def load_clustering_data(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    spatial_size: object = None,
    npz_split: str = "all",
    labels_csv: str | os.PathLike | None = None,
    synthetic_kind: str = "dermoscopy",
    synthetic_n: int = 48,
    synthetic_size: int = 64,
    seed: int = 0,
) -> ClusteringData:
    """The images a clustering run works on.

    Args:
        dataset_dir: a folder of 2D images or 3D volumes, a MedMNIST-format ``.npz`` file, or ``None`` (or
            ``""``) for synthetic data generated once under ``<bundle_root>/synthetic_data``.
        bundle_root: the bundle root; synthetic data is generated once under ``<bundle_root>/synthetic_data``.
        spatial_size: size images are resized to; ``None`` keeps an ``.npz``'s own size and uses 64 (2D) / 32
            (3D) for folders.
        npz_split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` for an ``.npz``.
        labels_csv: ``image_name,diagnosis`` CSV for a folder (default ``<folder>/diagnosis.csv`` if present).
        synthetic_kind: ``"dermoscopy"`` (2D, three lesion kinds with a ``diagnosis.csv``, so metrics exist) or
            ``"heart"`` (3D CT phantoms, no classes).
        synthetic_n: number of synthetic images.
        synthetic_size: size of the synthetic images.
        seed: seed of the synthetic data.

    Raises:
        ValueError: naming ``dataset_dir`` or ``npz_split`` when they are unusable.
    """
    if dataset_dir is None or str(dataset_dir) in ("", "None", "null"):
        n = check_positive_int(synthetic_n, "synthetic_n", minimum=2)
        items = list_unlabeled(None, bundle_root, kind=synthetic_kind, n=n, size=synthetic_size, seed=seed, check=False)
        folder = Path(bundle_root) / "synthetic_data"
        data = load_image_items(items, folder, spatial_size)
        data.source = f"synthetic {synthetic_kind}: {folder}"
        return data
    path = Path(dataset_dir)
    if path.is_file() and path.suffix == ".npz":
        split = check_choice(npz_split, "npz_split", [*MEDMNIST_SPLITS, "all"])
        images, labels = load_medmnist_npz(path, split)
        x = torch.from_numpy(images)
        if spatial_size is not None:
            x = _resize(x, _spatial_size(spatial_size, x.ndim - 2))
        keys = [f"{split}/{i:05d}" for i in range(len(x))]
        ids, encoding = medmnist_class_ids(labels, f"{path} {split} labels")
        if ids is None:
            logger.warning(
                "%s holds multi-label labels %s (an image may have several classes or none): its images are "
                "clustered, but without labels to score the clusters against.", path, tuple(labels.shape),
            )
            return ClusteringData(x, keys, None, None, f"{path} ({split}, {encoding} labels not used)")
        names = [str(c) for c in range(max(int(ids.max()) + 1, labels.shape[1] if labels.ndim == 2 else 0))]
        return ClusteringData(x, keys, ids, names if len(ids) else [], f"{path} ({split})")
    if not path.is_dir():
        raise ValueError(
            f"dataset_dir must be a folder of images/volumes or a MedMNIST .npz file, got {str(dataset_dir)!r}, "
            "which does not exist."
        )
    return load_image_items(list_unlabeled(path, bundle_root, check=False), path, spatial_size, labels_csv)
