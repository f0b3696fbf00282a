"""The one seeding helper of the package: seed every global RNG, for the whole run or inside a block only.

:func:`seed_everything` seeds Python, numpy and torch for the rest of the process (MONAI's ``set_determinism``), as a
bundle does once before it builds anything. :func:`seeded` does the same inside a ``with`` block and gives the
caller's states back afterwards, as a library function that trains must (its draws do not depend on, or change,
what the caller drew before); it yields a ``torch.Generator`` seeded alike, for a data loader's order.
"""

from __future__ import annotations

import contextlib
import numbers
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["check_seed", "seed_everything", "seeded"]


def check_seed(seed: object, name: str = "seed") -> int:
    """Return ``seed`` as an int; ValueError naming ``name`` unless it is an integer ``>= 0``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {seed!r}.")
    return int(seed)


def seed_everything(seed: int) -> int:
    """Seed Python, numpy and torch for the rest of the process (``monai.utils.set_determinism``); return the seed.

    Raises:
        ValueError: unless ``seed`` is an integer ``>= 0``.
    """
    from monai.utils import set_determinism

    seed = check_seed(seed, "'seed'")
    set_determinism(seed=seed)
    return seed


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[torch.Generator]:
    """Seed Python, numpy and torch (CPU, and ``device``'s CUDA RNG) inside the block only; yield a CPU
    ``torch.Generator`` seeded with ``seed``. The caller's RNG states are restored when the block ends.

    Raises:
        ValueError: unless ``seed`` is an integer ``>= 0``.
    """
    seed = check_seed(seed)
    device = torch.device("cpu") if device is None else torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            yield torch.Generator().manual_seed(seed)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
