"""Synthetic whole-heart CT phantoms with the seven MM-WHS structures as labels.

Each case is a contrast-enhanced chest CT in Hounsfield-like units: air outside an elliptic body, fat under
the skin, soft tissue, two lungs, a vertebra, and the heart with bright blood pools, a myocardial shell
around the left ventricle, the aorta (ascending, arch, descending) and the pulmonary artery. Structures are
ellipsoids and tubes placed roughly as in a patient (RAS world axes: +x left to right, +y posterior to
anterior, +z inferior to superior), perturbed per case (pose, scale, centres, radii, intensities, noise).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from monai_cluster.utils.validation import check_positive_float, check_positive_int

from .image_io import write_nifti
from .synthetic_dermoscopy import parse_size

__all__ = ["HEART_LABELS", "make_synthetic_heart", "render_heart"]

HEART_LABELS: dict[int, str] = {
    1: "left_ventricle",
    2: "right_ventricle",
    3: "left_atrium",
    4: "right_atrium",
    5: "myocardium",
    6: "aorta",
    7: "pulmonary_artery",
}
"""Label values of :func:`make_synthetic_heart` (the MM-WHS structures, in MM-WHS order)."""

# Chambers in normalised coordinates (the volume spans [-1, 1] on each axis): centre, radii.
_CHAMBERS = {
    2: ((0.05, 0.30, -0.15), (0.22, 0.14, 0.30)),  # right ventricle, anterior
    1: ((-0.20, 0.10, -0.20), (0.16, 0.16, 0.30)),  # left ventricle (cavity), left
    3: ((-0.12, -0.20, 0.18), (0.17, 0.12, 0.15)),  # left atrium, posterior and superior
    4: ((0.27, -0.02, 0.05), (0.15, 0.14, 0.20)),  # right atrium, right
}
# Vessels: polyline through these points, radius.
_VESSELS = {
    6: (  # aorta: ascending, arch, descending
        ((-0.10, 0.08, 0.00), (-0.03, 0.08, 0.55), (-0.10, -0.20, 0.72), (-0.20, -0.42, 0.50), (-0.20, -0.42, -1.2)),
        0.085,
    ),
    7: (((0.10, 0.36, 0.05), (0.06, 0.32, 0.45), (-0.20, 0.24, 0.52), (-0.38, 0.02, 0.45)), 0.075),
}
_HEART_CENTRE = np.array([-0.05, 0.05, -0.05])
_MYOCARDIUM_THICKNESS = 0.08
_HEART_SCALE = 1.35  # the heart fills the mediastinum of the cropped field of view


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    """Boolean ``(X, Y, Z)`` mask of an axis-aligned ellipsoid; ``p`` is ``(3, X, Y, Z)``."""
    c = np.asarray(centre, dtype=np.float32).reshape(3, 1, 1, 1)
    r = np.asarray(radii, dtype=np.float32).reshape(3, 1, 1, 1)
    return (((p - c) / r) ** 2).sum(0) <= 1


def _polyline_distance2(p: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Squared distance ``(X, Y, Z)`` from each point of ``p`` ``(3, X, Y, Z)`` to the polyline through ``points``."""
    best = np.full(p.shape[1:], np.inf, dtype=np.float32)
    for a, b in zip(points[:-1], points[1:]):
        a, ab = a.astype(np.float32), (b - a).astype(np.float32)
        diff = p - a.reshape(3, 1, 1, 1)
        t = np.clip(np.einsum("i...,i->...", diff, ab) / float(ab @ ab), 0, 1)
        diff -= t[None] * ab.reshape(3, 1, 1, 1)
        np.minimum(best, np.einsum("i...,i...->...", diff, diff), out=best)
    return best


def _rotation(rng: np.random.Generator, max_degrees: tuple[float, float, float]) -> np.ndarray:
    """A random rotation matrix from angles about x, y and z drawn in ``[-max, max]`` degrees."""
    ax, ay, az = np.deg2rad([rng.uniform(-m, m) for m in max_degrees])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def render_heart(rng: np.random.Generator, size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw one heart phantom.

    Args:
        rng: the random generator every draw comes from.
        size: ``(X, Y, Z)`` voxels.

    Returns:
        ``image`` ``(X, Y, Z)`` int16 in Hounsfield-like units and ``label`` ``(X, Y, Z)`` uint8 with the
        values of :data:`HEART_LABELS` (0 is background).
    """
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in size]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))  # (3, X, Y, Z) body coordinates
    x, y = grid[0], grid[1]

    # Body, fat rim, lungs, vertebra.
    bx, by = 0.92 * rng.uniform(0.95, 1.05), 0.78 * rng.uniform(0.95, 1.05)
    body_r = np.sqrt((x / bx) ** 2 + (y / by) ** 2)
    image = np.full(size, -1000.0, dtype=np.float32)
    image[body_r <= 1] = rng.uniform(-110, -90)
    image[body_r <= 0.88] = rng.uniform(30, 60)
    lung_hu = rng.uniform(-870, -780)
    for side in (1, -1):
        centre = (0.45 * side + rng.normal(0, 0.02), -0.05 + rng.normal(0, 0.02), 0.05)
        lungs = _ellipsoid(grid, centre, np.array([0.34, 0.55, 0.95]) * rng.uniform(0.93, 1.07, 3))
        image[lungs] = lung_hu
    image += 25 * _smooth(rng, size) * (image < -500)  # lung texture
    image[(x**2 + (y + 0.6) ** 2) <= 0.13**2] = rng.uniform(400, 600)

    # Heart frame: rotate, scale and shift the anatomy around the heart centre.
    shift = rng.normal(0, 0.03, 3)
    rot = _rotation(rng, (8.0, 8.0, 12.0))
    scale = _HEART_SCALE * rng.uniform(0.9, 1.1)
    centre = (_HEART_CENTRE + shift).reshape(3, 1, 1, 1).astype(np.float32)
    local = np.tensordot(rot.T.astype(np.float32), grid - centre, axes=1) / scale + _HEART_CENTRE.reshape(3, 1, 1, 1)
    soft_tissue = rng.uniform(30, 60)
    image[_ellipsoid(local, _HEART_CENTRE, (0.45, 0.45, 0.52))] = soft_tissue  # mediastinum

    label = np.zeros(size, dtype=np.uint8)
    left_blood = rng.uniform(290, 350)
    right_blood = max(250.0, left_blood - rng.uniform(0, 60))
    blood = {1: left_blood, 3: left_blood, 6: left_blood, 2: right_blood, 4: right_blood, 7: right_blood}
    for value, (points, radius) in _VESSELS.items():
        points, radius = np.asarray(points) + rng.normal(0, 0.015, (len(points), 3)), radius * rng.uniform(0.9, 1.1)
        distance2 = _polyline_distance2(local, points)
        image[distance2 <= (radius + 0.05) ** 2] = soft_tissue  # vessels run in mediastinal tissue, not lung
        inside = distance2 <= radius**2
        label[inside], image[inside] = value, blood[value] + rng.normal(0, 8)
    for value in (4, 3, 2, 1):
        c, r = _CHAMBERS[value]
        c, r = np.asarray(c) + rng.normal(0, 0.02, 3), np.asarray(r) * rng.uniform(0.9, 1.1, 3)
        if value == 1:  # the myocardial shell around the LV cavity goes first, the cavity inside it
            shell = _ellipsoid(local, c, r + _MYOCARDIUM_THICKNESS * rng.uniform(0.85, 1.15))
            label[shell], image[shell] = 5, rng.uniform(80, 120)
        inside = _ellipsoid(local, c, r)
        label[inside], image[inside] = value, blood[value] + rng.normal(0, 8)

    image = gaussian_filter(image, sigma=0.6)  # partial-volume blur at the borders
    image += rng.normal(0, rng.uniform(10, 20), size).astype(np.float32)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16), label


def _smooth(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(size).astype(np.float32), sigma=1.5)
    return field / (field.std() + 1e-6)


def make_synthetic_heart(
    out_dir: str | os.PathLike,
    n: int = 4,
    size: int | tuple[int, int, int] = 64,
    seed: int = 0,
    spacing: float = 1.5,
) -> list[dict]:
    """Write ``n`` synthetic contrast CT heart volumes and their seven-structure label maps as NIfTI.

    Labels are those of :data:`HEART_LABELS`: 1 LV, 2 RV, 3 LA, 4 RA, 5 myocardium (a shell around the
    LV), 6 aorta, 7 pulmonary artery. Intensities are Hounsfield-like: air -1000, lungs about -800, fat
    about -100, soft tissue 30..60, myocardium 80..120, contrast-filled blood 250..350, bone 400..600, plus
    Gaussian noise. The same ``seed`` gives the same files.

    Args:
        out_dir: destination; gets ``images/heart_XXX.nii.gz`` (int16) and ``labels/heart_XXX.nii.gz``
            (uint8), with an RAS affine of ``spacing`` millimetres centred on the volume.
        n: number of volumes.
        size: ``S`` (cube) or ``(X, Y, Z)``, at least 16 voxels per axis; the anatomy fills the volume.
        seed: seed of the ``numpy`` generator.
        spacing: isotropic voxel size in millimetres, stored in the affine.

    Returns:
        the listing, one ``{"image", "label", "key"}`` dict per volume, with absolute paths and ``key``
        such as ``"images/heart_000.nii.gz"``.
    """
    n = check_positive_int(n, "n")
    size = parse_size(size, "size", 3, minimum=16)
    spacing = check_positive_float(spacing, "spacing")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}.")
    root = Path(os.path.abspath(out_dir))
    rng = np.random.default_rng(seed)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(np.asarray(size) - 1) / 2 * spacing

    items = []
    for i in range(n):
        name = f"heart_{i:03d}.nii.gz"
        image, label = render_heart(rng, size)
        image_path, label_path = root / "images" / name, root / "labels" / name
        write_nifti(image, affine, image_path)
        write_nifti(label, affine, label_path)
        items.append({"image": str(image_path), "label": str(label_path), "key": f"images/{name}"})
    return items
