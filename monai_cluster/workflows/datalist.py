"""MONAI datalists (decathlon-style JSON) as the bundles' fixed splits.

A datalist names the samples of each part of a fixed split, as MONAI's
:func:`monai.data.load_decathlon_datalist` reads it::

    {"training": [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz"}, ...],
     "validation": [{"image": "images/b.nii.gz", "label": "labels/b.nii.gz"}, ...]}

The fine-tune bundles' ``datalist`` option trains on (a labeled subset of) ``"training"`` and validates and
evaluates on ``"validation"``; the pretraining bundle's ``datalist`` option pretrains on the images of
``"training"`` only, so a held-out test set stays out of pretraining too. Relative paths are resolved against
``dataset_dir`` when it is given, else against the datalist's own folder; keys are the image paths relative to
that base, as :func:`monai_cluster.data.list_image_mask_pairs` gives them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["load_datalist"]


def _resolve(value: object, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty path string, got {type(value).__name__} {value!r}.")
    path = Path(value)
    return path if path.is_absolute() else base / path


def load_datalist(
    datalist: str | os.PathLike,
    section: str = "training",
    dataset_dir: str | os.PathLike | None = None,
    require_label: bool = True,
) -> list[dict]:
    """The samples of one section of a datalist file, checked, as ``{"image", "label", "key"}`` dicts.

    Args:
        datalist: the JSON file (an object whose ``section`` entry is a list of ``{"image", "label"}`` dicts).
        section: the list to read, e.g. ``"training"`` or ``"validation"``.
        dataset_dir: base folder of relative paths (default: the datalist's folder).
        require_label: every entry must name a ``label`` (segmentation); ``False`` keeps labels when present
            (pretraining reads only the images).

    Returns:
        the samples sorted by key, with absolute paths; ``key`` is the image path relative to the base folder
        (the absolute path for an image outside it).

    Raises:
        ValueError: the file is missing or not such a JSON object, the section is missing or empty, an entry
            lacks ``image`` (or ``label``), a named file does not exist, or two entries share an image
            (the file, the section and the entry are named).
        TypeError: ``section`` is not a string.
    """
    if not isinstance(section, str):
        raise TypeError(f"section must be a string, got {type(section).__name__} {section!r}.")
    path = Path(os.path.abspath(datalist))
    if not path.is_file():
        raise ValueError(f"datalist {path} does not exist or is not a file.")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"datalist {path} is not readable JSON: {err}.") from err
    if not isinstance(content, dict):
        raise ValueError(
            f"datalist {path} must hold a JSON object with a {section!r} list, got {type(content).__name__}."
        )
    entries = content.get(section)
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            f"datalist {path} must have a non-empty list {section!r}, got {type(entries).__name__} "
            f"(sections: {sorted(content)})."
        )
    base = Path(os.path.abspath(dataset_dir)) if dataset_dir not in (None, "") else path.parent
    items, seen = [], {}
    for index, entry in enumerate(entries):
        where = f"datalist {path} {section}[{index}]"
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"{where} must be a dict with an 'image' path, got {entry!r}.")
        if require_label and entry.get("label") in (None, ""):
            raise ValueError(f"{where} has no 'label': a segmentation datalist names a mask for every image.")
        item = {"image": str(_resolve(entry["image"], base, f"{where}['image']"))}
        if entry.get("label") not in (None, ""):
            item["label"] = str(_resolve(entry["label"], base, f"{where}['label']"))
        for name in ("image", "label"):
            if name in item and not os.path.isfile(item[name]):
                raise ValueError(f"{where}: {name} {item[name]} does not exist.")
        image = Path(item["image"])
        key = image.relative_to(base).as_posix() if image.is_relative_to(base) else image.as_posix()
        if key in seen:
            raise ValueError(f"{where} repeats the image {key!r} of entry {seen[key]}.")
        seen[key] = index
        items.append({**item, "key": key})
    return sorted(items, key=lambda item: item["key"])
