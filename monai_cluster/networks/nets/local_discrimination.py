"""The two-branch network of unsupervised local discrimination (Chen et al.) on a MONAI BasicUNet, 2D or 3D.

A :class:`~monai.networks.nets.BasicUNet` whose ``final_conv`` is replaced by the identity computes a
full-resolution decoder map; two small convolutional heads read it:

- the **embedding** head gives every pixel (voxel) an L2-normalised vector on the unit hypersphere
  ``S^{embed_dim - 1}``, where dissimilar pixels are spread apart by the patch-discrimination losses;
- the **clustering** head gives every pixel a soft assignment over ``num_clusters`` clusters (a softmax over
  the channel axis), which the region-discrimination loss uses to pool pixels into regions.

The backbone keeps BasicUNet's own ``state_dict`` keys (minus the replaced ``final_conv``), so
:meth:`LocalDiscriminationNet.backbone_state_dict` is the pretraining checkpoint a segmentation ``BasicUNet``
of the same ``features`` loads with :func:`monai_cluster.networks.load_pretrained` (whose default
``exclude=("final_conv",)`` leaves the fresh task head alone).

References:
    - [0] Unsupervised learning of local discriminative representation for medical images, Chen et al.,
      IPMI 2021, https://arxiv.org/abs/2012.09333
    - [1] Unsupervised local discrimination for medical images, Chen et al., 2021,
      https://arxiv.org/abs/2108.09440
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNet
from torch import nn

from monai_cluster.utils.validation import (
    check_choice,
    check_positive_int,
    check_spatial_dims,
    check_spatial_tensor,
)

__all__ = ["LocalDiscriminationNet", "ASSIGNMENT_ACTIVATIONS"]

ASSIGNMENT_ACTIVATIONS = ("softmax", "sigmoid")
"""How the clustering head turns logits into per-pixel assignments (see :class:`LocalDiscriminationNet`)."""

_SIZE_DIVISOR = 16  # BasicUNet pools four times by 2


class LocalDiscriminationNet(nn.Module):
    """U-Net with a per-pixel embedding head and a per-pixel clustering head (2D or 3D).

    ``forward(x)`` returns a dict::

        {"embedding": (B, embed_dim, *spatial),     # unit L2 norm along dim 1 at every pixel
         "assignment": (B, num_clusters, *spatial),  # >= 0, sums to 1 along dim 1 at every pixel
         "logits": (B, num_clusters, *spatial)}      # the clustering head before its activation

    Each head is ``Convolution(3x3[x3], act, norm) -> Conv(3x3[x3])`` on the decoder map, as the two branches
    of the paper. ``assignment_activation="softmax"`` (default) is a softmax over clusters;
    ``"sigmoid"`` is the authors' released variant, an element-wise sigmoid followed by L1 normalisation over
    clusters (``s_k / sum_j s_j``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        embed_dim: size of the per-pixel embedding (32 in the paper).
        num_clusters: number of clusters ``K`` of the clustering head (16 in the paper).
        features: the six BasicUNet feature sizes; ``features[5]`` is the decoder map's width.
        head_channels: hidden width of both heads; ``None`` uses ``features[5]``.
        act: activation of the backbone and the heads' hidden layer (MONAI ``Act`` name or ``(name, kwargs)``).
        norm: normalisation of the backbone and the heads' hidden layer (MONAI ``Norm`` name or tuple).
        bias: convolution bias in the backbone and heads.
        dropout: dropout of the backbone and heads.
        upsample: BasicUNet's upsampling mode (``"deconv"``, ``"pixelshuffle"``, ``"nontrainable"``).
        assignment_activation: one of :data:`ASSIGNMENT_ACTIVATIONS`.

    Raises:
        TypeError/ValueError: for bad sizes or choices (named), and in ``forward`` for an input of the wrong
            rank or channel count, non-floating dtype, or spatial sizes not divisible by 16.

    Example:
        >>> net = LocalDiscriminationNet(2, in_channels=3, embed_dim=32, num_clusters=16)
        >>> out = net(torch.rand(2, 3, 64, 64))
        >>> out["embedding"].shape, out["assignment"].shape
        (torch.Size([2, 32, 64, 64]), torch.Size([2, 16, 64, 64]))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        embed_dim: int = 32,
        num_clusters: int = 16,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        head_channels: int | None = None,
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float = 0.0,
        upsample: str = "deconv",
        assignment_activation: str = "softmax",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.num_clusters = check_positive_int(num_clusters, "num_clusters", minimum=2)
        if isinstance(features, (str, bytes)) or not isinstance(features, Sequence) or len(features) != 6:
            raise ValueError(f"features must be a sequence of six BasicUNet feature sizes, got {features!r}.")
        self.features = tuple(check_positive_int(f, f"features[{i}]") for i, f in enumerate(features))
        hidden = self.features[5] if head_channels is None else check_positive_int(head_channels, "head_channels")
        self.assignment_activation = check_choice(
            assignment_activation, "assignment_activation", ASSIGNMENT_ACTIVATIONS
        )

        # out_channels is irrelevant: final_conv is replaced, so backbone(x) is the decoder map (B, features[5], ...)
        self.backbone = BasicUNet(
            self.spatial_dims, self.in_channels, 1, self.features, act, norm, bias, dropout, upsample
        )
        self.backbone.final_conv = nn.Identity()
        self.embedding_head = self._head(self.features[5], hidden, self.embed_dim, act, norm, bias, dropout)
        self.clustering_head = self._head(self.features[5], hidden, self.num_clusters, act, norm, bias, dropout)

    def _head(
        self, in_ch: int, hidden: int, out_ch: int, act: str | tuple, norm: str | tuple, bias: bool, dropout: float
    ) -> nn.Sequential:
        return nn.Sequential(
            Convolution(
                self.spatial_dims, in_ch, hidden, kernel_size=3, act=act, norm=norm, bias=bias, dropout=dropout
            ),
            Convolution(self.spatial_dims, hidden, out_ch, kernel_size=3, bias=True, conv_only=True),
        )

    def _check_input(self, x: object) -> torch.Tensor:
        x = check_spatial_tensor(x, "x", self.spatial_dims, self.in_channels)
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}.")
        spatial = tuple(x.shape[2:])
        if any(s % _SIZE_DIVISOR for s in spatial):
            raise ValueError(
                f"x spatial size {spatial} must be divisible by {_SIZE_DIVISOR} in every axis (BasicUNet pools 4 "
                "times by 2); pad or crop the input."
            )
        if math.prod(s // _SIZE_DIVISOR for s in spatial) < 2:
            raise ValueError(
                f"x spatial size {spatial} leaves a one-voxel bottleneck, which instance norm cannot normalise; "
                f"make at least one axis {2 * _SIZE_DIVISOR} or more."
            )
        return x

    def assign(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-pixel assignments from clustering logits ``(B, K, *spatial)`` (sum to 1 along dim 1)."""
        if self.assignment_activation == "softmax":
            return torch.softmax(logits, dim=1)
        gate = torch.sigmoid(logits)
        return gate / gate.sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embed and softly cluster every pixel of ``x`` ``(B, in_channels, *spatial)``.

        Returns:
            ``{"embedding": (B, embed_dim, *spatial), "assignment": (B, K, *spatial), "logits": (B, K, *spatial)}``.
        """
        decoded = self.backbone(self._check_input(x))
        embedding = F.normalize(self.embedding_head(decoded), dim=1)
        logits = self.clustering_head(decoded)
        return {"embedding": embedding, "assignment": self.assign(logits), "logits": logits}

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """BasicUNet's own ``state_dict`` (no ``backbone.`` prefix, no ``final_conv``): the checkpoint to save."""
        return self.backbone.state_dict()
