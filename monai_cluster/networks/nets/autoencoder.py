"""Autoencoders whose features are clustered into pseudo-classes (step 1 of cluster-guided pretraining).

Both subclass MONAI's own networks, keep their layers and ``state_dict`` keys, and add input checks and the
encoder contract ``forward_features(x) -> (B, num_features)`` that :func:`monai_cluster.clustering.extract_features`
calls.

References:
    - [0] Cluster-guided contrastive pretraining, 2022, https://arxiv.org/abs/2211.08557
    - [1] VAE, 2013, https://arxiv.org/abs/1312.6114
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import AutoEncoder, VarAutoEncoder
from monai.utils import ensure_tuple_rep

from monai_cluster.utils.validation import (
    check_choice,
    check_positive_int,
    check_spatial_dims,
    check_spatial_tensor,
)

__all__ = ["FeatureAutoEncoder", "FeatureVarAutoEncoder"]


def _check_sizes(channels: Sequence[int], strides: Sequence[int]) -> tuple[list[int], list[int]]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) < 1:
        raise ValueError(f"channels must be a non-empty sequence of channel counts, got {channels!r}.")
    if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or len(strides) != len(channels):
        raise ValueError(
            f"strides must be a sequence with one stride per entry of channels ({len(channels)}), got {strides!r}."
        )
    chans = [check_positive_int(c, f"channels[{i}]") for i, c in enumerate(channels)]
    strs = [check_positive_int(s, f"strides[{i}]") for i, s in enumerate(strides)]
    return chans, strs


def _check_image(x: torch.Tensor, spatial_dims: int, in_channels: int) -> tuple[int, ...]:
    check_spatial_tensor(x, "x", spatial_dims, in_channels)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}.")
    return tuple(x.shape[2:])


class FeatureAutoEncoder(AutoEncoder):
    """MONAI :class:`~monai.networks.nets.AutoEncoder` that reconstructs its input and exposes pooled features.

    ``forward(x)`` is the parent's ``decode(intermediate(encode(x)))``, a reconstruction of ``x``'s shape.
    ``forward_features(x)`` pools the latent map ``intermediate(encode(x))`` over space: its mean
    (``feature_pool="avg"``, ``num_features = C_latent``) or its mean and maximum concatenated
    (``"avgmax"``, ``num_features = 2 * C_latent``; the maximum keeps small bright structures that a mean
    over the whole image washes out). ``C_latent`` is ``channels[-1]``, or ``inter_channels[-1]`` when given.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: encoder channels, top block first.
        strides: encoder strides, one per entry of ``channels``.
        num_res_units: residual units per block (0 uses plain convolutions).
        out_channels: reconstruction channels; ``None`` means ``in_channels``.
        feature_pool: ``"avg"`` or ``"avgmax"``.
        kwargs: passed to MONAI's ``AutoEncoder`` (``kernel_size``, ``up_kernel_size``, ``inter_channels``,
            ``inter_dilations``, ``num_inter_units``, ``act``, ``norm``, ``dropout``, ``bias``, ``padding``).

    Shapes:
        ``x``: ``(B, in_channels, *spatial)``, each spatial size divisible by the product of ``strides``
        (so the reconstruction has the input's size); reconstruction ``(B, out_channels, *spatial)``;
        features ``(B, num_features)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 1,
        out_channels: int | None = None,
        feature_pool: str = "avg",
        **kwargs: Any,
    ) -> None:
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int(in_channels, "in_channels")
        out_channels = in_channels if out_channels is None else check_positive_int(out_channels, "out_channels")
        num_res_units = check_positive_int(num_res_units, "num_res_units", minimum=0)
        chans, strs = _check_sizes(channels, strides)
        super().__init__(spatial_dims, in_channels, out_channels, chans, strs, num_res_units=num_res_units, **kwargs)
        self.feature_pool = check_choice(feature_pool, "feature_pool", ("avg", "avgmax"))
        self.size_divisor = 1
        for s in strs:
            self.size_divisor *= s
        self.num_features = self.encoded_channels * (2 if self.feature_pool == "avgmax" else 1)

    def _check_input(self, x: torch.Tensor) -> None:
        spatial = _check_image(x, self.dimensions, self.in_channels)
        if any(s % self.size_divisor for s in spatial):
            raise ValueError(
                f"x spatial size {spatial} must be divisible by {self.size_divisor} (the product of strides) so "
                "the reconstruction has the input's size; pad or crop the input."
            )

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Return the latent map ``intermediate(encode(x))`` of shape ``(B, C_latent, *spatial / size_divisor)``."""
        self._check_input(x)
        return self.intermediate(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x`` ``(B, in_channels, *spatial)`` as ``(B, out_channels, *spatial)``."""
        return self.decode(self.encode_latent(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled latent features ``(B, num_features)`` of ``x`` (see the class docstring for the pooling)."""
        latent = self.encode_latent(x).flatten(2)
        pooled = latent.mean(dim=2)
        if self.feature_pool == "avgmax":
            pooled = torch.cat([pooled, latent.amax(dim=2)], dim=1)
        return pooled


class FeatureVarAutoEncoder(VarAutoEncoder):
    """MONAI :class:`~monai.networks.nets.VarAutoEncoder` whose features are the posterior mean ``mu``.

    ``forward(x)`` is the parent's: ``(reconstruction, mu, logvar, z)`` with the reconstruction shaped like
    ``x`` (through a sigmoid when ``use_sigmoid``) and ``mu``, ``logvar``, ``z`` of shape ``(B, latent_size)``.
    ``forward_features(x)`` returns ``mu`` (deterministic: no sampling), ``num_features = latent_size``.
    Unlike MONAI's default, ``use_mean_at_inference`` is ``True``: in eval mode the latent code is ``mu``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        spatial_size: the fixed spatial size of the inputs (the flattening layer depends on it).
        latent_size: size of the latent vector.
        channels: encoder channels, top block first.
        strides: encoder strides, one per entry of ``channels``.
        num_res_units: residual units per block.
        out_channels: reconstruction channels; ``None`` means ``in_channels``.
        use_sigmoid: apply a sigmoid to the reconstruction (for inputs scaled to ``[0, 1]``).
        use_mean_at_inference: in eval mode, decode ``mu`` instead of ``mu + std``.
        kwargs: passed to MONAI's ``VarAutoEncoder`` (``kernel_size``, ``up_kernel_size``, ``inter_channels``,
            ``inter_dilations``, ``num_inter_units``, ``act``, ``norm``, ``dropout``, ``bias``).

    Shapes:
        ``x``: ``(B, in_channels, *spatial_size)`` exactly; features ``(B, latent_size)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        spatial_size: int | Sequence[int],
        latent_size: int = 32,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 1,
        out_channels: int | None = None,
        use_sigmoid: bool = True,
        use_mean_at_inference: bool = True,
        **kwargs: Any,
    ) -> None:
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int(in_channels, "in_channels")
        size = ensure_tuple_rep(spatial_size, spatial_dims)
        size = tuple(check_positive_int(s, "spatial_size") for s in size)
        out_channels = in_channels if out_channels is None else check_positive_int(out_channels, "out_channels")
        num_res_units = check_positive_int(num_res_units, "num_res_units", minimum=0)
        chans, strs = _check_sizes(channels, strides)
        divisor = 1
        for s in strs:
            divisor *= s
        if any(s % divisor for s in size):
            raise ValueError(
                f"spatial_size {size} must be divisible by {divisor} (the product of strides) so the reconstruction "
                "has the input's size."
            )
        super().__init__(
            spatial_dims,
            (in_channels, *size),
            out_channels,
            check_positive_int(latent_size, "latent_size"),
            chans,
            strs,
            num_res_units=num_res_units,
            use_sigmoid=use_sigmoid,
            use_mean_at_inference=use_mean_at_inference,
            **kwargs,
        )
        self.spatial_size = size
        self.num_features = self.latent_size

    def _check_input(self, x: torch.Tensor) -> None:
        spatial = _check_image(x, self.dimensions, self.in_channels)
        if spatial != self.spatial_size:
            raise ValueError(f"x spatial size must be spatial_size={self.spatial_size}, got {spatial}.")

    def encode_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``(B, latent_size)``, after checking ``x``."""
        self._check_input(x)
        return super().encode_forward(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean ``mu`` ``(B, latent_size)`` of ``x``."""
        return self.encode_forward(x)[0]
