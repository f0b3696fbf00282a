"""capture_random_states / restore_random_states: every global and transform-held random state comes back."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandGaussianNoised, RandScaleIntensityd

from monai_cluster.engines import LocalDiscriminationPrepareBatch
from monai_cluster.workflows.random_state import capture_random_states, random_sources, restore_random_states


def _draws(chain, preparer):
    out = chain({"image": np.zeros((1, 4, 4), dtype=np.float32)})["image"]
    return (float(np.asarray(out).sum()), random.random(), float(np.random.rand()), float(torch.rand(1)),
            float(torch.rand(1, generator=preparer.generator)))  # fmt: skip


def test_round_trip_restores_every_stream_and_survives_weights_only(tmp_path):
    chain = Compose([RandScaleIntensityd("image", 0.5, prob=1.0), RandGaussianNoised("image", prob=1.0)])
    chain.set_random_state(3)
    preparer = LocalDiscriminationPrepareBatch(seed=1)
    assert len(list(random_sources([chain, preparer]))) >= 3  # Compose, its two transforms, the generator
    _draws(chain, preparer)
    states = capture_random_states([chain, preparer])
    torch.save(states, tmp_path / "rng.pt")
    first = _draws(chain, preparer)
    _draws(chain, preparer)  # move every stream on
    restore_random_states(torch.load(tmp_path / "rng.pt", weights_only=True), [chain, preparer])
    assert _draws(chain, preparer) == first


def test_a_changed_configuration_is_refused():
    chain = Compose([RandScaleIntensityd("image", 0.5, prob=1.0)])
    states = capture_random_states([chain])
    bigger = Compose([RandScaleIntensityd("image", 0.5, prob=1.0), RandGaussianNoised("image", prob=1.0)])
    with pytest.raises(ValueError, match="the transforms or preparers changed"):
        restore_random_states(states, [bigger])
