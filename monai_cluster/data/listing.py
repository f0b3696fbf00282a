"""Listings of datasets on disk as MONAI-style ``list[dict]`` (contract 1 of ``docs/ARCHITECTURE.md``).

Labelled pairs become ``{"image", "label", "key"}`` and unlabeled images ``{"image", "key"}``, with
absolute paths and ``key`` the image path relative to the dataset root (POSIX separators), which is what
pseudo-class tables are indexed by. Listings are sorted by key and skip hidden files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from monai_cluster.utils.validation import check_choice

from .image_io import IMAGE_EXTENSIONS, split_extension

__all__ = ["LAYOUTS", "list_image_mask_pairs", "list_images", "read_diagnosis_csv"]

logger = logging.getLogger(__name__)

LAYOUTS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    # layout: ((image folder, mask folder) pairs tried in order, mask stem suffixes tried in order)
    "ph2": ((("images", "masks"),), ("_lesion",)),
    "isic": ((("images", "masks"),), ("_segmentation", "")),
    "same_stem": ((("images", "masks"), ("images", "labels")), ("",)),
    "msd": ((("imagesTr", "labelsTr"),), ("",)),
}
"""Known layouts: which folders hold images and masks, and how a mask's stem derives from its image's."""

_MAX_NAMED = 10
_ANY_SUFFIX = ("_lesion", "_segmentation", "")


def _name_files(paths: Sequence[str]) -> str:
    """``a, b, c`` for up to ten names, else the first ten and how many more."""
    shown = ", ".join(paths[:_MAX_NAMED])
    if len(paths) > _MAX_NAMED:
        shown += f" ... and {len(paths) - _MAX_NAMED} more"
    return shown


def _image_files(folder: Path, what: str) -> list[Path]:
    """Non-hidden files with an image extension directly in ``folder``; raises when there are none."""
    if not folder.is_dir():
        raise ValueError(f"{what} folder {folder} does not exist or is not a folder.")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and split_extension(p.name)[1]
    )
    if not files:
        raise ValueError(f"{what} folder {folder} holds no image files (extensions {list(IMAGE_EXTENSIONS)}).")
    return files


def _resolve_folder(root: Path, folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder if folder.is_absolute() else root / folder


def _detect_layout(root: Path) -> tuple[str, Path, Path]:
    """Find the layout under ``root``: its name and its image and mask folders."""
    for images, masks in (("imagesTr", "labelsTr"), ("images", "masks"), ("images", "labels")):
        if (root / images).is_dir() and (root / masks).is_dir():
            if images == "imagesTr":
                return "msd", root / images, root / masks
            stems = [split_extension(p.name)[0] for p in (root / masks).iterdir() if not p.name.startswith(".")]
            if any(s.endswith("_lesion") for s in stems):
                return "ph2", root / images, root / masks
            if any(s.endswith("_segmentation") for s in stems):
                return "isic", root / images, root / masks
            return "same_stem", root / images, root / masks
    raise ValueError(
        f"no known dataset layout under {root}: looked for imagesTr/ + labelsTr/ (msd), images/ + masks/ "
        "(ph2 'X_lesion' masks, isic 'X_segmentation' or 'X' masks, same_stem) and images/ + labels/ (same_stem). "
        "Pass layout=..., or image_dir= and mask_dir=."
    )


def list_image_mask_pairs(
    root: str | os.PathLike,
    layout: str = "auto",
    image_dir: str | os.PathLike | None = None,
    mask_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """List the image/mask pairs of a dataset folder.

    Layouts (:data:`LAYOUTS`): ``"ph2"`` (``images/IMD002.png`` + ``masks/IMD002_lesion.png``), ``"isic"``
    (``images/ISIC_x.jpg`` + ``masks/ISIC_x_segmentation.png`` or ``masks/ISIC_x.png``), ``"same_stem"``
    (``images/`` + ``masks/`` or ``labels/``, 2D files or volumes with matching stems, ``.nii.gz``
    included) and ``"msd"`` (``imagesTr/`` + ``labelsTr/``). ``"auto"`` picks one from the folders and the
    mask names. A mask may have another extension than its image (``.jpg`` image, ``.png`` mask).

    Args:
        root: the dataset folder; keys are image paths relative to it.
        layout: ``"auto"`` or one of :data:`LAYOUTS`.
        image_dir: image folder (relative to ``root`` or absolute), overriding the layout's. With
            ``layout="auto"``, giving ``image_dir`` or ``mask_dir`` skips detection: the other folder defaults
            to ``images/`` and ``masks/`` (or ``labels/``), and masks may be named like any known layout.
        mask_dir: mask folder (relative to ``root`` or absolute), overriding the layout's.

    Returns:
        ``{"image", "label", "key"}`` dicts with absolute paths, sorted by key.

    Raises:
        ValueError: when ``root`` or a folder is missing or empty, no layout fits (the message lists what
            was looked for), some images have no mask or some masks no image, or one mask pairs with several
            images (the files are named).
    """
    layout = check_choice(layout, "layout", ["auto", *LAYOUTS])
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise ValueError(f"root {root} does not exist or is not a folder.")
    if layout == "auto" and image_dir is None and mask_dir is None:
        layout, images_path, masks_path = _detect_layout(root)
        suffixes = LAYOUTS[layout][1]
    elif layout == "auto":  # folders given: accept every known mask naming
        suffixes = _ANY_SUFFIX
        images_path = root / "images"
        masks_path = root / "masks" if (root / "masks").is_dir() or not (root / "labels").is_dir() else root / "labels"
    else:
        folders, suffixes = LAYOUTS[layout]
        images_path, masks_path = root / folders[0][0], root / folders[0][1]
        for images, masks in folders:
            if (root / images).is_dir() and (root / masks).is_dir():
                images_path, masks_path = root / images, root / masks
                break
    if image_dir is not None:
        images_path = _resolve_folder(root, image_dir)
    if mask_dir is not None:
        masks_path = _resolve_folder(root, mask_dir)

    image_files = _image_files(images_path, "image")
    masks_by_stem: dict[str, list[Path]] = {}
    for mask in _image_files(masks_path, "mask"):
        masks_by_stem.setdefault(split_extension(mask.name)[0], []).append(mask)

    items, unpaired_images, used = [], [], set()
    for image in image_files:
        stem = split_extension(image.name)[0]
        candidates = [masks_by_stem[stem + s] for s in suffixes if stem + s in masks_by_stem]
        if not candidates:
            unpaired_images.append(image.name)
            continue
        if len(candidates[0]) > 1:
            names = [p.name for p in candidates[0]]
            raise ValueError(f"image {image} matches several masks in {masks_path}: {names}; keep one.")
        mask = candidates[0][0]
        if mask in used:  # e.g. IMD001.png and IMD001.jpg: the same case twice, which could leak across splits
            others = [Path(item["image"]).name for item in items if item["label"] == str(mask)]
            raise ValueError(
                f"mask {mask} pairs with several images in {images_path}: {[*others, image.name]}; keep one of them."
            )
        used.add(mask)
        key = Path(os.path.relpath(image, root)).as_posix()
        items.append({"image": str(image), "label": str(mask), "key": key})
    unpaired_masks = sorted(p.name for group in masks_by_stem.values() for p in group if p not in used)
    if unpaired_images or unpaired_masks:
        problems = []
        if unpaired_images:
            problems.append(
                f"{len(unpaired_images)} image(s) in {images_path} without a mask: {_name_files(unpaired_images)}"
            )
        if unpaired_masks:
            problems.append(
                f"{len(unpaired_masks)} mask(s) in {masks_path} without an image: {_name_files(unpaired_masks)}"
            )
        hint = f" (layout {layout!r}: a mask's name is the image's stem + one of {list(suffixes)})"
        raise ValueError("; ".join(problems) + hint + ".")
    logger.debug("listed %d pairs under %s (layout %s)", len(items), root, layout)
    return sorted(items, key=lambda item: item["key"])


def list_images(
    root: str | os.PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    recursive: bool = True,
) -> list[dict]:
    """List unlabeled images under ``root``.

    Args:
        root: the folder; keys are image paths relative to it.
        extensions: file extensions to keep, matched case-insensitively (``.nii.gz`` works).
        recursive: descend into sub-folders (hidden folders are skipped).

    Returns:
        ``{"image", "key"}`` dicts with absolute paths, sorted by key.

    Raises:
        ValueError: when ``root`` is missing, ``extensions`` is empty, or no image is found.
    """
    if isinstance(extensions, str):
        extensions = (extensions,)
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
    if not extensions:
        raise ValueError("extensions must name at least one file extension, got an empty sequence.")
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise ValueError(f"root {root} does not exist or is not a folder.")
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if recursive else []
        for name in files:
            if not name.startswith(".") and split_extension(name, extensions)[1]:
                found.append(Path(folder) / name)
    if not found:
        where = "under" if recursive else "directly in"
        raise ValueError(f"no image files {where} {root} with extensions {list(extensions)}.")
    items = [{"image": str(p), "key": Path(os.path.relpath(p, root)).as_posix()} for p in found]
    return sorted(items, key=lambda item: item["key"])


def read_diagnosis_csv(path: str | os.PathLike) -> dict[str, str]:
    """Read a PH2-style ``image_name,diagnosis`` CSV into ``{image_name: diagnosis}``.

    Raises:
        ValueError: when the header is not ``image_name,diagnosis`` or a name appears twice.
    """
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or [c.strip() for c in rows[0][:2]] != ["image_name", "diagnosis"]:
        got = rows[0] if rows else "an empty file"
        raise ValueError(f"{path}: expected the header 'image_name,diagnosis', got {got}.")
    table: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2:
            raise ValueError(f"{path}, line {line}: expected 'image_name,diagnosis', got {row}.")
        name = row[0].strip()
        if name in table:
            raise ValueError(f"{path}, line {line}: image_name {name!r} appears twice.")
        table[name] = row[1].strip()
    return table
