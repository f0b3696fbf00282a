"""Load pretrained weights into a network by its own keys, loudly.

A fine-tune run that silently starts from random weights because a path was wrong or the keys did not match
is the failure this module exists to prevent: :func:`load_pretrained` raises on a missing file, on a file
that is not a state dict, when any tensor but the task head (and what the checkpoint lacks by design) is
missing, has another shape or is unknown to the network, and otherwise returns (and logs) a report of what was
loaded. Loading only part of a checkpoint is an explicit choice (``partial=True``), reported tensor by tensor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from monai_cluster.utils.io import atomic_write_json
from monai_cluster.utils.validation import check_probability

__all__ = ["load_pretrained"]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict")
_SHOWN = 5  # tensors named in a message


def _read_source(source: object, map_location: str | torch.device) -> tuple[Mapping, str]:
    """Return the state dict held by ``source`` (a path or a mapping) and a name for messages."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"pretrained checkpoint {str(path)!r} does not exist (or is not a file).")
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - a corrupt file fails in many ways (IndexError, KeyError, ...)
            raise ValueError(
                f"pretrained checkpoint {str(path)!r} could not be read as a torch file ({type(err).__name__}: {err})"
            ) from err
        name = str(path)
    elif isinstance(source, Mapping):
        obj, name = source, "the given state dict"
    else:
        raise TypeError(f"source must be a checkpoint path or a state dict, got {type(source).__name__}.")
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__ if not isinstance(obj, Mapping) else f"a mapping with keys {list(obj)[:5]}"
        raise ValueError(
            f"{name} is not a state dict (a mapping of names to tensors, possibly under {list(_WRAPPER_KEYS)}); "
            f"got {what}."
        )
    return obj, name


def _is_excluded(key: str, exclude: Sequence[str]) -> bool:
    return any(key == e or key.startswith(e + ".") for e in exclude)


def _prefix_hint(ckpt_keys: Sequence[str], net_keys: set[str]) -> str:
    """Suggest a prefix_map when stripping a checkpoint key's first component would make keys match."""
    prefixes = {k.split(".", 1)[0] + "." for k in ckpt_keys if "." in k}
    for prefix in sorted(prefixes):
        if any(k.startswith(prefix) and k[len(prefix) :] in net_keys for k in ckpt_keys):
            return f" Checkpoint keys under {prefix!r} match once it is removed: pass prefix_map={{{prefix!r}: ''}}."
    return ""


def _shape(value: torch.Tensor) -> list[int]:
    return [int(s) for s in value.shape]


def _tensor_report(
    own: Mapping[str, torch.Tensor],
    renamed: Mapping[str, torch.Tensor],
    exclude: Sequence[str],
    optional: Sequence[str],
    loaded: set[str],
    partial: bool,
) -> list[dict]:
    """One entry per network tensor: ``{"name", "status": "loaded" | "random", "reason", shapes}``."""
    rows = []
    for key, value in own.items():
        row = {"name": key, "network_shape": _shape(value)}
        if key in renamed:
            row["checkpoint_shape"] = _shape(renamed[key])
        if key in loaded:
            row.update(status="loaded", reason="same name and shape in the checkpoint")
        elif _is_excluded(key, exclude):
            row.update(status="random", reason="excluded (task head or exclude)")
        elif key not in renamed:
            why = "absent from the checkpoint by design (optional)" if _is_excluded(key, optional) else (
                "absent from the checkpoint (partial transfer)" if partial else "absent from the checkpoint"
            )
            row.update(status="random", reason=why)
        else:
            row.update(status="random", reason="another shape in the checkpoint")
        rows.append(row)
    return rows


def _mismatch(key: str, renamed: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> str:
    return f"{key}: checkpoint {tuple(renamed[key].shape)} vs network {tuple(own[key].shape)}"


def load_pretrained(
    network: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    prefix_map: Mapping[str, str] | None = None,
    exclude: Sequence[str] = ("final_conv",),
    min_matched: float | None = None,
    strict_shapes: bool = True,
    map_location: str | torch.device = "cpu",
    partial: bool = False,
    optional: Sequence[str] = (),
    ignore_unexpected: Sequence[str] = (),
    report_path: str | os.PathLike | None = None,
) -> dict:
    """Copy the tensors of a checkpoint into ``network`` by ``network``'s own ``state_dict`` keys.

    The rule: every tensor of ``network`` except those under ``exclude`` (the task head) and ``optional``
    (what the checkpoint may lack by design, e.g. the decoder of an encoder-only pretraining) must be in the
    checkpoint with the same shape, and the checkpoint must hold no tensor the network lacks (outside
    ``exclude`` and ``ignore_unexpected``): a checkpoint of the same network with other options (e.g. another
    SwinUNETR ``depths``, other BasicUNet ``features``) is refused, naming the tensors that do not fit, instead
    of fine-tuning with part of the network silently at random. ``partial=True`` loads whatever fits and
    reports, tensor by tensor, what was loaded and what was kept at its initialisation and why.

    Args:
        network: the module to load into (e.g. a fresh ``BasicUNet`` for fine-tuning).
        source: a checkpoint file (``torch.save`` of a state dict, or of a dict holding one under
            ``"model"`` or ``"state_dict"`` as MONAI's ``CheckpointSaver`` writes) or such a dict itself.
        prefix_map: renames checkpoint keys before matching: the first ``old`` prefix a key starts with is
            replaced by ``new`` (e.g. ``{"backbone.": ""}`` for a whole ``ContrastivePretrainNet`` state dict,
            ``{"module.": ""}`` for a DDP one).
        exclude: network submodule names (or keys) never loaded: a key is excluded when it equals an entry or
            starts with the entry plus ``"."``. The default keeps the task head ``final_conv`` freshly initialised.
            Checkpoint keys under ``exclude`` are ignored too (a head of another ``out_channels`` is no error).
        min_matched: with ``partial``, the smallest accepted fraction of the (non-excluded) network tensors
            loaded (``None``: any number above zero); without ``partial`` every tensor must match anyway.
        strict_shapes: ``False`` skips (and reports) tensors of another shape instead of raising, the rest of
            the rule still holding; ``partial`` implies it.
        map_location: passed to :func:`torch.load`.
        partial: load the tensors that fit and keep the others at their initialisation, logging each tensor
            (loaded, or kept at random and why) instead of raising.
        optional: network submodule names (or keys) that the checkpoint may lack by design: loaded when
            present (with the same shape), kept at their initialisation (and reported) when absent.
        ignore_unexpected: checkpoint key prefixes (after ``prefix_map``) that may be in the checkpoint without
            a counterpart in ``network``, e.g. ``("global_head", "dense_head")`` for a whole
            ``ContrastivePretrainNet`` state dict.
        report_path: when given, the report is also written there as JSON (atomically).

    Returns:
        ``{"matched": n, "total": m, "missing": [...], "unexpected": [...], "shape_mismatch": [...],
        "excluded": [...], "partial": bool, "tensors": [...]}``: ``m`` counts the network's non-excluded
        tensors, ``missing`` lists those absent from the checkpoint, ``unexpected`` the (renamed) checkpoint keys
        the network lacks, ``shape_mismatch`` entries ``"key: checkpoint (..) vs network (..)"``, ``excluded``
        the network keys left untouched, ``tensors`` one ``{"name", "status": "loaded" | "random", "reason",
        "network_shape"[, "checkpoint_shape"]}`` per network tensor, in ``state_dict`` order.

    Raises:
        ValueError: for a missing file (naming it), a file that is not a state dict, zero matched tensors,
            (without ``partial``) missing, unexpected or (with ``strict_shapes``) other-shaped tensors, naming
            the first few with both shapes and their count, (with ``partial``) a loaded fraction under
            ``min_matched``, or matched tensors holding NaN/Inf. Nothing is loaded when it raises.
        TypeError: for a ``network`` that is not an ``nn.Module``, a ``source`` of another type or a
            non-bool ``partial``.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
    if not isinstance(partial, bool):
        raise TypeError(f"partial must be a bool, got {type(partial).__name__} {partial!r}.")
    if min_matched is not None:
        min_matched = check_probability(min_matched, "min_matched")
    exclude, optional, ignore_unexpected = (
        (v,) if isinstance(v, str) else tuple(v) for v in (exclude, optional, ignore_unexpected)
    )
    prefix_map = dict(prefix_map or {})
    checkpoint, name = _read_source(source, map_location)

    renamed: dict[str, torch.Tensor] = {}
    for key, value in checkpoint.items():
        for old, new in prefix_map.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        renamed[key] = value

    own = network.state_dict()
    net_name = type(network).__name__
    excluded = [k for k in own if _is_excluded(k, exclude)]
    eligible = [k for k in own if not _is_excluded(k, exclude)]
    missing = [k for k in eligible if k not in renamed]
    required_missing = [k for k in missing if not _is_excluded(k, optional)]
    unexpected = [k for k in renamed if k not in own]
    refused_unexpected = [k for k in unexpected if not _is_excluded(k, exclude + ignore_unexpected)]
    mismatched_keys = [k for k in eligible if k in renamed and renamed[k].shape != own[k].shape]
    mismatched = [_mismatch(k, renamed, own) for k in mismatched_keys]
    to_load = {k: renamed[k] for k in eligible if k in renamed and renamed[k].shape == own[k].shape}
    total = len(eligible)
    if not to_load and not mismatched:
        raise ValueError(
            f"0 of {total} tensors of {net_name} matched in {name}: checkpoint keys look like "
            f"{list(renamed)[:3]}, network keys like {eligible[:3]}.{_prefix_hint(list(checkpoint), set(own))}"
        )
    shape_refused = mismatched if strict_shapes and not partial else []
    if shape_refused or (not partial and (required_missing or refused_unexpected)):
        problems = []
        if shape_refused:
            problems.append(f"{len(mismatched)} tensor(s) of {name} have another shape than in {net_name}: "
                            f"{mismatched[:_SHOWN]}")  # fmt: skip
        if required_missing and not partial:
            problems.append(f"{len(required_missing)} tensor(s) of {net_name} are missing, e.g. "
                            f"{[f'{k} {tuple(own[k].shape)}' for k in required_missing[:_SHOWN]]}")  # fmt: skip
        if refused_unexpected and not partial:
            problems.append(f"{len(refused_unexpected)} checkpoint tensor(s) have no counterpart in {net_name}, "
                            f"e.g. {[f'{k} {tuple(renamed[k].shape)}' for k in refused_unexpected[:_SHOWN]]}")  # fmt: skip
        raise ValueError(
            f"{name} does not fit {net_name}: only {len(to_load)} of {total} tensors match; "
            + "; ".join(problems)
            + ". A checkpoint of the same network with other options (depths, features, in_channels, ...) would "
            "leave part of it at random; pretrain with the same options, exclude what is meant to stay fresh, or "
            "pass partial=True to load what fits (reported tensor by tensor)."
        )
    if not to_load:
        raise ValueError(f"0 of {total} tensors of {net_name} could be loaded from {name}: {mismatched[:_SHOWN]}")
    if partial and min_matched is not None and len(to_load) < min_matched * total:
        raise ValueError(
            f"only {len(to_load)} of {total} tensors of {net_name} matched in {name} "
            f"({len(to_load) / total:.0%} < min_matched={min_matched:.0%}); missing e.g. {missing[:_SHOWN]}."
        )
    non_finite = [k for k, v in to_load.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise ValueError(
            f"{len(non_finite)} tensor(s) of {name} hold NaN or Inf, e.g. {non_finite[:5]}: the weights come from a "
            "run that diverged; use an earlier checkpoint."
        )
    network.load_state_dict(to_load, strict=False)
    tensors = _tensor_report(own, renamed, exclude, optional, set(to_load), partial)
    logger.info("loaded %d/%d tensors into %s from %s", len(to_load), total, net_name, name)
    if partial or mismatched or missing:
        for row in tensors:
            if row["status"] == "loaded" or row["reason"].startswith(("excluded", "absent from the checkpoint by")):
                verb = "loaded" if row["status"] == "loaded" else "kept at random"
                logger.info("  %s %s %s: %s", verb, row["name"], tuple(row["network_shape"]), row["reason"])
            else:
                logger.warning("  kept at random %s %s: %s", row["name"], tuple(row["network_shape"]), row["reason"])
        for key in unexpected:
            logger.warning("  not used (no such tensor in %s): %s %s", net_name, key, tuple(renamed[key].shape))
    report = {
        "matched": len(to_load),
        "total": total,
        "missing": missing,
        "unexpected": unexpected,
        "shape_mismatch": mismatched,
        "excluded": excluded,
        "partial": partial,
        "tensors": tensors,
    }
    if report_path is not None:
        atomic_write_json({"checkpoint": name, "network": net_name, **report}, report_path)
    return report
