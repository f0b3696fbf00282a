"""Input checks shared by every public class: each raises ``ValueError``/``TypeError`` naming the input.

Library code never uses ``assert`` for user input; it calls these and lets the message say what was
expected and what arrived.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "check_positive_int",
    "check_positive_float",
    "check_probability",
    "check_choice",
    "check_spatial_dims",
    "check_tensor",
    "check_embeddings",
    "check_spatial_tensor",
    "check_finite",
    "check_labels",
]


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` if it is an integer ``>= minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_positive_float(value: object, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as ``float`` if it is finite and ``> 0`` (``>= 0`` with ``allow_zero``), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}.")
    value = float(value)
    bad = value < 0 if allow_zero else value <= 0
    if bad or not math.isfinite(value):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {expected}, got {value}.")
    return value


def check_probability(value: object, name: str) -> float:
    """Return ``value`` as ``float`` if it lies in ``[0, 1]``, else raise."""
    value = check_positive_float(value, name, allow_zero=True)
    if value > 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value}.")
    return value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return str(value)


def check_spatial_dims(value: object, name: str = "spatial_dims") -> int:
    """Return ``value`` if it is 2 or 3, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in (2, 3):
        raise ValueError(f"{name} must be 2 or 3, got {value!r}.")
    return int(value)


def check_tensor(x: object, name: str, ndim: int | None = None, floating: bool = False) -> torch.Tensor:
    """Check that ``x`` is a tensor (of ``ndim`` dimensions, floating point when asked) and return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}.")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}.")
    return x


def check_finite(x: torch.Tensor | np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf, saying how many."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex():
            bad = int((~torch.isfinite(x.detach())).sum().item())
        else:
            bad = 0
    else:
        arr = np.asarray(x)
        bad = int((~np.isfinite(arr)).sum()) if np.issubdtype(arr.dtype, np.inexact) else 0
    if bad:
        raise ValueError(f"{name} must be finite, but {bad} of {np.prod(tuple(x.shape))} values are NaN or Inf.")


def check_embeddings(z1: object, z2: object, names: tuple[str, str] = ("z1", "z2"), min_batch: int = 2) -> None:
    """Check a pair of ``(B, F)`` embedding tensors: same shape, floating point, finite, ``B >= min_batch``."""
    a = check_tensor(z1, names[0], ndim=2, floating=True)
    b = check_tensor(z2, names[1], ndim=2, floating=True)
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same (B, F) shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if a.shape[0] < min_batch:
        raise ValueError(f"{names[0]} must hold at least {min_batch} samples (B >= {min_batch}), got B={a.shape[0]}.")
    check_finite(a, names[0])
    check_finite(b, names[1])


def check_spatial_tensor(
    x: object, name: str, spatial_dims: int | None = None, channels: int | None = None
) -> torch.Tensor:
    """Check a channel-first batch ``(B, C, *spatial)`` with 2 or 3 spatial dimensions.

    Args:
        x: the tensor.
        name: its name in messages.
        spatial_dims: required number of spatial dimensions (2 or 3); ``None`` accepts either.
        channels: required channel count, or ``None``.
    """
    t = check_tensor(x, name)
    if spatial_dims is None:
        if t.ndim not in (4, 5):
            raise ValueError(f"{name} must be (B, C, H, W) or (B, C, H, W, D), got shape {tuple(t.shape)}.")
    elif t.ndim != spatial_dims + 2:
        layout = "(B, C, H, W)" if spatial_dims == 2 else "(B, C, H, W, D)"
        raise ValueError(f"{name} must be {layout} for spatial_dims={spatial_dims}, got shape {tuple(t.shape)}.")
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s) in dim 1, got shape {tuple(t.shape)}.")
    return t


def check_labels(labels: object, name: str, length: int | None = None) -> torch.Tensor:
    """Check integer labels ``(B,)`` or ``(B, levels)`` and return them as a ``torch.long`` tensor."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    t = check_tensor(labels, name)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {t.dtype}.")
    if t.ndim not in (1, 2):
        raise ValueError(f"{name} must be (B,) or (B, levels), got shape {tuple(t.shape)}.")
    if length is not None and t.shape[0] != length:
        raise ValueError(f"{name} must have length B={length} in dim 0, got shape {tuple(t.shape)}.")
    return t.long()
