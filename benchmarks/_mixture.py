"""The planted Gaussian mixture of the pseudo-class benchmarks, shared by ``pseudo_classes.py`` (in memory) and
``_pseudo_classes_disk.py`` (on disk), which both import it from here so that neither imports the other's module."""

from __future__ import annotations

import numpy as np

__all__ = ["mixture", "mixture_centres"]


def mixture_centres(rng: np.random.Generator, dim: int, spread: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The 64 float32 centres ``(64, dim)`` (8 groups of 8, see :func:`mixture`) and their mixture weights."""
    coarse = rng.standard_normal((8, dim)) * 6.0
    centres = (coarse[:, None, :] + rng.standard_normal((8, 8, dim)) * spread).reshape(64, dim).astype(np.float32)
    return centres, rng.dirichlet(np.full(64, 2.0))


def mixture(
    n: int, dim: int, seed: int = 0, chunk: int = 100_000, spread: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 points from 64 unit-variance Gaussians (8 groups of 8 centres), made in chunks.

    Group centres are ``6 N(0, I)``, the 8 centres of a group lie ``spread N(0, I)`` around it: the default
    separates all 64 components; ``spread=0.3`` makes the components of a group overlap.
    """
    rng = np.random.default_rng(seed)
    centres, weights = mixture_centres(rng, dim, spread)
    labels = rng.choice(64, size=n, p=weights)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
        x[start:stop] += centres[labels[start:stop]]
    return x, labels
