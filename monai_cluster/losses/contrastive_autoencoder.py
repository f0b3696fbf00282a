"""Loss of the contrastive autoencoder: NT-Xent between two views' projections + reconstruction of both views.

Per view ``v`` (the ``2B`` views are view 1 of every sample, then view 2):

    l(v) = NT-Xent(v) + recon_weight * mean_pixels rec(x_hat_v, x_v)

with ``rec`` the squared (``"mse"``) or absolute (``"l1"``) error and NT-Xent SimCLR's loss with every other
view a negative (:class:`monai_cluster.losses.ClusterGuidedContrastiveLoss` without pseudo-classes). The
``"mean"`` reduction averages over the ``2B`` views, i.e. the NT-Xent mean plus ``recon_weight`` times the
average of both views' mean reconstruction errors. Ferrante et al.'s released code weighs the SUM of the two
views' errors by 0.1, which is ``recon_weight=0.2`` here.

References:
    - [0] Contrastive autoencoder, 2023, https://arxiv.org/abs/2209.12005
    - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from monai_cluster.losses._nt_xent import check_reduction, reduce_losses
from monai_cluster.losses.cluster_contrastive import ClusterGuidedContrastiveLoss
from monai_cluster.utils.validation import check_choice, check_positive_float, check_tensor
from monai_cluster.utils.precision import float32_forward

__all__ = ["ContrastiveAutoEncoderLoss", "mean_reconstruction_error"]

RECONSTRUCTIONS = ("mse", "l1")


def _output(output: object, name: str, key: str) -> torch.Tensor:
    if not isinstance(output, Mapping):
        raise TypeError(f"{name} must be the model's output dict with {key!r}, got {type(output).__name__}.")
    if key not in output:
        raise ValueError(
            f"{name} must hold the key {key!r} (ContrastiveAutoEncoder output), got keys {sorted(output)}."
        )
    return output[key]


@float32_forward
def mean_reconstruction_error(
    reconstruction: object, target: object, recon: str = "mse", name: str = "x"
) -> torch.Tensor:
    """Per-image reconstruction error ``(B,)``: the mean over channels and voxels of the squared (``"mse"``) or
    absolute (``"l1"``) difference between ``reconstruction`` and ``target`` ``(B, C, *spatial)``.

    Raises:
        ValueError/TypeError: for non-floating tensors, different shapes, fewer than 3 dimensions or an unknown
            ``recon`` (messages name ``name``).
    """
    recon = check_choice(recon, "recon", RECONSTRUCTIONS)
    rec = check_tensor(reconstruction, f"{name} reconstruction", floating=True)
    tgt = check_tensor(target, name, floating=True)
    if rec.shape != tgt.shape or rec.ndim < 3:
        raise ValueError(
            f"{name} (B, C, *spatial) and its reconstruction must have the same shape, got {tuple(tgt.shape)} "
            f"and {tuple(rec.shape)}."
        )
    diff = rec - tgt.to(rec.dtype)
    error = diff.pow(2) if recon == "mse" else diff.abs()
    return error.flatten(1).mean(1)


class ContrastiveAutoEncoderLoss(nn.Module):
    """NT-Xent on the projections of two views + ``recon_weight`` * reconstruction error of both views.

    Args:
        temperature: NT-Xent temperature (``> 0``).
        recon_weight: weight of the reconstruction term (``>= 0``; 0 is plain SimCLR on the latent code).
        recon: ``"mse"`` or ``"l1"`` (mean over channels and pixels of each view).
        reduction: ``"mean"`` or ``"sum"`` over the ``2B`` views, or ``"none"`` (``(2B,)``, view 1 first).
        gather_distributed: contrast against the views of every ``torch.distributed`` rank.

    Shapes:
        ``forward(output_1, output_2, x1, x2)``: ``output_k`` are :class:`ContrastiveAutoEncoder` output dicts
        (``"projection"`` ``(B, P)``, ``"reconstruction"`` ``(B, C, *spatial)``) of the views ``x1`` and ``x2``
        ``(B, C, *spatial)``, ``B >= 2``.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        recon_weight: float = 1.0,
        recon: str = "mse",
        reduction: str = "mean",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.recon_weight = check_positive_float(recon_weight, "recon_weight", allow_zero=True)
        self.recon = check_choice(recon, "recon", RECONSTRUCTIONS)
        self.reduction = check_reduction(reduction)
        self.contrastive = ClusterGuidedContrastiveLoss(
            temperature=temperature, reduction="none", gather_distributed=gather_distributed
        )

    def _view_error(self, reconstruction: object, target: object, name: str) -> torch.Tensor:
        return mean_reconstruction_error(reconstruction, target, self.recon, name)

    @float32_forward
    def components(
        self, output_1: Mapping, output_2: Mapping, x1: torch.Tensor, x2: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "contrastive", "reconstruction"}`` reduced as configured (reconstruction unweighted)."""
        z1 = _output(output_1, "output_1", "projection")
        z2 = _output(output_2, "output_2", "projection")
        contrastive = self.contrastive(z1, z2)
        rec = torch.cat(
            [
                self._view_error(_output(output_1, "output_1", "reconstruction"), x1, "x1"),
                self._view_error(_output(output_2, "output_2", "reconstruction"), x2, "x2"),
            ]
        )
        if rec.shape != contrastive.shape:
            raise ValueError(
                f"x1 and x2 must hold the same B samples as the projections, got {rec.shape[0]} views for "
                f"{contrastive.shape[0]} projections."
            )
        return {
            "loss": reduce_losses(contrastive + self.recon_weight * rec, self.reduction),
            "contrastive": reduce_losses(contrastive, self.reduction),
            "reconstruction": reduce_losses(rec, self.reduction),
        }

    @float32_forward
    def forward(self, output_1: Mapping, output_2: Mapping, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Return the total loss reduced as configured."""
        return self.components(output_1, output_2, x1, x2)["loss"]

    def extra_repr(self) -> str:
        return f"recon_weight={self.recon_weight}, recon={self.recon!r}, reduction={self.reduction!r}"
