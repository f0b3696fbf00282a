"""Optimisers and learning-rate schedules the bundles build by name: a step budget's warm-up + cosine schedule.

- :func:`build_optimizer`: ``Adam`` or ``AdamW`` by name, so a bundle option (``optimizer_name``) picks the class;
- :class:`WarmupCosineLR`: linear warm-up, then a cosine from the learning rate down to ``min_lr_ratio`` of it,
  stepped once per iteration over a budget of ``total_steps`` (the schedule of the ACDC protocol in
  ``BENCHMARKS.md``: 50 warm-up steps and a floor of 0.1 in pretraining, no warm-up and a floor of 0 in
  fine-tuning).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["OPTIMIZERS", "WarmupCosineLR", "build_optimizer"]

OPTIMIZERS = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
"""The optimiser classes :func:`build_optimizer` knows, by the name a bundle option gives."""


def build_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``torch.optim.<name>(params, lr=lr, weight_decay=weight_decay)`` for a name of :data:`OPTIMIZERS`.

    Raises:
        ValueError: naming ``name`` when it is not one of :data:`OPTIMIZERS`.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name must be one of {sorted(OPTIMIZERS)}, got {name!r}.")
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


class WarmupCosineLR(LambdaLR):
    """Per-step learning-rate factor ``min(1, (s + 1) / warmup_steps) * (r + (1 - r) * (1 + cos(pi * s / T)) / 2)``.

    ``s`` is the number of steps taken (clamped to ``T = total_steps``) and ``r = min_lr_ratio``: a linear warm-up
    over the first ``warmup_steps`` steps (none when 0) multiplies a cosine that falls from 1 to ``r`` at ``T``.
    Unlike ``monai.optimizers.WarmupCosineSchedule``, whose ``end_lr`` clamps the cosine from below, the floor is
    part of the curve, so the rate decays smoothly all the way to the end.

    Args:
        optimizer: the wrapped optimiser.
        total_steps: steps of the budget (``T``), at least 1.
        warmup_steps: steps of linear warm-up, ``0 <= warmup_steps <= total_steps``.
        min_lr_ratio: the final rate as a fraction of the initial one, in ``[0, 1]``.
        last_epoch: as ``LambdaLR`` (``-1`` for a fresh schedule).

    Raises:
        ValueError: naming the argument out of range.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        if not 0 <= int(warmup_steps) <= int(total_steps):
            raise ValueError(f"warmup_steps must lie in [0, total_steps={total_steps}], got {warmup_steps}.")
        if not 0.0 <= float(min_lr_ratio) <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}.")
        self.total_steps, self.warmup_steps, self.min_lr_ratio = int(total_steps), int(warmup_steps), float(min_lr_ratio)
        super().__init__(optimizer, self.factor, last_epoch)

    def factor(self, step: int) -> float:
        """The multiplier of the initial learning rate after ``step`` steps."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        progress = min(step, self.total_steps) / self.total_steps
        r = self.min_lr_ratio
        return warm * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress)))
