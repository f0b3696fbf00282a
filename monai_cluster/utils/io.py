"""Atomic file writes: a file is either the old version or the complete new one, never half-written.

Each writer goes to a temporary file in the destination folder (same file system), flushes and fsyncs it,
then renames it over the destination with :func:`os.replace`. On any exception the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_write", "atomic_torch_save", "atomic_write_json", "atomic_write_bytes"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing and move it onto ``path`` only when the block succeeds.

    Args:
        path: destination file; its parent folders are created.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        open_kwargs: passed to :func:`open` (e.g. ``encoding``, ``newline``).

    Raises:
        ValueError: when ``mode`` is not a write mode.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}.")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """:func:`torch.save` ``obj`` to ``path`` atomically (a crash leaves the previous file intact)."""
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_write_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> None:
    """Dump ``obj`` as JSON to ``path`` atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=indent, sort_keys=False)
        handle.write("\n")
