"""Contrastive autoencoder: a convolutional autoencoder with a flat latent code and a projection head.

Ferrante et al. train an autoencoder whose latent code is shaped by two terms: NT-Xent between the
projections of two augmented views (SimCLR) and the reconstruction of both views. The latent code (before
the projection head) is what gets clustered, by k-means or by prototypes initialised from k-means centres,
and decoding latent codes around a cluster's centre gives new images of that cluster. In the authors' second
training phase the decoder also reads the code's soft similarity to the prototypes, which move every batch.

References:
    - [0] Contrastive autoencoder, 2023, https://arxiv.org/abs/2209.12005
    - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Norm
from monai.networks.nets import AutoEncoder
from torch import nn

from monai_cluster.clustering.prototypes import prototype_assignment, prototype_means
from monai_cluster.networks.blocks.heads import ProjectionHead
from monai_cluster.utils.validation import (
    check_finite,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_spatial_dims,
    check_spatial_tensor,
    check_tensor,
)

__all__ = ["ContrastiveAutoEncoder"]


def autoencoder_config(
    spatial_dims: int,
    spatial_shape: object,
    channels: object,
    strides: object,
    kernel_size: object,
    num_res_units: object,
    act: tuple | str,
    norm: tuple | str,
    name: str = "in_shape",
) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """Validate the shared convolutional settings of this package's autoencoders.

    A stride-``s`` convolution with "same" padding maps ``n`` to ``ceil(n / s)`` and its transposed twin maps
    ``m`` back to ``m * s``, so the decoder gives back the input size only when every spatial size is divisible
    by the product of the strides. Errors name ``name``, ``channels``, ``strides``, ``kernel_size`` or
    ``num_res_units``.

    Returns:
        ``(spatial_shape, bottleneck_shape, kwargs)`` with ``kwargs`` the keyword arguments shared by MONAI's
        ``AutoEncoder`` and ``VarAutoEncoder``.
    """
    if not isinstance(spatial_shape, Sequence) or isinstance(spatial_shape, str) or len(spatial_shape) != spatial_dims:
        raise ValueError(f"{name} must be a sequence of {spatial_dims} spatial sizes, got {spatial_shape!r}.")
    shape = tuple(check_positive_int(s, f"{name} entry") for s in spatial_shape)
    if not isinstance(channels, Sequence) or isinstance(channels, str) or len(channels) == 0:
        raise ValueError(f"channels must be a non-empty sequence of channel counts, got {channels!r}.")
    channels = tuple(check_positive_int(c, "channels entry") for c in channels)
    if not isinstance(strides, Sequence) or isinstance(strides, str) or len(strides) != len(channels):
        raise ValueError(
            f"strides must be a sequence with one stride per channels entry ({len(channels)}), got {strides!r}."
        )
    strides = tuple(check_positive_int(s, "strides entry") for s in strides)
    factor = math.prod(strides)
    if any(s % factor for s in shape):
        raise ValueError(
            f"{name} {shape} must be divisible by the product of strides {strides} (= {factor}) in every spatial "
            "dimension, so that the decoder restores the input size."
        )
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    kwargs = {
        "spatial_dims": spatial_dims,
        "channels": channels,
        "strides": strides,
        "kernel_size": kernel_size,
        "up_kernel_size": kernel_size,
        "num_res_units": check_positive_int(num_res_units, "num_res_units", minimum=0),
        "act": act,
        "norm": norm,
    }
    return shape, tuple(s // factor for s in shape), kwargs


def check_latent(z: object, latent_dim: int, name: str = "z") -> torch.Tensor:
    """Check that ``z`` is a floating ``(B, latent_dim)`` tensor (ValueError/TypeError naming ``name``)."""
    check_tensor(z, name, ndim=2, floating=True)
    if z.shape[1] != latent_dim:
        raise ValueError(f"{name} must be (B, {latent_dim}) for latent_dim={latent_dim}, got {tuple(z.shape)}.")
    return z


class ContrastiveAutoEncoder(nn.Module):
    """Convolutional autoencoder (MONAI ``AutoEncoder`` blocks) with a flat latent code and a projection head,
    optionally with a decoder conditioned on the code's similarity to ``num_prototypes`` prototypes.

    ``encode``: MONAI's strided convolution encoder -> flatten -> ``Linear`` to ``latent_dim``.
    ``decode``: ``Linear`` -> ReLU -> reshape -> MONAI's transposed-convolution decoder (-> sigmoid).
    ``projection``: :class:`monai_cluster.networks.ProjectionHead` on the latent code, used only by the contrastive
    loss. The default head is SimCLR's (2 layers, batch norm, ``proj_dim`` outputs); Ferrante et al.'s released
    code uses ``proj_layers=3, proj_norm=False, proj_dim=latent_dim`` (hidden width ``2 * latent_dim`` in both).

    **Prototype-conditioned decoder** (Ferrante et al.'s AESIMCLR, ``num_prototypes=K``): the decoder reads the
    latent code together with its soft assignment ``c = softmax(z . B^T / prototype_temperature)`` ``(B, K)`` to
    the prototypes ``B`` ``(K, D)`` (a buffer, saved with the weights). Until :meth:`set_prototypes` is called the
    assignment is uniform (``1 / K``), as in the authors' first training phase; the second phase
    (:func:`monai_cluster.engines.train_cae` with ``prototype_epochs``) sets the prototypes from k-means and moves
    them every batch (:meth:`update_prototypes`). The authors feed ``c`` through a linear map to one extra channel
    at the decoder's first feature map; here ``[z, c]`` enters the decoder's first linear layer, which gives the
    decoder the same linear access to ``c`` without changing MONAI's decoder blocks.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels ``C`` of the input images.
        in_shape: spatial size ``(H, W)`` or ``(H, W, D)`` of the input; divisible by the product of ``strides``.
        latent_dim: size ``D`` of the latent code.
        channels: channels of the encoder blocks, top block first.
        strides: stride of each encoder block.
        proj_dim: size ``P`` of the projection.
        proj_hidden: hidden width of the projection head (``None``: ``2 * latent_dim`` as Ferrante et al.).
        out_channels: channels of the reconstruction (``None``: ``in_channels``).
        kernel_size: convolution kernel size.
        num_res_units: residual units per block (0: plain convolutions).
        act: activation of the convolution blocks (MONAI ``Act``).
        norm: normalisation of the convolution blocks (MONAI ``Norm``).
        use_sigmoid: squash the reconstruction into ``[0, 1]`` (images scaled to ``[0, 1]``).
        proj_layers: linear layers of the projection head (``>= 1``).
        proj_norm: batch norm after the hidden layers of the projection head.
        num_prototypes: ``K >= 2`` builds the prototype-conditioned decoder; ``None`` (default) a plain decoder.
        prototype_temperature: temperature ``T > 0`` of the soft assignment to the prototypes.

    Shapes:
        ``forward(x)`` with ``x`` ``(B, C, *in_shape)`` returns ``{"latent": (B, D), "projection": (B, P),
        "reconstruction": (B, out_channels, *in_shape)}``, plus ``"assignment": (B, K)`` with prototypes.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        in_shape: Sequence[int],
        latent_dim: int = 32,
        channels: Sequence[int] = (32, 64),
        strides: Sequence[int] = (2, 2),
        proj_dim: int = 128,
        proj_hidden: int | None = None,
        out_channels: int | None = None,
        kernel_size: int = 3,
        num_res_units: int = 0,
        act: tuple | str = Act.PRELU,
        norm: tuple | str = Norm.INSTANCE,
        use_sigmoid: bool = True,
        proj_layers: int = 2,
        proj_norm: bool = True,
        num_prototypes: int | None = None,
        prototype_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = (
            self.in_channels if out_channels is None else check_positive_int(out_channels, "out_channels")
        )
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.proj_dim = check_positive_int(proj_dim, "proj_dim")
        self.num_prototypes = (
            None if num_prototypes is None else check_positive_int(num_prototypes, "num_prototypes", minimum=2)
        )
        self.prototype_temperature = check_positive_float(prototype_temperature, "prototype_temperature")
        self.in_shape, self.bottleneck_shape, kwargs = autoencoder_config(
            self.spatial_dims, in_shape, channels, strides, kernel_size, num_res_units, act, norm
        )
        self.use_sigmoid = bool(use_sigmoid)
        self.backbone = AutoEncoder(in_channels=self.in_channels, out_channels=self.out_channels, **kwargs)
        self.bottleneck_channels = int(self.backbone.encoded_channels)
        flat = self.bottleneck_channels * math.prod(self.bottleneck_shape)
        self.to_latent = nn.Linear(flat, self.latent_dim)
        self.from_latent = nn.Linear(self.latent_dim + (self.num_prototypes or 0), flat)
        hidden = 2 * self.latent_dim if proj_hidden is None else check_positive_int(proj_hidden, "proj_hidden")
        self.projection = ProjectionHead(
            self.latent_dim, hidden_features=hidden, out_features=self.proj_dim, num_layers=proj_layers, norm=proj_norm
        )
        if self.num_prototypes is not None:
            self.register_buffer("prototypes", torch.zeros(self.num_prototypes, self.latent_dim))
            self.register_buffer("prototypes_set", torch.zeros((), dtype=torch.bool))

    def _check_input(self, x: torch.Tensor) -> None:
        check_spatial_tensor(x, "x", self.spatial_dims, self.in_channels)
        if tuple(x.shape[2:]) != self.in_shape:
            raise ValueError(f"x must have spatial size in_shape={self.in_shape}, got shape {tuple(x.shape)}.")

    def _require_prototypes(self, what: str) -> int:
        if self.num_prototypes is None:
            raise ValueError(f"{what} needs a ContrastiveAutoEncoder built with num_prototypes (got None).")
        return self.num_prototypes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, latent_dim)`` of images ``(B, C, *in_shape)``."""
        self._check_input(x)
        h = self.backbone.intermediate(self.backbone.encode(x))
        return self.to_latent(h.flatten(1))

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """Soft assignments ``(B, K)`` of latent codes ``(B, latent_dim)`` to the prototypes: uniform ``1 / K``
        before :meth:`set_prototypes`, then ``softmax(z . B^T / prototype_temperature)`` (differentiable in z)."""
        k = self._require_prototypes("assign")
        check_latent(z, self.latent_dim)
        if not bool(self.prototypes_set):
            return z.new_full((z.shape[0], k), 1.0 / k)
        return prototype_assignment(z, self.prototypes, self.prototype_temperature)

    def set_prototypes(self, prototypes: torch.Tensor | np.ndarray) -> None:
        """Set the prototypes ``(K, latent_dim)`` (e.g. k-means centres of the latent codes); from now on the
        decoder is conditioned on the codes' soft assignments to them."""
        k = self._require_prototypes("set_prototypes")
        value = check_tensor(torch.as_tensor(prototypes), "prototypes", ndim=2, floating=True)
        if tuple(value.shape) != (k, self.latent_dim):
            raise ValueError(f"prototypes must be ({k}, {self.latent_dim}), got {tuple(value.shape)}.")
        check_finite(value, "prototypes")
        # a new tensor rather than an in-place copy: an assignment computed from the old prototypes may still be
        # waiting for its backward pass
        self.prototypes = value.detach().to(self.prototypes).clone()
        self.prototypes_set = torch.ones_like(self.prototypes_set)

    def clear_prototypes(self) -> None:
        """Forget the prototypes: the decoder sees uniform assignments again (the first training phase)."""
        self._require_prototypes("clear_prototypes")
        self.prototypes = torch.zeros_like(self.prototypes)
        self.prototypes_set = torch.zeros_like(self.prototypes_set)

    def update_prototypes(self, z: torch.Tensor, assignment: str = "soft", momentum: float = 0.0) -> None:
        """Move the prototypes towards the means of the codes ``z`` ``(B, latent_dim)`` assigned to them
        (:func:`monai_cluster.clustering.prototype_means`; summed over ``torch.distributed`` ranks):
        ``B <- momentum * B + (1 - momentum) * means``. ``momentum=0`` replaces them, as the authors do each batch.

        Raises:
            ValueError: before :meth:`set_prototypes`, for a momentum outside ``[0, 1)`` or an unknown assignment.
        """
        self._require_prototypes("update_prototypes")
        if not bool(self.prototypes_set):
            raise ValueError("update_prototypes needs prototypes: call set_prototypes (e.g. k-means centres) first.")
        momentum = check_probability(momentum, "momentum")
        if momentum >= 1.0:
            raise ValueError(f"momentum must lie in [0, 1) (1 would never move the prototypes), got {momentum}.")
        check_latent(z, self.latent_dim)
        means = prototype_means(
            z.detach(), self.prototypes, self.prototype_temperature, assignment=assignment, all_reduce=True
        )
        self.set_prototypes(momentum * self.prototypes + (1.0 - momentum) * means)

    def decode(self, z: torch.Tensor, assignment: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, out_channels, *in_shape)`` decoded from latent codes ``(B, latent_dim)``; with prototypes,
        conditioned on ``assignment`` ``(B, K)`` (``None``: :meth:`assign` of ``z``)."""
        check_latent(z, self.latent_dim)
        if self.num_prototypes is None:
            if assignment is not None:
                raise ValueError("assignment is only taken by a ContrastiveAutoEncoder built with num_prototypes.")
            inputs = z
        else:
            assignment = self.assign(z) if assignment is None else check_tensor(assignment, "assignment", ndim=2)
            if tuple(assignment.shape) != (z.shape[0], self.num_prototypes):
                raise ValueError(
                    f"assignment must be (B, {self.num_prototypes}) for {z.shape[0]} codes, got "
                    f"{tuple(assignment.shape)}."
                )
            inputs = torch.cat([z, assignment.to(z)], dim=1)
        h = F.relu(self.from_latent(inputs)).view(z.shape[0], self.bottleneck_channels, *self.bottleneck_shape)
        out = self.backbone.decode(h)
        return torch.sigmoid(out) if self.use_sigmoid else out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{"latent", "projection", "reconstruction"}`` (and ``"assignment"`` with prototypes) for ``x``
        ``(B, C, *in_shape)``."""
        latent = self.encode(x)
        out = {"latent": latent, "projection": self.projection(latent)}
        if self.num_prototypes is None:
            out["reconstruction"] = self.decode(latent)
        else:
            out["assignment"] = self.assign(latent)
            out["reconstruction"] = self.decode(latent, out["assignment"])
        return out
