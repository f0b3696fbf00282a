"""The ``backbone`` bundle option and its per-backbone options, shared by the pretraining and segmentation bundles.

Every bundle that builds a segmentation network (``cluster_contrastive_pretrain``, ``dermoscopy_segmentation``,
``heart_ct_segmentation``) takes the same five options, checked here before anything runs and then handed to
:func:`monai_cluster.networks.backbones.build_backbone` (fine-tuning) or
:func:`~monai_cluster.networks.build_pretrain_net` (pretraining):

- ``backbone``: ``basic_unet`` (default), ``segresnet`` or ``swin_unetr``;
- ``features``: BasicUNet's six feature sizes;
- ``init_filters``: SegResNet's first width (a multiple of 8);
- ``feature_size``, ``depths``: SwinUNETR's embedding width (a multiple of 12) and four stage depths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai_cluster.networks.backbones import BACKBONES, DEFAULT_FEATURES, check_backbone_options

from .common import validate_options

__all__ = ["BACKBONE_OPTION_DEFAULTS", "BACKBONE_OPTION_SPECS", "check_backbone_bundle_options"]

BACKBONE_OPTION_SPECS: dict[str, str] = {
    "backbone": "choice:" + "|".join(BACKBONES),
    "features": "ints>=1",
    "init_filters": "int>=1",
    "feature_size": "int>=1",
    "depths": "ints>=1",
}
"""Spec (see :func:`~monai_cluster.workflows.validate_option`) of each backbone option."""

BACKBONE_OPTION_DEFAULTS: dict[str, Any] = {
    "backbone": "basic_unet",
    "features": list(DEFAULT_FEATURES),
    "init_filters": 16,
    "feature_size": 24,
    "depths": [2, 2, 2, 2],
}
"""The bundles' defaults: today's BasicUNet; SegResNet 16 filters; SwinUNETR MONAI's 24 / ``(2, 2, 2, 2)``."""


def check_backbone_bundle_options(
    spatial_dims: int,
    size: int | Sequence[int] | None = None,
    size_option: str = "image_size",
    strict_size: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Check a bundle's backbone options (the bundle option names in every message) and their input size.

    Args:
        spatial_dims: 2 or 3 (the bundle's network).
        size: the bundle's input size (``image_size`` or ``roi_size``), checked against the backbone's divisor;
            ``None`` skips that check.
        size_option: the option name of ``size`` for messages.
        strict_size: require multiples of the divisor even for BasicUNet (pretraining).
        options: any of :data:`BACKBONE_OPTION_SPECS`; the missing ones take :data:`BACKBONE_OPTION_DEFAULTS`.

    Returns:
        The normalised options: ``{"backbone", "spatial_dims", "features", "init_filters", "feature_size",
        "depths", "size"}``.

    Raises:
        ValueError/TypeError: naming the option, e.g. ``option 'backbone' (--backbone) must be one of
            ['basic_unet', 'segresnet', 'swin_unetr'], got str 'vit'``, or ``roi_size [48, 48, 48] must be a
            multiple of 32 on every axis for backbone 'swin_unetr' ...``; also for an option name that is not a
            backbone option.
    """
    unknown = sorted(set(options) - set(BACKBONE_OPTION_SPECS))
    if unknown:
        raise ValueError(f"unknown backbone option(s) {unknown}; known: {sorted(BACKBONE_OPTION_SPECS)}.")
    checked = validate_options({**BACKBONE_OPTION_DEFAULTS, **options}, BACKBONE_OPTION_SPECS)
    return check_backbone_options(
        checked["backbone"],
        spatial_dims,
        features=checked["features"],
        init_filters=checked["init_filters"],
        feature_size=checked["feature_size"],
        depths=checked["depths"],
        size=size,
        size_option=size_option,
        strict_size=strict_size,
    )
