"""The fine-tune network's start: pretrained tensors loaded loudly, or an explicit random start.

:func:`initialize_network` is what the fine-tune bundles call to build ``network`` from ``network_def``:
with ``use_pretrained`` it loads the pretraining bundle's ``models/model.pt`` (the wrapped network's own
keys, see :meth:`monai_cluster.networks.ContrastivePretrainNet.backbone_state_dict`) through
:func:`monai_cluster.networks.load_pretrained`, so a missing file or a checkpoint of another network is an
error that names the path and the way out, never a silent random start, and it logs how many tensors were
loaded. The task head (BasicUNet's ``final_conv``, SegResNet's ``conv_final``, SwinUNETR's ``out``: see
:mod:`monai_cluster.networks.backbones`) keeps its fresh initialisation; every other tensor must come from the
checkpoint, unless ``partial_transfer`` is asked for (then each tensor is reported, loaded or kept at random and
why). A checkpoint of another backbone than
``network_def`` (told by its tensor names, or by the ``backbone`` the pretraining run recorded in
``pretrain_summary.json`` next to it) is refused with a message naming both backbones.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_cluster.networks import load_pretrained
from monai_cluster.networks.backbones import BACKBONES, backbone_of, detect_backbone

from monai_cluster.utils.io import atomic_write_json

from .common import is_main_process, validate_option

__all__ = [
    "check_pretrained_exclude",
    "checkpoint_backbone",
    "encoder_tensor_names",
    "initialize_network",
    "load_finetuned",
]

SUMMARY_NAME = "pretrain_summary.json"
"""The pretraining bundle's summary next to ``models/model.pt``; its ``"backbone"`` names the pretrained network."""

logger = logging.getLogger(__name__)


def check_pretrained_exclude(exclude: Any) -> list[str] | None:
    """The option ``pretrained_exclude``: ``None`` (the task head) or submodule names that start at the seed's
    initialisation instead of the pretrained weights (one name is taken as a list of one).

    Raises:
        TypeError: naming the option, for anything else.
    """
    if exclude is None:
        return None
    names = [exclude] if isinstance(exclude, str) else exclude
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise TypeError(
            "option 'pretrained_exclude' (--pretrained_exclude) must be None or a non-empty list of submodule names "
            f"(e.g. [\"final_conv\", \"upcat_2\", \"upcat_1\"]), got {type(exclude).__name__} {exclude!r}."
        )
    return list(names)


def encoder_tensor_names(network: nn.Module, prefixes: Sequence[str] | None = None) -> list[str]:
    """Names of the ``state_dict`` tensors of a network's encoder.

    Args:
        network: the segmentation network.
        prefixes: key prefixes of the encoder; ``None`` uses the registered backbone's
            (:attr:`~monai_cluster.networks.backbones.BackboneSpec.encoder_prefixes`: BasicUNet ``conv_0`` and
            ``down_1..4``), BasicUNet's for an unregistered network.
    """
    if prefixes is None:
        prefixes = BACKBONES[backbone_of(network) or "basic_unet"].encoder_prefixes
    return [name for name in network.state_dict() if name.startswith(tuple(prefixes))]


def checkpoint_backbone(path: str | os.PathLike) -> tuple[str | None, str]:
    """Which registered backbone a pretrained checkpoint holds, and how that is known.

    Its tensor names decide (:func:`~monai_cluster.networks.backbones.detect_backbone`); when they fit no
    registered backbone, the ``"backbone"`` recorded in ``pretrain_summary.json`` beside it (written by the
    pretraining bundle for this file) is used.

    Args:
        path: a state dict file, possibly holding it under ``"model"`` or ``"state_dict"``.

    Returns:
        ``(name or None, source)`` with ``source`` ``"its tensor names"``, ``"<summary path>"`` or ``""``; an
        unreadable file gives ``(None, "")`` (loading it then fails with its own message).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - load_pretrained reports an unreadable file with its own message
        return None, ""
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    detected = detect_backbone(state) if isinstance(state, dict) else None
    if detected is not None:
        return detected, "its tensor names"
    summary = path.with_name(SUMMARY_NAME)
    try:
        recorded = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None, ""
    if not isinstance(recorded, dict) or Path(str(recorded.get("model", ""))).name != path.name:
        return None, ""
    name = recorded.get("backbone")
    return (name, str(summary)) if name in BACKBONES else (None, "")


def _refuse_other_backbone(network: nn.Module, path: str) -> None:
    """Raise when ``path`` was pretrained with another registered backbone than ``network`` is."""
    own = backbone_of(network)
    pretrained, source = checkpoint_backbone(path)
    if own is None or pretrained is None or pretrained == own:
        return
    raise ValueError(
        f"pretrained_path {path} was pretrained with backbone {pretrained!r} (from {source}), but this bundle "
        f"builds {own!r} ({type(network).__name__}); set --backbone {pretrained} (with the pretraining's "
        f"backbone options), pretrain with --backbone {own}, or pass --use_pretrained false to train from scratch."
    )


def initialize_network(
    network: nn.Module,
    device: str | torch.device = "cpu",
    use_pretrained: bool = False,
    pretrained_path: str | os.PathLike | None = None,
    exclude: Sequence[str] | None = None,
    min_matched: float | None = None,
    partial_transfer: bool = False,
    report_path: str | os.PathLike | None = None,
) -> nn.Module:
    """Load pretrained weights into ``network`` (when asked) and move it to ``device``.

    Every tensor but the task head must come from the checkpoint with the same shape (the rule of
    :func:`~monai_cluster.networks.load_pretrained`): both pretraining bundles save the whole segmentation network
    by its own keys, the contrastive one with its (unused) head, the local-discrimination one without
    ``final_conv`` (replaced there by the identity), so the head is all they lack by design. A checkpoint of the
    same backbone with other options (SwinUNETR ``depths``, BasicUNet ``features``, ...) is refused naming the
    tensors that do not fit, unless ``partial_transfer`` asks to load what fits.

    Args:
        network: the fine-tune network (``network_def``, e.g. a MONAI ``BasicUNet``, ``SegResNet`` or
            ``SwinUNETR`` from :func:`~monai_cluster.networks.backbones.build_backbone`).
        device: where the network goes.
        use_pretrained: load ``pretrained_path``; ``False`` starts from random weights (logged as such).
            Strings such as ``"false"`` from the command line are accepted.
        pretrained_path: a state dict saved by the pretraining bundle (``models/model.pt``) or a MONAI
            ``CheckpointSaver`` file holding one under ``"model"``.
        exclude: submodules left at their fresh initialisation; ``None``: the registered backbone's task head
            (:attr:`~monai_cluster.networks.backbones.BackboneSpec.head`, BasicUNet ``final_conv``), or
            ``final_conv`` for an unregistered network.
        min_matched: with ``partial_transfer``, the smallest accepted fraction of loaded tensors (``None``: any).
        partial_transfer: load the tensors that fit and keep the others at random, logging (and, with
            ``report_path``, writing) which tensor was loaded and why each other one was not. Strings such as
            ``"true"`` are accepted.
        report_path: where the tensor-by-tensor report is written as JSON when weights are loaded (by the main
            process only), e.g. ``models/pretrained_transfer.json``; ``None`` writes none.

    Returns:
        ``network`` on ``device``; with ``use_pretrained``, ``network.pretrained_report`` holds the
        :func:`~monai_cluster.networks.load_pretrained` report (matched, total, missing, ..., ``tensors``).

    Raises:
        ValueError: when ``use_pretrained`` and the file is missing, unreadable, not a state dict, holds another
            backbone than ``network`` (naming both), or does not fit ``network`` (a tensor missing, unknown or of
            another shape, unless ``partial_transfer``); the message names ``pretrained_path``, the tensors, and
            says how to train from scratch instead.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module (network_def), got {type(network).__name__}.")
    use_pretrained = validate_option("use_pretrained", use_pretrained, "bool")
    partial_transfer = validate_option("partial_transfer", partial_transfer, "bool")
    if exclude is None:
        registered = backbone_of(network)
        exclude = BACKBONES[registered].head if registered is not None else ("final_conv",)
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    if use_pretrained:
        if pretrained_path is None or str(pretrained_path) == "":
            raise ValueError(
                "use_pretrained is true but pretrained_path is empty: pass --pretrained_path <model.pt> "
                "(the pretraining bundle's models/model.pt), or --use_pretrained false to train from scratch."
            )
        path = os.path.abspath(os.fspath(pretrained_path))
        if not os.path.isfile(path):
            raise ValueError(
                f"pretrained_path {path} does not exist: run the pretraining bundle first "
                "(bundles/cluster_contrastive_pretrain, which writes models/model.pt), pass --pretrained_path, "
                "or --use_pretrained false to train from scratch."
            )
        _refuse_other_backbone(network, path)
        try:
            report = load_pretrained(network, path, exclude=exclude, min_matched=min_matched, partial=partial_transfer)
        except ValueError as err:
            raise ValueError(
                f"pretrained_path {path} does not fit network_def ({type(network).__name__}): {err} "
                "Check that the pretraining used the same network (backbone, spatial_dims, in_channels and the "
                "backbone's options: features, init_filters, feature_size, depths), pass --partial_transfer true "
                "to fine-tune from the tensors that fit (reported tensor by tensor), "
                "or --use_pretrained false to train from scratch."
            ) from err
        network.pretrained_report = report
        head = [row["name"] for row in report["tensors"] if row["name"] in report["excluded"]]
        others = [row for row in report["tensors"] if row["status"] == "random" and row["name"] not in head]
        logger.info(
            "fine-tuning from %s: %d/%d tensors matched and loaded (%d encoder tensors); task head (%s, %d tensors) freshly "
            "initialised; %d other tensor(s) kept at random%s",
            path,
            report["matched"],
            report["total"],
            len([k for k in encoder_tensor_names(network) if k not in report["missing"] and k not in head]),
            ", ".join(exclude) or "none",
            len(head),
            len(others),
            " (partial_transfer: see the report)" if others else "",
        )
        if report_path is not None and is_main_process():
            atomic_write_json(
                {"pretrained_path": path, "network": type(network).__name__, "partial_transfer": partial_transfer,
                 **report},
                report_path,
            )  # fmt: skip
            logger.info("pretrained transfer report written to %s", report_path)
    else:
        logger.info("use_pretrained is false: training %s from random initialisation", type(network).__name__)
    return network.to(device)


def load_finetuned(network: nn.Module, checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load a fine-tuned checkpoint (``models/model.pt`` of a fine-tune bundle) into ``network``, strictly.

    Args:
        network: ``network_def`` of the same bundle configuration that trained the checkpoint.
        checkpoint: a state dict file (as ``CheckpointSaver`` writes it), possibly under ``"model"``.
        device: where the network goes.

    Returns:
        ``network`` with every tensor loaded, in eval mode, on ``device``.

    Raises:
        ValueError: when the file is missing (train first), unreadable, or does not fit ``network`` exactly.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module (network_def), got {type(network).__name__}.")
    path = os.path.abspath(os.fspath(checkpoint))
    if not os.path.isfile(path):
        raise ValueError(
            f"checkpoint {path} does not exist: run the bundle's train config first (it writes models/model.pt), "
            "or pass --checkpoint <file>."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file fails in many ways
        raise ValueError(f"checkpoint {path} could not be read ({type(err).__name__}: {err}).") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(
            f"checkpoint {path} does not fit network_def ({type(network).__name__}); use the same num_classes, "
            f"in_channels and features as in training: {str(err)[:500]}"
        ) from err
    logger.info("loaded %s into %s", path, type(network).__name__)
    return network.to(device).eval()
