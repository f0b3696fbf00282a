"""Deep variational clustering (DVC): a convolutional VAE with a Student's-t clustering layer on its latent means.

Soleymani et al. learn a Gaussian posterior q(z|x) with a probabilistic convolutional encoder and a likelihood
with a convolutional decoder, then cluster the latent space with DEC's Student's-t soft assignment and its
KL(P || Q) loss while keeping the VAE terms, so that the decoder keeps the latent space from being distorted.
The training procedure lives in :mod:`monai_cluster.engines.dvc_trainer`.

References:
    - [0] DVC, 2021, https://arxiv.org/abs/2109.10777
    - [1] DEC, 2016, https://arxiv.org/abs/1511.06335
    - [2] VAE, 2013, https://arxiv.org/abs/1312.6114
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Act, Norm
from monai.networks.nets import VarAutoEncoder
from torch import nn

from monai_cluster.networks.blocks.cluster_assignment import StudentTClusterAssignment
from monai_cluster.networks.nets.contrastive_autoencoder import autoencoder_config, check_latent
from monai_cluster.utils.validation import check_positive_int, check_spatial_dims, check_spatial_tensor

__all__ = ["DeepVariationalClustering"]


class DeepVariationalClustering(nn.Module):
    """MONAI ``VarAutoEncoder`` + :class:`StudentTClusterAssignment` on the posterior mean.

    The soft assignment ``q`` is computed on ``mu`` (not on the sampled ``z``), so cluster labels are
    deterministic for a given image; ``z`` is sampled with the reparameterisation trick in training mode and is
    ``mu`` in eval mode.

    Args:
        spatial_dims: 2 or 3.
        in_shape: channel-first input shape ``(C, H, W)`` or ``(C, H, W, D)`` (MONAI ``VarAutoEncoder``'s
            convention); the spatial sizes must be divisible by the product of ``strides``.
        latent_dim: size ``D`` of the latent space.
        num_clusters: number of clusters ``K`` (``>= 2``).
        channels: channels of the encoder blocks, top block first.
        strides: stride of each encoder block.
        alpha: degrees of freedom of the Student's-t kernel.
        kernel_size: convolution kernel size.
        num_res_units: residual units per block (0: plain convolutions).
        act: activation of the convolution blocks (MONAI ``Act``).
        norm: normalisation of the convolution blocks (MONAI ``Norm``).
        use_sigmoid: squash the reconstruction into ``[0, 1]`` (needed for a ``"bce"`` reconstruction loss).

    Shapes:
        ``forward(x)`` with ``x`` ``(B, *in_shape)`` returns ``{"reconstruction": (B, *in_shape), "mu": (B, D),
        "logvar": (B, D), "z": (B, D), "q": (B, K)}``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_shape: Sequence[int],
        latent_dim: int = 10,
        num_clusters: int = 2,
        channels: Sequence[int] = (32, 64),
        strides: Sequence[int] = (2, 2),
        alpha: float = 1.0,
        kernel_size: int = 3,
        num_res_units: int = 0,
        act: tuple | str = Act.PRELU,
        norm: tuple | str = Norm.INSTANCE,
        use_sigmoid: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if not isinstance(in_shape, Sequence) or isinstance(in_shape, str) or len(in_shape) != self.spatial_dims + 1:
            raise ValueError(
                f"in_shape must be channel-first (C, *spatial) with {self.spatial_dims + 1} entries for "
                f"spatial_dims={self.spatial_dims}, got {in_shape!r}."
            )
        self.in_channels = check_positive_int(in_shape[0], "in_shape channel entry")
        spatial, _, kwargs = autoencoder_config(
            self.spatial_dims, tuple(in_shape[1:]), channels, strides, kernel_size, num_res_units, act, norm
        )
        self.in_shape = (self.in_channels, *spatial)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.use_sigmoid = bool(use_sigmoid)
        self.vae = VarAutoEncoder(
            in_shape=self.in_shape,
            out_channels=self.in_channels,
            latent_size=self.latent_dim,
            use_sigmoid=self.use_sigmoid,
            use_mean_at_inference=True,
            **kwargs,
        )
        self.assignment = StudentTClusterAssignment(num_clusters, self.latent_dim, alpha=alpha)
        self.num_clusters = self.assignment.num_clusters

    @property
    def centroids(self) -> nn.Parameter:
        """The cluster centres ``(K, D)`` in latent space (a parameter of :attr:`assignment`)."""
        return self.assignment.centroids

    def _check_input(self, x: torch.Tensor) -> None:
        check_spatial_tensor(x, "x", self.spatial_dims, self.in_channels)
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"x must have shape (B, *in_shape) with in_shape={self.in_shape}, got {tuple(x.shape)}.")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mu, logvar)``, each ``(B, latent_dim)``, of images ``(B, *in_shape)``."""
        self._check_input(x)
        return self.vae.encode_forward(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(B, *in_shape)`` decoded from latent codes ``(B, latent_dim)``."""
        check_latent(z, self.latent_dim)
        return self.vae.decode_forward(z, self.use_sigmoid)

    def assign(self, mu: torch.Tensor) -> torch.Tensor:
        """Soft cluster assignment ``q`` ``(B, K)`` of latent means ``(B, latent_dim)``."""
        return self.assignment(mu)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{"reconstruction", "mu", "logvar", "z", "q"}`` for ``x`` ``(B, *in_shape)``."""
        mu, logvar = self.encode(x)
        z = self.vae.reparameterize(mu, logvar)
        return {"reconstruction": self.decode(z), "mu": mu, "logvar": logvar, "z": z, "q": self.assign(mu)}
