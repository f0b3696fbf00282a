"""Input checks shared by the clustering functions (features matrices and cluster counts)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["as_feature_matrix", "check_num_clusters", "count_distinct_rows_at_least"]

_CHUNK_ROWS = 65536


def as_feature_matrix(features: object, name: str = "features", dtype: type = np.float32) -> np.ndarray:
    """Return ``features`` as a C-contiguous ``(N, F)`` array of ``dtype`` (float32) after checking it.

    No copy is made when the input already is a C-contiguous numpy array of ``dtype`` (1,000,000 x 128
    float32 features take 512 MB; a copy would double that).

    Raises:
        TypeError: when ``features`` is not a numeric array or is not floating point.
        ValueError: when it is not 2D, is empty, or holds NaN/Inf (the message gives the first bad row).
    """
    if hasattr(features, "detach") and hasattr(features, "cpu"):  # a torch tensor
        features = features.detach().cpu().numpy()
    if not isinstance(features, np.ndarray):
        try:
            features = np.asarray(features)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a numeric (N, F) array, got {type(features).__name__}.") from err
    if not np.issubdtype(features.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point (N, F) array, got dtype {features.dtype}.")
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2D (N, F) array, got shape {features.shape}.")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one sample and one feature, got shape {features.shape}.")
    x = np.ascontiguousarray(features, dtype=dtype)
    for start in range(0, x.shape[0], _CHUNK_ROWS):  # chunked: no (N, F) boolean temporary
        finite = np.isfinite(x[start : start + _CHUNK_ROWS]).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            bad = int((~np.isfinite(x)).any(axis=1).sum())
            raise ValueError(
                f"{name} must be finite, but {bad} row(s) hold NaN or Inf (first: row {row})"
                + (f" after conversion to {np.dtype(dtype).name}." if features.dtype != dtype else ".")
            )
    return x


def check_num_clusters(num_clusters: object, name: str = "num_clusters") -> tuple[int, ...]:
    """Return ``num_clusters`` as a tuple of strictly increasing positive ints (coarse to fine), else raise."""
    if isinstance(num_clusters, numbers.Integral) and not isinstance(num_clusters, bool):
        num_clusters = (num_clusters,)
    if isinstance(num_clusters, (str, bytes)) or not isinstance(num_clusters, Sequence):
        raise TypeError(
            f"{name} must be a sequence of positive ints, coarse to fine (e.g. (8, 64)), "
            f"got {type(num_clusters).__name__} {num_clusters!r}."
        )
    if len(num_clusters) == 0:
        raise ValueError(f"{name} must hold at least one level, got {num_clusters!r}.")
    out = []
    for value in num_clusters:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must hold positive ints, got {tuple(num_clusters)!r}.")
        out.append(int(value))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must be strictly increasing (coarse to fine), got {tuple(out)!r}.")
    return tuple(out)


def _row_hashes(x: np.ndarray, seed: int) -> np.ndarray:
    """64-bit hashes of the rows of a float32 matrix from their bit patterns (equal rows, equal hashes)."""
    multipliers = np.random.default_rng(seed).integers(1, 2**63, size=x.shape[1], dtype=np.uint64) | np.uint64(1)
    out = np.empty(x.shape[0], dtype=np.uint64)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        bits = (x[start : start + _CHUNK_ROWS] + np.float32(0)).view(np.uint32).astype(np.uint64)  # -0.0 -> 0.0
        out[start : start + _CHUNK_ROWS] = (bits * multipliers).sum(axis=1)  # wraps modulo 2**64
    return out


def count_distinct_rows_at_least(x: np.ndarray, needed: int, seed: int = 0) -> int:
    """Return the number of distinct rows of ``x`` when it is below ``needed``, else some number ``>= needed``.

    Equal rows have equal hashes (integer arithmetic on their bit patterns), so the number of distinct hashes
    is a lower bound on the number of distinct rows. A prefix of the rows is hashed first, which settles the
    usual case of many distinct points at almost no cost; only when the bound over all rows falls short of
    ``needed`` are the rows themselves compared, so a shortfall is exact.

    Args:
        x: float32 ``(N, F)`` matrix.
        needed: the number of distinct rows asked for.
        seed: seed of the hash multipliers.
    """
    prefix = x[: max(8 * needed, 1024)]
    bound = int(np.unique(_row_hashes(prefix, seed)).size)
    if bound >= needed or prefix.shape[0] == x.shape[0] and bound == x.shape[0]:
        return bound
    bound = int(np.unique(_row_hashes(x, seed)).size)
    if bound >= needed:
        return bound
    return int(np.unique(x + np.float32(0), axis=0).shape[0])
