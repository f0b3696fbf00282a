"""Tests for load_pretrained: weights really arrive, and every way a checkpoint can be wrong is a clear error."""

from __future__ import annotations

import logging

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_cluster.networks import ContrastivePretrainNet, FeatureAutoEncoder, load_pretrained
from monai_cluster.utils import atomic_torch_save

FEATURES = (4, 4, 8, 8, 16, 4)


def _unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2) -> BasicUNet:
    return BasicUNet(spatial_dims, in_channels, out_channels, FEATURES)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_file_round_trip_loads_every_tensor(spatial_dims, wrap, tmp_path, caplog):
    source, target = _unet(spatial_dims), _unet(spatial_dims)
    state = source.state_dict()
    path = tmp_path / "ckpt.pt"
    atomic_torch_save(state if wrap is None else {wrap: state, "epoch": torch.tensor(3)}, path)
    with caplog.at_level(logging.INFO, logger="monai_cluster.networks.utils"):
        report = load_pretrained(target, path, exclude=())
    tensors = report.pop("tensors")
    assert report == {
        "matched": len(state),
        "total": len(state),
        "missing": [],
        "unexpected": [],
        "shape_mismatch": [],
        "excluded": [],
        "partial": False,
    }
    assert [row["name"] for row in tensors] == list(state) and {row["status"] for row in tensors} == {"loaded"}
    assert f"loaded {len(state)}/{len(state)} tensors into BasicUNet from {path}" in caplog.text
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_default_exclude_keeps_final_conv_fresh():
    source, target = _unet(out_channels=2), _unet(out_channels=4)
    fresh_final = target.final_conv.weight.detach().clone()
    report = load_pretrained(target, source.state_dict())
    assert report["excluded"] == ["final_conv.weight", "final_conv.bias"]
    assert report["matched"] == report["total"] == len(source.state_dict()) - 2
    assert torch.equal(target.final_conv.weight, fresh_final)
    assert torch.equal(target.down_4.convs.conv_1.conv.weight, source.down_4.convs.conv_1.conv.weight)


def test_channel_mismatch_names_the_key_and_both_shapes():
    expected = r"conv_0\.conv_0\.conv\.weight: checkpoint \(4, 3, 3, 3\) vs network \(4, 1, 3, 3\)"
    with pytest.raises(ValueError, match=expected):
        load_pretrained(_unet(in_channels=1), _unet(in_channels=3).state_dict())


def test_lenient_shapes_skip_and_report():
    target = _unet(in_channels=1)
    before = target.conv_0.conv_0.conv.weight.detach().clone()
    source = _unet(in_channels=3)
    report = load_pretrained(target, source.state_dict(), strict_shapes=False)
    assert report["tensors"][0] == {
        "name": "conv_0.conv_0.conv.weight", "network_shape": [4, 1, 3, 3], "checkpoint_shape": [4, 3, 3, 3],
        "status": "random", "reason": "another shape in the checkpoint",
    }  # fmt: skip
    assert report["shape_mismatch"] == ["conv_0.conv_0.conv.weight: checkpoint (4, 3, 3, 3) vs network (4, 1, 3, 3)"]
    assert report["matched"] == report["total"] - 1 and report["missing"] == []
    assert torch.equal(target.conv_0.conv_0.conv.weight, before)
    assert torch.equal(target.down_1.convs.conv_0.conv.weight, source.down_1.convs.conv_0.conv.weight)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(ValueError, match=f"pretrained checkpoint '{path}' does not exist"):
        load_pretrained(_unet(), path)
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(_unet(), str(tmp_path))


def test_files_that_are_not_state_dicts(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not be read as a torch file"):
        load_pretrained(_unet(), text)
    listed = tmp_path / "list.pt"
    atomic_torch_save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match="is not a state dict .* got list"):
        load_pretrained(_unet(), listed)
    with pytest.raises(ValueError, match="is not a state dict"):
        load_pretrained(_unet(), {"epoch": 3, "lr": 0.1})
    with pytest.raises(ValueError, match="is not a state dict"):
        load_pretrained(_unet(), {})


def test_checkpoint_of_another_network_matches_nothing():
    other = FeatureAutoEncoder(2, 1, channels=(4, 8), strides=(2, 2)).state_dict()
    with pytest.raises(ValueError, match=r"0 of \d+ tensors of BasicUNet matched in the given state dict"):
        load_pretrained(_unet(), other)


def test_partial_checkpoint_needs_partial_and_min_matched_bounds_it():
    state = _unet().state_dict()
    partial = {k: v for k, v in state.items() if k.startswith("conv_0.")}
    with pytest.raises(ValueError, match=r"only 8 of \d+ tensors match; \d+ tensor\(s\) of BasicUNet are missing"):
        load_pretrained(_unet(), partial, min_matched=0.0)  # min_matched alone no longer lets a partial fit through
    with pytest.raises(ValueError, match=r"only 8 of \d+ tensors .* < min_matched=50%"):
        load_pretrained(_unet(), partial, partial=True, min_matched=0.5)
    report = load_pretrained(_unet(), partial, partial=True)
    assert report["matched"] == 8 and len(report["missing"]) == report["total"] - 8


def test_whole_pretraining_net_needs_prefix_map_and_hint_says_so():
    pretrain = ContrastivePretrainNet(2, 1, features=FEATURES)
    with pytest.raises(ValueError, match=r"pass prefix_map=\{'backbone.': ''\}"):
        load_pretrained(_unet(), pretrain.state_dict())
    with pytest.raises(ValueError, match=r"checkpoint tensor\(s\) have no counterpart in BasicUNet, e.g. \['global_head"):
        load_pretrained(_unet(), pretrain.state_dict(), prefix_map={"backbone.": ""})
    target = _unet()
    report = load_pretrained(
        target, pretrain.state_dict(), prefix_map={"backbone.": ""}, ignore_unexpected=("global_head", "dense_head")
    )
    assert report["matched"] == report["total"]
    assert report["unexpected"] and all(k.startswith(("global_head.", "dense_head.")) for k in report["unexpected"])
    assert torch.equal(target.down_2.convs.conv_0.conv.weight, pretrain.backbone.down_2.convs.conv_0.conv.weight)


def test_argument_errors():
    with pytest.raises(TypeError, match="network must be a torch.nn.Module"):
        load_pretrained({"a": torch.zeros(1)}, {"a": torch.zeros(1)})
    with pytest.raises(TypeError, match="source must be a checkpoint path or a state dict"):
        load_pretrained(_unet(), 3)
    with pytest.raises(ValueError, match="min_matched must lie in"):
        load_pretrained(_unet(), _unet().state_dict(), min_matched=1.5)
