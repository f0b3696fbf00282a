"""Handlers and metrics that moved out of ``workflows/`` stay importable from their former modules and configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_cluster import handlers

REPO = Path(__file__).resolve().parents[2]

FORMER_HOMES = {
    "monai_cluster.workflows.pretrain": ["PretrainProgress"],
    "monai_cluster.workflows.local_discrimination": ["BestClusterDice", "LossComponentsLogger"],
    "monai_cluster.workflows.segmentation_outputs": [
        "SegmentationMetricsWriter",
        "SegmentationOutputWriter",
        "add_source_paths",
        "summarize_metric",
    ],
    "monai_cluster.workflows": [
        "PretrainProgress",
        "BestClusterDice",
        "SegmentationMetricsWriter",
        "SegmentationOutputWriter",
    ],
}


@pytest.mark.parametrize("module_name", sorted(FORMER_HOMES))
def test_former_homes_re_export_the_same_objects(module_name):
    import importlib

    module = importlib.import_module(module_name)
    for name in FORMER_HOMES[module_name]:
        assert getattr(module, name) is getattr(handlers, name), f"{module_name}.{name}"
        assert name in handlers.__all__


def _targets(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def test_bundle_configs_name_moved_handlers_by_their_new_home():
    moved = {name for names in FORMER_HOMES.values() for name in names}
    stale = []
    for config in sorted(REPO.glob("bundles/*/configs/*.json")):
        for target in _targets(json.loads(config.read_text())):
            name = target.rsplit(".", 1)[-1]
            if name in moved and target.startswith("monai_cluster.workflows"):
                stale.append(f"{config.relative_to(REPO)}: {target}")
    assert not stale, stale
