"""Atomic file writes: a file is either the old version or the complete new one, never half-written.

Each writer goes to a temporary file in the destination folder (same file system), flushes and fsyncs it,
then renames it over the destination with :func:`os.replace`. On any exception the temporary file is removed.
Before the rename the temporary file gets the permission bits a plain :func:`open` gives a new file
(``0o666 & ~umask``), not :func:`tempfile.mkstemp`'s ``0o600``, so results on shared storage are readable by
whoever the umask lets read them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_bytes",
    "current_umask",
    "open_file_mode",
    "remove_stale_temp_files",
]

logger = logging.getLogger(__name__)

_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what atomic_write's mkstemp names look like
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status`` (kernel 4.7+), which no other thread can race with. Elsewhere the
    umask is set to ``0o077`` and back under a lock: the restrictive interim value means a file another thread creates
    in that instant is at worst too private, never too open.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def open_file_mode() -> int:
    """The permission bits a plain ``open(path, "w")`` gives a file it creates: ``0o666 & ~umask``.

    Atomic writes replace the destination with a new file, so a replaced file gets these bits too (as after
    deleting it and opening it anew), also when an earlier version was left ``0o600`` by an older writer.
    """
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing and move it onto ``path`` only when the block succeeds.

    The file ends up with the permission bits of :func:`open_file_mode` (what a plain ``open`` gives), not the
    ``0o600`` of the temporary file.

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
            os.chmod(tmp, open_file_mode())  # mkstemp made it 0o600; the result should read like an open() result
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


def remove_stale_temp_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporary files that atomic writes leave when their process is killed mid-write.

    An exception inside :func:`atomic_write` removes its temporary file, but SIGKILL, an out-of-memory kill or a
    power loss cannot: a hidden ``.<name>.<random>.tmp`` stays next to the (intact) destination. Call this when
    resuming, before anything writes into ``folder`` again; never while another process writes there, since its
    temporary files look the same.

    Args:
        folder: the folder to clean (a missing folder is not an error).
        recursive: also clean its sub-folders.

    Returns:
        the files removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    candidates = root.rglob("*.tmp") if recursive else root.glob("*.tmp")
    removed = []
    for path in sorted(candidates):
        if path.is_file() and _TEMP_NAME.match(path.name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        logger.warning("removed %d temporary file(s) left by an interrupted write: %s", len(removed), removed[:5])
    return removed
