"""Datasets on disk: listings of real layouts, synthetic 2D/3D generators and checks before training.

- :func:`list_image_mask_pairs` / :func:`list_images`: PH2, ISIC, same-stem and MSD layouts as
  MONAI-style ``list[dict]`` with absolute paths and ``key`` relative to the dataset root.
- :func:`check_dataset`: decode every file once and check shapes, channels and label values.
- :func:`make_synthetic_dermoscopy` / :func:`make_synthetic_heart`: small synthetic sets (2D lesions of
  three kinds, 3D CT phantoms with the seven MM-WHS structures) that run every bundle without real data.
- :func:`prepare_dataset`: what bundles call; lists a real folder or generates the synthetic set once.
"""

from .check import check_dataset
from .fundus import list_fundus_pairs, make_synthetic_fundus
from .image_io import (
    IMAGE_EXTENSIONS,
    INTENSITY_MODES,
    LoadedImage,
    read_image,
    read_intensity_image,
    split_extension,
    write_nifti,
    write_png,
)
from .listing import LAYOUTS, list_image_mask_pairs, list_images, read_diagnosis_csv
from .medmnist import MEDMNIST_SPLITS, load_medmnist_npz, medmnist_class_ids
from .synthetic import SYNTHETIC_MARKER, prepare_dataset
from .synthetic_dermoscopy import SYNTHETIC_DERMOSCOPY_KINDS, make_synthetic_dermoscopy, render_dermoscopy
from .synthetic_heart import HEART_LABELS, make_synthetic_heart, render_heart

__all__ = [
    "HEART_LABELS",
    "IMAGE_EXTENSIONS",
    "INTENSITY_MODES",
    "LAYOUTS",
    "LoadedImage",
    "MEDMNIST_SPLITS",
    "SYNTHETIC_DERMOSCOPY_KINDS",
    "SYNTHETIC_MARKER",
    "check_dataset",
    "list_fundus_pairs",
    "list_image_mask_pairs",
    "list_images",
    "load_medmnist_npz",
    "make_synthetic_dermoscopy",
    "make_synthetic_fundus",
    "make_synthetic_heart",
    "medmnist_class_ids",
    "prepare_dataset",
    "read_diagnosis_csv",
    "read_image",
    "read_intensity_image",
    "render_dermoscopy",
    "render_heart",
    "split_extension",
    "write_nifti",
    "write_png",
]
