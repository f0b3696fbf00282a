"""An inferer that runs another inferer (and so the network) under autocast, and hands float32 results back.

MONAI's engines switch mixed precision on only for CUDA (``amp=True`` is ``torch.autocast("cuda")`` with a
``GradScaler``). On a CPU with native bfloat16 the same trainers and evaluators run in bfloat16 when their
``inferer`` is an :class:`AutocastInferer`: the network's forward pass runs under ``torch.autocast("cpu",
dtype=torch.bfloat16)``, and its outputs come back in float32, so the loss, the post-transforms and the metrics see
the dtype they always saw. bfloat16 has float32's exponent range: no gradient scaling is needed.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

from monai_cluster.utils.precision import to_float32

__all__ = ["AutocastInferer"]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class AutocastInferer(Inferer):
    """Run ``inferer`` under ``torch.autocast`` on the inputs' device; floating outputs are returned in float32.

    Args:
        inferer: the inferer to wrap (``SimpleInferer()`` by default; e.g. a ``SlidingWindowInferer`` to evaluate).
        enabled: False runs ``inferer`` unchanged (so a bundle config can pass its ``amp`` switch through).
        dtype: the reduced precision, ``"bfloat16"`` (default; the CPU's) or ``"float16"``, or a ``torch.dtype``.
        float32_outputs: cast float16/bfloat16 outputs (also inside dicts, lists, tuples) to float32.

    Example::

        trainer = SupervisedTrainer(..., inferer=AutocastInferer(enabled=cpu_bf16(amp, device)))

    Shapes are those of the wrapped inferer: inputs ``(B, C, *spatial)``, outputs as the network returns them.
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        enabled: bool = True,
        dtype: str | torch.dtype = "bfloat16",
        float32_outputs: bool = True,
    ) -> None:
        super().__init__()
        if inferer is not None and not callable(inferer):
            raise TypeError(f"inferer must be a MONAI Inferer (callable), got {type(inferer).__name__}.")
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} ({enabled!r}).")
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype, got {dtype!r}.")
            dtype = _DTYPES[dtype]
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype!r}.")
        if not isinstance(float32_outputs, bool):
            raise TypeError(f"float32_outputs must be a bool, got {type(float32_outputs).__name__}.")
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.enabled = enabled
        self.dtype = dtype
        self.float32_outputs = float32_outputs

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped inferer on ``inputs`` ``(B, C, *spatial)`` with ``network`` under autocast."""
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)
        device_type = inputs.device.type if torch.is_tensor(inputs) else "cpu"
        with torch.autocast(device_type, dtype=self.dtype):
            outputs = self.inferer(inputs, network, *args, **kwargs)
        return to_float32(outputs) if self.float32_outputs else outputs
