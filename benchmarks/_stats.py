"""Summary statistics shared by the benchmarks: mean, sd and a t-based 95% interval of the mean."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mean_ci"]


def mean_ci(values) -> dict:
    """``{"n", "mean", "sd", "ci95"}`` of the finite values (``sd`` NaN and no ``ci95`` for one value; ``{"n": 0}``
    for none). The interval is ``mean +- t(0.975, n - 1) sd / sqrt(n)``: for paired differences over seeds, an
    interval that excludes 0 says the difference is larger than the seed-to-seed noise."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(arr)
    if n == 0:
        return {"n": 0}
    out = {"n": n, "mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if n > 1 else float("nan")}
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1) * out["sd"] / math.sqrt(n))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out
