"""Adversarial shape prior for the clustering branch of local discrimination (optional, off by default).

Chen et al. steer one cluster towards a known shape (e.g. vessels, from simulated or other-modality masks): a
discriminator ``D`` (:class:`~monai_cluster.networks.blocks.ShapePriorDiscriminator`) learns to tell prior
masks from the soft cluster map ``s`` (the assignment channel(s) of ``cluster_index``), and the network learns
to make ``s`` look like a prior mask. Non-saturating GAN terms on logits, with
:func:`~torch.nn.functional.binary_cross_entropy_with_logits`:

- generator term ``L_G = BCE(D(s), 1)``, added to the local-discrimination objective (weight 1 in the paper);
- discriminator term ``L_D = BCE(D(m), 1) and BCE(D(s.detach()), 0)``, averaged over all real and fake maps,
  minimised by a separate optimiser over ``D``'s parameters (the authors use a 20x smaller learning rate).

The generator term also leaves gradients in ``D``'s parameters: zero them before the discriminator step.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
    - [1] Generative adversarial nets, Goodfellow et al., NeurIPS 2014, https://arxiv.org/abs/1406.2661
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_cluster.losses._nt_xent import check_reduction, reduce_losses
from monai_cluster.losses.region_discrimination import check_assignment
from monai_cluster.utils.validation import check_finite, check_spatial_tensor, check_tensor
from monai_cluster.utils.precision import float32_forward

__all__ = ["ShapePriorLoss", "shape_prior_discriminator_loss", "shape_prior_generator_loss"]


def _logits(value: object, name: str) -> torch.Tensor:
    t = check_tensor(value, name, ndim=1, floating=True)
    check_finite(t, name)
    return t


@float32_forward
def shape_prior_generator_loss(fake_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Non-saturating generator term ``BCE(D(s), 1)`` of discriminator logits ``(B,)`` on cluster maps."""
    reduction = check_reduction(reduction)
    fake = _logits(fake_logits, "fake_logits")
    return reduce_losses(F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake), reduction="none"), reduction)


@float32_forward
def shape_prior_discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Discriminator term: ``BCE(D(m), 1)`` on prior masks and ``BCE(D(s), 0)`` on cluster maps.

    Returns:
        the mean (or sum) over all ``R + F`` logits, or ``(R + F,)`` (real first) with ``reduction="none"``.
    """
    reduction = check_reduction(reduction)
    real, fake = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    logits = torch.cat([real, fake])
    targets = torch.cat([torch.ones_like(real), torch.zeros_like(fake)])
    return reduce_losses(F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), reduction)


class ShapePriorLoss(nn.Module):
    """Adversarial shape prior on one (or a sum of) cluster channel(s) of the assignment map.

    ``forward(assignment)`` is the generator term for the network's optimiser;
    :meth:`discriminator_loss` is the discriminator term for ``discriminator``'s optimiser (it detaches the
    cluster map). The discriminator is a submodule, so ``loss.to(device)`` moves it and its parameters are in
    ``loss.parameters()``.

    Args:
        discriminator: maps ``(B, 1, *spatial)`` masks in ``[0, 1]`` to ``(B,)`` logits, e.g.
            :class:`~monai_cluster.networks.blocks.ShapePriorDiscriminator`.
        cluster_index: the cluster whose assignment map should take the prior's shape (0 in the authors' code),
            or several clusters whose maps are summed.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> prior = ShapePriorLoss(ShapePriorDiscriminator(2), cluster_index=0)
        >>> g_loss = prior(out["assignment"])                       # add to the network's loss
        >>> d_loss = prior.discriminator_loss(out["assignment"], vessel_masks)  # step D separately
    """

    def __init__(
        self, discriminator: nn.Module, cluster_index: int | Sequence[int] = 0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if not isinstance(discriminator, nn.Module):
            raise TypeError(f"discriminator must be a torch.nn.Module, got {type(discriminator).__name__}.")
        indices = (cluster_index,) if isinstance(cluster_index, numbers.Integral) else cluster_index
        if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence) or not indices:
            raise TypeError(f"cluster_index must be an int or a non-empty sequence of ints, got {cluster_index!r}.")
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 0:
                raise ValueError(f"cluster_index must hold cluster indices >= 0, got {cluster_index!r}.")
        if len(set(indices)) != len(indices):
            raise ValueError(f"cluster_index must not repeat a cluster, got {cluster_index!r}.")
        self.discriminator = discriminator
        self.cluster_index = tuple(int(i) for i in indices)
        self.reduction = check_reduction(reduction)

    def cluster_map(self, assignment: torch.Tensor) -> torch.Tensor:
        """The soft map ``(B, 1, *spatial)`` of the chosen cluster(s) from ``assignment`` ``(B, K, *spatial)``."""
        a = check_assignment(assignment)
        if max(self.cluster_index) >= a.shape[1]:
            raise ValueError(
                f"cluster_index {list(self.cluster_index)} must be below the K={a.shape[1]} clusters of assignment "
                f"(shape {tuple(a.shape)})."
            )
        return a[:, list(self.cluster_index)].sum(dim=1, keepdim=True).clamp(max=1.0)

    @float32_forward
    def forward(self, assignment: torch.Tensor) -> torch.Tensor:
        """Generator term ``BCE(D(s), 1)`` for assignments ``(B, K, *spatial)``; gradients reach the network."""
        return shape_prior_generator_loss(self.discriminator(self.cluster_map(assignment)), self.reduction)

    def discriminator_loss(self, assignment: torch.Tensor, prior_masks: torch.Tensor) -> torch.Tensor:
        """Discriminator term on prior masks ``(R, 1, *spatial)`` (real) and the detached cluster maps (fake).

        Args:
            assignment: ``(B, K, *spatial)`` soft assignments (detached here).
            prior_masks: ``(R, 1, *spatial)`` prior shapes with values in ``[0, 1]``, same number of spatial
                dimensions as ``assignment``.
        """
        fake = self.cluster_map(assignment.detach() if isinstance(assignment, torch.Tensor) else assignment)
        masks = check_tensor(check_spatial_tensor(prior_masks, "prior_masks", fake.ndim - 2, 1), "prior_masks")
        masks = masks.to(fake.dtype)
        check_finite(masks, "prior_masks")
        if float(masks.min()) < 0 or float(masks.max()) > 1:
            raise ValueError(
                f"prior_masks must hold values in [0, 1], got values in [{float(masks.min())}, {float(masks.max())}]."
            )
        return shape_prior_discriminator_loss(self.discriminator(masks), self.discriminator(fake), self.reduction)

    def extra_repr(self) -> str:
        return f"cluster_index={list(self.cluster_index)}, reduction={self.reduction!r}"
