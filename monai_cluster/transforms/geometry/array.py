"""Random resized crops and flips that record their geometry, so dense maps of two views can be matched.

SimCLR-style global contrastive learning needs views that differ in geometry (a random resized crop and flips
per view). A local (dense) contrastive loss on such views must know which location of one view shows the same
anatomy as a location of the other. :class:`RandResizedCrop` crops an axis-aligned box of random volume fraction
and aspect ratio, flips it at random and resizes it to a fixed size in one resampling, and keeps the *geometry*
of what it did: a ``(D + 1, D + 1)`` affine matrix ``A`` (``D`` spatial axes) in normalised coordinates::

    source = A @ [output, 1]

where a point is given per spatial axis, in array axis order (axis 0 first, channel excluded), in ``[-1, 1]``
from the first to the last voxel's outer edge (``align_corners=False`` in :func:`torch.nn.functional.grid_sample`
terms). Both views of an image are crops of the same source, so a point ``u`` of view 1 shows the source point
``A_1 u``, which lies at ``A_2^{-1} A_1 u`` in view 2 (inside view 2 when every coordinate is in ``[-1, 1]``).
Normalised coordinates do not depend on the resolution, so the same geometry maps points of a network's dense
map at any stride. :func:`map_points` and :func:`corresponding_points` do that arithmetic on batches.

References:
    - [0] SimCLR, Chen et al., 2020, https://arxiv.org/abs/2002.05709
    - [1] PixPro, Xie et al., 2021, https://arxiv.org/abs/2011.10043
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Randomizable, Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

from monai_cluster.utils.validation import check_probability, check_spatial_dims

__all__ = [
    "RandResizedCrop",
    "check_geometry",
    "corresponding_points",
    "identity_geometry",
    "map_points",
    "resample_with_geometry",
]

_MODES = ("bilinear", "nearest")


def identity_geometry(spatial_dims: int) -> torch.Tensor:
    """The geometry of a view that is the whole source, unflipped: the ``(D + 1, D + 1)`` identity."""
    return torch.eye(check_spatial_dims(spatial_dims) + 1)


def check_geometry(geometry: Any, name: str = "geometry", spatial_dims: int | None = None) -> torch.Tensor:
    """Return ``geometry`` as a float tensor ``(..., D + 1, D + 1)`` of invertible affine matrices.

    Raises:
        TypeError: when it is not a tensor or array of floats.
        ValueError: when it is not square ``D + 1`` with ``D`` in (2, 3) (or ``spatial_dims``), its last row is
            not ``[0, ..., 0, 1]``, it is not finite, or a matrix is singular.
    """
    if not isinstance(geometry, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a tensor of (D+1, D+1) affine matrices, got {type(geometry).__name__}.")
    g = convert_to_tensor(geometry, dtype=torch.float32)
    if g.ndim < 2 or g.shape[-1] != g.shape[-2] or g.shape[-1] - 1 not in (2, 3):
        raise ValueError(f"{name} must have shape (..., D+1, D+1) with D 2 or 3, got {tuple(g.shape)}.")
    if spatial_dims is not None and g.shape[-1] != spatial_dims + 1:
        raise ValueError(
            f"{name} must be ({spatial_dims + 1}, {spatial_dims + 1}) matrices for {spatial_dims}D maps, "
            f"got shape {tuple(g.shape)}."
        )
    if not torch.isfinite(g).all():
        raise ValueError(f"{name} holds non-finite values.")
    last = torch.zeros(g.shape[-1], dtype=g.dtype)
    last[-1] = 1
    if not torch.allclose(g[..., -1, :], last.expand_as(g[..., -1, :]), atol=1e-6):
        raise ValueError(f"{name} must be affine matrices whose last row is [0, ..., 0, 1].")
    if (torch.linalg.det(g[..., :-1, :-1]).abs() < 1e-8).any():
        raise ValueError(f"{name} holds a singular matrix (a view of zero extent).")
    return g


def map_points(points: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Apply ``(B, D+1, D+1)`` affine matrices to ``(B, N, D)`` points (normalised coordinates, axis order)."""
    return points @ geometry[:, :-1, :-1].transpose(1, 2) + geometry[:, None, :-1, -1]


def corresponding_points(
    geometry1: torch.Tensor,
    geometry2: torch.Tensor,
    num_points: int,
    generator: torch.Generator | None = None,
    candidates: int = 4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``num_points`` points of view 1 per sample and their positions in view 2.

    ``candidates * num_points`` points are drawn uniformly in view 1 (``[-1, 1]^D``); those whose image in
    view 2 lies inside view 2 are preferred, in random order, so every returned point is valid unless the two
    views share less than about ``1 / candidates`` of view 1.

    Args:
        geometry1: ``(B, D+1, D+1)`` geometry of view 1 (see the module docstring).
        geometry2: ``(B, D+1, D+1)`` geometry of view 2.
        num_points: points per sample ``K``.
        generator: ``torch.Generator`` for the draw (on the geometries' device), or None for the global RNG.
        candidates: oversampling factor (``>= 1``).

    Returns:
        ``(points1 (B, K, D), points2 (B, K, D), valid (B, K) bool)``: normalised coordinates in each view and
        whether the point lies inside both views.
    """
    g1 = check_geometry(geometry1, "geometry1").to(geometry1.device)
    g2 = check_geometry(geometry2, "geometry2", spatial_dims=g1.shape[-1] - 1).to(geometry1.device)
    if g1.ndim != 3 or g1.shape[0] != g2.shape[0]:
        raise ValueError(
            f"geometry1 and geometry2 must both be (B, D+1, D+1) for the same B, got {tuple(g1.shape)} and "
            f"{tuple(g2.shape)}."
        )
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"num_points must be an int >= 1, got {num_points!r}.")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates must be an int >= 1, got {candidates!r}.")
    batch, dims = g1.shape[0], g1.shape[-1] - 1
    draw = num_points * candidates
    device = generator.device if generator is not None else g1.device
    u = torch.rand(batch, draw, dims, generator=generator, device=device).to(g1.device) * 2 - 1
    order = torch.rand(batch, draw, generator=generator, device=device).to(g1.device)
    p2 = map_points(map_points(u, g1), torch.linalg.inv(g2))
    inside = (p2.abs() <= 1).all(dim=2)
    pick = (order + inside.to(order.dtype) * 2).topk(num_points, dim=1).indices  # valid points first
    take = pick[:, :, None].expand(-1, -1, dims)
    return u.gather(1, take), p2.gather(1, take), inside.gather(1, pick)


def _grid_order(points: torch.Tensor) -> torch.Tensor:
    """Array axis order (axis 0 first) to :func:`grid_sample` order (last axis first)."""
    return points.flip(-1)


def resample_with_geometry(
    image: torch.Tensor, geometry: torch.Tensor, spatial_size: Sequence[int], mode: str = "bilinear"
) -> torch.Tensor:
    """Resample ``(C, *S)`` ``image`` onto a ``spatial_size`` grid whose points map into it by ``geometry``.

    Output voxel ``v`` (normalised centre ``u``) takes the value of ``image`` at ``geometry @ u``; points
    outside the image take the border value.
    """
    dims = image.ndim - 1
    theta = geometry.to(image.dtype)
    # affine_grid works in grid order (x = last axis): reverse the axes of the linear part and the offset
    linear = theta[:-1, :-1].flip(0).flip(1)
    offset = theta[:-1, -1].flip(0)
    full = torch.cat([linear, offset[:, None]], dim=1)[None]
    grid = F.affine_grid(full, [1, image.shape[0], *spatial_size], align_corners=False)
    return F.grid_sample(image[None], grid, mode=mode, padding_mode="border", align_corners=False)[0]


class RandResizedCrop(Randomizable, Transform):
    """Random resized crop with random flips, in one resampling, recording its geometry (2D or 3D).

    For a channel-first ``(C, *S)`` input, a box is drawn with volume fraction ``f ~ U(scale)`` of the input
    and side fractions ``s_i = f^(1/D) * r_i`` (``log r_i`` uniform in ``log(ratio)``, centred so that
    ``prod r_i = 1``; a side longer than the axis is capped at 1 and the other sides grow to keep ``f``), at a
    uniform position inside the input; each axis is then
    flipped with probability ``flip_prob``, and the box is resampled to ``spatial_size``. After a call,
    :attr:`geometry` holds the ``(D + 1, D + 1)`` matrix ``A`` with ``source = A @ output`` in normalised
    coordinates (module docstring); the output voxel at ``u`` shows the input at ``A u``.

    Args:
        spatial_size: output size, one int per spatial axis (or one for all).
        scale: range of the box's volume fraction, ``0 < low <= high <= 1``.
        ratio: range of each axis' aspect factor ``r_i`` (before centring), ``0 < low <= high``.
        flip_prob: probability of flipping each spatial axis.
        mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"`` (for label maps).

    Raises:
        ValueError: for bad sizes or ranges (named), or an input whose spatial rank differs from
            ``spatial_size``.
    """

    def __init__(
        self,
        spatial_size: int | Sequence[int],
        scale: Sequence[float] = (0.35, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        mode: str = "bilinear",
    ) -> None:
        self.spatial_size = _check_size(spatial_size)
        self.scale = _check_range(scale, "scale", upper=1.0)
        self.ratio = _check_range(ratio, "ratio", upper=None)
        self.flip_prob = check_probability(flip_prob, "flip_prob")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}.")
        self.mode = mode
        self.geometry: torch.Tensor | None = None
        self._draw: torch.Tensor | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the geometry for ``data``'s spatial rank (``len(data.shape) - 1``) into :attr:`geometry`."""
        dims = len(data.shape) - 1 if data is not None else len(self.spatial_size)
        fraction = self.R.uniform(*self.scale)
        logs = self.R.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), size=dims)
        sides = fraction ** (1.0 / dims) * np.exp(logs - logs.mean())
        for _ in range(dims):  # cap at the whole axis and give the lost extent to the other axes
            over = sides > 1.0
            if not over.any():
                break
            sides[over] = 1.0
            free = sides < 1.0
            sides[free] *= (fraction / np.prod(sides)) ** (1.0 / max(int(free.sum()), 1))
        sides = np.minimum(sides, 1.0)
        centres = self.R.uniform(-1.0, 1.0, size=dims) * (1.0 - sides)
        signs = np.where(self.R.uniform(size=dims) < self.flip_prob, -1.0, 1.0)
        geometry = torch.eye(dims + 1)
        geometry[:dims, :dims] = torch.diag(torch.as_tensor(signs * sides, dtype=torch.float32))
        geometry[:dims, dims] = torch.as_tensor(centres, dtype=torch.float32)
        self.geometry = geometry

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        """Crop, flip and resize ``img`` ``(C, *S)``; returns the same type as the input.

        Args:
            img: channel-first image or volume (numpy array, tensor or ``MetaTensor``).
            randomize: draw a new geometry (``False`` repeats the previous one).
        """
        if not hasattr(img, "shape") or len(img.shape) < 3:
            raise ValueError(f"img must be channel-first (C, *spatial), got {getattr(img, 'shape', type(img))}.")
        size = self.spatial_size * (len(img.shape) - 1) if len(self.spatial_size) == 1 else self.spatial_size
        if len(size) != len(img.shape) - 1:
            raise ValueError(
                f"spatial_size {list(self.spatial_size)} has {len(size)} axes, but img has {len(img.shape) - 1} "
                f"spatial axes (shape {tuple(img.shape)})."
            )
        if randomize or self.geometry is None:
            self.randomize(img)
        t = convert_to_tensor(img, track_meta=False)
        dtype = t.dtype
        out = resample_with_geometry(t.float(), self.geometry, size, self.mode)
        return convert_to_dst_type(out.to(dtype if dtype.is_floating_point else torch.float32), img)[0]


def _check_size(value: object) -> tuple[int, ...]:
    sizes = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not 1 <= len(sizes) <= 3:
        raise ValueError(f"spatial_size must be an int or 2-3 ints, got {value!r}.")
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
        raise ValueError(f"spatial_size must hold positive ints, got {value!r}.")
    return tuple(int(s) for s in sizes)


def _check_range(value: object, name: str, upper: float | None) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be (low, high), got {value!r}.")
    try:
        low, high = float(value[0]), float(value[1])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be two numbers (low, high), got {value!r}.") from err
    if not (0 < low <= high) or (upper is not None and high > upper) or not math.isfinite(high):
        bound = "" if upper is None else f" <= {upper}"
        raise ValueError(f"{name} must satisfy 0 < low <= high{bound}, got {value!r}.")
    return low, high
