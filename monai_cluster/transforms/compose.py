"""A ``Compose`` that runs its chain without MONAI's metadata tracking, for augmentation whose output is batched as
plain tensors anyway.

MONAI tracks metadata (affine, applied operations) on every ``MetaTensor`` a transform returns. A random
augmentation chain whose views go straight into :class:`~monai_cluster.engines.MultiViewPrepareBatch` (which
drops the metadata when it concatenates the views) pays for that bookkeeping and never reads it: on the
pretraining bundle's 2D views (batch 16, 64 px, two geometric views) it is a third of the data time
(``benchmarks/pretrain_step.py``). Turning tracking off globally (``monai.data.set_track_meta(False)``) would also
change every other pipeline of the process; this class turns it off only while its own chain runs and restores the
caller's setting afterwards, also on error.

:class:`NoMetaRandomCompose` is the variant for a whole training chain that starts by loading files: its leading
deterministic transforms (loading, channel-first, resampling: what a ``CacheDataset`` caches) still run with the
caller's setting, because ``EnsureChannelFirstd`` reads the reader's channel metadata, and only the random part, which
runs again for every sample of every epoch, runs without tracking. The segmentation bundles' training chains use it.
"""

from __future__ import annotations

from typing import Any

from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, RandomizableTrait, Transform

__all__ = ["NoMetaCompose", "NoMetaRandomCompose", "first_random_index"]


class NoMetaCompose(Compose):
    """:class:`monai.transforms.Compose` whose transforms run with ``set_track_meta(False)``.

    Outputs are plain ``torch.Tensor`` (or numpy) instead of ``MetaTensor``, with the same values: metadata
    tracking changes no pixel. Everything else is ``Compose``'s (``transforms``, ``set_random_state``,
    ``flatten``, ``inverse`` is not available since no operations are recorded). The flag is process-wide, so a
    ``ThreadDataLoader`` running other MONAI chains in parallel threads would see it off while this chain runs;
    worker processes each have their own.

    Example:
        >>> from monai.transforms import RandFlipd
        >>> aug = NoMetaCompose([RandFlipd("image", prob=0.5)])
    """

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:
        previous = get_track_meta()
        set_track_meta(False)
        try:
            return super().__call__(input_, *args, **kwargs)
        finally:
            set_track_meta(previous)

    def inverse(self, data: Any) -> Any:
        raise NotImplementedError(
            "NoMetaCompose records no applied operations, so it cannot be inverted; use monai.transforms.Compose "
            "for a chain that must be inverted."
        )


def _is_random(transform: Any) -> bool:
    if isinstance(transform, Compose):  # a nested chain is random only if one of its transforms is
        return any(_is_random(t) for t in transform.transforms)
    # as CacheDataset: a random transform, or a callable that is no MONAI Transform (it may be random)
    return isinstance(transform, RandomizableTrait) or not isinstance(transform, Transform)


def first_random_index(transforms: Any) -> int:
    """The index of the first transform of ``transforms`` that may draw random numbers (``len`` if none does).

    A transform counts as random as ``CacheDataset`` counts it (a ``RandomizableTrait``, or a callable that is not a
    MONAI ``Transform``), except a nested ``Compose``, which counts as random only if one of its transforms does (the
    heart bundle's unlabelled chain starts with the whole validation chain as one ``Compose``).

    Args:
        transforms: a ``Compose`` or a sequence of callables.

    Returns:
        the index, in ``[0, len(transforms)]``.

    Raises:
        TypeError: when ``transforms`` is neither a ``Compose`` nor a list or tuple of callables.
    """
    items = transforms.transforms if isinstance(transforms, Compose) else transforms
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"transforms must be a Compose or a list of callables, got {type(transforms).__name__}.")
    for index, transform in enumerate(items):
        if not callable(transform):
            raise TypeError(f"transforms[{index}] must be callable, got {type(transform).__name__}.")
        if _is_random(transform):
            return index
    return len(items)


class NoMetaRandomCompose(NoMetaCompose):
    """A :class:`NoMetaCompose` whose leading deterministic transforms keep the caller's metadata tracking.

    The transforms before :func:`first_random_index` (loading, ``EnsureChannelFirstd``, which reads the reader's
    ``original_channel_dim``, scaling, resizing: the prefix a ``CacheDataset`` caches) run as in ``Compose``; from the
    first random transform on, the chain runs with ``set_track_meta(False)``, as :class:`NoMetaCompose`. A
    ``CacheDataset`` therefore caches exactly what a ``Compose`` caches, and the per-sample random part, the part that
    runs at every step, skips the metadata bookkeeping: on the heart slices overlay (64 px, flips, affine, intensity
    jitter and noise) a sample's random part costs about 3.4 ms instead of 8 ms on one CPU thread. The values are
    ``Compose``'s; the random part's outputs are plain ``torch.Tensor``.

    It takes ``Compose``'s arguments and no other, so a config entry ``"_target_": "Compose"`` restores the tracked
    chain. Calls with ``start``/``end`` (``CacheDataset`` runs the prefix and the rest separately) split the range at
    the first random transform.

    Example:
        >>> from monai.transforms import EnsureChannelFirstd, LoadImaged, RandFlipd
        >>> chain = NoMetaRandomCompose([LoadImaged("image"), EnsureChannelFirstd("image"), RandFlipd("image")])
    """

    @property
    def first_random(self) -> int:
        """The index of the first random transform (``len(self.transforms)`` if none is)."""
        return first_random_index(self)

    def __call__(self, input_: Any, start: int = 0, end: int | None = None, *args: Any, **kwargs: Any) -> Any:
        """Run transforms ``start`` to ``end`` (``Compose.__call__``'s arguments), the random ones untracked.

        Raises:
            ValueError: when ``start`` or ``end`` is not an index of the chain (or ``start > end``).
        """
        count = len(self.transforms)
        for name, value in (("start", start), ("end", end)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an int index of the chain, got {value!r}.")
        stop = count if end is None else (end + count if end < 0 else end)
        if not 0 <= start <= stop <= count:
            raise ValueError(f"start ({start!r}) and end ({end!r}) must satisfy 0 <= start <= end <= {count}.")
        split = min(max(self.first_random, start), stop)
        if split > start:
            input_ = Compose.__call__(self, input_, start, split, *args, **kwargs)
        if split < stop:
            input_ = super().__call__(input_, split, stop, *args, **kwargs)
        return input_
