"""A MONAI segmentation network wrapped for global + dense contrastive pretraining.

The wrapped network (``backbone``) is the very class the fine-tune stage trains, so its ``state_dict`` keys
are the checkpoint contract: :meth:`ContrastivePretrainNet.backbone_state_dict` is what a pretraining run
saves and what :func:`monai_cluster.networks.load_pretrained` loads into a fresh network without renaming.

Feature maps are taken from two named submodules of the backbone with forward hooks that exist only for the
duration of one call: the backbone stays an untouched MONAI module (no subclass, no rewritten ``forward``,
no FX tracing, which MONAI networks do not all support), any backbone with named submodules works, and once
every requested map is captured the call stops, so layers after the decoder map (e.g. ``final_conv``) and,
in encoder-only mode, the whole decoder are never computed.

References:
    - [0] SimCLR, 2020, https://arxiv.org/abs/2002.05709
    - [1] Global and local contrastive learning, 2020, https://arxiv.org/abs/2006.10511
    - [2] Cluster-guided contrastive pretraining, 2022, https://arxiv.org/abs/2211.08557
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet, UNet
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_cluster.networks.backbones import (
    BACKBONES,
    DEFAULT_FEATURES,
    backbone_of,
    backbone_spec,
    build_backbone,
    check_backbone_options,
    size_divisor_of,
)
from monai_cluster.networks.blocks.heads import DenseProjectionHead, ProjectionHead
from monai_cluster.utils.validation import check_positive_int, check_spatial_dims, check_spatial_tensor

__all__ = ["ContrastivePretrainNet", "build_pretrain_net"]


class _StopForward(Exception):
    """Raised by a capture hook once every requested feature map is in hand, to end the backbone call."""


def _first_conv(module: nn.Module) -> nn.modules.conv._ConvNd | None:
    for sub in module.modules():
        if isinstance(sub, nn.modules.conv._ConvNd):
            return sub
    return None


def _check_layer_name(backbone: nn.Module, name: object, arg: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{arg} must be a submodule name (str), got {type(name).__name__} {name!r}.")
    names = [n for n, _ in backbone.named_modules() if n]
    if name not in names:
        top = [n for n, _ in backbone.named_children()]
        close = difflib.get_close_matches(name, names, n=5)
        raise ValueError(
            f"{arg}={name!r} is not a submodule of the {type(backbone).__name__} backbone. Its top-level submodules "
            f"are {top}; closest names: {close}; backbone.named_modules() lists all {len(names)} names."
        )
    return name


def _default_layer(backbone: nn.Module, name: str | None, arg: str) -> str:
    """``name``, or (for ``None``) the registered default of the backbone's class (BasicUNet: down_4 / upcat_1)."""
    if name is not None:
        return name
    registered = backbone_of(backbone)
    if registered is None:
        raise ValueError(
            f"{arg} must be given for a {type(backbone).__name__} backbone: the name of its submodule (see "
            f"backbone.named_modules()); defaults are known only for the registered backbones "
            f"{sorted(BACKBONES)} (monai_cluster.networks.backbones)."
        )
    spec = BACKBONES[registered]
    return spec.encoder_layer if arg == "encoder_layer" else spec.decoder_layer


def _default_size_divisor(backbone: nn.Module, spatial_dims: int) -> tuple[int, ...]:
    registered = size_divisor_of(backbone)
    if registered is not None:
        return (registered,) * spatial_dims
    if isinstance(backbone, UNet):
        divisor = [1] * spatial_dims
        for stride in backbone.strides:
            for axis, s in enumerate(ensure_tuple_rep(stride, spatial_dims)):
                divisor[axis] *= int(s)
        return tuple(divisor)
    raise ValueError(
        f"size_divisor must be given for a {type(backbone).__name__} backbone: the factor by which its encoder "
        "downsamples each spatial axis (it is inferred only for MONAI UNet and the registered backbones "
        f"{sorted(BACKBONES)})."
    )


class ContrastivePretrainNet(nn.Module):
    """Segmentation network plus the heads of global and dense contrastive pretraining (2D or 3D).

    ``forward(x)`` returns ``{"global": (B, global_dim), "dense": (B, dense_dim, *spatial_dec), "pooled": (B, F_enc)}``:
    ``pooled`` is the spatial mean of the ``encoder_layer`` output (the bottleneck, ``F_enc = num_features``
    channels), ``global`` its :class:`ProjectionHead` projection, and ``dense`` the :class:`DenseProjectionHead`
    projection of the ``decoder_layer`` output (full resolution for BasicUNet's default ``"upcat_1"``).

    Parameters of backbone layers that run after the decoder map (BasicUNet's ``final_conv``) are not used in
    pretraining and receive no gradient; under ``DistributedDataParallel`` pass ``find_unused_parameters=True``.
    A hooked layer that is called more than once in one forward contributes its first output.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels of the default BasicUNet (unused with ``backbone``).
        backbone: any ``nn.Module`` to wrap instead of ``BasicUNet(spatial_dims, in_channels, out_channels,
            features)``; name its bottleneck and decoder submodules with ``encoder_layer``/``decoder_layer``
            (e.g. MONAI ``UNet(2, 1, 2, (16, 32, 64), (2, 2))``: ``"model.1.submodule.1.submodule"`` and
            ``"model.1"``).
        features: the six BasicUNet feature sizes (unused with ``backbone``).
        global_dim: size of the global projection.
        global_hidden: hidden width of the global MLP; ``None`` uses ``F_enc``.
        dense_dim: channels of the dense projection.
        encoder_layer: name (as in ``backbone.named_modules()``) of the submodule whose output is the bottleneck;
            ``None``: the registered default of the backbone's class (:mod:`monai_cluster.networks.backbones`:
            BasicUNet ``"down_4"``, SegResNet ``"down_layers.3"``, SwinUNETR ``"encoder10"``), required otherwise.
        decoder_layer: name of the submodule whose output feeds the dense head; ``None``: the registered default
            (BasicUNet ``"upcat_1"``, SegResNet ``"up_layers.2"``, SwinUNETR ``"decoder1"``), required otherwise.
        dense_hidden: hidden width of the dense head; ``None`` is a single 1x1 convolution.
        encoder_only: build no dense head and run only up to ``encoder_layer``; ``forward`` then returns
            ``{"global", "pooled"}`` (for a global-only loss; the decoder is not computed).
        size_divisor: every spatial size of ``x`` must be divisible by it (int or one per axis). Inferred for
            BasicUNet (16: four 2x poolings), SegResNet (``2 ** (len(down_layers) - 1)``), SwinUNETR
            (``patch_size ** 5``) and MONAI UNet (the product of its strides); required otherwise.

    Raises:
        TypeError/ValueError: for a backbone that is not an ``nn.Module``, a first convolution whose
            dimensionality or input channels disagree with ``spatial_dims``/``in_channels``, layer names that
            do not exist (the message lists the available ones), or bad sizes.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int = 2,
        backbone: nn.Module | None = None,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        global_dim: int = 128,
        global_hidden: int | None = None,
        dense_dim: int = 64,
        encoder_layer: str | None = None,
        decoder_layer: str | None = None,
        dense_hidden: int | None = None,
        encoder_only: bool = False,
        size_divisor: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        if not isinstance(encoder_only, bool):
            raise TypeError(f"encoder_only must be a bool, got {type(encoder_only).__name__} {encoder_only!r}.")
        self.encoder_only = encoder_only
        self._default_backbone = backbone is None
        if backbone is None:
            check_positive_int(out_channels, "out_channels")
            if isinstance(features, (str, bytes)) or not isinstance(features, Sequence) or len(features) != 6:
                raise ValueError(f"features must be a sequence of six BasicUNet feature sizes, got {features!r}.")
            for i, f in enumerate(features):
                check_positive_int(f, f"features[{i}]")
            backbone = BasicUNet(self.spatial_dims, self.in_channels, out_channels, features)
        elif not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}.")
        else:
            conv = _first_conv(backbone)
            if conv is not None and len(conv.kernel_size) != self.spatial_dims:
                raise ValueError(
                    f"backbone's first convolution is {type(conv).__name__}, which does not match "
                    f"spatial_dims={self.spatial_dims}."
                )
            if conv is not None and conv.in_channels != self.in_channels:
                raise ValueError(
                    f"backbone's first convolution takes {conv.in_channels} channel(s), but in_channels="
                    f"{self.in_channels}."
                )
        self.backbone = backbone
        encoder_layer = _default_layer(backbone, encoder_layer, "encoder_layer")
        self.encoder_layer = _check_layer_name(backbone, encoder_layer, "encoder_layer")
        if encoder_only:
            self.decoder_layer = None
        else:
            decoder_layer = _default_layer(backbone, decoder_layer, "decoder_layer")
            self.decoder_layer = _check_layer_name(backbone, decoder_layer, "decoder_layer")
        if size_divisor is None:
            self.size_divisor = _default_size_divisor(backbone, self.spatial_dims)
        else:
            self.size_divisor = tuple(
                check_positive_int(d, "size_divisor") for d in ensure_tuple_rep(size_divisor, self.spatial_dims)
            )

        enc_channels, dec_channels = self._probe_channels()
        self.num_features = enc_channels
        self.global_head = ProjectionHead(enc_channels, global_hidden, global_dim)
        self.dense_head = (
            None if encoder_only else DenseProjectionHead(self.spatial_dims, dec_channels, dense_dim, dense_hidden)
        )

    def _probe_channels(self) -> tuple[int, int | None]:
        """Run the backbone once on a small zero input (eval mode, no grad) to read the hooked channel counts."""
        param = next(self.backbone.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        shape = (1, self.in_channels, *(2 * d for d in self.size_divisor))
        modes = {m: m.training for m in self.backbone.modules()}
        self.backbone.eval()
        try:
            with torch.no_grad():
                maps = self._capture(torch.zeros(shape, device=device, dtype=dtype), need_decoder=not self.encoder_only)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"could not run the {type(self.backbone).__name__} backbone on a probe input of shape {shape} "
                f"(2 * size_divisor per axis) to read its feature sizes: {err}"
            ) from err
        finally:
            for module, mode in modes.items():
                module.training = mode
        dec = maps.get(self.decoder_layer)
        return int(maps[self.encoder_layer].shape[1]), None if dec is None else int(dec.shape[1])

    def _capture(self, x: torch.Tensor, need_decoder: bool) -> dict[str, torch.Tensor]:
        """Run the backbone on ``x`` until the encoder (and decoder) maps are captured; return them by name."""
        wanted = [self.encoder_layer] + ([self.decoder_layer] if need_decoder else [])
        captured: dict[str, torch.Tensor] = {}

        def make_hook(name: str):
            def hook(module: nn.Module, args: object, output: object) -> None:
                if name in captured:
                    return
                if not isinstance(output, torch.Tensor) or output.ndim != self.spatial_dims + 2:
                    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                    raise ValueError(
                        f"layer {name!r} must output a (B, C, *spatial) tensor with {self.spatial_dims} spatial "
                        f"dims, got {shape}."
                    )
                captured[name] = output
                if all(n in captured for n in wanted):
                    raise _StopForward

            return hook

        handles = [self.backbone.get_submodule(n).register_forward_hook(make_hook(n)) for n in dict.fromkeys(wanted)]
        try:
            self.backbone(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [n for n in wanted if n not in captured]
        if missing:
            raise ValueError(
                f"backbone layers {missing} were never called in the {type(self.backbone).__name__} forward."
            )
        return captured

    def _check_input(self, x: torch.Tensor) -> None:
        check_spatial_tensor(x, "x", self.spatial_dims, self.in_channels)
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}.")
        spatial = tuple(x.shape[2:])
        if any(s % d for s, d in zip(spatial, self.size_divisor)):
            why = " (BasicUNet pools 4 times by 2)" if isinstance(self.backbone, BasicUNet) else ""
            raise ValueError(
                f"x spatial size {spatial} must be divisible by {self.size_divisor}{why}; pad or crop the input."
            )
        if self._default_backbone and math.prod(s // d for s, d in zip(spatial, self.size_divisor)) < 2:
            raise ValueError(
                f"x spatial size {spatial} leaves a one-voxel bottleneck, which BasicUNet's instance norm cannot "
                f"normalise; make at least one axis {2 * self.size_divisor[0]} or more."
            )

    @staticmethod
    def _pool(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.flatten(2).mean(dim=2)

    def forward(self, x: torch.Tensor, encoder_only: bool | None = None) -> dict[str, torch.Tensor]:
        """Compute the pretraining outputs.

        Args:
            x: ``(B, in_channels, *spatial)`` with ``spatial_dims`` spatial axes, each divisible by ``size_divisor``.
            encoder_only: ``True`` skips the decoder and the dense head for this call; ``None`` uses the
                constructor's setting.

        Returns:
            ``{"global": (B, global_dim), "dense": (B, dense_dim, *spatial_dec), "pooled": (B, F_enc)}``;
            without ``"dense"`` in encoder-only mode.
        """
        encoder_only = self.encoder_only if encoder_only is None else encoder_only
        if not encoder_only and self.dense_head is None:
            raise ValueError(
                "encoder_only=False needs a dense head, but this network was built with encoder_only=True."
            )
        self._check_input(x)
        maps = self._capture(x, need_decoder=not encoder_only)
        pooled = self._pool(maps[self.encoder_layer])
        out = {"global": self.global_head(pooled)}
        if not encoder_only:
            out["dense"] = self.dense_head(maps[self.decoder_layer])
        out["pooled"] = pooled
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled bottleneck ``(B, num_features)``; runs only the encoder path."""
        self._check_input(x)
        return self._pool(self._capture(x, need_decoder=False)[self.encoder_layer])

    def _executed_modules(self, need_decoder: bool) -> list[nn.Module]:
        """Backbone modules with parameters that run in an encoder-only (or encoder + decoder) forward."""
        ran: list[nn.Module] = []
        handles = [
            m.register_forward_hook(lambda module, *_: ran.append(module))
            for m in self.backbone.modules()
            if any(True for _ in m.parameters(recurse=False))
        ]
        param = next(self.backbone.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        modes = {m: m.training for m in self.backbone.modules()}
        self.backbone.eval()
        try:
            with torch.no_grad():
                shape = (1, self.in_channels, *(2 * d for d in self.size_divisor))
                self._capture(torch.zeros(shape, device=device), need_decoder=need_decoder)
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in modes.items():
                module.training = mode
        return list(dict.fromkeys(ran))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Backbone parameters that the global (encoder) features depend on: what stage 1 trains.

        Found by running the backbone up to ``encoder_layer`` on a probe input and collecting the modules that
        ran, so it holds for any wrapped backbone (BasicUNet: ``conv_0``, ``down_1`` .. ``down_4``).
        """
        return [p for m in self._executed_modules(need_decoder=False) for p in m.parameters(recurse=False)]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Parameters between the encoder and the dense map, plus the dense head: what the local stage trains.

        Chaitanya et al.'s staged schedule trains these with the local loss while the encoder stays frozen
        (BasicUNet with ``decoder_layer="upcat_2"``: ``upcat_4``, ``upcat_3``, ``upcat_2``).

        Raises:
            ValueError: for a network built with ``encoder_only=True`` (no decoder map, no dense head).
        """
        if self.dense_head is None:
            raise ValueError("decoder_parameters needs a dense head, but this network was built with encoder_only=True.")
        encoder = {id(p) for p in self.encoder_parameters()}
        used = [p for m in self._executed_modules(need_decoder=True) for p in m.parameters(recurse=False)]
        return [p for p in used if id(p) not in encoder] + list(self.dense_head.parameters())

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The wrapped network's own ``state_dict`` (its keys, no ``backbone.`` prefix): the checkpoint to save."""
        return self.backbone.state_dict()


def build_pretrain_net(
    backbone: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int = 2,
    features: Sequence[int] = DEFAULT_FEATURES,
    init_filters: int = 16,
    feature_size: int = 24,
    depths: Sequence[int] = (2, 2, 2, 2),
    encoder_layer: str | None = None,
    decoder_layer: str | None = None,
    **kwargs: Any,
) -> ContrastivePretrainNet:
    """A :class:`~monai_cluster.networks.ContrastivePretrainNet` around a registered backbone, layers looked up.

    ``basic_unet`` builds exactly what ``ContrastivePretrainNet(spatial_dims, in_channels, out_channels,
    features=features, ...)`` builds (the same random draws, so the same weights under one seed).

    Args:
        backbone, spatial_dims, in_channels, out_channels, features, init_filters, feature_size, depths: see
            :func:`~monai_cluster.networks.backbones.build_backbone`.
        encoder_layer: ``None`` uses the backbone's bottleneck (:attr:`BackboneSpec.encoder_layer`).
        decoder_layer: ``None`` uses the backbone's full-resolution decoder block; another of its
            :attr:`BackboneSpec.decoder_blocks` puts the dense head (and the end of the ``staged`` schedule's
            trained decoder) there.
        kwargs: the other :class:`ContrastivePretrainNet` arguments (``global_dim``, ``dense_dim``,
            ``encoder_only``, ...).

    Returns:
        The wrapper; ``forward(x)`` with ``x`` ``(B, in_channels, *spatial)``, every size a multiple of the
        backbone's ``size_divisor``, gives ``{"global": (B, global_dim), "dense": (B, dense_dim, *spatial_dec),
        "pooled": (B, F_enc)}``.

    Raises:
        ValueError/TypeError: as :func:`build_backbone`, or for layer names the backbone lacks.
    """
    spec = backbone_spec(backbone)
    encoder_layer = spec.encoder_layer if encoder_layer is None else encoder_layer
    decoder_layer = spec.decoder_layer if decoder_layer is None else decoder_layer
    if backbone == "basic_unet":
        check_backbone_options(backbone, spatial_dims, features)
        return ContrastivePretrainNet(
            spatial_dims, in_channels, out_channels, features=features,
            encoder_layer=encoder_layer, decoder_layer=decoder_layer, **kwargs,
        )  # fmt: skip
    network = build_backbone(
        backbone, spatial_dims, in_channels, out_channels, features, init_filters, feature_size, depths
    )
    return ContrastivePretrainNet(
        spatial_dims, in_channels, out_channels, backbone=network, encoder_layer=encoder_layer,
        decoder_layer=decoder_layer, size_divisor=size_divisor_of(network), **kwargs,
    )  # fmt: skip
