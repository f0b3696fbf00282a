"""The tutorial notebooks run top to bottom in quick mode (toy sizes, synthetic data)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_in_quick_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_CLUSTER_QUICK", "1")
    monkeypatch.setenv("MONAI_CLUSTER_TUTORIAL_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "tensors came from the pretraining" in outputs
    assert "held-out images: Dice" in outputs
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    images = [out for cell in cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert images, "the overlay was not displayed"
    assert list((tmp_path / "dermoscopy_segmentation" / "outputs" / "masks").glob("*.png"))
