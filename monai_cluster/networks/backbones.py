"""The segmentation backbones the bundles pretrain and fine-tune, and every name their pretraining needs.

A user names only the backbone (``basic_unet``, ``segresnet``, ``swin_unetr``); this registry knows, per
backbone, the MONAI class and how to build it (:func:`build_backbone`), the submodule whose output is the
encoder bottleneck (the global contrastive features), the decoder submodule under the dense head (the local
contrastive map), the decoder blocks the ``staged`` schedule trains, the factor by which each spatial axis must be
divisible, the task head a fine-tune run leaves at its fresh initialisation, and the state-dict key prefixes that
identify a checkpoint of the backbone (:func:`detect_backbone`).

The layer names are those of MONAI 1.6's ``named_modules()`` (checked by the tests on built networks):

- ``basic_unet``: bottleneck ``down_4``, dense map ``upcat_1``, decoder blocks ``upcat_4`` .. ``upcat_1``,
  sizes divisible by 16, head ``final_conv``;
- ``segresnet``: bottleneck ``down_layers.3``, dense map ``up_layers.2``, decoder blocks ``up_samples.0``,
  ``up_layers.0`` .. ``up_samples.2``, ``up_layers.2``, sizes divisible by 8, head ``conv_final``;
- ``swin_unetr``: bottleneck ``encoder10`` (the encoder also holds ``swinViT`` and the skip blocks
  ``encoder1`` .. ``encoder4``), dense map ``decoder1``, decoder blocks ``decoder5`` .. ``decoder1``, sizes
  divisible by 32, head ``out``.

:func:`~monai_cluster.networks.build_pretrain_net` (in :mod:`~monai_cluster.networks.nets.contrastive_pretrain`,
which imports this registry; the registry imports no network wrapper) wraps a registered backbone for pretraining.

Example:
    >>> from monai_cluster.networks import build_pretrain_net
    >>> net = build_pretrain_net("segresnet", spatial_dims=2, in_channels=3, init_filters=8)  # doctest: +SKIP
    >>> net.encoder_layer, net.decoder_layer, net.size_divisor  # doctest: +SKIP
    ('down_layers.3', 'up_layers.2', (8, 8))
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from monai.networks.nets import BasicUNet, SegResNet, SwinUNETR
from torch import nn

from monai_cluster.utils.validation import check_positive_int, check_spatial_dims

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "backbone_of",
    "backbone_spec",
    "build_backbone",
    "check_backbone_options",
    "check_backbone_size",
    "detect_backbone",
    "size_divisor_of",
]

DEFAULT_FEATURES = (32, 32, 64, 128, 256, 32)
"""BasicUNet's default feature sizes (MONAI's), also the bundles' default ``features``."""


@dataclass(frozen=True)
class BackboneSpec:
    """What the pretraining wrapper and the fine-tune loader need to know about one backbone.

    Attributes:
        name: the registry name, the bundles' ``backbone`` value.
        network: the MONAI class :func:`build_backbone` builds.
        encoder_layer: submodule whose output ``(B, C_enc, *spatial / size_divisor)`` is the bottleneck.
        decoder_layer: default submodule under the dense head (full resolution), ``(B, C_dec, *spatial)``.
        decoder_blocks: the decoder's blocks from the bottleneck to the output; the ``staged`` schedule trains
            those up to (and including) the chosen ``decoder_layer``.
        encoder_prefixes: state-dict key prefixes of the encoder's tensors (for the fine-tune log).
        head: submodules after the decoder (the task head): not trained by pretraining, never loaded into a
            fine-tune network.
        size_divisor: every spatial size must be a multiple of it (of the network :func:`build_backbone` builds).
        min_bottleneck_voxels: smallest bottleneck size in voxels the network trains on (2 where the bottleneck
            is instance-normalised).
        pads_sizes: the network pads feature maps of other sizes itself (BasicUNet), so segmentation inputs need
            not be multiples of ``size_divisor``; pretraining inputs always must.
        signature: key prefixes every state dict of this backbone holds (:func:`detect_backbone`).
        options: the :func:`build_backbone` arguments this backbone reads.
    """

    name: str
    network: type[nn.Module]
    encoder_layer: str
    decoder_layer: str
    decoder_blocks: tuple[str, ...]
    encoder_prefixes: tuple[str, ...]
    head: tuple[str, ...]
    size_divisor: int
    min_bottleneck_voxels: int
    pads_sizes: bool
    signature: tuple[str, ...]
    options: tuple[str, ...]


BACKBONES: dict[str, BackboneSpec] = {
    "basic_unet": BackboneSpec(
        name="basic_unet",
        network=BasicUNet,
        encoder_layer="down_4",
        decoder_layer="upcat_1",
        decoder_blocks=("upcat_4", "upcat_3", "upcat_2", "upcat_1"),
        encoder_prefixes=("conv_0", "down_"),
        head=("final_conv",),
        size_divisor=16,
        min_bottleneck_voxels=2,
        pads_sizes=True,
        signature=("conv_0.", "down_4.", "upcat_1."),
        options=("features",),
    ),
    "segresnet": BackboneSpec(
        name="segresnet",
        network=SegResNet,
        encoder_layer="down_layers.3",
        decoder_layer="up_layers.2",
        decoder_blocks=("up_samples.0", "up_layers.0", "up_samples.1", "up_layers.1", "up_samples.2", "up_layers.2"),
        encoder_prefixes=("convInit.", "down_layers."),
        head=("conv_final",),
        size_divisor=8,
        min_bottleneck_voxels=1,
        pads_sizes=False,
        signature=("convInit.", "down_layers.", "up_layers."),
        options=("init_filters",),
    ),
    "swin_unetr": BackboneSpec(
        name="swin_unetr",
        network=SwinUNETR,
        encoder_layer="encoder10",
        decoder_layer="decoder1",
        decoder_blocks=("decoder5", "decoder4", "decoder3", "decoder2", "decoder1"),
        encoder_prefixes=("swinViT.", "encoder"),
        head=("out",),
        size_divisor=32,
        min_bottleneck_voxels=2,
        pads_sizes=False,
        signature=("swinViT.", "encoder10.", "decoder1."),
        options=("feature_size", "depths"),
    ),
}
"""The registered backbones by name; :func:`backbone_spec` looks one up with a clear error."""


def backbone_spec(backbone: object) -> BackboneSpec:
    """The :class:`BackboneSpec` of a registered backbone name.

    Raises:
        ValueError: for a name that is not registered, listing the known ones.
    """
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {type(backbone).__name__} {backbone!r}.")
    return BACKBONES[backbone]


def backbone_of(network: nn.Module) -> str | None:
    """The registry name of ``network``'s class (``BasicUNet`` -> ``"basic_unet"``), or ``None`` if unregistered."""
    for name, spec in BACKBONES.items():
        if isinstance(network, spec.network):
            return name
    return None


def size_divisor_of(network: nn.Module) -> int | None:
    """The factor each spatial input size of a registered ``network`` must be divisible by, read from the instance.

    BasicUNet: 16 (four 2x poolings); SegResNet: ``2 ** (len(down_layers) - 1)``; SwinUNETR:
    ``patch_size ** 5``. ``None`` for an unregistered network.
    """
    if isinstance(network, SegResNet):
        return 2 ** (len(network.down_layers) - 1)
    if isinstance(network, SwinUNETR):
        return int(network.patch_size) ** 5
    if isinstance(network, BasicUNet):
        return BACKBONES["basic_unet"].size_divisor
    return None


def detect_backbone(keys: Iterable[str]) -> str | None:
    """Which registered backbone a state dict's keys belong to (every prefix of its ``signature`` present).

    Args:
        keys: state-dict keys, e.g. ``torch.load("models/model.pt").keys()``.

    Returns:
        The registry name, or ``None`` when the keys fit none (e.g. another network or a wrapped state dict).
    """
    keys = list(keys)
    for name, spec in BACKBONES.items():
        if all(any(k.startswith(prefix) for k in keys) for prefix in spec.signature):
            return name
    return None


def check_backbone_size(
    backbone: str, size: int | Sequence[int], spatial_dims: int, option: str = "img_size", strict: bool = False
) -> list[int]:
    """Check that an input size suits ``backbone`` and return it as one int per axis.

    Args:
        backbone: a registered name.
        size: one size for every axis or one per axis.
        spatial_dims: 2 or 3.
        option: the name used in messages (the bundle option, e.g. ``roi_size``).
        strict: also require multiples of ``size_divisor`` for a backbone that pads other sizes itself
            (BasicUNet): pretraining needs them.

    Raises:
        ValueError: when a size is not a multiple of the backbone's ``size_divisor`` or leaves fewer bottleneck
            voxels than it needs, naming ``option``, the backbone and a size that works.
    """
    spec = backbone_spec(backbone)
    spatial_dims = check_spatial_dims(spatial_dims)
    sizes = [size] if not isinstance(size, Sequence) or isinstance(size, str) else list(size)
    if len(sizes) == 1:
        sizes = sizes * spatial_dims
    if len(sizes) != spatial_dims:
        raise ValueError(f"{option} must give 1 or {spatial_dims} sizes for {spatial_dims}D data, got {size!r}.")
    sizes = [check_positive_int(s, f"{option}[{i}]") for i, s in enumerate(sizes)]
    if spec.pads_sizes and not strict:
        return sizes
    d = spec.size_divisor
    if any(s % d for s in sizes):
        fixed = [math.ceil(s / d) * d for s in sizes]
        raise ValueError(
            f"{option} {sizes} must be a multiple of {d} on every axis for backbone {backbone!r} (its encoder "
            f"downsamples by {d}); e.g. {option} {fixed}."
        )
    if math.prod(s // d for s in sizes) < spec.min_bottleneck_voxels:
        fixed = [2 * d] + sizes[1:]
        raise ValueError(
            f"{option} {sizes} leaves a one-voxel bottleneck in backbone {backbone!r}, whose instance norm cannot "
            f"normalise it; make at least one axis {2 * d} or more, e.g. {option} {fixed}."
        )
    return sizes


def check_backbone_options(
    backbone: str,
    spatial_dims: int,
    features: Sequence[int] = DEFAULT_FEATURES,
    init_filters: int = 16,
    feature_size: int = 24,
    depths: Sequence[int] = (2, 2, 2, 2),
    size: int | Sequence[int] | None = None,
    size_option: str = "img_size",
    strict_size: bool = False,
) -> dict[str, Any]:
    """Check the options of ``backbone`` (only those it reads) and return all of them normalised.

    Args:
        backbone: ``basic_unet``, ``segresnet`` or ``swin_unetr``.
        spatial_dims: 2 or 3.
        features: BasicUNet's six feature sizes.
        init_filters: SegResNet's first width (a multiple of 8: its group norm has 8 groups).
        feature_size: SwinUNETR's embedding width (a multiple of 12: its heads are 3, 6, 12, 24).
        depths: SwinUNETR's four stage depths (transformer blocks per stage).
        size: an input size to check with :func:`check_backbone_size` (``None``: not checked).
        size_option: the name of ``size`` in messages.
        strict_size: passed to :func:`check_backbone_size`.

    Returns:
        ``{"backbone", "spatial_dims", "features", "init_filters", "feature_size", "depths", "size"}`` with
        lists for sequences (``size`` is ``None`` or one int per axis).

    Raises:
        ValueError/TypeError: naming the bad option, e.g. ``backbone must be one of ['basic_unet', 'segresnet',
            'swin_unetr'], got str 'vit'``.
    """
    spec = backbone_spec(backbone)
    spatial_dims = check_spatial_dims(spatial_dims)
    out: dict[str, Any] = {"backbone": backbone, "spatial_dims": spatial_dims}
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        raise TypeError(f"features must be a list of BasicUNet feature sizes, got {type(features).__name__}.")
    out["features"] = [check_positive_int(f, f"features[{i}]") for i, f in enumerate(features)]
    out["init_filters"] = check_positive_int(init_filters, "init_filters")
    out["feature_size"] = check_positive_int(feature_size, "feature_size")
    if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence):
        raise TypeError(f"depths must be a list of four SwinUNETR stage depths, got {type(depths).__name__}.")
    out["depths"] = [check_positive_int(d, f"depths[{i}]") for i, d in enumerate(depths)]
    if "features" in spec.options and len(out["features"]) != 6:
        raise ValueError(f"features must be six BasicUNet feature sizes, got {out['features']}.")
    if "init_filters" in spec.options and out["init_filters"] % 8:
        raise ValueError(
            f"init_filters={out['init_filters']} must be a multiple of 8 for backbone 'segresnet' (its group norm "
            "has 8 groups), e.g. 8, 16 or 32."
        )
    if "feature_size" in spec.options and out["feature_size"] % 12:
        raise ValueError(
            f"feature_size={out['feature_size']} must be a multiple of 12 for backbone 'swin_unetr' (its attention "
            "stages have 3, 6, 12 and 24 heads), e.g. 12, 24 or 48."
        )
    if "depths" in spec.options and len(out["depths"]) != 4:
        raise ValueError(f"depths must be four SwinUNETR stage depths, got {out['depths']}.")
    out["size"] = None if size is None else check_backbone_size(backbone, size, spatial_dims, size_option, strict_size)
    return out


def build_backbone(
    backbone: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    features: Sequence[int] = DEFAULT_FEATURES,
    init_filters: int = 16,
    feature_size: int = 24,
    depths: Sequence[int] = (2, 2, 2, 2),
    img_size: int | Sequence[int] | None = None,
) -> nn.Module:
    """Build a registered MONAI segmentation network, ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.

    - ``basic_unet``: ``BasicUNet(spatial_dims, in_channels, out_channels, features)``;
    - ``segresnet``: ``SegResNet(spatial_dims, init_filters, in_channels, out_channels)`` (MONAI's default blocks
      ``(1, 2, 2, 4)`` down, ``(1, 1, 1)`` up; bottleneck ``8 * init_filters`` channels at 1/8);
    - ``swin_unetr``: ``SwinUNETR(in_channels, out_channels, depths=depths, feature_size=feature_size,
      spatial_dims=spatial_dims)`` (bottleneck ``16 * feature_size`` channels at 1/32; MONAI 1.6 takes no
      ``img_size``, so it is only checked here). Needs the ``einops`` package.

    Args:
        backbone: the registry name.
        spatial_dims: 2 or 3.
        in_channels, out_channels: input channels and output classes.
        features, init_filters, feature_size, depths: see :func:`check_backbone_options` (each backbone reads
            only its own).
        img_size: when given, checked with :func:`check_backbone_size` (not passed to MONAI).

    Returns:
        The network, with MONAI's own submodule names (its ``state_dict`` keys are the checkpoint contract).

    Raises:
        ValueError/TypeError: for an unknown backbone (listing the known ones) or a bad option, naming it.
        ImportError: for ``swin_unetr`` without ``einops`` installed.
    """
    opts = check_backbone_options(
        backbone, spatial_dims, features, init_filters, feature_size, depths, size=img_size, size_option="img_size"
    )
    in_channels = check_positive_int(in_channels, "in_channels")
    out_channels = check_positive_int(out_channels, "out_channels")
    dims = opts["spatial_dims"]
    if backbone == "basic_unet":
        return BasicUNet(dims, in_channels, out_channels, opts["features"])
    if backbone == "segresnet":
        return SegResNet(spatial_dims=dims, init_filters=opts["init_filters"], in_channels=in_channels,
                         out_channels=out_channels)  # fmt: skip
    if importlib.util.find_spec("einops") is None:
        raise ImportError("backbone 'swin_unetr' needs the einops package: pip install einops.")
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        depths=tuple(opts["depths"]),
        feature_size=opts["feature_size"],
        spatial_dims=dims,
    )
