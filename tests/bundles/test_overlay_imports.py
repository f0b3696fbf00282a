"""An overlay that replaces ``imports`` must keep every import of the config it overlays: MONAI's parser takes the
last file's list whole, so a module the base config uses and the overlay forgets fails only when the entry runs
(the multi-GPU pretraining lost ``monai_cluster.workflows.step_budget`` that way)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
STANDALONE = {"inference.json", "metadata.json", "train.json"}  # full configs of their own, not overlays
OVERLAYS = sorted(
    p for p in BUNDLES.glob("*/configs/*.json")
    if p.name not in STANDALONE and "imports" in json.loads(p.read_text())
)  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_overlay_keeps_the_base_imports(overlay):
    base = json.loads((overlay.parent / "train.json").read_text())["imports"]
    missing = [i for i in base if i not in json.loads(overlay.read_text())["imports"]]
    assert not missing, f"{overlay.name} replaces imports but drops {missing}"


def test_some_overlays_are_checked():
    assert any(p.name == "multi_gpu_train.json" for p in OVERLAYS)
