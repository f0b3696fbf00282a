"""The dermoscopy bundle's fixed-split options at toy size: ``datalist``, ``fov_dir``, ``crop_size``, step budget,
scoring at chosen steps, the learning curve (``eval_curve_every``), ``pretrained_exclude``; each bad value refused
naming the option."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_cluster.data import make_synthetic_fundus
from monai_cluster.workflows.segmentation_transforms import restrict_to_fov

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_dermoscopy_segmentation import _run  # noqa: E402

pytestmark = pytest.mark.bundle


@pytest.fixture(scope="module")
def fixed_split(tmp_path_factory):
    """6 synthetic fundus pairs: 4 in ``training``, 2 in ``validation``; a field of view that is the left half."""
    root = tmp_path_factory.mktemp("fixed_split")
    items = make_synthetic_fundus(root / "data", n=6, size=48, seed=1)
    (root / "fov").mkdir()
    half = np.zeros((48, 48), np.uint8)
    half[:, :24] = 255
    for item in items[4:]:
        Image.fromarray(half).save(root / "fov" / f"{Path(item['image']).stem}_mask.gif")
    split = {"training": [{"image": i["image"], "label": i["label"]} for i in items[:4]],
             "validation": [{"image": i["image"], "label": i["label"]} for i in items[4:]]}  # fmt: skip
    (root / "datalist.json").write_text(json.dumps(split))
    return root


def _settings(root: Path, **overrides) -> dict:
    return {"datalist": str(root / "datalist.json"), "num_labeled": 2, "batch_size": 2, "image_size": 48,
            "use_pretrained": False, "val_interval": 1000, **overrides}  # fmt: skip


def test_restrict_to_fov_scores_inside_the_field_of_view_only():
    pred = torch.tensor([[[1.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]])  # one-hot (2, 1, 3): vessel at the last pixel
    label = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]])
    out = restrict_to_fov({"pred": pred, "label": label, "fov": torch.tensor([[[1.0, 1.0, 0.0]]])})
    assert out["pred"][1].tolist() == [[0.0, 0.0, 0.0]] and out["label"][1].tolist() == [[0.0, 1.0, 0.0]]
    assert restrict_to_fov({"pred": pred, "label": label})["pred"] is pred  # no field of view: unchanged


def test_fixed_split_crops_step_budget_and_scoring_within_the_fov(fixed_split, tmp_path):
    workflow = _run(tmp_path, **_settings(fixed_split, fov_dir=str(fixed_split / "fov"), crop_size=32, max_steps=5,
                                          optimizer_name="Adam", weight_decay=0.0, eval_every_steps=2, eval_last=2))
    data = workflow.parser.get_parsed_content("data")
    assert len(data["train"]) == 2 and len(data["val"]) == 2 and all("fov" in item for item in data["val"])
    assert workflow.parser.get_parsed_content("train#trainer").state.iteration == 5  # 1 step per epoch, stopped at 5
    batch = next(iter(workflow.parser.get_parsed_content("train#dataloader")))
    assert tuple(batch["image"].shape) == (2, 3, 32, 32)
    assert isinstance(workflow.parser.get_parsed_content("optimizer"), torch.optim.Adam)
    metrics = json.loads((tmp_path / "eval_steps" / "metrics.json").read_text())
    steps = [json.loads((tmp_path / "eval_steps" / f"step_{s}.json").read_text()) for s in (3, 5)]
    assert metrics["steps"] == [3, 5] and metrics["num_images"] == 2 and metrics["fov"] is True
    assert metrics["mean_dice"] == pytest.approx(np.mean([s["mean_dice"] for s in steps]))
    # the evaluator scores within the field of view: nothing of the right half reaches the metric
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    assert float(evaluator.state.output[0]["label"][:, :, 24:].sum()) == 0.0
    assert float(evaluator.state.output[0]["pred"][:, :, 24:].sum()) == 0.0
    record = json.loads((tmp_path / "models" / "run_settings.json").read_text())["stages"]["train"]
    assert record["crop_size"] == 32 and record["max_steps"] == 5 and record["optimizer_name"] == "Adam"


def test_eval_curve_every_records_the_curve_without_scoring_it(fixed_split, tmp_path):
    _run(tmp_path, **_settings(fixed_split, max_steps=6, eval_every_steps=1, eval_last=2, eval_curve_every=2))
    metrics = json.loads((tmp_path / "eval_steps" / "metrics.json").read_text())
    steps = {s: json.loads((tmp_path / "eval_steps" / f"step_{s}.json").read_text()) for s in (2, 4, 5, 6)}
    assert sorted(int(p.stem[5:]) for p in (tmp_path / "eval_steps").glob("step_*.json")) == [2, 4, 5, 6]
    assert metrics["steps"] == [5, 6]  # the scored steps alone are averaged, the curve's 2 and 4 are not
    assert metrics["mean_dice"] == pytest.approx(np.mean([steps[5]["mean_dice"], steps[6]["mean_dice"]]))
    assert [e["step"] for e in metrics["evaluations"]] == [2, 4, 5, 6]
    assert [e["mean_dice"] for e in metrics["evaluations"]] == pytest.approx([steps[s]["mean_dice"] for s in steps])
    record = json.loads((tmp_path / "models" / "run_settings.json").read_text())["stages"]["train"]
    assert "eval_curve_every" not in record  # changes no weight: not a run setting


def test_pretrained_exclude_keeps_the_decoder_at_the_seed(fixed_split, tmp_path):
    from monai.networks.nets import BasicUNet

    weights = tmp_path / "pretrained.pt"
    torch.save({k: v for k, v in BasicUNet(2, 3, 2, features=[4, 4, 8, 8, 16, 4]).state_dict().items()
                if not k.startswith("final_conv")}, weights)  # fmt: skip
    settings = _settings(fixed_split, use_pretrained=True, pretrained_path=str(weights), epochs=1)
    whole = _run(tmp_path / "whole", **settings).parser.get_parsed_content("network").pretrained_report
    encoder = _run(tmp_path / "encoder", **settings, pretrained_exclude=["final_conv", "upcat_1", "upcat_2",
                                                                          "upcat_3", "upcat_4"])
    report = encoder.parser.get_parsed_content("network").pretrained_report
    assert 0 < report["matched"] < whole["matched"]


@pytest.mark.parametrize(
    ("override", "message"),
    [({"crop_size": 64}, "'crop_size'"), ({"fov_dir": "/no/such/folder"}, "'fov_dir'"),
     ({"datalist": "/no/such.json"}, "'datalist'"), ({"max_steps": 4, "eval_every_steps": 2, "eval_last": 3},
                                                     "'eval_every_steps'"),
     ({"pretrained_exclude": 3}, "'pretrained_exclude'"), ({"max_steps": 0}, "'max_steps'"),
     ({"max_steps": 4, "eval_curve_every": 2}, "'eval_curve_every' (--eval_curve_every 2) records a learning curve"),
     ({"eval_curve_every": 0}, "'eval_curve_every'")],
)
def test_bad_options_are_refused_naming_them(fixed_split, tmp_path, override, message):
    with pytest.raises(Exception) as info:
        _run(tmp_path, **{**_settings(fixed_split), **override})
    text, err = [], info.value
    while err is not None:
        text.append(str(err))
        err = err.__cause__ or err.__context__
    assert message in " | ".join(text)
    assert not (tmp_path / "models" / "model.pt").exists()


def test_a_validation_image_without_a_mask_is_refused(fixed_split, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception) as info:
        _run(tmp_path, **_settings(fixed_split, fov_dir=str(tmp_path / "empty")))
    assert "no field-of-view mask" in repr(info.value) or "no field-of-view mask" in str(info.value.__cause__)
