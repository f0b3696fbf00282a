"""The combined objective of unsupervised local discrimination (Chen et al.) for MONAI-style training loops.

``L = w_pd L_pd + w_mix L_mix + w_rd L_rd + w_ent L_ent (+ w_sp L_G)`` with the published weights
``1, 1, 10, 0.1`` (and 1 for the optional shape prior, off here by default):

- ``L_pd`` patch discrimination between the views (:mod:`monai_cluster.losses.patch_discrimination`);
- ``L_mix`` mixup consistency of mixed images (same module);
- ``L_rd`` region discrimination and ``L_ent`` assignment entropy
  (:mod:`monai_cluster.losses.region_discrimination`);
- ``L_G`` the generator term of the adversarial shape prior (:mod:`monai_cluster.losses.shape_prior`).

The network sees one concatenated batch ``cat([view_0, ..., view_{V-1}, mixed])`` and returns the
:class:`~monai_cluster.networks.nets.LocalDiscriminationNet` output dict; ``targets`` carries what the
transforms recorded (the flip/rot90 record of each view) and what :func:`~monai_cluster.losses.mixup_images`
drew. The call signature ``loss(preds, targets)`` is that of MONAI's ``SupervisedTrainer``.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
    - [1] Unsupervised learning of local discriminative representation for medical images, Chen et al.,
      IPMI 2021, https://arxiv.org/abs/2012.09333
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from monai_cluster.losses.patch_discrimination import (
    _check_grid_size,
    mixup_consistency_loss,
    patch_discrimination_loss,
)
from monai_cluster.losses.region_discrimination import (
    GRANULARITIES,
    assignment_entropy_loss,
    region_discrimination_loss,
)
from monai_cluster.losses.shape_prior import ShapePriorLoss
from monai_cluster.transforms.flip_rotate.array import undo_flip_rot90
from monai_cluster.utils.validation import (
    check_choice,
    check_positive_float,
    check_positive_int,
    check_spatial_tensor,
    check_tensor,
)
from monai_cluster.utils.precision import float32_forward

__all__ = ["LocalDiscriminationLoss"]


class LocalDiscriminationLoss(nn.Module):
    """Weighted sum of the local-discrimination terms over a batch of views (and optionally mixed images).

    ``forward(preds, targets)``:

    - ``preds["embedding"]`` ``(R, D, *spatial)`` and ``preds["assignment"]`` ``(R, K, *spatial)``: network
      outputs of ``R = V*B`` rows (view 0 of the ``B`` images, then view 1, ...), plus ``B`` more rows at the end,
      the mixed images, when ``targets`` holds ``"mix_weight"``;
    - ``targets["flip_rot"]``: the flip/rot90 records of the views, a sequence of ``V`` entries (each ``None``
      for the identity, one record ``(L,)`` or ``(B, L)``) or a ``(V, B, L)`` tensor; absent or ``None`` means
      no view was flipped or rotated. Each view's embedding is realigned with
      :func:`~monai_cluster.transforms.undo_flip_rot90` before patch discrimination;
    - ``targets["mix_weight"]`` ``(B,)`` and ``targets["mix_partner"]`` ``(B,)``: from
      :func:`~monai_cluster.losses.mixup_images` applied to the view-0 images as fed to the network.

    Patch discrimination is averaged over all view pairs; region discrimination, entropy and the shape prior
    use the ``V*B`` view rows (not the mixed rows). A term with weight 0 is skipped, and then its inputs
    (mixed rows, records, shape prior) are not needed. After each call :attr:`last_components` holds the
    unweighted values of the active terms as floats (``"patch"``, ``"mixup"``, ``"region"``, ``"entropy"``,
    ``"shape_prior"``) and ``"total"``.

    Warm-up: :meth:`set_clustering_active` ``(False)`` leaves out the terms that read the clustering head (region
    discrimination, entropy, shape prior) until it is switched back on, so the embedding is first trained by patch
    discrimination and mixup alone, as in the first stage of Chen et al.'s released training
    (:class:`~monai_cluster.handlers.LocalDiscriminationWarmupHandler` switches it per epoch).

    Args:
        patch_weight: weight of patch discrimination (1 in the paper).
        mixup_weight: weight of mixup consistency (1).
        region_weight: weight of region discrimination (10).
        entropy_weight: weight of the assignment entropy (0.1).
        shape_prior_weight: weight of the shape prior's generator term (0: off; 1 in the paper when used).
        shape_prior: the :class:`~monai_cluster.losses.ShapePriorLoss` (with its discriminator), needed when
            ``shape_prior_weight > 0``. Its discriminator term is stepped separately (see that class).
        patch_temperature: temperature of patch discrimination and mixup (0.1).
        region_temperature: temperature of region discrimination (0.2).
        grid_size: patches per spatial axis for patch discrimination and mixup (8).
        granularity: ``"region"`` (paper) or ``"pixel"``, see :func:`~monai_cluster.losses.region_discrimination_loss`.
        num_views: views per image ``V >= 2``.

    Raises:
        ValueError: when every weight is 0, when ``shape_prior_weight > 0`` without a ``shape_prior``, and in
            ``forward`` for missing keys or rows that do not split into the views (each named).

    Example:
        >>> net, loss_fn = LocalDiscriminationNet(2, 1), LocalDiscriminationLoss()
        >>> mixed, w, partner = mixup_images(x0)                      # x0, x1: the views from LocalDiscriminationViewsd
        >>> preds = net(torch.cat([x0, x1, mixed]))
        >>> loss = loss_fn(preds, {"flip_rot": [r0, r1], "mix_weight": w, "mix_partner": partner})
    """

    def __init__(
        self,
        patch_weight: float = 1.0,
        mixup_weight: float = 1.0,
        region_weight: float = 10.0,
        entropy_weight: float = 0.1,
        shape_prior_weight: float = 0.0,
        shape_prior: ShapePriorLoss | None = None,
        patch_temperature: float = 0.1,
        region_temperature: float = 0.2,
        grid_size: int | Sequence[int] = 8,
        granularity: str = "region",
        num_views: int = 2,
    ) -> None:
        super().__init__()
        self.weights = {
            name: check_positive_float(value, f"{name}_weight", allow_zero=True)
            for name, value in (
                ("patch", patch_weight),
                ("mixup", mixup_weight),
                ("region", region_weight),
                ("entropy", entropy_weight),
                ("shape_prior", shape_prior_weight),
            )
        }
        if not any(self.weights.values()):
            raise ValueError(
                "LocalDiscriminationLoss needs at least one weight > 0 (patch_weight, mixup_weight, region_weight, "
                "entropy_weight, shape_prior_weight), got all 0."
            )
        if shape_prior is not None and not isinstance(shape_prior, ShapePriorLoss):
            raise TypeError(f"shape_prior must be a ShapePriorLoss or None, got {type(shape_prior).__name__}.")
        if self.weights["shape_prior"] > 0 and shape_prior is None:
            raise ValueError("shape_prior_weight > 0 needs a shape_prior (a ShapePriorLoss with its discriminator).")
        self.shape_prior = shape_prior
        self.patch_temperature = check_positive_float(patch_temperature, "patch_temperature")
        self.region_temperature = check_positive_float(region_temperature, "region_temperature")
        self.grid_size = _check_grid_size(grid_size)
        self.granularity = check_choice(granularity, "granularity", GRANULARITIES)
        self.num_views = check_positive_int(num_views, "num_views", minimum=2)
        self.clustering_active = True
        self.last_components: dict[str, float] = {}

    def set_clustering_active(self, active: bool) -> None:
        """Switch the clustering-head terms (region, entropy, shape prior) on or off (off: the warm-up stage).

        Raises:
            TypeError: when ``active`` is not a bool.
            ValueError: when switching off would leave no active term (patch and mixup weights both 0).
        """
        if not isinstance(active, bool):
            raise TypeError(f"active must be a bool, got {type(active).__name__} {active!r}.")
        if not active and not (self.weights["patch"] > 0 or self.weights["mixup"] > 0):
            raise ValueError(
                "a warm-up without the clustering terms needs patch_weight or mixup_weight > 0; both are 0 here."
            )
        self.clustering_active = active

    def _weight(self, name: str) -> float:
        """The weight of a term as it applies now (0 for a clustering term during the warm-up)."""
        if not self.clustering_active and name in ("region", "entropy", "shape_prior"):
            return 0.0
        return self.weights[name]

    def _pred(self, preds: Mapping, key: str) -> torch.Tensor:
        if key not in preds:
            raise ValueError(f"preds must hold the key {key!r} (the network's output dict), got keys {sorted(preds)}.")
        return check_tensor(check_spatial_tensor(preds[key], f"preds[{key!r}]"), f"preds[{key!r}]", floating=True)

    def _records(self, targets: Mapping, batch: int) -> list[Any]:
        records = targets.get("flip_rot")
        if records is None:
            return [None] * self.num_views
        if (isinstance(records, torch.Tensor) and records.ndim == 3) or isinstance(records, (list, tuple)):
            if len(records) != self.num_views:
                raise ValueError(
                    f"targets['flip_rot'] must hold one record entry per view (num_views={self.num_views}), "
                    f"got {len(records)}."
                )
            return list(records)
        raise ValueError(
            "targets['flip_rot'] must be a sequence of per-view records or a (V, B, L) tensor, got "
            f"{type(records).__name__} {tuple(getattr(records, 'shape', ()))}."
        )

    @float32_forward
    def forward(self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Compute the weighted objective; see the class docstring for ``preds`` and ``targets``.

        Returns:
            a scalar tensor.
        """
        if not isinstance(preds, Mapping):
            raise TypeError(f"preds must be the network's output dict, got {type(preds).__name__}.")
        if targets is not None and not isinstance(targets, Mapping):
            raise TypeError(
                "targets must be a dict (flip_rot, mix_weight, mix_partner) or None, got "
                f"{type(targets).__name__}."
            )
        targets = targets or {}
        need_embedding = any(self._weight(k) > 0 for k in ("patch", "mixup", "region"))
        need_assignment = any(self._weight(k) > 0 for k in ("region", "entropy", "shape_prior"))
        embedding = self._pred(preds, "embedding") if need_embedding else None
        assignment = self._pred(preds, "assignment") if need_assignment else None
        rows = (embedding if embedding is not None else assignment).shape[0]

        mixed = targets.get("mix_weight") is not None
        if self.weights["mixup"] > 0 and not mixed:
            raise ValueError(
                "mixup_weight > 0 needs targets['mix_weight'] and targets['mix_partner'] (from mixup_images) and the "
                "mixed images' outputs as the last B rows of preds; pass them or set mixup_weight=0."
            )
        parts = self.num_views + int(mixed)
        if rows % parts:
            raise ValueError(
                f"preds must hold {parts}*B rows ({self.num_views} views{' + mixed images' if mixed else ''}), "
                f"got {rows}."
            )
        batch = rows // parts
        view_rows = self.num_views * batch
        components: dict[str, torch.Tensor] = {}
        if self._weight("patch") > 0:
            records = self._records(targets, batch)
            views = [
                e if r is None else undo_flip_rot90(e, r) for e, r in zip(embedding[:view_rows].split(batch), records)
            ]
            pairs = [
                patch_discrimination_loss(views[i], views[j], self.patch_temperature, self.grid_size)
                for i, j in itertools.combinations(range(self.num_views), 2)
            ]
            components["patch"] = torch.stack(pairs).mean()
        if self._weight("mixup") > 0:
            if targets.get("mix_partner") is None:
                raise ValueError("targets['mix_partner'] is missing; mixup_images returns it beside mix_weight.")
            components["mixup"] = mixup_consistency_loss(
                embedding[view_rows:],
                embedding[:batch],
                targets["mix_weight"],
                targets["mix_partner"],
                self.patch_temperature,
                self.grid_size,
            )
        if self._weight("region") > 0:
            components["region"] = region_discrimination_loss(
                embedding[:view_rows], assignment[:view_rows], self.region_temperature, self.granularity
            )
        if self._weight("entropy") > 0:
            components["entropy"] = assignment_entropy_loss(assignment[:view_rows])
        if self._weight("shape_prior") > 0:
            components["shape_prior"] = self.shape_prior(assignment[:view_rows])
        total = sum(self.weights[name] * value for name, value in components.items())
        self.last_components = {name: float(value.detach()) for name, value in components.items()}
        self.last_components["total"] = float(total.detach())
        return total

    def extra_repr(self) -> str:
        weights = ", ".join(f"{k}_weight={v}" for k, v in self.weights.items())
        return (
            f"{weights}, patch_temperature={self.patch_temperature}, region_temperature={self.region_temperature}, "
            f"grid_size={self.grid_size}, granularity={self.granularity!r}, num_views={self.num_views}"
        )
