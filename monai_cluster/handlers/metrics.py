"""Ignite metrics: :class:`BestClusterDice`, the Dice of the best-matching cluster of unsupervised cluster maps."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from ignite.metrics import Metric

__all__ = ["BestClusterDice"]


class BestClusterDice(Metric):
    """Dice of the best-matching cluster of hard cluster maps against a binary reference, over a whole dataset.

    Every update adds, per cluster ``k``, the pixels assigned to ``k`` (argmax of the assignment), the pixels of
    the reference mask (``label > 0``) and their overlap; :meth:`compute` returns
    ``max_k 2 |C_k & M| / (|C_k| + |M|)``. Unsupervised clusters carry no names, so the best one is the fair
    score of whether one cluster found the structure (vessels, a lesion). :attr:`best_cluster` is its index.

    Args:
        output_transform: maps the engine output to ``(assignment (B, K, *spatial), label (B, 1, *spatial))``;
            the default reads MONAI's ``{"pred": {"assignment": ...}, "label": ...}`` (``decollate=False``).
        device: where the counts are kept.
    """

    def __init__(self, output_transform: Callable = None, device: str | torch.device = "cpu") -> None:
        self.best_cluster: int | None = None
        super().__init__(output_transform=output_transform or _assignment_and_label, device=device)

    def reset(self) -> None:
        self._overlap = None
        self._cluster = None
        self._mask = 0.0

    def update(self, output: Sequence[torch.Tensor]) -> None:
        assignment, label = output
        if not isinstance(assignment, torch.Tensor) or assignment.ndim not in (4, 5):
            raise ValueError(
                f"assignment must be a (B, K, H, W[, D]) tensor, got {getattr(assignment, 'shape', type(assignment))}."
            )
        label = torch.as_tensor(label)
        if label.shape[0] != assignment.shape[0] or tuple(label.shape[2:]) != tuple(assignment.shape[2:]):
            raise ValueError(
                f"label shape {tuple(label.shape)} must match the assignment {tuple(assignment.shape)} in batch and "
                "spatial size."
            )
        k = assignment.shape[1]
        hard = F.one_hot(assignment.detach().argmax(1), k).to(torch.float64)  # (B, *spatial, K)
        mask = (label[:, 0] > 0).to(hard.device, torch.float64).unsqueeze(-1)
        overlap = (hard * mask).flatten(0, -2).sum(0)
        cluster = hard.flatten(0, -2).sum(0)
        self._overlap = overlap if self._overlap is None else self._overlap + overlap
        self._cluster = cluster if self._cluster is None else self._cluster + cluster
        self._mask += float(mask.sum())

    def compute(self) -> float:
        if self._overlap is None:
            raise ValueError("BestClusterDice needs at least one update before compute().")
        dice = 2 * self._overlap / (self._cluster + self._mask).clamp(min=1.0)
        self.best_cluster = int(dice.argmax())
        return float(dice.max())


def _assignment_and_label(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    decollated = isinstance(output, Sequence) and not isinstance(output, (str, bytes)) and output
    if decollated and isinstance(output[0], Mapping):
        raise ValueError("BestClusterDice needs the evaluator's batch output; run the evaluator with decollate=False.")
    if not isinstance(output, Mapping) or "pred" not in output or "label" not in output:
        raise ValueError(f"the evaluator output must hold 'pred' and 'label', got {type(output).__name__}.")
    pred = output["pred"]
    assignment = pred["assignment"] if isinstance(pred, Mapping) else pred
    return assignment, output["label"]
