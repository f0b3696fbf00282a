"""Known-structure data for the clustering tests: Gaussian blobs at two scales."""

from __future__ import annotations

import numpy as np
import pytest


def make_two_scale_blobs(
    n: int = 540, coarse: int = 3, fine_per_coarse: int = 3, dim: int = 8, seed: int = 0, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points around ``coarse * fine_per_coarse`` fine centres grouped in ``coarse`` far-apart groups.

    Returns:
        ``(x, coarse_labels, fine_labels)``: float32 ``(n, dim)``, int64 ``(n,)`` twice; fine blobs take
        turns, so each holds ``n // (coarse * fine_per_coarse)`` points or one more.
    """
    rng = np.random.default_rng(seed)
    coarse_centres = rng.standard_normal((coarse, dim)) * 40.0
    fine_centres = coarse_centres[:, None, :] + rng.standard_normal((coarse, fine_per_coarse, dim)) * 8.0
    fine_centres = fine_centres.reshape(-1, dim)
    fine = np.arange(n) % fine_centres.shape[0]
    x = fine_centres[fine] + rng.standard_normal((n, dim)) * spread
    return x.astype(np.float32), (fine // fine_per_coarse).astype(np.int64), fine.astype(np.int64)


@pytest.fixture
def two_scale_blobs():
    """The generator :func:`make_two_scale_blobs`, as a fixture."""
    return make_two_scale_blobs
