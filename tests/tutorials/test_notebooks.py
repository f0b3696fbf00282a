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
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    images = [out for cell in cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    for text in EXPECTED[path.name]:
        assert text in outputs, f"{path.name}: {text!r} not in the outputs"
    assert len(images) >= MIN_IMAGES[path.name], f"{path.name}: {len(images)} figures displayed"
    if path.name.startswith("01_"):
        assert list((tmp_path / "dermoscopy_segmentation" / "outputs" / "masks").glob("*.png"))
    else:  # three fine-tunings, each evaluated; the semi-supervised ones logged their terms
        for method in ("none", "copy_paste", "mean_teacher"):
            assert (tmp_path / f"segmentation_{method}" / "eval" / "metrics.json").is_file()
        assert outputs.count("held-out images: Dice") == 3


EXPECTED = {
    "01_pretrain_then_finetune.ipynb": ["tensors came from the pretraining", "held-out images: Dice"],
    "02_few_labels_semi_supervised.ipynb": [
        "none: SupervisedTrainer", "copy_paste: SemiSupervisedTrainer", "mean_teacher: SemiSupervisedTrainer",
        "'train_kept_fraction'", "images and labels mixed with the same box",
        "the teacher is the EMA of the student, not the student: True",
    ],
}
MIN_IMAGES = {"01_pretrain_then_finetune.ipynb": 1, "02_few_labels_semi_supervised.ipynb": 2}
