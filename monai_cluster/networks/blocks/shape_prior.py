"""A small convolutional discriminator for the optional shape prior of local discrimination (2D or 3D).

Chen et al. guide one cluster of the clustering branch towards a known shape (e.g. retinal vessels) with an
adversarial term: a discriminator learns to tell prior masks (from simulation or another modality) from the
soft cluster map, and the segmentation network learns to fool it. The loss terms are in
:class:`monai_cluster.losses.ShapePriorLoss`.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer
from torch import nn

from monai_cluster.utils.validation import check_finite, check_positive_int, check_spatial_dims, check_spatial_tensor

__all__ = ["ShapePriorDiscriminator"]


class ShapePriorDiscriminator(nn.Module):
    """Strided-convolution discriminator mapping a (soft) mask to one real/fake logit per sample.

    ``len(features)`` blocks ``Convolution(3x3[x3], stride 2, act, norm)`` halve the resolution while widening
    to ``features[i]`` channels; a global average pool and ``Linear(F, F) -> act -> Linear(F, 1)`` give the
    logit. Global pooling makes it work on any spatial size of at least ``2 ** len(features)`` per axis.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the masks (1 for a single cluster map).
        features: channels of the strided blocks.
        act: activation (MONAI ``Act`` name or ``(name, kwargs)``); leaky ReLU as usual for discriminators.
        norm: normalisation of the blocks (MONAI ``Norm`` name or tuple), or ``None``.
        dropout: dropout of the blocks.

    Shapes:
        input ``(B, in_channels, *spatial)`` with values in ``[0, 1]``, output ``(B,)`` logits (real > 0).

    Raises:
        TypeError/ValueError: for bad sizes (named), and in ``forward`` for an input of the wrong rank or channel
            count, a non-floating or non-finite input, or a spatial axis shorter than ``2 ** len(features)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        features: Sequence[int] = (16, 32, 32, 32),
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
        norm: str | tuple | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        if isinstance(features, (str, bytes)) or not isinstance(features, Sequence) or len(features) == 0:
            raise ValueError(f"features must be a non-empty sequence of channel counts, got {features!r}.")
        self.features = tuple(check_positive_int(f, f"features[{i}]") for i, f in enumerate(features))
        blocks, width = [], self.in_channels
        for out in self.features:
            blocks.append(
                Convolution(
                    self.spatial_dims, width, out, strides=2, kernel_size=3, act=act, norm=norm, dropout=dropout
                )
            )
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Linear(width, width), get_act_layer(act), nn.Linear(width, 1))
        self.min_size = 2 ** len(self.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the real/fake logit ``(B,)`` of each mask in ``x`` ``(B, in_channels, *spatial)``."""
        x = check_spatial_tensor(x, "x", self.spatial_dims, self.in_channels)
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}.")
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"x spatial size {tuple(x.shape[2:])} must be at least {self.min_size} per axis "
                f"({len(self.features)} stride-2 blocks)."
            )
        check_finite(x, "x")
        pooled = self.blocks(x).flatten(2).mean(dim=2)
        return self.classifier(pooled).squeeze(1)
