"""Synthetic datasets and :func:`prepare_dataset`, the entry point bundles call for their data.

``prepare_dataset`` lists a real dataset when one is given, and otherwise generates a small synthetic one
(2D dermoscopy, 2D fundus or 3D heart CT) once into a folder, so every bundle runs out of the box.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from monai_cluster.utils.io import atomic_write_json
from monai_cluster.utils.validation import check_choice

from .image_io import split_extension
from .listing import list_image_mask_pairs, read_diagnosis_csv
from .synthetic_dermoscopy import SYNTHETIC_DERMOSCOPY_KINDS, make_synthetic_dermoscopy, parse_size
from .fundus import make_synthetic_fundus
from .synthetic_heart import HEART_LABELS, make_synthetic_heart

__all__ = [
    "HEART_LABELS",
    "SYNTHETIC_DERMOSCOPY_KINDS",
    "SYNTHETIC_MARKER",
    "make_synthetic_dermoscopy",
    "make_synthetic_heart",
    "prepare_dataset",
]

logger = logging.getLogger(__name__)

SYNTHETIC_MARKER = ".monai_cluster_synthetic.json"
"""File written last into a synthetic folder; it records what was generated (kind, n, size, seed)."""

_GENERATOR_VERSION = 1  # bump when the generators change, so cached synthetic folders are regenerated
_DEFAULTS = {"dermoscopy": {"n": 24, "size": 64}, "heart": {"n": 4, "size": 64}, "fundus": {"n": 8, "size": 64}}
_GENERATORS = {"dermoscopy": make_synthetic_dermoscopy, "heart": make_synthetic_heart, "fundus": make_synthetic_fundus}
_GENERATED = {  # folder -> names the generators write there (removed before regenerating)
    "images": re.compile(r"^(SYN\d+\.png|heart_\d+\.nii\.gz|FUNDUS\d+\.png)$"),
    "masks": re.compile(r"^(SYN\d+_lesion|FUNDUS\d+)\.png$"),
    "labels": re.compile(r"^heart_\d+\.nii\.gz$"),
}


def _attach_diagnosis(items: list[dict], csv_path: Path) -> list[dict]:
    """Add ``"diagnosis"`` from a PH2-style CSV when it covers every item; otherwise leave items as they are."""
    table = read_diagnosis_csv(csv_path)
    names = [split_extension(item["key"])[0] for item in items]
    missing = [name for name in names if name not in table]
    if missing:
        logger.warning(
            "%s has no diagnosis for %d image(s) (e.g. %s); not attaching diagnoses", csv_path, len(missing), missing[0]
        )
        return items
    return [{**item, "diagnosis": table[name]} for item, name in zip(items, names)]


def _remove_generated(folder: Path) -> None:
    (folder / SYNTHETIC_MARKER).unlink(missing_ok=True)
    (folder / "diagnosis.csv").unlink(missing_ok=True)
    for sub, pattern in _GENERATED.items():
        if (folder / sub).is_dir():
            for path in (folder / sub).iterdir():
                if pattern.match(path.name):
                    path.unlink()


def _synthetic_listing(folder: Path, kind: str) -> list[dict]:
    if kind == "heart":
        return list_image_mask_pairs(folder, layout="same_stem", image_dir="images", mask_dir="labels")
    if kind == "fundus":
        return list_image_mask_pairs(folder, layout="same_stem", image_dir="images", mask_dir="masks")
    return _attach_diagnosis(list_image_mask_pairs(folder, layout="ph2"), folder / "diagnosis.csv")


def prepare_dataset(
    dataset_dir: str | os.PathLike | None = None,
    synthetic_dir: str | os.PathLike | None = None,
    kind: str = "dermoscopy",
    n: int | None = None,
    size: int | tuple[int, ...] | None = None,
    seed: int = 0,
    layout: str = "auto",
) -> list[dict]:
    """Return the listing a bundle trains on: a real dataset when given, else a synthetic one generated once.

    With ``dataset_dir``, its image/mask pairs are listed (:func:`list_image_mask_pairs`); a
    ``diagnosis.csv`` (``image_name,diagnosis``) in it that covers every image adds ``"diagnosis"`` to the
    items. Without it, a synthetic set of ``kind`` is generated into ``synthetic_dir`` unless the marker
    file :data:`SYNTHETIC_MARKER` there records the same kind, ``n``, ``size`` and ``seed`` and the files
    are all present; a mismatch or a missing marker regenerates (the marker is written last, so an
    interrupted generation is redone).

    Args:
        dataset_dir: a real dataset folder, or ``None`` (or ``""``) for synthetic data.
        synthetic_dir: where synthetic data is generated; required when ``dataset_dir`` is ``None``.
        kind: ``"dermoscopy"`` (2D RGB lesions, :func:`make_synthetic_dermoscopy`), ``"heart"``
            (3D CT, :func:`make_synthetic_heart`) or ``"fundus"`` (2D RGB with vessel masks,
            :func:`~monai_cluster.data.make_synthetic_fundus`).
        n: number of synthetic samples (default 24 dermoscopy, 4 heart, 8 fundus).
        size: synthetic image size, int or tuple (default 64).
        seed: synthetic generation seed.
        layout: layout of ``dataset_dir`` (``"auto"`` detects it).

    Returns:
        ``{"image", "label", "key"}`` dicts (plus ``"diagnosis"`` for dermoscopy), sorted by key.
    """
    kind = check_choice(kind, "kind", list(_DEFAULTS))
    if dataset_dir is not None and str(dataset_dir) != "":
        items = list_image_mask_pairs(dataset_dir, layout=layout)
        csv_path = Path(dataset_dir) / "diagnosis.csv"
        return _attach_diagnosis(items, csv_path) if csv_path.is_file() else items
    if synthetic_dir is None or str(synthetic_dir) == "":
        raise ValueError("synthetic_dir must name a folder to generate synthetic data into when dataset_dir is None.")
    folder = Path(os.path.abspath(synthetic_dir))
    n = _DEFAULTS[kind]["n"] if n is None else n
    size = parse_size(_DEFAULTS[kind]["size"] if size is None else size, "size", 3 if kind == "heart" else 2, 16)
    wanted = {"kind": kind, "n": n, "size": list(size), "seed": seed, "generator_version": _GENERATOR_VERSION}

    marker = folder / SYNTHETIC_MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            recorded = None
        if recorded == wanted:
            try:
                items = _synthetic_listing(folder, kind)
            except ValueError as err:
                logger.warning("synthetic data in %s is incomplete (%s); regenerating", folder, err)
            else:
                if len(items) == n:
                    return items
                logger.warning("synthetic data in %s has %d of %d samples; regenerating", folder, len(items), n)
        else:
            logger.info("synthetic data in %s was made with %s; regenerating for %s", folder, recorded, wanted)
    _remove_generated(folder)
    _GENERATORS[kind](folder, n=n, size=size, seed=seed)
    atomic_write_json(wanted, marker)
    return _synthetic_listing(folder, kind)
