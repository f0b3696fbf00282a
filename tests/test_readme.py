"""The README's Python examples run as written (so the front page never shows code that fails)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[index].replace('"/tmp/derm"', repr(str(tmp_path / "derm")))
    namespace: dict = {"__name__": f"readme_block_{index}"}
    exec(compile(code, f"README.md[python block {index}]", "exec"), namespace)
    if "loss" in namespace:
        assert namespace["loss"].ndim == 0 and bool(namespace["loss"].isfinite())
        assert all(v.shape for v in namespace["state"].values())
    if "pairs" in namespace:
        assert len(namespace["pairs"]) == 6 and {"image", "label", "key"} <= set(namespace["pairs"][0])
