"""Shared test fixtures: small CPU budgets, deterministic seeds, and real data that skips when absent."""

from __future__ import annotations

import os

import pytest
import torch

from monai_cluster.utils import DATA_ENV_VAR, get_data_root

torch.set_num_threads(1)  # faster than 2 on a loaded 2-core machine (measured)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same seeds, so a failure reproduces."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def real_data():
    """Return a function ``real_data(*parts) -> Path`` that skips the test when the folder is missing."""

    def _get(*parts: str):
        path = get_data_root().joinpath(*parts)
        if not path.exists():
            pytest.skip(f"real data not found at {path} (set {DATA_ENV_VAR} to the shared data folder)")
        return path

    return _get
