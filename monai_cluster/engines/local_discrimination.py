"""Batch preparation for local-discrimination pretraining with MONAI's ``SupervisedTrainer``.

:class:`~monai_cluster.transforms.LocalDiscriminationViewsd` writes the views of each sample (``image``,
``image_1``, ...) and their flip/rot90 records (``image_flip_rot``, ``image_1_flip_rot``, ...).
:class:`LocalDiscriminationPrepareBatch` turns the collated batch into what
:class:`~monai_cluster.losses.LocalDiscriminationLoss` expects: the network input
``cat([view_0, ..., view_{V-1}, mixed])`` and the targets ``{"flip_rot", "mix_weight", "mix_partner"}``,
where ``mixed`` are the view-0 images mixed pairwise by :func:`~monai_cluster.losses.mixup_images` (Chen et
al.'s mixup consistency), drawn from the preparer's own seeded generator.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from monai_cluster.engines.prepare_batch import _as_plain_tensor
from monai_cluster.losses.patch_discrimination import mixup_images
from monai_cluster.transforms.flip_rotate.dictionary import RECORD_SUFFIX, record_key
from monai_cluster.transforms.multiview.dictionary import view_key
from monai_cluster.utils.validation import check_positive_int, check_probability

__all__ = ["LocalDiscriminationPrepareBatch"]


def _records(value: Any, name: str, batch: int) -> torch.Tensor:
    """Collated flip/rot90 records as an int64 ``(B, L)`` tensor on the CPU (where ``undo_flip_rot90`` reads them)."""
    if isinstance(value, np.ndarray):
        value = torch.as_tensor(value)
    t = _as_plain_tensor(value, name)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"batch[{name!r}] must hold integer flip/rot90 records, got dtype {t.dtype}.")
    if t.ndim != 2 or t.shape[0] != batch:
        raise ValueError(f"batch[{name!r}] must be (B={batch}, L) flip/rot90 records, got shape {tuple(t.shape)}.")
    return t.detach().to("cpu", torch.int64)


class LocalDiscriminationPrepareBatch:
    """Turn a collated local-discrimination batch into ``(inputs, targets)`` for ``SupervisedTrainer``.

    ``inputs`` ``((V + mix) * B, C, *spatial)``: view 0 of the ``B`` samples, then view 1, ..., then (with
    ``mixup=True``) ``B`` mixed images ``w_b x_b + (1 - w_b) x_partner(b)`` of the view-0 images.
    ``targets``::

        {"flip_rot": [(B, L) int64 per view] (None for a view without a record),
         "mix_weight": (B,) | None, "mix_partner": (B,) int64 | None}

    Pass it with ``decollate=False`` (the targets are a dict). The mixup draws come from a ``torch.Generator``
    seeded with ``seed``, so a run is repeatable; :meth:`set_seed` reseeds it (e.g. when resuming).

    Args:
        num_views: views per sample ``V >= 2`` (``image`` is view 0, ``image_i`` view ``i``).
        image_key: batch key of view 0.
        record_suffix: suffix of the record keys (``image_flip_rot``).
        require_records: raise when a view has no record (otherwise that view counts as not flipped/rotated).
        mixup: append mixed images and their weights/partners (needed when the loss has ``mixup_weight > 0``).
        mix_low: smallest mixing weight.
        mix_high: largest mixing weight.
        seed: seed of the mixup generator.

    Raises:
        ValueError: for missing view keys or records (named), views of different shapes, a batch of fewer than
            2 samples with ``mixup=True``, or records of the wrong shape.
        TypeError: for views that are not tensors or records that are not integers.

    Example:
        >>> trainer = SupervisedTrainer(..., prepare_batch=LocalDiscriminationPrepareBatch(), decollate=False,
        ...                             loss_function=LocalDiscriminationLoss())
    """

    def __init__(
        self,
        num_views: int = 2,
        image_key: str = "image",
        record_suffix: str = RECORD_SUFFIX,
        require_records: bool = True,
        mixup: bool = True,
        mix_low: float = 0.2,
        mix_high: float = 0.8,
        seed: int = 0,
    ) -> None:
        self.num_views = check_positive_int(num_views, "num_views", minimum=2)
        if not isinstance(image_key, str) or not image_key:
            raise ValueError(f"image_key must be a non-empty string, got {image_key!r}.")
        if not isinstance(record_suffix, str) or not record_suffix:
            raise ValueError(f"record_suffix must be a non-empty string, got {record_suffix!r}.")
        for name, flag in (("require_records", require_records), ("mixup", mixup)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r}.")
        self.mix_low, self.mix_high = check_probability(mix_low, "mix_low"), check_probability(mix_high, "mix_high")
        if self.mix_low > self.mix_high:
            raise ValueError(f"mix_low must not exceed mix_high, got mix_low={mix_low} and mix_high={mix_high}.")
        self.image_key = image_key
        self.require_records = require_records
        self.mixup = mixup
        self.view_keys = [view_key(image_key, i) for i in range(self.num_views)]
        self.record_keys = [record_key(k, record_suffix) for k in self.view_keys]
        self.generator = torch.Generator()
        self.set_seed(seed)

    def set_seed(self, seed: int) -> None:
        """Reseed the mixup generator with ``seed`` (an integer ``>= 0``)."""
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
        self.generator.manual_seed(int(seed))

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return ``(inputs, {"flip_rot", "mix_weight", "mix_partner"})``; see the class docstring.

        Args:
            batchdata: a collated batch dictionary.
            device: where to move the inputs and mixing targets (``None``: leave them where they are); the
                records stay on the CPU.
            non_blocking: passed to ``Tensor.to``.
            kwargs: further ``Tensor.to`` arguments (the trainer's ``to_kwargs``).
        """
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"batchdata must be a dictionary of batched tensors, got {type(batchdata).__name__}.")
        missing = [k for k in self.view_keys if k not in batchdata]
        if self.require_records:
            missing += [k for k in self.record_keys if k not in batchdata]
        if missing:
            raise ValueError(
                f"LocalDiscriminationPrepareBatch(num_views={self.num_views}): the batch lacks key(s) {missing} "
                f"(it has {list(batchdata)}); apply LocalDiscriminationViewsd with num_views={self.num_views}."
            )
        views = [_as_plain_tensor(batchdata[k], k) for k in self.view_keys]
        shapes = {k: tuple(v.shape) for k, v in zip(self.view_keys, views)}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"LocalDiscriminationPrepareBatch: all views must have the same shape, got {shapes}.")
        if views[0].ndim not in (4, 5) or not views[0].is_floating_point():
            raise ValueError(
                f"batch[{self.image_key!r}] must be a floating (B, C, H, W) or (B, C, H, W, D) batch, "
                f"got shape {shapes[self.image_key]} and dtype {views[0].dtype}."
            )
        batch = views[0].shape[0]
        records = [
            _records(batchdata[k], k, batch) if k in batchdata else None for k in self.record_keys
        ]
        targets: dict[str, Any] = {"flip_rot": records, "mix_weight": None, "mix_partner": None}
        if self.mixup:
            if batch < 2:
                raise ValueError(f"mixup needs at least 2 samples per batch, got a batch of {batch}; set mixup=False.")
            mixed, weight, partner = mixup_images(views[0], self.mix_low, self.mix_high, generator=self.generator)
            views.append(mixed)
            targets["mix_weight"] = weight.to(device=device, non_blocking=non_blocking)
            targets["mix_partner"] = partner.to(device=device, non_blocking=non_blocking)
        inputs = torch.cat(views, dim=0).to(device=device, non_blocking=non_blocking, **kwargs)
        return inputs, targets
