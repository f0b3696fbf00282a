"""Keep freed memory in the process on CPU (glibc ``mallopt``), so that training steps stop paying page faults.

PyTorch's CPU tensors come from ``malloc``. glibc serves every allocation above its mmap threshold (at most
32 MB) with a fresh ``mmap`` and returns it with ``munmap`` when the tensor dies, and it trims the top of the heap
when enough of it is free. A 3D training step allocates and frees activations of 100 MB and more every step, so
every step the kernel maps and zeroes those pages again: on the pretraining bundle's 3D step (batch 4, 48^3, two
views) this was half of the step's time, as system time (``benchmarks/pretrain_step.py``: 6.4 s -> 3.4 s per step
with the allocator tuned). ``keep_freed_memory`` turns both off for the rest of the process: allocations come
from the heap and freed memory stays there for the next step. The price is that the process keeps its peak
memory until it exits (it is reused, not returned to the system).

Only glibc on Linux has ``mallopt``; elsewhere (macOS, musl, Windows) this does nothing and says so. GPU
training is unaffected (CUDA has its own caching allocator).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
_done = False


def keep_freed_memory(device: object = "cpu") -> bool:
    """Tell glibc's ``malloc`` never to ``mmap`` allocations nor trim the heap, when training runs on the CPU.

    Args:
        device: the training device (a ``torch.device`` or string); anything but a CPU device leaves the allocator
            alone and returns False, so a bundle can call it with its ``device`` unconditionally.

    Returns:
        True when the allocator was tuned (now or by an earlier call), False when it was left alone.
    """
    global _done
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if kind != "cpu":
        return False
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        logger.info("keep_freed_memory: %s has no glibc mallopt; the allocator is left as it is.", sys.platform)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.info("keep_freed_memory: this C library has no mallopt (not glibc); the allocator is left as it is.")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; M_MMAP_MAX 0: every allocation from the heap; M_TRIM_THRESHOLD: the most an int
    # allows (2 GB of free memory at the top of the heap before any of it goes back to the system)
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    if not ok:
        logger.warning("keep_freed_memory: mallopt refused the settings; the allocator is left as it is.")
        return False
    _done = True
    logger.info("keep_freed_memory: malloc keeps freed memory for reuse (no mmap, no trimming) in this process.")
    return True
