"""``bundle_cli_args``: overrides written as ``python -m monai.bundle run`` arguments that parse back to the values."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser

from monai_cluster.workflows.segmentation_bundle import bundle_cli_args


def test_cli_args_parse_back_to_the_same_values_none_included():
    overrides = {"budget_images": None, "epochs": 3, "channels": [16, 32], "method": "dvc", "lr": 0.5}
    args = bundle_cli_args(overrides)
    assert args == ["--budget_images", "$None", "--epochs", "3", "--channels", "[16, 32]", "--method", "dvc",
                    "--lr", "0.5"]  # fmt: skip
    parser = ConfigParser({"budget_images": 1000, "epochs": 1, "channels": [8], "method": "cae", "lr": 1.0})
    import json

    for key, text in zip(args[::2], args[1::2]):  # as monai.bundle's command line hands them to the parser
        value = text
        if text.startswith("[") or text.replace(".", "", 1).isdigit():
            value = json.loads(text)
        parser[key[2:]] = value
    parsed = {k: parser.get_parsed_content(k) for k in overrides}
    assert parsed == overrides
    assert parsed["budget_images"] is None  # "None"/"null" would have stayed a string or been dropped


@pytest.mark.parametrize("value, text", [(True, "True"), ((1, 2), "[1, 2]"), ({"a": 1}, '{"a": 1}')])
def test_cli_args_write_booleans_and_containers(value, text):
    assert bundle_cli_args({"x": value}) == ["--x", text]
