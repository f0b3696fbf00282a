"""Projection heads for contrastive pretraining: an MLP on pooled features and a 1x1-conv head on dense maps.

The global head maps a pooled encoder vector ``(B, F)`` to the space where the contrastive loss is computed
(SimCLR's "g"); the dense head does the same per location of a decoder feature map ``(B, C, *spatial)``
(the local head of Chaitanya et al.). Both are thrown away after pretraining.

References:
    - [0] SimCLR, 2020, https://arxiv.org/abs/2002.05709
    - [1] Global and local contrastive learning, 2020, https://arxiv.org/abs/2006.10511
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from monai_cluster.utils.validation import check_positive_int, check_spatial_dims, check_spatial_tensor, check_tensor

__all__ = ["ProjectionHead", "DenseProjectionHead"]


class ProjectionHead(nn.Module):
    """SimCLR MLP projection head: ``num_layers`` linear layers, each but the last followed by norm and act.

    With ``num_layers=2`` (the SimCLR default) the head is
    ``Linear(F, H, bias=not norm) -> BatchNorm1d(H) -> ReLU -> Linear(H, out_features)``.
    The last layer has a bias and no norm or activation, so the output is free to take any sign
    (the contrastive loss L2-normalises it).

    Args:
        in_features: size ``F`` of the input vectors.
        hidden_features: width ``H`` of the hidden layers; ``None`` uses ``in_features``.
        out_features: size of the projection.
        num_layers: number of linear layers (``>= 1``; ``1`` is a single linear map).
        norm: whether hidden layers use ``BatchNorm1d`` (MONAI ``Norm["batch", 1]``). With it, training
            needs a batch of at least 2 vectors.
        act: activation of the hidden layers, any name or ``(name, kwargs)`` accepted by MONAI's ``Act``
            factory.

    Shapes:
        input ``(B, in_features)``, output ``(B, out_features)``.

    Raises:
        TypeError/ValueError: for non-integer or non-positive sizes, or an input that is not ``(B, in_features)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int = 128,
        num_layers: int = 2,
        norm: bool = True,
        act: str | tuple = "RELU",
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        hidden = self.in_features if hidden_features is None else check_positive_int(hidden_features, "hidden_features")
        self.out_features = check_positive_int(out_features, "out_features")
        num_layers = check_positive_int(num_layers, "num_layers")
        if not isinstance(norm, bool):
            raise TypeError(f"norm must be a bool, got {type(norm).__name__} {norm!r}.")
        self.norm = norm
        layers: list[nn.Module] = []
        width = self.in_features
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden, bias=not norm))
            if norm:
                layers.append(get_norm_layer("batch", spatial_dims=1, channels=hidden))
            layers.append(get_act_layer(act))
            width = hidden
        layers.append(nn.Linear(width, self.out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` of shape ``(B, in_features)`` to ``(B, out_features)``."""
        check_tensor(x, "x", ndim=2, floating=True)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"x must be (B, {self.in_features}) for in_features={self.in_features}, got {tuple(x.shape)}."
            )
        if self.training and self.norm and len(self.layers) > 1 and x.shape[0] < 2:
            raise ValueError(
                f"x must hold at least 2 vectors in training mode (BatchNorm1d), got shape {tuple(x.shape)}."
            )
        return self.layers(x)


class DenseProjectionHead(nn.Module):
    """Per-location projection of a feature map with 1x1 convolutions (2D or 3D).

    Without ``hidden_channels`` the head is one 1x1 convolution ``C -> out_channels``; with it,
    ``Conv1x1(C, hidden) -> act -> Conv1x1(hidden, out_channels)``. A 1x1 convolution is the same linear map
    at every location, so the head is the dense counterpart of :class:`ProjectionHead`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels ``C`` of the input map.
        out_channels: channels of the projection.
        hidden_channels: width of an optional hidden 1x1 layer; ``None`` means a single layer.
        act: activation after the hidden layer (MONAI ``Act`` name or ``(name, kwargs)``).

    Shapes:
        input ``(B, in_channels, *spatial)``, output ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int = 64,
        hidden_channels: int | None = None,
        act: str | tuple = "RELU",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        conv = Conv[Conv.CONV, self.spatial_dims]
        if hidden_channels is None:
            self.layers = nn.Sequential(conv(self.in_channels, self.out_channels, kernel_size=1))
        else:
            hidden = check_positive_int(hidden_channels, "hidden_channels")
            self.layers = nn.Sequential(
                conv(self.in_channels, hidden, kernel_size=1),
                get_act_layer(act),
                conv(hidden, self.out_channels, kernel_size=1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` of shape ``(B, in_channels, *spatial)`` to ``(B, out_channels, *spatial)``."""
        check_spatial_tensor(x, "x", self.spatial_dims, self.in_channels)
        return self.layers(x)
