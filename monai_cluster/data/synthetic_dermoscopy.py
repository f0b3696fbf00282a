"""Synthetic dermoscopy: skin-like RGB images with lesions of three visibly different kinds, and their masks.

The three kinds give a clustering method something to find (and ``diagnosis.csv`` lets metrics score it):

- ``compact_brown``: small, round, uniformly brown, sharp border;
- ``irregular_tan``: large, multi-lobed, light brown with internal mottling and a pale halo around it;
- ``blue_black``: medium, dark blue-black, with darker dots inside and radial streaks at its border.

Files follow the PH2 layout of the real data (``images/SYN0000.png``, ``masks/SYN0000_lesion.png`` with
values 0/255), so every listing and bundle treats synthetic and real data alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from monai_cluster.utils.io import atomic_write
from monai_cluster.utils.validation import check_positive_int, check_probability

from .image_io import write_png

__all__ = ["SYNTHETIC_DERMOSCOPY_KINDS", "make_synthetic_dermoscopy", "render_dermoscopy", "parse_size"]

SYNTHETIC_DERMOSCOPY_KINDS: tuple[str, ...] = ("compact_brown", "irregular_tan", "blue_black")
"""Lesion kinds of :func:`make_synthetic_dermoscopy`, as written to ``diagnosis.csv``."""

# Per kind: radius (fraction of the shorter image side), aspect ratio of the ellipse, amplitude of the lobes
# (relative radius modulation), RGB colour, border softness (pixels at 64 px) and internal mottling.
_KIND_PARAMS = {
    "compact_brown": dict(
        radius=(0.09, 0.13), aspect=(0.85, 1.0), lobes=0.03, rgb=(125, 78, 52), soft=0.8, mottle=0.04
    ),
    "irregular_tan": dict(
        radius=(0.26, 0.32), aspect=(0.65, 0.9), lobes=0.16, rgb=(182, 132, 98), soft=2.0, mottle=0.10
    ),
    "blue_black": dict(radius=(0.16, 0.21), aspect=(0.8, 1.0), lobes=0.05, rgb=(60, 54, 80), soft=1.0, mottle=0.06),
}


def parse_size(size: object, name: str, ndim: int, minimum: int = 8) -> tuple[int, ...]:
    """Return ``size`` as a tuple of ``ndim`` integers ``>= minimum`` (an int is repeated)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size),) * ndim
    if not isinstance(size, (tuple, list)) or len(size) != ndim:
        raise ValueError(f"{name} must be an int or a sequence of {ndim} ints, got {size!r}.")
    return tuple(check_positive_int(s, f"{name}[{i}]", minimum=minimum) for i, s in enumerate(size))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise smoothed with ``sigma`` pixels."""
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=max(sigma, 0.5), mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-6)


def _wrap_angle(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _skin(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Skin background ``(H, W, 3)`` float in [0, 255]: tone, blotchy redness, fine texture, dark vignette."""
    s = min(h, w)
    tone = np.array([224.0, 178.0, 150.0]) * rng.uniform(0.85, 1.05) * (1 + rng.normal(0, 0.03, 3))
    img = np.broadcast_to(tone, (h, w, 3)).astype(np.float32).copy()
    img *= 1 + 0.04 * _smooth_noise(rng, (h, w), s / 6)[..., None]
    redness = np.clip(_smooth_noise(rng, (h, w), s / 10), 0, None)
    img += redness[..., None] * np.array([6.0, -8.0, -6.0], dtype=np.float32) * rng.uniform(0.5, 1.5)
    img += rng.normal(0, 3.0, (h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2))
    img *= np.clip(1 - 0.6 * np.clip(r - 0.95, 0, None), 0.3, 1)[..., None]
    return img


def _lesion_radius(rng: np.random.Generator, kind: str, theta: np.ndarray, s: int) -> np.ndarray:
    """Radius in pixels of the (star-shaped) lesion border along each angle ``theta`` (already rotated)."""
    p = _KIND_PARAMS[kind]
    r0 = rng.uniform(*p["radius"]) * s
    aspect = rng.uniform(*p["aspect"])
    radius = r0 / np.sqrt(np.cos(theta) ** 2 + (np.sin(theta) / aspect) ** 2)
    modulation = np.zeros_like(theta)
    for k in range(2, 7):  # lobes: a few low angular frequencies with random phases
        amplitude = p["lobes"] * rng.uniform(0.3, 1.0) / np.sqrt(k - 1)
        modulation += amplitude * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if kind == "blue_black":  # radial streaks: narrow spikes of the border
        for angle in rng.uniform(-np.pi, np.pi, rng.integers(6, 12)):
            width = rng.uniform(0.06, 0.12)
            modulation += rng.uniform(0.2, 0.45) * np.clip(1 - np.abs(_wrap_angle(theta - angle)) / width, 0, 1)
    return radius * (1 + modulation)


def _hairs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Opacity ``(H, W)`` in [0, 1] of one to four thin curved hairs (quadratic Bezier curves)."""
    s = min(h, w)
    hit = np.zeros((h, w), dtype=np.float32)
    for _ in range(rng.integers(1, 5)):
        p0, p1, p2 = (rng.uniform(-0.1, 1.1, 2) * (h, w) for _ in range(3))
        t = np.linspace(0, 1, int(4 * (h + w)))[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        rows, cols = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
        keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        hit[rows[keep], cols[keep]] = 1.0
    sigma = max(0.5, s / 160) * rng.uniform(0.8, 1.2)
    return np.clip(gaussian_filter(hit, sigma) * np.sqrt(2 * np.pi) * sigma * 1.3, 0, 1) * 0.85


def render_dermoscopy(
    rng: np.random.Generator, kind: str, size: tuple[int, int], hair_probability: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic dermoscopy image and its lesion mask.

    Args:
        rng: the random generator every draw comes from.
        kind: one of :data:`SYNTHETIC_DERMOSCOPY_KINDS`.
        size: ``(H, W)`` in pixels.
        hair_probability: chance that the image has hairs drawn over it (they are not part of the mask).

    Returns:
        ``image`` ``(H, W, 3)`` uint8 RGB and ``mask`` ``(H, W)`` uint8 with values 0 and 255.
    """
    if kind not in _KIND_PARAMS:
        raise ValueError(f"kind must be one of {list(SYNTHETIC_DERMOSCOPY_KINDS)}, got {kind!r}.")
    h, w = size
    s = min(h, w)
    p = _KIND_PARAMS[kind]
    img = _skin(rng, h, w)

    margin = float(np.clip(0.44 - 1.25 * p["radius"][1], 0.03, 0.2))
    cy, cx = (0.5 + rng.uniform(-margin, margin, 2)) * (h - 1, w - 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rho = np.hypot(yy - cy, xx - cx)
    theta = np.arctan2(yy - cy, xx - cx) - rng.uniform(0, 2 * np.pi)
    radius = _lesion_radius(rng, kind, _wrap_angle(theta), s)
    mask = rho <= radius
    soft = p["soft"] * s / 64
    alpha = np.clip((radius - rho) / soft + 0.5, 0, 1)

    colour = np.array(p["rgb"], dtype=np.float32) * (1 + rng.normal(0, 0.06, 3)) * rng.uniform(0.9, 1.1)
    lesion = colour * (1 + p["mottle"] * _smooth_noise(rng, (h, w), s / 20)[..., None])
    if kind == "irregular_tan":  # pale halo just outside the border, not part of the lesion mask
        halo = 0.55 * np.clip(1 - (rho - radius) / (0.25 * radius), 0, 1) * (rho > radius)
        pale = np.clip(img * 1.08 + np.array([10.0, 6.0, 8.0]), 0, 255)
        img = img * (1 - halo[..., None]) + pale * halo[..., None]
        lesion *= 1 - 0.12 * np.clip(1 - rho / radius, 0, 1)[..., None]  # darker centre
    if kind == "blue_black":  # dark dots scattered inside the lesion
        dots = np.zeros((h, w), dtype=np.float32)
        for _ in range(rng.integers(8, 17)):
            a, r = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.7 * p["radius"][0] * s
            dy, dx = yy - (cy + r * np.sin(a)), xx - (cx + r * np.cos(a))
            dots = np.maximum(dots, np.exp(-(dy**2 + dx**2) / (2 * (rng.uniform(0.012, 0.025) * s) ** 2)))
        lesion = lesion * (1 - 0.6 * dots[..., None]) + np.array([20.0, 16.0, 30.0]) * 0.6 * dots[..., None]
    img = img * (1 - alpha[..., None]) + lesion * alpha[..., None]

    if rng.uniform() < hair_probability:
        hair = _hairs(rng, h, w)[..., None]
        img = img * (1 - hair) + np.array([45.0, 32.0, 26.0]) * hair
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return image, (mask.astype(np.uint8) * 255)


def make_synthetic_dermoscopy(
    out_dir: str | os.PathLike,
    n: int = 24,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    hair_probability: float = 0.3,
) -> list[dict]:
    """Write ``n`` synthetic dermoscopy images, their lesion masks and ``diagnosis.csv`` in the PH2 layout.

    Lesion kinds (:data:`SYNTHETIC_DERMOSCOPY_KINDS`) are balanced (counts differ by at most one) and
    shuffled; position, size, rotation, shape and colour are drawn per image. The same ``seed`` gives the
    same files.

    Args:
        out_dir: destination; gets ``images/SYNxxxx.png`` (RGB), ``masks/SYNxxxx_lesion.png`` (0/255) and
            ``diagnosis.csv`` (``image_name,diagnosis``, the lesion kind).
        n: number of images.
        size: ``H`` (square) or ``(H, W)``, at least 16 pixels.
        seed: seed of the ``numpy`` generator.
        hair_probability: chance per image of hairs drawn over the skin.

    Returns:
        the listing, one ``{"image", "label", "key", "diagnosis"}`` dict per image, with absolute paths and
        ``key`` such as ``"images/SYN0000.png"``.
    """
    n = check_positive_int(n, "n")
    h, w = parse_size(size, "size", 2, minimum=16)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}.")
    hair_probability = check_probability(hair_probability, "hair_probability")
    root = Path(os.path.abspath(out_dir))
    rng = np.random.default_rng(seed)
    kinds = [SYNTHETIC_DERMOSCOPY_KINDS[i] for i in rng.permutation(np.arange(n) % len(SYNTHETIC_DERMOSCOPY_KINDS))]

    items = []
    for i, kind in enumerate(kinds):
        name = f"SYN{i:04d}"
        image, mask = render_dermoscopy(rng, kind, (h, w), hair_probability)
        image_path, mask_path = root / "images" / f"{name}.png", root / "masks" / f"{name}_lesion.png"
        write_png(image, image_path)
        write_png(mask, mask_path)
        key = f"images/{name}.png"
        items.append({"image": str(image_path), "label": str(mask_path), "key": key, "diagnosis": kind})
    with atomic_write(root / "diagnosis.csv", newline="") as handle:
        handle.write("image_name,diagnosis\n")
        handle.writelines(f"{Path(item['key']).stem},{item['diagnosis']}\n" for item in items)
    return items
