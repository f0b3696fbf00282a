"""Known-structure images for the clustering-trainer tests: Gaussian blobs on the diagonal, and a recording writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def make_blobs(n_per_class: int = 30, size: int = 16, spatial_dims: int = 2, seed: int = 0):
    """Three classes of images: one Gaussian blob at a class-specific place on the diagonal, plus noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * spatial_dims, indexing="ij"))
    images, labels = [], []
    for label, centre in enumerate((size / 4, size / 2, 3 * size / 4)):
        for _ in range(n_per_class):
            where = centre + rng.normal(0, 0.5, spatial_dims)
            d2 = sum((grid[d] - where[d]) ** 2 for d in range(spatial_dims))
            image = np.exp(-d2 / (2 * (size / 10) ** 2)) + rng.normal(0, 0.05, grid.shape[1:])
            images.append(np.clip(image, 0, 1)[None])
            labels.append(label)
    return torch.tensor(np.stack(images), dtype=torch.float32), np.array(labels)


class RecordingWriter:
    """A stand-in for TensorBoard's ``SummaryWriter`` that keeps every ``(tag, value, step)``."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))


@pytest.fixture
def blobs():
    """The generator :func:`make_blobs`, as a fixture."""
    return make_blobs


@pytest.fixture
def recording_writer():
    """A fresh :class:`RecordingWriter`."""
    return RecordingWriter()
