"""Dictionary version of the recorded random resized crop: every key gets the same geometry, stored beside it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple_rep

from monai_cluster.transforms.geometry.array import RandResizedCrop

__all__ = ["RandResizedCropd", "RandResizedCropD", "RandResizedCropDict", "geometry_key"]


def geometry_key(key: Hashable, postfix: str = "geometry") -> str:
    """Sample entry that holds the geometry of ``key``: ``f"{key}_{postfix}"`` (e.g. ``image_geometry``)."""
    return f"{key}_{postfix}"


class RandResizedCropd(Randomizable, MapTransform):
    """Dictionary version of :class:`~monai_cluster.transforms.RandResizedCrop`.

    One geometry is drawn per call and applied to every key (an image and its label map stay aligned); it is
    written as a ``(D + 1, D + 1)`` float tensor to ``geometry_key(keys[0], geometry_postfix)``
    (``image_geometry`` for ``keys="image"``), which MONAI's default collate stacks into ``(B, D + 1, D + 1)``.
    Inside :class:`~monai_cluster.transforms.MultiViewd` each view gets its own geometry, written to
    ``image_geometry``, ``image_geometry_1``, ...

    Args:
        keys: keys of the images to crop.
        spatial_size: output size (one int or one per spatial axis).
        scale: range of the crop's volume fraction.
        ratio: range of the per-axis aspect factor.
        flip_prob: probability of flipping each spatial axis.
        mode: ``"bilinear"`` or ``"nearest"``, one for all keys or one per key.
        geometry_postfix: postfix of the geometry entry.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int],
        scale: Sequence[float] = (0.35, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        mode: str | Sequence[str] = "bilinear",
        geometry_postfix: str = "geometry",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        modes = ensure_tuple_rep(mode, len(self.keys))
        self.croppers = [RandResizedCrop(spatial_size, scale, ratio, flip_prob, m) for m in modes]
        if not isinstance(geometry_postfix, str) or not geometry_postfix:
            raise ValueError(f"geometry_postfix must be a non-empty str, got {geometry_postfix!r}.")
        self.geometry_postfix = geometry_postfix

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandResizedCropd:
        super().set_random_state(seed, state)
        for cropper in self.croppers:
            cropper.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self.croppers[0].R = self.R
        self.croppers[0].randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        self.randomize(d[keys[0]])
        geometry = self.croppers[0].geometry
        for key, cropper in zip(self.keys, self.croppers):
            if key not in d:
                continue
            cropper.geometry = geometry
            d[key] = cropper(d[key], randomize=False)
        d[geometry_key(keys[0], self.geometry_postfix)] = geometry.clone()
        return d


RandResizedCropD = RandResizedCropDict = RandResizedCropd
