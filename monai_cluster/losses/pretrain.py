"""Weighted global + local contrastive objective for MONAI's ``SupervisedTrainer``.

The trainer calls ``loss_function(preds, targets)``; here ``preds`` is the pretraining network's output
dict (``"global"`` ``(V*B, F)``, ``"dense"`` ``(V*B, C, *spatial)``, views concatenated along dim 0, view 0
first) and ``targets`` the dict made by ``MultiViewPrepareBatch`` (``"pseudo_class"`` ``(B, L)`` or None,
``"partition"`` ``(B,)`` or None).

References:
    - [0] Cluster-guided contrastive learning, Zhang et al., BIBM 2022, https://arxiv.org/abs/2211.08557
    - [1] Global and local contrastive learning, Chaitanya et al., NeurIPS 2020, https://arxiv.org/abs/2006.10511
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from monai_cluster.losses.cluster_contrastive import ClusterGuidedContrastiveLoss
from monai_cluster.losses.global_contrastive import GlobalContrastiveLoss
from monai_cluster.losses.local_contrastive import LocalContrastiveLoss
from monai_cluster.utils.validation import check_positive_float, check_positive_int, check_tensor
from monai_cluster.utils.precision import float32_forward

__all__ = ["ContrastivePretrainLoss"]


class ContrastivePretrainLoss(nn.Module):
    """``global_weight * global_loss + local_weight * local_loss`` over the views of a multi-view batch.

    The global loss receives the pseudo-classes (:class:`ClusterGuidedContrastiveLoss`) or the partitions
    (:class:`GlobalContrastiveLoss`, plus ``targets["volume_id"]`` and ``targets["pseudo_class"]`` when present:
    cluster guidance on top of Chaitanya's strategies) from ``targets``; any other
    global loss is called as ``global_loss(z_i, z_j)``. The local loss is called as ``local_loss(f_i, f_j)``
    on the dense maps; when the views differ in geometry (``targets["geometry"]``, ``(V, B, D+1, D+1)``, from
    ``MultiViewPrepareBatch``) a :class:`LocalContrastiveLoss` gets ``geometry1``/``geometry2`` so that it
    matches locations through the crops, and any other local loss is refused (it would compare unmatched
    pixels). With ``num_views > 2`` each term is the mean over all view pairs ``i < j``. A term
    whose loss is None or whose weight is 0 is skipped (its prediction key is not needed).

    After each call, ``last_components`` holds the detached values as floats: ``"global"`` and ``"local"``
    (unweighted, active terms only) and ``"total"``.

    Args:
        global_loss: loss on ``(B, F)`` embedding pairs, or None.
        local_loss: loss on ``(B, C, *spatial)`` dense-map pairs, or None.
        global_weight: weight ``>= 0`` of the global term.
        local_weight: weight ``>= 0`` of the local term.
        num_views: number of views ``V >= 2`` concatenated in the predictions.

    Raises:
        ValueError: when no term is active (both losses None, or every given loss has weight 0).

    Example:
        >>> loss = ContrastivePretrainLoss(ClusterGuidedContrastiveLoss(0.1), LocalContrastiveLoss(0.1))
        >>> value = loss({"global": g, "dense": d}, {"pseudo_class": pc, "partition": None})
    """

    def __init__(
        self,
        global_loss: Callable[..., torch.Tensor] | None = None,
        local_loss: Callable[..., torch.Tensor] | None = None,
        global_weight: float = 1.0,
        local_weight: float = 1.0,
        num_views: int = 2,
    ) -> None:
        super().__init__()
        for name, value in (("global_loss", global_loss), ("local_loss", local_loss)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be a loss module (callable) or None, got {type(value).__name__}.")
        self.global_weight = check_positive_float(global_weight, "global_weight", allow_zero=True)
        self.local_weight = check_positive_float(local_weight, "local_weight", allow_zero=True)
        self.num_views = check_positive_int(num_views, "num_views", minimum=2)
        self.global_loss = global_loss
        self.local_loss = local_loss
        self.use_global = global_loss is not None and self.global_weight > 0
        self.use_local = local_loss is not None and self.local_weight > 0
        if not (self.use_global or self.use_local):
            raise ValueError(
                "ContrastivePretrainLoss needs at least one active term: a global_loss or local_loss with a "
                "weight > 0, "
                f"got global_loss={type(global_loss).__name__} (weight {self.global_weight}), "
                f"local_loss={type(local_loss).__name__} (weight {self.local_weight})."
            )
        self.last_components: dict[str, float] = {}

    def _views(self, preds: Mapping, key: str) -> tuple[torch.Tensor, ...]:
        if key not in preds:
            raise ValueError(f"preds must hold the key {key!r} (network output dict), got keys {sorted(preds)}.")
        value = check_tensor(preds[key], f"preds[{key!r}]")
        if value.ndim < 2 or value.shape[0] % self.num_views:
            raise ValueError(
                f"preds[{key!r}] must have V*B rows in dim 0 with num_views V={self.num_views}, "
                f"got shape {tuple(value.shape)}."
            )
        return value.split(value.shape[0] // self.num_views, dim=0)

    def _global_kwargs(self, targets: Mapping) -> dict[str, Any]:
        if isinstance(self.global_loss, ClusterGuidedContrastiveLoss):
            return {"pseudo_classes": targets.get("pseudo_class")}
        if isinstance(self.global_loss, GlobalContrastiveLoss):
            partitions = targets.get("partition")
            kwargs = {"partitions": partitions, "volume_ids": None if partitions is None else targets.get("volume_id")}
            if targets.get("pseudo_class") is not None:  # cluster guidance on top of the strategy
                kwargs["pseudo_classes"] = targets["pseudo_class"]
            return kwargs
        return {}

    def _pairwise_mean(self, loss: Callable[..., torch.Tensor], views: tuple, name: str, **kwargs: Any) -> torch.Tensor:
        values = []
        for i, j in itertools.combinations(range(self.num_views), 2):
            value = loss(views[i], views[j], **kwargs)
            if not isinstance(value, torch.Tensor) or value.ndim != 0:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"{name} must return a scalar (reduction 'mean' or 'sum'), got {shape}.")
            values.append(value)
        return torch.stack(values).mean()

    def _local(self, preds: Mapping, geometry: torch.Tensor | None) -> torch.Tensor:
        views = self._views(preds, "dense")
        if geometry is None:
            return self._pairwise_mean(self.local_loss, views, "local_loss")
        if not isinstance(self.local_loss, LocalContrastiveLoss):
            raise ValueError(
                f"the views differ in geometry (targets['geometry'] is set) but local_loss is a "
                f"{type(self.local_loss).__name__}, which takes no geometry and would compare unmatched pixels; "
                "use LocalContrastiveLoss or intensity-only views."
            )
        geometry = check_tensor(geometry, "targets['geometry']")
        if geometry.ndim != 4 or geometry.shape[0] != self.num_views:
            raise ValueError(
                f"targets['geometry'] must be (V, B, D+1, D+1) with V={self.num_views}, got {tuple(geometry.shape)}."
            )
        values = [
            self.local_loss(views[i], views[j], geometry1=geometry[i], geometry2=geometry[j])
            for i, j in itertools.combinations(range(self.num_views), 2)
        ]
        return torch.stack(values).mean()

    @float32_forward
    def forward(self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, Any] | None = None) -> torch.Tensor:
        """
        Args:
            preds: network output dict with ``"global"`` ``(V*B, F)`` and/or ``"dense"`` ``(V*B, C, *spatial)``.
            targets: dict with ``"pseudo_class"`` ``(B, L)`` / None, ``"partition"`` ``(B,)`` / None and
                ``"geometry"`` ``(V, B, D+1, D+1)`` / None, or None.

        Returns:
            the weighted sum, a scalar tensor.
        """
        if not isinstance(preds, Mapping):
            raise TypeError(f"preds must be the network's output dict, got {type(preds).__name__}.")
        if targets is not None and not isinstance(targets, Mapping):
            raise TypeError(f"targets must be a dict (pseudo_class, partition) or None, got {type(targets).__name__}.")
        targets = targets or {}
        components: dict[str, torch.Tensor] = {}
        total = None
        if self.use_global:
            kwargs = self._global_kwargs(targets)
            views = self._views(preds, "global")
            components["global"] = self._pairwise_mean(self.global_loss, views, "global_loss", **kwargs)
            total = self.global_weight * components["global"]
        if self.use_local:
            components["local"] = self._local(preds, targets.get("geometry"))
            weighted = self.local_weight * components["local"]
            total = weighted if total is None else total + weighted
        self.last_components = {name: float(value.detach()) for name, value in components.items()}
        self.last_components["total"] = float(total.detach())
        return total
