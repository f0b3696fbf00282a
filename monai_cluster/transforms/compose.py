"""A ``Compose`` that runs its chain without MONAI's metadata tracking, for augmentation whose output is batched as
plain tensors anyway.

MONAI tracks metadata (affine, applied operations) on every ``MetaTensor`` a transform returns. A random
augmentation chain whose views go straight into :class:`~monai_cluster.engines.MultiViewPrepareBatch` (which
drops the metadata when it concatenates the views) pays for that bookkeeping and never reads it: on the
pretraining bundle's 2D views (batch 16, 64 px, two geometric views) it is a third of the data time
(``benchmarks/pretrain_step.py``). Turning tracking off globally (``monai.data.set_track_meta(False)``) would also
change every other pipeline of the process; this class turns it off only while its own chain runs and restores the
caller's setting afterwards, also on error.
"""

from __future__ import annotations

from typing import Any

from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose

__all__ = ["NoMetaCompose"]


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
