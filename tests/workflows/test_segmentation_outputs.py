"""Pretrained start, fine-tuned loading, metrics JSON and mask/overlay writers of the segmentation workflows."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet
from PIL import Image

from monai_cluster.networks import ContrastivePretrainNet
from monai_cluster.workflows.segmentation_network import encoder_tensor_names, initialize_network, load_finetuned
from monai_cluster.handlers import (
    SegmentationMetricsWriter,
    SegmentationOutputWriter,
    add_source_paths,
    summarize_metric,
)

FEATURES = (4, 4, 8, 8, 16, 4)


def test_initialize_network_loads_backbone_weights_and_logs(tmp_path, caplog):
    wrapper = ContrastivePretrainNet(2, 3, features=FEATURES)
    torch.save(wrapper.backbone_state_dict(), tmp_path / "model.pt")
    net = BasicUNet(2, 3, 2, features=FEATURES)
    with caplog.at_level(logging.INFO, logger="monai_cluster"):
        out = initialize_network(net, "cpu", "true", tmp_path / "model.pt")
    assert out is net and net.pretrained_report["matched"] == len(net.state_dict()) - 2
    assert "tensors matched" in caplog.text
    for key in encoder_tensor_names(net):
        assert torch.equal(net.state_dict()[key], wrapper.backbone.state_dict()[key])


def test_initialize_network_errors(tmp_path):
    net = BasicUNet(2, 3, 2, features=FEATURES)
    with pytest.raises(ValueError, match="pretrained_path is empty"):
        initialize_network(net, use_pretrained=True, pretrained_path="")
    with pytest.raises(ValueError, match="missing.pt does not exist: run the pretraining bundle first"):
        initialize_network(net, use_pretrained=True, pretrained_path=tmp_path / "missing.pt")
    torch.save(BasicUNet(3, 1, 2, features=FEATURES).state_dict(), tmp_path / "3d.pt")
    with pytest.raises(ValueError, match=r"3d.pt does not fit network_def .*another shape"):
        initialize_network(net, use_pretrained=True, pretrained_path=tmp_path / "3d.pt")
    with pytest.raises(TypeError, match="use_pretrained"):
        initialize_network(net, use_pretrained="maybe")
    start = {k: v.clone() for k, v in net.state_dict().items()}
    initialize_network(net, use_pretrained=False, pretrained_path=tmp_path / "missing.pt")
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items())


def test_load_finetuned_is_strict(tmp_path):
    trained = BasicUNet(2, 3, 2, features=FEATURES)
    torch.save({"model": trained.state_dict()}, tmp_path / "model.pt")
    net = load_finetuned(BasicUNet(2, 3, 2, features=FEATURES), tmp_path / "model.pt")
    assert not net.training and torch.equal(net.final_conv.weight, trained.final_conv.weight)
    with pytest.raises(ValueError, match="use the same num_classes"):
        load_finetuned(BasicUNet(2, 3, 3, features=FEATURES), tmp_path / "model.pt")
    with pytest.raises(ValueError, match="run the bundle's train config first"):
        load_finetuned(net, tmp_path / "none.pt")


def _engine(outputs, batch):
    return SimpleNamespace(state=SimpleNamespace(output=outputs, batch=batch))


def test_metrics_writer_dice_hd95_json(tmp_path):
    label = torch.zeros(1, 16, 16)
    label[0, 4:12, 4:12] = 1
    perfect = torch.cat([1 - label, label])  # two-channel one-hot prediction equal to the label
    empty = torch.cat([torch.ones_like(label), torch.zeros_like(label)])
    writer = SegmentationMetricsWriter(tmp_path / "eval" / "metrics.json", 2, ["lesion"], extra={"split": "val"})
    outputs = [{"pred": perfect, "label": label}, {"pred": empty, "label": label}]
    writer.collect(_engine(outputs, [{"key": "a"}, {"key": "b"}]))
    summary = writer.write()
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved == summary and saved["split"] == "val"
    assert saved["per_image"][0]["dice"] == [pytest.approx(1.0)] and saved["per_image"][0]["hd95"] == [0.0]
    assert saved["per_image"][1]["dice"] == [0.0] and saved["per_image"][1]["hd95"] == [None]
    assert saved["mean_dice"] == pytest.approx(0.5) and saved["per_class"]["lesion"]["hd95"]["undefined"] == 1
    with pytest.raises(ValueError, match="class_names must name the 1 foreground"):
        SegmentationMetricsWriter(tmp_path / "m.json", 2, ["a", "b"])
    with pytest.raises(ValueError, match="no image was evaluated"):
        SegmentationMetricsWriter(tmp_path / "m.json", 2).write()
    assert summarize_metric([1.0, float("inf")]) == {"mean": 1.0, "std": 0.0, "n": 1, "undefined": 1}


def test_output_writer_2d_resizes_back_and_3d_keeps_affine(tmp_path):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    probs = torch.zeros(2, 16, 16)
    probs[1, :8] = 1.0  # top half lesion
    probs[0, 8:] = 1.0
    items = add_source_paths([{"image": str(tmp_path / "a.png"), "key": "images/a.png"}])
    writer = SegmentationOutputWriter(tmp_path / "out", 2)
    writer(_engine([{"pred": probs}], items))
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "images__a.png"))
    assert mask.shape == (30, 40) and mask[0, 0] == 255 and mask[-1, -1] == 0
    assert (tmp_path / "out" / "overlays" / "images__a.png").is_file()

    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10, 5, 3]
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.float32), affine), tmp_path / "v.nii.gz")
    pred = torch.zeros(3, 16, 16, 8)
    pred[2] = 1.0
    writer3 = SegmentationOutputWriter(tmp_path / "out3", 3, num_classes=3, overlays=False)
    writer3(_engine([{"pred": pred}], add_source_paths([{"image": str(tmp_path / "v.nii.gz"), "key": "v.nii.gz"}])))
    saved = nib.load(tmp_path / "out3" / "masks" / "v.nii.gz")
    np.testing.assert_allclose(saved.affine, affine)
    assert np.asarray(saved.dataobj).min() == 2 and writer3.written[0][1] is None
    with pytest.raises(ValueError, match="not on its input's grid"):
        writer3(_engine([{"pred": torch.zeros(3, 8, 8, 8)}], add_source_paths([{"image": str(tmp_path / "v.nii.gz")}])))
