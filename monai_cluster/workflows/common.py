"""Helpers every bundle shares: data resolution, option checks, device, seeding, checkpoints and resume.

The bundles' configs stay declarative and call these:

- :func:`resolve_dataset` / :func:`list_unlabeled`: a real folder or a synthetic set generated once under
  ``<bundle_root>/synthetic_data``, optionally checked file by file (:func:`monai_cluster.data.check_dataset`)
  before any training.
- :func:`validate_options`: command-line overrides (``--epochs abc``, ``--learning_rate -1``) fail with the
  option's name and what was expected, before anything is built.
- re-exported for the configs: :func:`resolve_device`, :func:`seed_everything` (from :mod:`monai_cluster.utils`),
  :func:`is_main_process`, :func:`barrier`, and :func:`save_checkpoint`, :func:`load_checkpoint`,
  :func:`find_last_checkpoint` and the ignite handler :class:`TrainingCheckpointer` (from
  :mod:`monai_cluster.handlers.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_cluster.data import check_dataset, list_images, prepare_dataset
from monai_cluster.handlers.checkpoint import (
    CHECKPOINT_FORMAT,
    TrainingCheckpointer,
    checkpoint_path,
    find_last_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from monai_cluster.utils.device import resolve_device
from monai_cluster.utils.distributed import barrier, is_main_process
from monai_cluster.utils.seeding import seed_everything

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainingCheckpointer",
    "barrier",
    "checkpoint_path",
    "find_last_checkpoint",
    "images_outside_mask_folders",
    "is_main_process",
    "list_checkpoints",
    "list_unlabeled",
    "load_checkpoint",
    "resolve_dataset",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "validate_option",
    "validate_options",
]

logger = logging.getLogger(__name__)

_MASK_FOLDERS = frozenset({"masks", "labels", "labelsTr", "labelsTs"})
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


# ----------------------------------------------------------------------------------------------------------- data


def resolve_dataset(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    kind: str = "dermoscopy",
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    layout: str = "auto",
    check: bool = True,
    num_classes: int | None = None,
    channels: int | None = None,
    spatial_dims: int | None = None,
) -> list[dict]:
    """Image/mask pairs of ``dataset_dir``, or of a synthetic set generated once under ``<bundle_root>/synthetic_data``.

    Args:
        dataset_dir: a real dataset folder (see :func:`monai_cluster.data.list_image_mask_pairs`), or
            ``None``/``""`` for synthetic data.
        bundle_root: the bundle root; synthetic data goes to its ``synthetic_data`` folder.
        kind: synthetic kind, ``"dermoscopy"`` (2D RGB) or ``"heart"`` (3D CT).
        n: number of synthetic samples (``None``: the generator's default).
        size: synthetic image size.
        seed: synthetic generation seed.
        layout: layout of ``dataset_dir``.
        check: decode every file first (:func:`monai_cluster.data.check_dataset`) so that a bad file stops
            the run, named, before training.
        num_classes: label range checked when ``check``.
        channels: image channel count checked when ``check``.
        spatial_dims: spatial rank checked when ``check``.

    Returns:
        ``{"image", "label", "key"}`` dicts sorted by key.
    """
    items = prepare_dataset(
        dataset_dir=dataset_dir or None,
        synthetic_dir=Path(bundle_root) / "synthetic_data",
        kind=kind,
        n=n,
        size=size,
        seed=seed,
        layout=layout,
    )
    if check:
        check_dataset(items, num_classes=num_classes, channels=channels, spatial_dims=spatial_dims)
    return items


def images_outside_mask_folders(root: str | os.PathLike) -> list[dict]:
    """``{"image", "key"}`` for every image under ``root`` (recursively) except those in mask folders
    (``masks/``, ``labels/``, ``labelsTr/``, ``labelsTs/``); may be empty."""
    return [
        {"image": it["image"], "key": it["key"]}
        for it in list_images(root)
        if not _MASK_FOLDERS.intersection(Path(it["key"]).parts[:-1])
    ]


def list_unlabeled(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    kind: str = "dermoscopy",
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    check: bool = True,
    channels: int | None = None,
    spatial_dims: int | None = None,
) -> list[dict]:
    """Every image of a dataset, without masks, as ``{"image", "key"}`` (keys relative to the dataset root).

    A real ``dataset_dir`` is searched recursively; files in mask folders (``masks/``, ``labels/``,
    ``labelsTr/``, ``labelsTs/``) are left out, so a PH2 folder gives ``images/`` and ``unlabeled/`` images.
    Without ``dataset_dir`` the synthetic set of :func:`resolve_dataset` is generated and its images listed.

    Raises:
        ValueError: when no image is left, or (with ``check``) when a file is unreadable, non-finite or has the
            wrong channel count or rank (the file is named).
    """
    if dataset_dir is None or str(dataset_dir) == "":
        pairs = resolve_dataset(None, bundle_root, kind=kind, n=n, size=size, seed=seed, check=False)
        items = [{"image": p["image"], "key": p["key"]} for p in pairs]
    else:
        root = Path(os.path.abspath(dataset_dir))
        items = images_outside_mask_folders(root)
        if not items:
            raise ValueError(
                f"dataset_dir {root} holds no images outside its mask folders {sorted(_MASK_FOLDERS)}."
            )
    if check:
        check_dataset(items, channels=channels, spatial_dims=spatial_dims)
    return items


# -------------------------------------------------------------------------------------------------------- options

_SPEC_RE = re.compile(r"^(int|float|bool|str|path|ints|floats|choice)(\?)?(?:(>=|>)(-?[\d.]+))?(?::(.+))?$")


def _fail(name: str, expected: str, value: object, exc: type[Exception]) -> Exception:
    return exc(f"option {name!r} (--{name}) must be {expected}, got {type(value).__name__} {value!r}.")


def _number(value: object, name: str, kind: str, op: str | None, bound: float | None) -> int | float:
    is_int = kind == "int"
    expected = "an integer" if is_int else "a finite number"
    if op:
        expected += f" {op} {int(bound) if is_int else bound}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, expected, value, TypeError)
    if is_int and not isinstance(value, numbers.Integral):
        if float(value).is_integer():
            value = int(value)
        else:
            raise _fail(name, expected, value, TypeError)
    value = int(value) if is_int else float(value)
    if not math.isfinite(value) or (op == ">=" and value < bound) or (op == ">" and value <= bound):
        raise _fail(name, expected, value, ValueError)
    return value


def validate_option(name: str, value: object, spec: str) -> Any:
    """Check one option against a spec and return it normalised.

    Specs: ``"int"``, ``"int>=1"``, ``"float>0"``, ``"float>=0"`` (numbers, optionally bounded), ``"bool"``
    (also ``"true"``/``"false"``/``"yes"``/``"no"``/``"1"``/``"0"`` strings, as shells pass them), ``"str"``,
    ``"path"`` (a non-empty string or path), ``"ints>=1"`` / ``"floats>0"`` (a non-empty list of bounded
    numbers; a single number is accepted as a one-item list), ``"choice:a|b|c"``. A trailing ``?`` after the
    kind (``"path?"``, ``"int?>=1"``) also accepts ``None`` (and ``""`` for paths).

    Raises:
        TypeError: a value of the wrong type, e.g. ``--epochs abc``, naming the option and what was expected.
        ValueError: a value out of range or not among the choices, e.g. ``--learning_rate -1``; or a bad spec.
    """
    match = _SPEC_RE.match(spec)
    if match is None:
        raise ValueError(f"spec for option {name!r} is not understood: {spec!r}.")
    kind, optional, op, bound, choices = match.groups()
    bound_value = None if bound is None else float(bound)
    if optional and (value is None or (kind == "path" and value == "")):
        return None
    if kind in ("int", "float"):
        return _number(value, name, kind, op, bound_value)
    if kind in ("ints", "floats"):
        values = [value] if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence) or not values:
            expected = f"a non-empty list of {'integers' if kind == 'ints' else 'numbers'}"
            raise _fail(name, expected + (f" {op} {bound}" if op else ""), value, TypeError)
        return [_number(v, f"{name}[{i}]", kind[:-1], op, bound_value) for i, v in enumerate(values)]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _fail(name, "a boolean (true or false)", value, TypeError)
    if kind == "choice":
        options = (choices or "").split("|")
        if value not in options:
            raise _fail(name, f"one of {options}", value, ValueError)
        return value
    if kind == "path":
        if not isinstance(value, (str, os.PathLike)) or str(value) == "":
            raise _fail(name, "a non-empty path", value, TypeError)
        return str(value)
    if not isinstance(value, str):
        raise _fail(name, "a string", value, TypeError)
    return value


def validate_options(options: Mapping[str, Any], specs: Mapping[str, str]) -> dict[str, Any]:
    """Check every entry of ``options`` against ``specs`` (see :func:`validate_option`) and return them normalised.

    Call it first in a bundle's ``run`` (or ``initialize``) chain, so that a bad override fails before any file is
    written or any network built. Every option must have a spec and every spec an option.

    Raises:
        TypeError/ValueError: for the first bad option, naming it (``option 'epochs' (--epochs) must be an
            integer >= 1, got str 'abc'``).
    """
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict of option values, got {type(options).__name__}.")
    unknown = sorted(set(options) - set(specs))
    missing = sorted(set(specs) - set(options))
    if unknown or missing:
        raise ValueError(f"options and specs must name the same keys: no spec for {unknown}, no value for {missing}.")
    checked = {name: validate_option(name, options[name], specs[name]) for name in specs}
    logger.debug("options checked: %s", checked)
    return checked


# ------------------------------------------------------------------------------------------ device, seed, ranks
# One device resolver, one seeding helper and the rank helpers live in ``monai_cluster.utils``; the checkpoint
# handler in ``monai_cluster.handlers``. They are re-exported here, where the bundle configs have always found them.
