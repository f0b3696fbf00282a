"""Where the real data lives.

The real datasets are never copied into the project: they are read from the folder named by the
environment variable ``MONAI_CLUSTER_DATA`` (default: ``../shared/data`` relative to the project root).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "get_data_root", "find_real_data"]

DATA_ENV_VAR = "MONAI_CLUSTER_DATA"


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def get_data_root() -> Path:
    """Return the folder that holds the real datasets.

    ``MONAI_CLUSTER_DATA`` wins when set; otherwise ``../shared/data`` beside the project root (the
    checkout that holds ``monai_cluster/``), falling back to ``../shared/data`` from the working directory.
    The folder may not exist: callers check, and tests skip with a reason.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    candidate = _project_root().parent / "shared" / "data"
    if candidate.is_dir():
        return candidate
    return (Path.cwd().parent / "shared" / "data").resolve()


def find_real_data(*parts: str) -> Path | None:
    """Return ``get_data_root() / parts`` if it exists, else ``None``.

    Args:
        parts: path components below the data root, e.g. ``("dermoscopy", "ph2")``.
    """
    path = get_data_root().joinpath(*parts)
    return path if path.exists() else None
