"""Ignite handler that steps the discriminator of the optional adversarial shape prior (local discrimination).

The network's optimiser (MONAI's ``SupervisedTrainer``) minimises the local-discrimination loss including the
generator term of :class:`~monai_cluster.losses.ShapePriorLoss`; :class:`ShapePriorHandler` then takes one
discriminator step per iteration on the same iteration's (detached) cluster maps against a random draw of prior
masks. The generator term leaves gradients in the discriminator's parameters; the handler zeroes them first.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_cluster.losses.shape_prior import ShapePriorLoss
from monai_cluster.utils.validation import check_positive_int, check_spatial_tensor

__all__ = ["ShapePriorHandler", "assignment_from_output"]

logger = logging.getLogger(__name__)


def assignment_from_output(output: Any) -> torch.Tensor:
    """The view rows of the assignment in a ``SupervisedTrainer`` output (``decollate=False``).

    Reads ``output["pred"]["assignment"]``; when ``output["label"]`` (the targets of
    :class:`~monai_cluster.engines.LocalDiscriminationPrepareBatch`) holds ``"mix_weight"``, the last ``B`` rows
    (the mixed images) are left out, as in :class:`~monai_cluster.losses.LocalDiscriminationLoss`.
    """
    if not isinstance(output, Mapping) or not isinstance(output.get("pred"), Mapping):
        raise ValueError(
            "the trainer output must be a dict with 'pred' = the network's output dict; run SupervisedTrainer with "
            f"decollate=False (got {type(output).__name__})."
        )
    pred = output["pred"]
    if "assignment" not in pred:
        raise ValueError(f"the network output has no 'assignment' (it has {sorted(pred)}).")
    assignment = pred["assignment"]
    targets = output.get("label")
    weight = targets.get("mix_weight") if isinstance(targets, Mapping) else None
    return assignment[: -len(weight)] if weight is not None else assignment


class ShapePriorHandler:
    """One discriminator step per iteration: ``min_D BCE(D(masks), 1) + BCE(D(cluster map), 0)``.

    Args:
        shape_prior: the :class:`~monai_cluster.losses.ShapePriorLoss` whose discriminator is trained (the same
            object the network's loss uses for its generator term).
        optimizer: the discriminator's optimiser (over ``shape_prior.discriminator.parameters()`` only; the
            authors use a learning rate 20x below the network's).
        prior_masks: ``(N, 1, *spatial)`` prior shapes in ``[0, 1]``, e.g. vessel masks.
        num_masks: masks drawn (with replacement) per step; ``None`` draws as many as there are cluster maps.
        output_transform: engine output -> assignment ``(B, K, *spatial)``; default :func:`assignment_from_output`.
        enabled: attach nothing when False (the bundle's ``shape_prior`` switch).
        seed: seed of the mask draws.

    Attributes:
        paused: skip the steps while True (set by :class:`~monai_cluster.handlers.LocalDiscriminationWarmupHandler`).
        last_loss: the discriminator loss of the latest step (also ``engine.state.shape_prior_d_loss``).

    Raises:
        TypeError/ValueError: for a wrong ``shape_prior``/``optimizer`` type, masks of the wrong shape or values
            outside ``[0, 1]``, or (at run time) a non-finite discriminator loss.
    """

    def __init__(
        self,
        shape_prior: ShapePriorLoss,
        optimizer: torch.optim.Optimizer,
        prior_masks: torch.Tensor,
        num_masks: int | None = None,
        output_transform: Callable[[Any], torch.Tensor] = assignment_from_output,
        enabled: bool = True,
        seed: int = 0,
    ) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} {enabled!r}.")
        if not isinstance(shape_prior, ShapePriorLoss):
            raise TypeError(f"shape_prior must be a ShapePriorLoss, got {type(shape_prior).__name__}.")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        own = {id(p) for p in shape_prior.discriminator.parameters()}
        stepped = [p for group in optimizer.param_groups for p in group["params"]]
        if not stepped or any(id(p) not in own for p in stepped):
            raise ValueError(
                "optimizer must step the discriminator's parameters only (shape_prior.discriminator.parameters())."
            )
        masks = check_spatial_tensor(prior_masks, "prior_masks", None, 1)
        if not masks.is_floating_point():
            masks = masks.float()
        if not torch.isfinite(masks).all() or float(masks.min()) < 0 or float(masks.max()) > 1:
            raise ValueError("prior_masks must hold finite values in [0, 1].")
        if not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {type(output_transform).__name__}.")
        self.shape_prior = shape_prior
        self.optimizer = optimizer
        self.prior_masks = masks
        self.num_masks = None if num_masks is None else check_positive_int(num_masks, "num_masks")
        self.output_transform = output_transform
        self.enabled = enabled
        self.generator = torch.Generator().manual_seed(check_positive_int(seed, "seed", minimum=0))
        self.last_loss: float | None = None
        self.paused = False

    def attach(self, engine: Engine) -> None:
        """Step the discriminator after every iteration (nothing when ``enabled`` is False)."""
        if self.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.paused:  # the warm-up of LocalDiscriminationWarmupHandler: no generator term to answer
            return
        assignment = self.output_transform(engine.state.output)
        count = self.num_masks or assignment.shape[0]
        index = torch.randint(0, self.prior_masks.shape[0], (count,), generator=self.generator)
        masks = self.prior_masks[index].to(assignment.device)
        self.shape_prior.discriminator.train()
        self.optimizer.zero_grad(set_to_none=True)  # also drops what the generator term left in D
        loss = self.shape_prior.discriminator_loss(assignment.detach(), masks)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the shape-prior discriminator loss is {value} at iteration {engine.state.iteration}."
            )
        loss.backward()
        self.optimizer.step()
        self.last_loss = value
        engine.state.shape_prior_d_loss = value
