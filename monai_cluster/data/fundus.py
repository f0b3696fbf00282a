"""Retinal fundus data: listings of the DRIVE and CHASE_DB1 layouts, and a synthetic fundus generator.

Real layouts (as distributed, see ``../shared/data/README.md``):

- **DRIVE**: ``training/images/21_training.tif`` with ``training/1st_manual/21_manual1.gif`` (vessels) and
  ``training/mask/21_training_mask.gif`` (field of view); ``testing/images/01_test.tif`` with
  ``testing/1st_manual/01_manual1.gif``, ``testing/2nd_manual/01_manual2.gif`` (second observer, 0/1 values)
  and ``testing/mask/01_test_mask.gif``. 20 training + 20 test images.
- **CHASE_DB1**: ``Image_01L.jpg`` with ``Image_01L_1stHO.png`` and ``Image_01L_2ndHO.png`` (two observers)
  in one folder; 28 images of 14 children, no official split. ``split="train"`` is the common convention of
  the first 20 images (children 1-10), ``split="test"`` the last 8 (children 11-14).

:func:`make_synthetic_fundus` writes small fundus-like RGB images (dark surround, orange-red retina with
vignetting, a bright optic disc, a darker macula and a branching vessel tree) with their vessel masks, so
pipelines and tests run without the real data.

References:
    - [0] DRIVE, Staal et al., IEEE TMI 2004, https://doi.org/10.1109/TMI.2004.825627
    - [1] CHASE_DB1, Fraz et al., IEEE TBME 2012, https://doi.org/10.1109/TBME.2012.2205687
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from monai_cluster.utils.validation import check_choice, check_positive_int

from .image_io import split_extension, write_png
from .synthetic_dermoscopy import parse_size

__all__ = ["FUNDUS_DATASETS", "FUNDUS_SPLITS", "list_fundus_pairs", "make_synthetic_fundus", "render_fundus"]

logger = logging.getLogger(__name__)

FUNDUS_DATASETS = ("auto", "drive", "chase_db1")
FUNDUS_SPLITS = ("all", "train", "test")
_DRIVE_SPLITS = {"train": ("training",), "test": ("testing",), "all": ("training", "testing")}
_CHASE_NAME = re.compile(r"^Image_(\d+)([LR])$")
_CHASE_TRAIN_CHILDREN = 10


def _files(folder: Path, what: str) -> dict[str, Path]:
    """Non-hidden image files in ``folder`` by stem; raises naming the folder when it is missing or empty."""
    if not folder.is_dir():
        raise ValueError(f"{what} folder {folder} does not exist or is not a folder.")
    found = {}
    for path in sorted(folder.iterdir()):
        stem, ext = split_extension(path.name)
        if path.is_file() and ext and not path.name.startswith("."):
            found[stem] = path
    if not found:
        raise ValueError(f"{what} folder {folder} holds no image files.")
    return found


def _unpaired_error(what: str, names: list[str], where: Path) -> ValueError:
    shown = ", ".join(sorted(names)[:10]) + (f" ... and {len(names) - 10} more" if len(names) > 10 else "")
    return ValueError(f"{len(names)} {what} in {where}: {shown}.")


def _key(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _list_drive(root: Path, split: str, observer: int) -> list[dict]:
    items = []
    for sub in _DRIVE_SPLITS[split]:
        images = _files(root / sub / "images", f"DRIVE {sub} image")
        manual_dir = root / sub / f"{'1st' if observer == 1 else '2nd'}_manual"
        if observer == 2 and not manual_dir.is_dir():
            raise ValueError(
                f"observer=2 needs {manual_dir} (DRIVE has a second observer for the test images only); "
                "use split='test' or observer=1."
            )
        labels = _files(manual_dir, f"DRIVE {sub} manual")
        fov_dir = root / sub / "mask"
        fovs = _files(fov_dir, f"DRIVE {sub} field-of-view mask") if fov_dir.is_dir() else {}
        used = set()
        missing = []
        for stem, image in images.items():
            number = stem.split("_")[0]
            label = labels.get(f"{number}_manual{observer}")
            if label is None:
                missing.append(image.name)
                continue
            used.add(label)
            item = {"image": str(image), "label": str(label), "key": _key(image, root)}
            if fovs:
                fov = fovs.get(f"{stem}_mask")
                if fov is None:
                    raise ValueError(f"DRIVE image {image.name} has no field-of-view mask {stem}_mask.* in {fov_dir}.")
                item["fov"] = str(fov)
            items.append(item)
        if missing:
            raise _unpaired_error(f"image(s) without a manual '<number>_manual{observer}' mask", missing, manual_dir)
        extra = [p.name for p in labels.values() if p not in used]
        if extra:
            raise _unpaired_error("manual mask(s) without an image", extra, root / sub / "images")
    return items


def _chase_split(stem: str, split: str) -> bool:
    match = _CHASE_NAME.match(stem)
    if match is None:
        raise ValueError(f"CHASE_DB1 image name {stem!r} does not follow 'Image_<child><L|R>'.")
    child = int(match.group(1))
    return split == "all" or (split == "train") == (child <= _CHASE_TRAIN_CHILDREN)


def _list_chase(root: Path, split: str, observer: int) -> list[dict]:
    files = _files(root, "CHASE_DB1")
    suffix = f"_{'1st' if observer == 1 else '2nd'}HO"
    labels = {stem: path for stem, path in files.items() if stem.endswith(suffix)}
    others = ("_1stHO", "_2ndHO")
    images = {stem: path for stem, path in files.items() if not stem.endswith(others)}
    if not images:
        raise ValueError(f"CHASE_DB1 folder {root} holds no images 'Image_XXy.jpg' (only masks).")
    missing = [p.name for stem, p in images.items() if f"{stem}{suffix}" not in labels]
    if missing:
        raise _unpaired_error(f"image(s) without a '{suffix}' mask", missing, root)
    extra = [p.name for stem, p in labels.items() if stem[: -len(suffix)] not in images]
    if extra:
        raise _unpaired_error("mask(s) without an image", extra, root)
    return [
        {"image": str(path), "label": str(labels[f"{stem}{suffix}"]), "key": _key(path, root)}
        for stem, path in images.items()
        if _chase_split(stem, split)
    ]


def _detect(root: Path) -> str:
    if (root / "training").is_dir() or (root / "testing").is_dir():
        return "drive"
    if any(p.name.endswith(("_1stHO.png", "_1stHO.PNG")) for p in root.iterdir()):
        return "chase_db1"
    raise ValueError(
        f"no fundus layout found under {root}: looked for DRIVE (training/ or testing/ with images/, 1st_manual/, "
        "mask/) and CHASE_DB1 (Image_XXy.jpg + Image_XXy_1stHO.png). Pass the dataset folder itself, e.g. "
        ".../retina/drive, or dataset=..."
    )


def list_fundus_pairs(
    root: str | os.PathLike, dataset: str = "auto", split: str = "all", observer: int = 1
) -> list[dict]:
    """List the fundus images of DRIVE or CHASE_DB1 with their manual vessel masks.

    Args:
        root: the dataset folder (``.../retina/drive`` or ``.../retina/chase_db1``); keys are relative to it.
        dataset: ``"drive"``, ``"chase_db1"`` or ``"auto"`` (DRIVE when ``training/`` or ``testing/`` exists,
            CHASE_DB1 when ``*_1stHO.png`` masks lie in ``root``).
        split: ``"train"``, ``"test"`` or ``"all"`` (DRIVE: its ``training``/``testing`` folders; CHASE_DB1:
            children 1-10 / 11-14, see the module docstring).
        observer: 1 (first observer, the usual ground truth) or 2 (DRIVE test set and CHASE_DB1 only).

    Returns:
        ``{"image", "label", "key"}`` dicts with absolute paths, sorted by key; DRIVE items also have ``"fov"``,
        the field-of-view mask.

    Raises:
        ValueError: when ``root`` or an expected folder is missing or empty, no layout fits, or an image has
            no mask or a mask no image (the files are named).
    """
    dataset = check_choice(dataset, "dataset", FUNDUS_DATASETS)
    split = check_choice(split, "split", FUNDUS_SPLITS)
    if isinstance(observer, bool) or observer not in (1, 2):
        raise ValueError(f"observer must be 1 or 2, got {observer!r}.")
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise ValueError(f"root {root} does not exist or is not a folder.")
    if dataset == "auto":
        dataset = _detect(root)
    items = _list_drive(root, split, observer) if dataset == "drive" else _list_chase(root, split, observer)
    if not items:
        raise ValueError(f"no {dataset} images in split {split!r} under {root}.")
    logger.debug("listed %d %s pairs (split %s) under %s", len(items), dataset, split, root)
    return sorted(items, key=lambda item: item["key"])


def _stamp(canvas: np.ndarray, y: float, x: float, radius: float) -> None:
    """Draw an anti-aliased disc into ``canvas`` (maximum with what is there)."""
    h, w = canvas.shape
    r = radius + 1.0
    y0, y1 = max(int(y - r), 0), min(int(y + r) + 2, h)
    x0, x1 = max(int(x - r), 0), min(int(x + r) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    cover = np.clip(radius + 0.5 - np.hypot(yy - y, xx - x), 0.0, 1.0)
    np.maximum(canvas[y0:y1, x0:x1], cover, out=canvas[y0:y1, x0:x1])


def _vessel_tree(rng: np.random.Generator, h: int, w: int, disc: tuple[float, float], fov_radius: float) -> np.ndarray:
    """Coverage map ``(H, W)`` in [0, 1] of a vessel tree growing from the optic disc by random branching walks."""
    canvas = np.zeros((h, w), dtype=np.float32)
    s = min(h, w)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    toward_centre = np.arctan2(cy - disc[0], cx - disc[1])
    # (y, x, direction, half-width, remaining length, curvature): four arcades leave the disc upwards and
    # downwards and bend back towards the macula; branches get a small random curvature
    stack = []
    for side in (-1, -1, 1, 1):
        half = max(0.8, s / 100) * rng.uniform(0.9, 1.2)
        stack.append((disc[0], disc[1], toward_centre + side * rng.uniform(0.9, 1.6), half, s * 0.9, -side * 0.012))
    steps = 0
    while stack and steps < 40 * s:
        y, x, angle, half, length, curl = stack.pop()
        travelled = 0.0
        while travelled < length and half >= 0.45:
            _stamp(canvas, y, x, half)
            angle += curl + rng.normal(0, 0.08)
            y, x = y + np.sin(angle), x + np.cos(angle)
            travelled += 1.0
            steps += 1
            if np.hypot(y - cy, x - cx) > fov_radius:
                break
            if travelled > 4 and rng.uniform() < 0.035:
                turn = rng.choice((-1, 1)) * rng.uniform(0.4, 0.9)
                stack.append((y, x, angle + turn, half * rng.uniform(0.6, 0.8), length * 0.5, rng.uniform(-0.01, 0.01)))
                half *= 0.92
                length *= 0.85
    return canvas


def render_fundus(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic fundus image and its vessel mask.

    Args:
        rng: the random generator every draw comes from.
        size: ``(H, W)`` in pixels.

    Returns:
        ``image`` ``(H, W, 3)`` uint8 RGB and ``mask`` ``(H, W)`` uint8 with vessels 255 and background 0.
    """
    h, w = size
    s = min(h, w)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fov_radius = 0.47 * s
    rho = np.hypot(yy - cy, xx - cx) / fov_radius
    fov = np.clip((1.0 - rho) * fov_radius + 0.5, 0, 1)

    base = np.array([205.0, 92.0, 38.0]) * rng.uniform(0.85, 1.1) * (1 + rng.normal(0, 0.05, 3))
    texture = gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), max(0.6, s / 24))
    texture /= texture.std() + 1e-6
    img = base * (1.0 - 0.45 * rho**2)[..., None] * (1 + 0.05 * texture)[..., None]

    side = rng.choice((-1, 1))
    disc = (cy + rng.uniform(-0.06, 0.06) * s, cx + side * rng.uniform(0.22, 0.28) * s)
    macula = (cy + rng.uniform(-0.04, 0.04) * s, cx - side * rng.uniform(0.05, 0.1) * s)
    macula_shade = np.exp(-((yy - macula[0]) ** 2 + (xx - macula[1]) ** 2) / (2 * (0.09 * s) ** 2))
    img *= (1 - 0.35 * macula_shade)[..., None]
    disc_radius = rng.uniform(0.07, 0.09) * s
    disc_cover = np.clip(disc_radius - np.hypot(yy - disc[0], xx - disc[1]) + 0.5, 0, 1)
    disc_colour = np.array([250.0, 215.0, 140.0]) * rng.uniform(0.9, 1.0)
    img = img * (1 - disc_cover[..., None]) + disc_colour * disc_cover[..., None]

    vessels = _vessel_tree(rng, h, w, disc, fov_radius) * (fov > 0.5)
    vessel_colour = np.array([120.0, 30.0, 20.0]) * rng.uniform(0.85, 1.1)
    img = img * (1 - 0.8 * vessels[..., None]) + vessel_colour * 0.8 * vessels[..., None]
    img = img * fov[..., None] + rng.normal(0, 2.0, (h, w, 3))
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    mask = (vessels >= 0.5).astype(np.uint8) * 255
    return image, mask


def make_synthetic_fundus(
    out_dir: str | os.PathLike, n: int = 8, size: int | tuple[int, int] = 64, seed: int = 0
) -> list[dict]:
    """Write ``n`` synthetic fundus images and vessel masks as PNG in the same-stem layout.

    Args:
        out_dir: destination; gets ``images/FUNDUS0000.png`` (RGB) and ``masks/FUNDUS0000.png`` (0/255 vessels).
        n: number of images.
        size: ``H`` (square) or ``(H, W)``, at least 32 pixels.
        seed: seed of the ``numpy`` generator; the same seed gives the same files.

    Returns:
        the listing, one ``{"image", "label", "key"}`` dict per image, with absolute paths and ``key`` such as
        ``"images/FUNDUS0000.png"`` (the same as :func:`~monai_cluster.data.list_image_mask_pairs` gives).
    """
    n = check_positive_int(n, "n")
    h, w = parse_size(size, "size", 2, minimum=32)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}.")
    root = Path(os.path.abspath(out_dir))
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        name = f"FUNDUS{i:04d}"
        image, mask = render_fundus(rng, (h, w))
        image_path, mask_path = root / "images" / f"{name}.png", root / "masks" / f"{name}.png"
        write_png(image, image_path)
        write_png(mask, mask_path)
        items.append({"image": str(image_path), "label": str(mask_path), "key": f"images/{name}.png"})
    return items
