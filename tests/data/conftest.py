"""Fixtures for the data tests: small synthetic sets generated once per session."""

from __future__ import annotations

import pytest

from monai_cluster.data import make_synthetic_dermoscopy, make_synthetic_heart


@pytest.fixture(scope="session")
def derm_set(tmp_path_factory):
    """``(folder, items)`` of 9 synthetic dermoscopy images at 48 px."""
    folder = tmp_path_factory.mktemp("derm")
    return folder, make_synthetic_dermoscopy(folder, n=9, size=48, seed=3)


@pytest.fixture(scope="session")
def heart_set(tmp_path_factory):
    """``(folder, items)`` of 2 synthetic heart volumes at 40x44x48 voxels."""
    folder = tmp_path_factory.mktemp("heart")
    return folder, make_synthetic_heart(folder, n=2, size=(40, 44, 48), seed=5)

