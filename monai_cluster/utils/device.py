"""The one device resolver of the package: ``"auto"`` (this rank's GPU when there is one), a name, or a model's."""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto", model: nn.Module | None = None) -> torch.device:
    """The ``torch.device`` to run on.

    - ``None`` with a ``model``: the device of the model's parameters (the CPU for a model without any);
    - ``"auto"``, or ``None`` without a model: CUDA when available (this rank's GPU, ``LOCAL_RANK``, under
      ``torchrun``), else the CPU;
    - otherwise ``device`` itself (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).

    Raises:
        TypeError: for a ``device`` that is not a string or ``torch.device``, or a ``model`` that is not an
            ``nn.Module``.
        ValueError: for a string torch does not understand, or a CUDA device when CUDA is not available.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    if device is None and model is not None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be 'auto', a device string or torch.device, got {type(device).__name__}.")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use 'cpu' or 'auto'.")
    return resolved
