"""Several independently augmented views of one channel-first image (array transform)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from monai.transforms import Randomizable, Transform

from monai_cluster.transforms.multiview.utils import as_transform_chain, draw_view_seeds, share_random_state
from monai_cluster.utils import check_positive_int

__all__ = ["MultiView"]


class MultiView(Randomizable, Transform):
    """Return ``num_views`` views of one image, each from its own random draw of ``transform``.

    Before each view the wrapped transform, and every ``Randomizable`` inside it, is reseeded with a seed drawn
    from ``self.R`` (seeds are distinct within a call), so two views never share a draw, successive calls give new
    draws, and ``set_random_state`` on this transform fixes every view. Each view starts from a deep copy of the
    input, so a transform that works in place cannot leak into the next view.

    Works for 2D ``(C, H, W)`` and 3D ``(C, H, W, D)`` arrays, tensors and ``MetaTensor``\\ s; the shape of a view
    is whatever ``transform`` returns.

    Args:
        transform: an array transform or a sequence of them (made into a ``Compose``). A transform that draws from
            a global random generator instead of ``self.R`` is not reseeded and loses reproducibility.
        num_views: number of views, at least 2.

    Example:
        >>> from monai.transforms import RandGaussianNoise
        >>> views = MultiView(RandGaussianNoise(prob=1.0), num_views=2).set_random_state(0)(np.zeros((1, 8, 8)))
        >>> len(views)
        2
    """

    def __init__(self, transform: Callable | Sequence[Callable], num_views: int = 2) -> None:
        self.transform = as_transform_chain(transform)
        self.num_views = check_positive_int(num_views, "num_views", minimum=2)
        self._seeds: list[int] = []

    def randomize(self, data: Any = None) -> None:
        """Draw one distinct seed per view from ``self.R``."""
        self._seeds = draw_view_seeds(self.R, self.num_views)

    def __call__(self, img: Any, randomize: bool = True) -> list[Any]:
        """Return the list of ``num_views`` views of ``img``.

        Args:
            img: channel-first image ``(C, *spatial)``.
            randomize: draw new seeds first (``False`` repeats the previous call's draws).
        """
        if randomize or not self._seeds:
            self.randomize()
        views = []
        for seed in self._seeds:
            share_random_state(self.transform, seed)
            views.append(self.transform(copy.deepcopy(img)))
        return views
