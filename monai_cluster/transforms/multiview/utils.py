"""Helpers shared by the multi-view transforms: chain building, per-view seeds and the spatial-transform check."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from monai.transforms import Compose, InvertibleTransform, Lambda, Lambdad, RandLambda, RandLambdad
from monai.transforms import (
    FromMetaTensord,
    RandSimulateLowResolution,
    RandSimulateLowResolutiond,
    RandSmoothDeform,
    RandSmoothDeformd,
    ToMetaTensord,
    ToTensord,
)
from monai.utils import MAX_SEED

__all__ = [
    "as_transform_chain",
    "draw_view_seeds",
    "find_spatial_transforms",
    "share_random_state",
    "NON_SPATIAL_INVERTIBLES",
]

# MONAI InvertibleTransforms that change type or metadata only (or are opaque user functions, which the run-time
# shape check covers), and one degradation that keeps the voxel grid. Everything else invertible moves voxels.
NON_SPATIAL_INVERTIBLES: tuple[type, ...] = (
    ToTensord,
    ToMetaTensord,
    FromMetaTensord,
    Lambda,
    Lambdad,
    RandLambda,
    RandLambdad,
    RandSimulateLowResolution,
    RandSimulateLowResolutiond,
)
# modules whose transforms all move voxels (this package's recorded flips/rotations included)
_SPATIAL_MODULES = (
    "monai.transforms.spatial.",
    "monai.transforms.croppad.",
    "monai_cluster.transforms.flip_rotate.",
    "monai_cluster.transforms.geometry.",
)
_SPATIAL_NON_INVERTIBLES: tuple[type, ...] = (RandSmoothDeform, RandSmoothDeformd)


def as_transform_chain(transform: object, name: str = "transform") -> Callable:
    """Return ``transform`` as one callable: a callable is kept, a sequence of callables becomes a ``Compose``.

    Raises:
        TypeError: when ``transform`` is neither a callable nor a non-empty sequence of callables.
    """
    if callable(transform):
        return transform
    if isinstance(transform, Sequence) and not isinstance(transform, (str, bytes)) and len(transform) > 0:
        bad = [type(t).__name__ for t in transform if not callable(t)]
        if bad:
            raise TypeError(f"{name} must be a callable or a sequence of callables, but it holds {bad}.")
        return Compose(list(transform))
    raise TypeError(f"{name} must be a callable or a non-empty sequence of callables, got {type(transform).__name__}.")


def draw_view_seeds(rng: np.random.RandomState, count: int) -> list[int]:
    """Draw ``count`` distinct seeds in ``[0, MAX_SEED)`` from ``rng`` (so no two views share a random draw)."""
    seeds: list[int] = []
    while len(seeds) < count:
        seed = int(rng.randint(MAX_SEED, dtype=np.uint32))
        if seed not in seeds:
            seeds.append(seed)
    return seeds


def share_random_state(obj: object, seed: int) -> None:
    """Make every randomizable part of ``obj`` draw from ONE new ``RandomState(seed)``.

    Like MONAI's ``set_rnd`` it walks lists, ``Compose.transforms`` and attributes (so the array transform
    inside a dictionary transform is reached), but it builds a single generator instead of one per transform:
    building a ``RandomState`` costs about as much as a small augmentation, and a view chain has a dozen of
    them. The chain's draws stay reproducible from ``seed`` and independent of other views' seeds.
    """
    rng = np.random.RandomState(seed % MAX_SEED)
    seen: set[int] = set()

    def walk(item: object) -> None:
        if id(item) in seen or isinstance(item, (np.random.RandomState, str, bytes, int, float, np.ndarray)):
            return
        seen.add(id(item))
        if isinstance(item, (list, tuple)):
            for sub in item:
                walk(sub)
            return
        if not hasattr(item, "__dict__"):
            return
        if hasattr(item, "set_random_state") and hasattr(item, "R"):
            item.R = rng
        for key, value in vars(item).items():
            if not key.startswith("__") and key != "R":
                walk(value)

    walk(obj)


def _is_spatial(transform: object) -> bool:
    cls = type(transform)
    if isinstance(transform, _SPATIAL_NON_INVERTIBLES):
        return True
    if isinstance(transform, InvertibleTransform) and not isinstance(transform, NON_SPATIAL_INVERTIBLES):
        return True
    return cls.__module__.startswith(_SPATIAL_MODULES)


def find_spatial_transforms(transform: object) -> list[str]:
    """Names of the transforms in a chain that move voxels (so two views would lose voxel correspondence).

    A transform counts as spatial when it is a MONAI ``InvertibleTransform`` (flips, rotations, affines, crops,
    pads, zooms, resizes, spacing, orientation, transposes, ...) other than the type/metadata conversions in
    :data:`NON_SPATIAL_INVERTIBLES`, when its class lives in MONAI's ``spatial`` or ``croppad`` modules (elastic
    deformations, grid distortions, patch samplers) or in :mod:`monai_cluster.transforms.flip_rotate`
    (``RandFlipRot90(d)``, ``LocalDiscriminationViewsd``), or when it is ``RandSmoothDeform(d)``. ``Compose``
    (and ``OneOf``/``SomeOf``/``RandomOrder``) and plain lists are searched recursively.

    Args:
        transform: a transform, a ``Compose`` or a sequence of transforms.

    Returns:
        the class names of the spatial transforms found, in chain order (empty when there are none).
    """
    if isinstance(transform, Compose):
        children: Sequence = transform.transforms
    elif isinstance(transform, (list, tuple)):
        children = transform
    else:
        return [type(transform).__name__] if _is_spatial(transform) else []
    found: list[str] = []
    for child in children:
        found.extend(find_spatial_transforms(child))
    return found
