"""Mixed precision on CPU and CUDA: which autocast a training runs under, and float32 islands inside it.

MONAI's engines know one kind of mixed precision: ``amp=True`` runs the forward pass and the loss under
``torch.autocast("cuda")`` (float16) with a ``GradScaler``. CPUs with AVX512-BF16 or AMX (recent Xeon and EPYC)
compute convolutions and matrix products in bfloat16 about twice as fast as in float32, and bfloat16 keeps float32's
exponent range, so no loss scaling is needed. These helpers give the bundles one ``amp`` switch for both:

- :func:`amp_mode` tells what ``amp`` means on a device: ``"cuda"`` (MONAI's own mixed precision), ``"cpu_bf16"``
  (bfloat16 autocast around the network, see :class:`monai_cluster.inferers.AutocastInferer`) or ``None``;
- :func:`cuda_amp` / :func:`cpu_bf16` are the two booleans a bundle config passes on (to the MONAI trainer's
  ``amp`` and to the autocast inferer);
- :func:`autocast` is the context a hand-written loop uses;
- :func:`float32` runs a block with autocast off and every floating tensor of its inputs in float32: the losses use
  it, so their normalisation, log-sum-exp and softmax never run in reduced precision (at a temperature of 0.005 a
  bfloat16 cosine similarity of 1 would be off by up to 0.8 logits).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

__all__ = [
    "amp_mode",
    "autocast",
    "cpu_bf16",
    "cpu_supports_bf16",
    "cuda_amp",
    "cuda_autocast_dtype",
    "float32",
    "float32_forward",
    "to_float32",
]

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
_WARNED: set[str] = set()


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN reports AVX512-BF16 or AMX).

    Without it, bfloat16 autocast on the CPU still runs but is emulated and slower than float32.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN or without the query
        return False


def _device_type(device: object) -> str:
    if isinstance(device, torch.device):
        return device.type
    if isinstance(device, str):
        try:
            return torch.device(device).type
        except RuntimeError as err:
            raise ValueError(f"device must name a torch device (e.g. 'cpu', 'cuda:0'), got {device!r}.") from err
    raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}.")


def amp_mode(amp: object, device: object) -> str | None:
    """What ``amp`` means on ``device``: ``"cuda"``, ``"cpu_bf16"`` or ``None`` (float32).

    Args:
        amp: the bundle's switch, a bool.
        device: where the network runs (``str`` or ``torch.device``).

    On a CPU without native bfloat16 ``amp=True`` falls back to float32 with a warning (emulated bfloat16 is slower).
    Other devices (``mps``, ...) run in float32.
    """
    if not isinstance(amp, bool):
        raise TypeError(f"amp must be a bool, got {type(amp).__name__} ({amp!r}).")
    kind = _device_type(device)
    if not amp:
        return None
    if kind == "cuda":
        return "cuda"
    if kind == "cpu":
        if cpu_supports_bf16():
            return "cpu_bf16"
        if "cpu" not in _WARNED:
            _WARNED.add("cpu")
            logger.warning("amp=True, but this CPU has no native bfloat16 (AVX512-BF16/AMX): training in float32.")
        return None
    if kind not in _WARNED:
        _WARNED.add(kind)
        logger.warning("amp=True has no effect on device type %r: training in float32.", kind)
    return None


def cuda_amp(amp: object, device: object) -> bool:
    """``amp`` for a MONAI engine: True only where MONAI's own (CUDA) mixed precision applies."""
    return amp_mode(amp, device) == "cuda"


def cpu_bf16(amp: object, device: object) -> bool:
    """Whether ``amp`` means bfloat16 autocast on this CPU (for :class:`~monai_cluster.inferers.AutocastInferer`)."""
    return amp_mode(amp, device) == "cpu_bf16"


def cuda_autocast_dtype() -> torch.dtype:
    """The reduced precision of :func:`autocast` on CUDA: bfloat16 where the GPU has it (Ampere and later), else
    float16. The hand-written steps use no gradient scaler, and bfloat16 keeps float32's exponent range, so its
    gradients cannot underflow as float16's can without one."""
    try:
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    except (AssertionError, RuntimeError):  # a build without CUDA
        return torch.float16


def autocast(amp: bool, device: object) -> contextlib.AbstractContextManager:
    """The autocast context of a hand-written training step (no gradient scaler): on CUDA bfloat16 where the GPU has
    it, else float16 (:func:`cuda_autocast_dtype`); bfloat16 on a CPU that has it; otherwise none.

    Example::

        with autocast(amp, device):
            out = network(x)
        loss = loss_fn(to_float32(out), target)
    """
    mode = amp_mode(amp, device)
    if mode is None:
        return contextlib.nullcontext()
    if mode == "cuda":
        return torch.autocast("cuda", dtype=cuda_autocast_dtype())
    return torch.autocast("cpu", dtype=torch.bfloat16)


def to_float32(value: Any) -> Any:
    """``value`` with every float16/bfloat16 tensor in it (also inside dicts, lists, tuples) cast to float32."""
    if torch.is_tensor(value):
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
    if isinstance(value, Mapping):
        return {k: to_float32(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(to_float32(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(to_float32(v) for v in value)
    return value


@contextlib.contextmanager
def float32():
    """A block with autocast off on CPU and CUDA, so its operations run in the dtype of their inputs."""
    with contextlib.ExitStack() as stack:
        for kind in ("cpu", "cuda"):
            if torch.is_autocast_enabled(kind):
                stack.enter_context(torch.autocast(kind, enabled=False))
        yield


def float32_forward(forward: F) -> F:
    """Decorate a loss's ``forward`` (or a loss function): autocast off, float16/bfloat16 inputs cast to float32.

    Gradients still flow to the reduced-precision tensors (the cast is differentiable). The undecorated callable
    stays reachable as ``__wrapped__``.
    """

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        with float32():
            return forward(*to_float32(args), **to_float32(kwargs))

    return wrapper  # type: ignore[return-value]
