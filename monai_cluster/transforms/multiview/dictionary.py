"""Several independently augmented views of one sample dictionary (contract 2: ``image``, ``image_1``, ...)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from monai_cluster.transforms.multiview.utils import (
    as_transform_chain,
    draw_view_seeds,
    find_spatial_transforms,
    share_random_state,
)
from monai_cluster.utils import check_positive_int

__all__ = ["MultiViewd", "MultiViewD", "MultiViewDict", "view_key"]


def view_key(key: Hashable, view: int) -> str:
    """Batch key of view ``view`` of ``key``: view 0 keeps ``key``, view ``i > 0`` is ``f"{key}_{i}"``."""
    return str(key) if view == 0 else f"{key}_{view}"


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


class MultiViewd(Randomizable, MapTransform):
    """Dictionary version of :class:`~monai_cluster.transforms.MultiView`: write ``num_views`` views per key.

    ``shared_transform`` (e.g. a random crop both views share) runs once on the sample; then ``transform``, a MONAI
    dictionary chain, runs once per view on a deep copy of the result, each time with a new seed drawn from
    ``self.R`` (seeds are distinct within a call, so no two views share a draw; ``set_random_state`` fixes all).
    The returned dictionary is view 0's (so its ``key`` entries, metadata and any other entry the chain wrote come
    from view 0), plus ``f"{key}_{i}"`` for view ``i >= 1`` of every key and of every entry the per-view chain
    added (e.g. the geometry ``image_geometry`` that :class:`~monai_cluster.transforms.RandResizedCropd` records
    becomes ``image_geometry_1`` for view 1), so each view's record travels with it. Inputs may be numpy arrays, tensors or
    ``MetaTensor``\\ s, 2D ``(C, H, W)`` or 3D ``(C, H, W, D)``.

    ``intensity_only=True`` keeps voxel correspondence between views, as the local contrastive loss of
    Chaitanya et al. needs: the constructor rejects any spatial transform in ``transform`` (see
    :func:`~monai_cluster.transforms.multiview.utils.find_spatial_transforms`), and every call checks that each
    view keeps the input's shape. ``shared_transform`` may be spatial in either mode, since all views share it.

    Args:
        keys: keys of the images to view, e.g. ``"image"``.
        transform: a dictionary transform or a sequence of them (made into a ``Compose``), run once per view.
        num_views: number of views, at least 2.
        shared_transform: an optional dictionary transform (or sequence) run once before the views.
        intensity_only: reject spatial transforms in ``transform`` and check that views keep the input's shape.
        allow_missing_keys: skip keys absent from the sample instead of raising.

    Raises:
        ValueError: at construction, when ``intensity_only`` and ``transform`` holds a spatial transform (named);
            at call time, when a key is missing (and not allowed), when a view key such as ``image_1`` is already
            in the sample, or when an ``intensity_only`` view changed shape.

    References:
        - [0] SimCLR, 2020, https://arxiv.org/abs/2002.05709
        - [1] Chaitanya et al., global and local contrastive learning, 2020, https://arxiv.org/abs/2006.10511
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: Callable | Sequence[Callable],
        num_views: int = 2,
        shared_transform: Callable | Sequence[Callable] | None = None,
        intensity_only: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = as_transform_chain(transform, "transform")
        self.shared_transform = (
            None if shared_transform is None else as_transform_chain(shared_transform, "shared_transform")
        )
        self.num_views = check_positive_int(num_views, "num_views", minimum=2)
        self.intensity_only = bool(intensity_only)
        if self.intensity_only:
            spatial = find_spatial_transforms(self.transform)
            if spatial:
                raise ValueError(
                    f"MultiViewd(intensity_only=True) needs a transform chain that keeps voxel correspondence, but "
                    f"it holds spatial transform(s) {spatial}; move them to shared_transform or set "
                    "intensity_only=False."
                )
        self._seeds: list[int] = []

    def randomize(self, data: Any = None) -> None:
        """Draw one seed for ``shared_transform`` and one distinct seed per view from ``self.R``."""
        self._seeds = draw_view_seeds(self.R, self.num_views + 1)

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        """Return view 0's dictionary with the other views added under ``f"{key}_{i}"``.

        Args:
            data: a sample dictionary.
            randomize: draw new seeds first (``False`` repeats the previous call's draws).
        """
        keys = [k for k in self.keys if k in data]
        missing = [k for k in self.keys if k not in data]
        if missing and not self.allow_missing_keys:
            raise ValueError(f"MultiViewd: key(s) {missing} are missing from the sample (it has {list(data)}).")
        taken = [view_key(k, i) for k in keys for i in range(1, self.num_views) if view_key(k, i) in data]
        if taken:
            raise ValueError(f"MultiViewd would overwrite view key(s) {taken} that are already in the sample.")
        if randomize or not self._seeds:
            self.randomize()
        sample = dict(data)
        if self.shared_transform is not None:
            share_random_state(self.shared_transform, self._seeds[0])
            sample = self.shared_transform(sample)
        expected = {k: _shape(sample[k]) for k in keys}
        views = []
        for seed in self._seeds[1:]:
            share_random_state(self.transform, seed)
            view = self.transform(copy.deepcopy(sample))
            if self.intensity_only:
                for k in keys:
                    if _shape(view[k]) != expected[k]:
                        raise ValueError(
                            f"MultiViewd(intensity_only=True): view {len(views)} of {k!r} has shape {_shape(view[k])}, "
                            f"but the input has shape {expected[k]}; the transform chain must not change the shape."
                        )
            views.append(view)
        out = dict(views[0])
        for i, view in enumerate(views[1:], start=1):
            for k in keys + [k for k in view if k not in sample and k not in keys]:
                out[view_key(k, i)] = view[k]
        return out


MultiViewD = MultiViewDict = MultiViewd
