"""Dictionary versions: a recorded random flip/rot90 of a sample, and the two views of local discrimination."""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.data.utils import set_rnd
from monai.transforms import MapTransform, Randomizable, RandomizableTransform

from monai_cluster.transforms.flip_rotate.array import RandFlipRot90, apply_flip_rot90, identity_flip_rot90_record
from monai_cluster.transforms.multiview.dictionary import view_key
from monai_cluster.transforms.multiview.utils import as_transform_chain, draw_view_seeds
from monai_cluster.utils import check_positive_int

__all__ = [
    "RandFlipRot90d",
    "RandFlipRot90D",
    "RandFlipRot90Dict",
    "LocalDiscriminationViewsd",
    "LocalDiscriminationViewsD",
    "LocalDiscriminationViewsDict",
    "record_key",
]

RECORD_SUFFIX = "_flip_rot"


def record_key(key: Hashable, suffix: str = RECORD_SUFFIX) -> str:
    """Sample key of the flip/rot90 record of ``key`` (``"image"`` -> ``"image_flip_rot"``)."""
    return f"{key}{suffix}"


def _spatial_shape(value: Any, key: Hashable) -> tuple[int, ...]:
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) not in (3, 4):
        raise ValueError(f"sample[{key!r}] must be channel-first (C, H, W) or (C, H, W, D), got shape {shape}.")
    return tuple(shape[1:])


class RandFlipRot90d(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`~monai_cluster.transforms.RandFlipRot90`.

    One operation is drawn per call (from ``self.R``) and applied to every key, so an image and its label stay
    aligned; its record is written to ``f"{key}{record_suffix}"`` for every key (``image_flip_rot``), an
    ``int64`` vector that collates into ``(B, spatial_dims + 3)`` for
    :func:`~monai_cluster.transforms.undo_flip_rot90`.

    Args:
        keys: keys of the channel-first images to transform; all must have the same spatial shape.
        prob: probability of drawing a flip/rotation (otherwise the identity is recorded).
        flip_prob: probability of flipping each axis of ``flip_axes``.
        flip_axes: spatial axes that may be flipped; ``None`` means all.
        rot_planes: planes that may be rotated; ``None`` means all planes (one in 2D, three in 3D).
        record_suffix: suffix of the record keys.
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        ValueError: when a key is missing (and not allowed), or keys have different spatial shapes.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] | None = None,
        rot_planes: Sequence[Sequence[int]] | None = None,
        record_suffix: str = RECORD_SUFFIX,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.flip_rot = RandFlipRot90(prob, flip_prob, flip_axes, rot_planes)
        RandomizableTransform.__init__(self, self.flip_rot.prob)
        self.flip_rot.R = self.R  # one random state: draws come from self.R
        if not isinstance(record_suffix, str) or not record_suffix:
            raise ValueError(f"record_suffix must be a non-empty string, got {record_suffix!r}.")
        self.record_suffix = record_suffix

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandFlipRot90d:
        super().set_random_state(seed, state)
        self.flip_rot.R = self.R
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with every key flipped/rotated alike and its record added."""
        missing = [k for k in self.keys if k not in data]
        if missing and not self.allow_missing_keys:
            raise ValueError(f"RandFlipRot90d: key(s) {missing} are missing from the sample (it has {list(data)}).")
        keys = [k for k in self.keys if k in data]
        d = dict(data)
        if not keys:
            return d
        shapes = {k: _spatial_shape(d[k], k) for k in keys}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"RandFlipRot90d needs keys of one spatial shape to keep them aligned, got {shapes}.")
        self.flip_rot.randomize(d[keys[0]])
        record = self.flip_rot.last_record
        for k in keys:
            d[k] = apply_flip_rot90(d[k], record)
            d[record_key(k, self.record_suffix)] = record.copy()
        return d


class LocalDiscriminationViewsd(Randomizable, MapTransform):
    """The views of one sample for local discrimination, each with its flip/rot90 record.

    For view ``i`` (``0 .. num_views - 1``) of each key, the optional intensity chain ``transform`` runs on a
    deep copy of the sample with its own seed (drawn from ``self.R``, distinct per view), then a random flip
    and/or 90-degree rotation is applied, the same to all keys of that view (view 0 keeps its orientation
    unless ``flip_rot_first_view``). Output keys follow contract 2: ``image``, ``image_1``, ... and the records
    ``image_flip_rot``, ``image_1_flip_rot``, ... (identity for an untouched view), which collate into
    ``(B, spatial_dims + 3)`` for :func:`~monai_cluster.transforms.undo_flip_rot90`. Every other entry of the
    sample is view 0's.

    Unlike :class:`~monai_cluster.transforms.MultiViewd` (which keeps only view 0's non-image entries), this
    keeps each view's record, which the patch-discrimination loss needs to realign the views.

    Args:
        keys: keys of the channel-first images, e.g. ``"image"``.
        num_views: number of views, at least 2.
        transform: a dictionary transform or sequence of them applied to every view before the flip/rotation
            (e.g. intensity jitter), or ``None``. Spatial transforms here would break the voxel correspondence
            that the records restore.
        flip_prob: probability of flipping each axis of ``flip_axes``.
        flip_axes: spatial axes that may be flipped; ``None`` means all.
        rot_planes: planes that may be rotated; ``None`` means all planes.
        flip_rot_first_view: also flip/rotate view 0 (by default it keeps the input orientation).
        record_suffix: suffix of the record keys.
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        ValueError: when a key is missing (and not allowed), a view key such as ``image_1`` is already in the
            sample, or keys have different spatial shapes.

    References:
        - [0] Unsupervised local discrimination for medical images, 2021, https://arxiv.org/abs/2108.09440
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_views: int = 2,
        transform: Callable | Sequence[Callable] | None = None,
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] | None = None,
        rot_planes: Sequence[Sequence[int]] | None = None,
        flip_rot_first_view: bool = False,
        record_suffix: str = RECORD_SUFFIX,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.num_views = check_positive_int(num_views, "num_views", minimum=2)
        self.transform = None if transform is None else as_transform_chain(transform, "transform")
        self.flip_rot = RandFlipRot90(1.0, flip_prob, flip_axes, rot_planes)
        # an own state from the start: MONAI's class-level default ``R`` is replaced by the first reseeding in
        # __call__, and a checkpoint written after it would hold one random source more than a fresh transform
        self.flip_rot.set_random_state(0)
        if not isinstance(flip_rot_first_view, bool):
            raise TypeError(f"flip_rot_first_view must be a bool, got {type(flip_rot_first_view).__name__}.")
        self.flip_rot_first_view = flip_rot_first_view
        if not isinstance(record_suffix, str) or not record_suffix:
            raise ValueError(f"record_suffix must be a non-empty string, got {record_suffix!r}.")
        self.record_suffix = record_suffix
        self._seeds: list[int] = []

    def randomize(self, data: Any = None) -> None:
        """Draw per view one seed for ``transform`` and one for the flip/rotation from ``self.R``."""
        self._seeds = draw_view_seeds(self.R, 2 * self.num_views)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return view 0's dictionary plus ``f"{key}_{i}"`` views and a record per view and key."""
        missing = [k for k in self.keys if k not in data]
        if missing and not self.allow_missing_keys:
            raise ValueError(
                f"LocalDiscriminationViewsd: key(s) {missing} are missing from the sample (it has {list(data)})."
            )
        keys = [k for k in self.keys if k in data]
        written = [view_key(k, i) for k in keys for i in range(1, self.num_views)]
        written += [record_key(view_key(k, i), self.record_suffix) for k in keys for i in range(self.num_views)]
        taken = [k for k in written if k in data]
        if taken:
            raise ValueError(
                f"LocalDiscriminationViewsd would overwrite key(s) {taken} that are already in the sample."
            )
        if not keys:
            return dict(data)
        self.randomize()
        out: dict[Hashable, Any] = {}
        for i in range(self.num_views):
            view = copy.deepcopy(dict(data))
            if self.transform is not None:
                set_rnd(self.transform, self._seeds[2 * i])
                view = self.transform(view)
            shapes = {k: _spatial_shape(view[k], k) for k in keys}
            if len(set(shapes.values())) > 1:
                raise ValueError(
                    f"LocalDiscriminationViewsd needs keys of one spatial shape to keep them aligned, got {shapes}."
                )
            if i > 0 or self.flip_rot_first_view:
                self.flip_rot.set_random_state(self._seeds[2 * i + 1])  # from self.R via randomize()
                self.flip_rot.randomize(view[keys[0]])
                record = self.flip_rot.last_record
            else:
                record = identity_flip_rot90_record(len(shapes[keys[0]]))
            if i == 0:
                out.update(view)
            for k in keys:
                out[view_key(k, i)] = apply_flip_rot90(view[k], record)
                out[record_key(view_key(k, i), self.record_suffix)] = record.copy()
        return out


RandFlipRot90D = RandFlipRot90Dict = RandFlipRot90d
LocalDiscriminationViewsD = LocalDiscriminationViewsDict = LocalDiscriminationViewsd
