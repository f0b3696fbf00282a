"""Load pretrained weights into a network by its own keys, loudly.

A fine-tune run that silently starts from random weights because a path was wrong or the keys did not match
is the failure this module exists to prevent: :func:`load_pretrained` raises on a missing file, on a file
that is not a state dict, when no tensor or too few tensors match, and on shape mismatches, and otherwise
returns (and logs) a report of what was loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from monai_cluster.utils.validation import check_probability

__all__ = ["load_pretrained"]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict")


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


def load_pretrained(
    network: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    prefix_map: Mapping[str, str] | None = None,
    exclude: Sequence[str] = ("final_conv",),
    min_matched: float = 0.5,
    strict_shapes: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Copy the tensors of a checkpoint into ``network`` by ``network``'s own ``state_dict`` keys.

    Args:
        network: the module to load into (e.g. a fresh ``BasicUNet`` for fine-tuning).
        source: a checkpoint file (``torch.save`` of a state dict, or of a dict holding one under
            ``"model"`` or ``"state_dict"`` as MONAI's ``CheckpointSaver`` writes) or such a dict itself.
        prefix_map: renames checkpoint keys before matching: the first ``old`` prefix a key starts with is
            replaced by ``new`` (e.g. ``{"backbone.": ""}`` for a whole ``ContrastivePretrainNet`` state dict,
            ``{"module.": ""}`` for a DDP one).
        exclude: network submodule names (or keys) never loaded: a key is excluded when it equals an entry or
            starts with the entry plus ``"."``. The default keeps the task head ``final_conv`` freshly initialised.
        min_matched: smallest accepted fraction of the (non-excluded) network tensors found in the checkpoint.
        strict_shapes: raise when a matching key has another shape; with ``False`` such keys are skipped and
            reported.
        map_location: passed to :func:`torch.load`.

    Returns:
        ``{"matched": n, "total": m, "missing": [...], "unexpected": [...], "shape_mismatch": [...],
        "excluded": [...]}``: ``m`` counts the network's non-excluded tensors, ``missing`` lists those absent
        from the checkpoint, ``unexpected`` the (renamed) checkpoint keys the network lacks, ``shape_mismatch``
        entries ``"key: checkpoint (..) vs network (..)"``, ``excluded`` the network keys left untouched.

    Raises:
        ValueError: for a missing file (naming it), a file that is not a state dict, zero matched tensors,
            a matched fraction under ``min_matched``, (with ``strict_shapes``) a shape mismatch naming the
            key and both shapes, or matched tensors holding NaN/Inf (nothing is loaded then).
        TypeError: for a ``network`` that is not an ``nn.Module`` or a ``source`` of another type.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
    min_matched = check_probability(min_matched, "min_matched")
    if isinstance(exclude, str):
        exclude = (exclude,)
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
    excluded = [k for k in own if _is_excluded(k, exclude)]
    eligible = [k for k in own if not _is_excluded(k, exclude)]
    missing = [k for k in eligible if k not in renamed]
    unexpected = [k for k in renamed if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(renamed[k].shape)} vs network {tuple(own[k].shape)}"
        for k in eligible
        if k in renamed and renamed[k].shape != own[k].shape
    ]
    if mismatched and strict_shapes:
        raise ValueError(
            f"{len(mismatched)} tensor(s) of {name} have another shape than in {type(network).__name__} "
            f"(add them to exclude, or strict_shapes=False to skip them): {mismatched[:10]}"
        )
    to_load = {k: renamed[k] for k in eligible if k in renamed and renamed[k].shape == own[k].shape}
    total = len(eligible)
    if not to_load:
        raise ValueError(
            f"0 of {total} tensors of {type(network).__name__} matched in {name}: checkpoint keys look like "
            f"{list(renamed)[:3]}, network keys like {eligible[:3]}.{_prefix_hint(list(checkpoint), set(own))}"
        )
    if len(to_load) < min_matched * total:
        raise ValueError(
            f"only {len(to_load)} of {total} tensors of {type(network).__name__} matched in {name} "
            f"({len(to_load) / total:.0%} < min_matched={min_matched:.0%}); missing e.g. {missing[:5]}."
        )
    non_finite = [k for k, v in to_load.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise ValueError(
            f"{len(non_finite)} tensor(s) of {name} hold NaN or Inf, e.g. {non_finite[:5]}: the weights come from a "
            "run that diverged; use an earlier checkpoint."
        )
    network.load_state_dict(to_load, strict=False)
    logger.info("loaded %d/%d tensors into %s from %s", len(to_load), total, type(network).__name__, name)
    if mismatched:
        logger.warning("skipped %d tensor(s) with another shape: %s", len(mismatched), mismatched[:10])
    return {
        "matched": len(to_load),
        "total": total,
        "missing": missing,
        "unexpected": unexpected,
        "shape_mismatch": mismatched,
        "excluded": excluded,
    }
