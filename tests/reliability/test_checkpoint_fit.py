"""Issue 24, class 3: a checkpoint that only half fits is refused by name; partial transfer is explicit and reported.

The rule (:func:`monai_cluster.networks.load_pretrained`, :func:`~monai_cluster.workflows.initialize_network`):
every tensor of the fine-tune network but its task head must be in the checkpoint with the same shape, and the
checkpoint holds nothing the network lacks. Each bad checkpoint below is refused naming tensors, both shapes and
the count; ``partial=True`` (``partial_transfer`` in the fine-tune bundles) loads what fits and reports every
tensor, loaded or kept at random and why, in the log and in ``models/pretrained_transfer.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_cluster.networks import build_backbone, load_pretrained
from monai_cluster.workflows.segmentation_bundle import bundle_workflow
from monai_cluster.workflows.segmentation_network import initialize_network

FEATURES = (4, 4, 8, 8, 16, 4)
FINETUNE = Path(__file__).resolve().parents[2] / "bundles" / "dermoscopy_segmentation"


def _swin(depths) -> torch.nn.Module:
    return build_backbone("swin_unetr", 2, 1, 2, feature_size=12, depths=depths)


def _without(state: dict, prefix: str) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(prefix)}


def _decoder_less() -> tuple[dict, list[str]]:
    state = BasicUNet(2, 1, 2, FEATURES).state_dict()
    decoder = [k for k in state if k.startswith("upcat_")]
    return {k: v for k, v in state.items() if k not in decoder}, decoder


def _with_extra() -> dict:
    return {**BasicUNet(2, 1, 2, FEATURES).state_dict(), "aux_head.weight": torch.zeros(3, 4)}


# (case, network, checkpoint, message pattern)
BAD = {
    "swin-other-depths": (
        lambda: _swin((1, 1, 1, 1)),
        lambda: _swin((1, 1, 2, 1)).state_dict(),
        r"does not fit SwinUNETR: only \d+ of \d+ tensors match; \d+ checkpoint tensor\(s\) have no counterpart in "
        r"SwinUNETR, e.g. \['swinViT.layers3.0.blocks.1.norm1.weight \(48,\)'",
    ),
    "swin-fewer-depths": (
        lambda: _swin((1, 1, 2, 1)),
        lambda: _swin((1, 1, 1, 1)).state_dict(),
        r"does not fit SwinUNETR: .*\d+ tensor\(s\) of SwinUNETR are missing, e.g. "
        r"\['swinViT.layers3.0.blocks.1.norm1.weight \(48,\)'",
    ),
    "basic-unet-other-features": (
        lambda: BasicUNet(2, 1, 2, FEATURES),
        lambda: BasicUNet(2, 1, 2, (4, 4, 8, 8, 32, 4)).state_dict(),
        r"\d+ tensor\(s\) of the given state dict have another shape than in BasicUNet: .*"
        r"down_4.convs.conv_0.conv.weight: checkpoint \(32, 8, 3, 3\) vs network \(16, 8, 3, 3\)",
    ),
    "wrong-backbone": (
        lambda: BasicUNet(2, 1, 2, FEATURES),
        lambda: build_backbone("segresnet", 2, 1, 2, init_filters=8).state_dict(),
        r"0 of \d+ tensors of BasicUNet matched in the given state dict: checkpoint keys look like \['convInit",
    ),
    "decoder-missing": (
        lambda: BasicUNet(2, 1, 2, FEATURES),
        lambda: _decoder_less()[0],
        r"only \d+ of \d+ tensors match; \d+ tensor\(s\) of BasicUNet are missing, e.g. "
        r"\['upcat_4.upsample.deconv.weight \(16, 8, 2, 2\)'",
    ),
    "extra-unknown-tensors": (
        lambda: BasicUNet(2, 1, 2, FEATURES),
        _with_extra,
        r"1 checkpoint tensor\(s\) have no counterpart in BasicUNet, e.g. \['aux_head.weight \(3, 4\)'\]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_half_fitting_checkpoint_is_refused_by_name(case):
    network, checkpoint, pattern = BAD[case]
    target = network()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=pattern):
        load_pretrained(target, checkpoint(), exclude=("final_conv", "out"))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded


@pytest.mark.parametrize("case", sorted(set(BAD) - {"wrong-backbone"}))
def test_partial_transfer_loads_what_fits_and_reports_each_tensor(case, tmp_path, caplog):
    network, checkpoint, _ = BAD[case]
    target, state = network(), checkpoint()
    with caplog.at_level(logging.INFO, logger="monai_cluster.networks.utils"):
        report = load_pretrained(target, state, exclude=("final_conv", "out"), partial=True,
                                 report_path=tmp_path / "transfer.json")  # fmt: skip
    rows = {row["name"]: row for row in report["tensors"]}
    own = target.state_dict()
    assert list(rows) == list(own)  # every tensor of the network, in order
    for name, row in rows.items():
        fits = name in state and state[name].shape == own[name].shape and not name.startswith(("final_conv", "out."))
        assert row["status"] == ("loaded" if fits else "random"), name
        if fits:
            assert torch.equal(own[name], state[name]) and f"loaded {name}" in caplog.text
        else:
            assert f"kept at random {name}" in caplog.text and row["reason"]
    random = [r for r in report["tensors"] if r["status"] == "random" and r["reason"] != "excluded (task head or exclude)"]
    assert len(random) == len(report["missing"]) + len(report["shape_mismatch"])
    for key in report["unexpected"]:
        assert f"not used (no such tensor in {type(target).__name__}): {key}" in caplog.text
    written = json.loads((tmp_path / "transfer.json").read_text())
    assert written["partial"] is True and written["tensors"] == report["tensors"]


def test_reasons_distinguish_head_absent_and_other_shape():
    state, decoder = _decoder_less()
    state["down_1.convs.conv_0.conv.weight"] = torch.zeros(1, 1, 1, 1)
    report = load_pretrained(BasicUNet(2, 1, 2, FEATURES), state, partial=True)
    reasons = {row["name"]: row["reason"] for row in report["tensors"]}
    assert reasons["final_conv.weight"] == "excluded (task head or exclude)"
    assert all(reasons[k] == "absent from the checkpoint (partial transfer)" for k in decoder)
    assert reasons["down_1.convs.conv_0.conv.weight"] == "another shape in the checkpoint"
    assert reasons["conv_0.conv_0.conv.weight"] == "same name and shape in the checkpoint"


def test_optional_prefixes_are_what_a_checkpoint_lacks_by_design():
    """An encoder-only checkpoint: the decoder may be absent (kept at random, reported) but not of another shape."""
    state, decoder = _decoder_less()
    report = load_pretrained(BasicUNet(2, 1, 2, FEATURES), state, optional=("upcat_1", "upcat_2", "upcat_3", "upcat_4"))
    assert report["missing"] == decoder and report["matched"] == report["total"] - len(decoder)
    reasons = {row["name"]: row["reason"] for row in report["tensors"]}
    assert reasons[decoder[0]] == "absent from the checkpoint by design (optional)"
    wrong = {**state, decoder[0]: torch.zeros(1)}
    with pytest.raises(ValueError, match=r"upcat_4.upsample.deconv.weight: checkpoint \(1,\) vs network"):
        load_pretrained(BasicUNet(2, 1, 2, FEATURES), wrong, optional=("upcat_4",))


def test_argument_types():
    with pytest.raises(TypeError, match="partial must be a bool, got str 'yes'"):
        load_pretrained(BasicUNet(2, 1, 2, FEATURES), BasicUNet(2, 1, 2, FEATURES).state_dict(), partial="yes")


def test_initialize_network_refuses_other_depths_and_partial_transfer_writes_the_report(tmp_path, caplog):
    path = tmp_path / "model.pt"
    torch.save(_swin((1, 1, 2, 1)).state_dict(), path)
    with pytest.raises(ValueError, match=r"model.pt does not fit network_def \(SwinUNETR\): .*swinViT.layers3.0.blocks.1"
                                         r".*--partial_transfer true"):  # fmt: skip
        initialize_network(_swin((1, 1, 1, 1)), use_pretrained=True, pretrained_path=path,
                           report_path=tmp_path / "models" / "transfer.json")  # fmt: skip
    assert not (tmp_path / "models").exists()  # a refused checkpoint writes nothing
    with caplog.at_level(logging.INFO, logger="monai_cluster"):
        net = initialize_network(_swin((1, 1, 1, 1)), use_pretrained=True, pretrained_path=path,
                                 partial_transfer="true", report_path=tmp_path / "models" / "transfer.json")  # fmt: skip
    written = json.loads((tmp_path / "models" / "transfer.json").read_text())
    assert written["pretrained_path"] == str(path) and written["partial_transfer"] is True
    head = [row for row in written["tensors"] if row["name"].startswith("out.")]
    assert head and all(row["reason"] == "excluded (task head or exclude)" for row in head)
    assert net.pretrained_report["matched"] == net.pretrained_report["total"]  # fewer depths: nothing missing ...
    assert net.pretrained_report["unexpected"]  # ... but the checkpoint's extra blocks are reported as not used
    assert "task head (out, 2 tensors) freshly initialised" in caplog.text


def test_bundle_partial_transfer_option(tmp_path):
    """dermoscopy_segmentation: refused by default naming the tensors; --partial_transfer true writes the report."""
    state, decoder = _decoder_less()
    path = tmp_path / "decoderless.pt"
    wide = BasicUNet(2, 3, 2, FEATURES).state_dict()
    torch.save({k: v for k, v in wide.items() if not k.startswith("upcat_")}, path)
    toy = {"synthetic_n": 6, "synthetic_size": 32, "image_size": 32, "features": list(FEATURES), "device": "cpu",
           "use_pretrained": True, "pretrained_path": str(path)}  # fmt: skip
    with pytest.raises(RuntimeError) as info:  # refused in initialize, before anything is written
        bundle_workflow(FINETUNE, bundle_root=tmp_path / "refused", **toy)
    message = str(info.value.__cause__)
    assert f"{len(decoder)} tensor(s) of BasicUNet are missing" in message and "upcat_4" in message
    assert "--partial_transfer true" in message
    with pytest.raises(RuntimeError) as info:
        bundle_workflow(FINETUNE, bundle_root=tmp_path / "bad", **toy, partial_transfer="sometimes")
    assert "partial_transfer" in str(info.value.__cause__)
    workflow = bundle_workflow(FINETUNE, bundle_root=tmp_path / "partial", **toy, partial_transfer=True)
    network = workflow.parser.get_parsed_content("network")
    report = json.loads((tmp_path / "partial" / "models" / "pretrained_transfer.json").read_text())
    assert report["partial_transfer"] is True and report["missing"] == decoder
    assert [row["name"] for row in report["tensors"]] == list(network.state_dict())
