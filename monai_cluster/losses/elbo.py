"""Negative evidence lower bound of a Gaussian VAE: reconstruction + beta * KL(q(z|x) || N(0, I)).

Per sample ``i`` (Kingma & Welling, eq. 10; beta-VAE weighting):

    loss_i = sum_pixels rec(x_hat_i, x_i) + beta * (-1/2) sum_d (1 + logvar_id - mu_id^2 - exp(logvar_id))

``rec`` is the squared error (``"mse"``, a Gaussian likelihood up to constants) or the binary cross-entropy
(``"bce"``, a Bernoulli likelihood; reconstructions must be probabilities, e.g. a sigmoid output). Both terms
are SUMS over pixels and latent dimensions, so they are on the scale of one sample's log-likelihood and the
KL weight ``beta`` keeps its textbook meaning; the reduction then acts over the batch.

References:
    - [0] VAE, 2013, https://arxiv.org/abs/1312.6114
    - [1] beta-VAE, 2017, https://openreview.net/forum?id=Sy2fzU9gl
    - [2] DVC, 2021, https://arxiv.org/abs/2109.10777
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_cluster.losses._nt_xent import check_reduction, reduce_losses
from monai_cluster.utils.validation import check_choice, check_finite, check_positive_float, check_tensor
from monai_cluster.utils.precision import float32_forward

__all__ = ["ELBOLoss", "gaussian_kl_divergence", "reconstruction_error"]

RECONSTRUCTIONS = ("mse", "bce")


@float32_forward
def gaussian_kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(N(mu, exp(logvar)) || N(0, I))`` summed over latent dimensions.

    Args:
        mu: posterior means ``(B, D)``.
        logvar: posterior log-variances ``(B, D)``.

    Returns:
        ``(B,)`` non-negative divergences.
    """
    check_tensor(mu, "mu", ndim=2, floating=True)
    check_tensor(logvar, "logvar", ndim=2, floating=True)
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have the same (B, D) shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}."
        )
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(1)


@float32_forward
def reconstruction_error(reconstruction: torch.Tensor, target: torch.Tensor, recon: str = "mse") -> torch.Tensor:
    """Per-sample reconstruction error summed over channels and pixels.

    Args:
        reconstruction: ``(B, C, *spatial)``; probabilities in ``[0, 1]`` for ``"bce"``.
        target: same shape; values in ``[0, 1]`` for ``"bce"``.
        recon: ``"mse"`` (sum of squared errors) or ``"bce"`` (sum of binary cross-entropies).

    Returns:
        ``(B,)`` errors.
    """
    recon = check_choice(recon, "recon", RECONSTRUCTIONS)
    check_tensor(reconstruction, "reconstruction", floating=True)
    check_tensor(target, "target", floating=True)
    if reconstruction.shape != target.shape:
        raise ValueError(
            f"reconstruction and target must have the same shape, got {tuple(reconstruction.shape)} and "
            f"{tuple(target.shape)}."
        )
    if reconstruction.ndim < 2:
        raise ValueError(f"reconstruction must be batched (B, ...), got shape {tuple(reconstruction.shape)}.")
    check_finite(target, "target")  # a NaN/Inf image would otherwise turn the loss into NaN without a word
    if recon == "bce":
        for value, name in ((reconstruction, "reconstruction"), (target, "target")):
            if bool((value < 0).any()) or bool((value > 1).any()):
                raise ValueError(f"{name} must lie in [0, 1] for recon='bce' (use a sigmoid output and scaled images).")
        error = F.binary_cross_entropy(reconstruction, target.to(reconstruction.dtype), reduction="none")
    else:
        error = (reconstruction - target.to(reconstruction.dtype)).pow(2)
    return error.flatten(1).sum(1)


class ELBOLoss(nn.Module):
    """Negative ELBO of a Gaussian VAE: summed reconstruction error + ``beta`` * KL to the standard normal prior.

    Args:
        beta: weight of the KL term (``>= 0``; 1 is the plain VAE).
        recon: ``"mse"`` or ``"bce"``.
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (``(B,)``).

    Shapes:
        ``forward(reconstruction, target, mu, logvar)``: ``reconstruction`` and ``target`` ``(B, C, *spatial)``,
        ``mu`` and ``logvar`` ``(B, D)``.
    """

    def __init__(self, beta: float = 1.0, recon: str = "mse", reduction: str = "mean") -> None:
        super().__init__()
        self.beta = check_positive_float(beta, "beta", allow_zero=True)
        self.recon = check_choice(recon, "recon", RECONSTRUCTIONS)
        self.reduction = check_reduction(reduction)

    @float32_forward
    def components(
        self, reconstruction: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "reconstruction", "kl"}``, each reduced as configured (``kl`` is unweighted)."""
        rec = reconstruction_error(reconstruction, target, self.recon)
        kl = gaussian_kl_divergence(mu, logvar)
        if kl.shape[0] != rec.shape[0]:
            raise ValueError(f"mu must have one row per sample: batch {rec.shape[0]}, got mu {tuple(mu.shape)}.")
        return {
            "loss": reduce_losses(rec + self.beta * kl, self.reduction),
            "reconstruction": reduce_losses(rec, self.reduction),
            "kl": reduce_losses(kl, self.reduction),
        }

    @float32_forward
    def forward(
        self, reconstruction: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
    ) -> torch.Tensor:
        """Return the negative ELBO reduced as configured."""
        return self.components(reconstruction, target, mu, logvar)["loss"]
