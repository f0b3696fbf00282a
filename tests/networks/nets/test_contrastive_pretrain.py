"""Tests for ContrastivePretrainNet: outputs against the backbone's own layers, checkpoint keys, grads, errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet, UNet
from torch import nn

from monai_cluster.networks import ContrastivePretrainNet, load_pretrained
from monai_cluster.utils import atomic_torch_save

FEATURES = (4, 4, 8, 8, 16, 4)
UNET_ENCODER, UNET_DECODER = "model.1.submodule.1.submodule", "model.1"


def _net(spatial_dims: int, **kwargs) -> ContrastivePretrainNet:
    kwargs.setdefault("features", FEATURES)
    return ContrastivePretrainNet(spatial_dims, 1, global_dim=8, dense_dim=5, **kwargs)


def _manual_maps(unet: BasicUNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bottleneck and the ``upcat_1`` map, computed layer by layer as BasicUNet.forward does."""
    x0 = unet.conv_0(x)
    x1 = unet.down_1(x0)
    x2 = unet.down_2(x1)
    x3 = unet.down_3(x2)
    x4 = unet.down_4(x3)
    u1 = unet.upcat_1(unet.upcat_2(unet.upcat_3(unet.upcat_4(x4, x3), x2), x1), x0)
    return x4, u1


def _size(spatial_dims: int) -> tuple[int, ...]:
    """Smallest sizes BasicUNet takes: divisible by 16, with a bottleneck of more than one voxel."""
    return (32, 16) if spatial_dims == 2 else (16, 16, 32)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_outputs_are_heads_of_the_hooked_backbone_maps(spatial_dims):
    net = _net(spatial_dims).eval()
    x = torch.randn(2, 1, *_size(spatial_dims))
    out = net(x)
    assert list(out) == ["global", "dense", "pooled"]
    assert out["global"].shape == (2, 8)
    assert out["dense"].shape == (2, 5, *_size(spatial_dims))
    assert out["pooled"].shape == (2, FEATURES[4]) and net.num_features == FEATURES[4]
    bottleneck, decoder_map = _manual_maps(net.backbone, x)
    torch.testing.assert_close(out["pooled"], bottleneck.flatten(2).mean(2))
    torch.testing.assert_close(out["global"], net.global_head(bottleneck.flatten(2).mean(2)))
    torch.testing.assert_close(out["dense"], net.dense_head(decoder_map))
    torch.testing.assert_close(net.forward_features(x), out["pooled"])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_layers_after_the_captured_maps_are_not_run(spatial_dims):
    net = _net(spatial_dims)
    calls = {"final_conv": 0, "upcat_4": 0}
    for name in calls:
        getattr(net.backbone, name).register_forward_hook(lambda m, a, o, n=name: calls.__setitem__(n, calls[n] + 1))
    x = torch.randn(2, 1, *_size(spatial_dims))
    net(x)
    assert calls == {"final_conv": 0, "upcat_4": 1}
    assert set(net(x, encoder_only=True)) == {"global", "pooled"}
    net.forward_features(x)
    assert calls == {"final_conv": 0, "upcat_4": 1}
    # the backbone itself is untouched: a plain call runs to the end and leaves no capture hooks behind
    assert net.backbone(x).shape == (2, 2, *_size(spatial_dims))
    assert calls == {"final_conv": 1, "upcat_4": 2}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_pretraining_parameter_gets_a_finite_gradient(spatial_dims):
    net = _net(spatial_dims, dense_hidden=6, global_hidden=7)
    out = net(torch.randn(2, 1, *_size(spatial_dims)))
    sum(v.square().mean() for v in out.values()).backward()
    for name, p in net.named_parameters():
        if name.startswith("backbone.final_conv."):
            assert p.grad is None, f"{name} is after the decoder map and must not be computed"
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encoder_only_network(spatial_dims):
    net = _net(spatial_dims, encoder_only=True)
    assert net.dense_head is None and net.decoder_layer is None
    out = net(torch.randn(2, 1, *_size(spatial_dims)))
    assert list(out) == ["global", "pooled"]
    sum(v.square().mean() for v in out.values()).backward()
    encoder = ("backbone.conv_0.", "backbone.down_", "global_head.")
    for name, p in net.named_parameters():
        assert (p.grad is not None) == name.startswith(encoder), name
    with pytest.raises(ValueError, match="encoder_only=False needs a dense head"):
        net(torch.randn(2, 1, *_size(spatial_dims)), encoder_only=False)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_backbone_state_dict_loads_into_a_fresh_basic_unet(spatial_dims, tmp_path):
    net = _net(spatial_dims)
    state = net.backbone_state_dict()
    fresh = BasicUNet(spatial_dims, 1, 2, FEATURES)
    assert list(state) == list(fresh.state_dict())
    encoder_keys = [k for k in state if k.startswith(("conv_0.", "down_"))]
    assert len(encoder_keys) > 10
    assert not any(torch.equal(state[k], fresh.state_dict()[k]) for k in encoder_keys if k.endswith("conv.weight"))
    initial_final = fresh.final_conv.weight.detach().clone()
    path = tmp_path / "model.pt"
    atomic_torch_save({"model": state}, path)
    report = load_pretrained(fresh, path)
    assert report["matched"] == report["total"] == len(state) - 2
    loaded = fresh.state_dict()
    for key in state:
        if not key.startswith("final_conv."):
            assert torch.equal(loaded[key], state[key]), key
    assert torch.equal(fresh.final_conv.weight, initial_final)
    x = torch.randn(2, 1, *_size(spatial_dims))
    bottleneck, _ = _manual_maps(fresh, x)
    torch.testing.assert_close(bottleneck.flatten(2).mean(2), net.forward_features(x))


def test_monai_unet_backbone_by_layer_names():
    unet = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    net = ContrastivePretrainNet(
        2, 1, backbone=unet, global_dim=8, dense_dim=5, encoder_layer=UNET_ENCODER, decoder_layer=UNET_DECODER
    )
    assert net.backbone is unet and net.size_divisor == (4, 4) and net.num_features == 16
    out = net(torch.randn(2, 1, 16, 12))
    assert out["global"].shape == (2, 8) and out["pooled"].shape == (2, 16)
    assert out["dense"].shape == (2, 5, 8, 6)  # "model.1" is at half resolution: 4 + 4 concatenated channels
    assert net.dense_head.in_channels == 8
    sum(v.square().mean() for v in out.values()).backward()
    for name, p in net.named_parameters():
        if name.startswith("backbone.model.2."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert list(net.backbone_state_dict()) == list(UNet(2, 1, 2, (4, 8, 16), (2, 2), num_res_units=1).state_dict())
    with pytest.raises(ValueError, match=r"divisible by \(4, 4\)"):
        net(torch.randn(2, 1, 16, 10))


def test_monai_unet_backbone_3d():
    unet = UNet(3, 2, 2, channels=(4, 8, 16), strides=(2, 2))
    net = ContrastivePretrainNet(3, 2, backbone=unet, encoder_layer=UNET_ENCODER, decoder_layer=UNET_DECODER)
    out = net(torch.randn(2, 2, 8, 8, 16))
    assert out["dense"].shape == (2, 64, 4, 4, 8) and out["pooled"].shape == (2, 16)


def test_generic_backbone_needs_and_uses_size_divisor():
    backbone = nn.Sequential()
    backbone.add_module("enc", nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU()))
    backbone.add_module("dec", nn.Sequential(nn.ConvTranspose2d(3, 2, 2, stride=2), nn.ReLU()))
    with pytest.raises(ValueError, match="size_divisor must be given for a Sequential backbone"):
        ContrastivePretrainNet(2, 1, backbone=backbone, encoder_layer="enc", decoder_layer="dec")
    net = ContrastivePretrainNet(2, 1, backbone=backbone, encoder_layer="enc", decoder_layer="dec", size_divisor=2)
    out = net(torch.randn(2, 1, 6, 4))
    assert out["pooled"].shape == (2, 3) and out["dense"].shape == (2, 64, 6, 4)
    with pytest.raises(ValueError, match=r"divisible by \(2, 2\)"):
        net(torch.randn(2, 1, 5, 4))


def test_probe_keeps_training_modes():
    unet = BasicUNet(2, 1, 2, FEATURES)
    unet.down_2.eval()
    ContrastivePretrainNet(2, 1, backbone=unet)
    assert unet.training and unet.down_1.training and not unet.down_2.training


def test_input_errors_name_x():
    net = _net(2)
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\) for spatial_dims=2"):
        net(torch.randn(2, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="x must have 1 channel"):
        net(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"x spatial size \(32, 24\) must be divisible by \(16, 16\) \(BasicUNet"):
        net(torch.randn(2, 1, 32, 24))
    with pytest.raises(ValueError, match=r"x spatial size \(16, 16\) leaves a one-voxel bottleneck"):
        net(torch.randn(2, 1, 16, 16))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        net(torch.zeros(2, 1, 32, 32, dtype=torch.long))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        net.forward_features([[0.0]])
    with pytest.raises(ValueError, match="at least 2 vectors in training mode"):
        net(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W, D\) for spatial_dims=3"):
        _net(3).forward_features(torch.randn(2, 1, 32, 32))


def test_construction_errors():
    with pytest.raises(ValueError, match=r"encoder_layer='down_5' is not a submodule .*'down_4'"):
        _net(2, encoder_layer="down_5")
    with pytest.raises(ValueError, match=r"decoder_layer='upcat1' is not a submodule .*closest names: \['upcat_1'"):
        _net(2, decoder_layer="upcat1")
    with pytest.raises(TypeError, match="encoder_layer must be a submodule name"):
        _net(2, encoder_layer=4)
    with pytest.raises(TypeError, match="backbone must be a torch.nn.Module"):
        ContrastivePretrainNet(2, 1, backbone="BasicUNet")
    with pytest.raises(ValueError, match="first convolution is Conv3d, which does not match spatial_dims=2"):
        ContrastivePretrainNet(2, 1, backbone=BasicUNet(3, 1, 2, FEATURES))
    with pytest.raises(ValueError, match="takes 3 channel.*in_channels=1"):
        ContrastivePretrainNet(2, 1, backbone=BasicUNet(2, 3, 2, FEATURES))
    with pytest.raises(ValueError, match="features must be a sequence of six"):
        ContrastivePretrainNet(2, 1, features=(4, 4, 8))
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        ContrastivePretrainNet(1, 1, features=FEATURES)
    with pytest.raises(ValueError, match="in_channels"):
        ContrastivePretrainNet(2, 0, features=FEATURES)
    with pytest.raises(TypeError, match="encoder_only must be a bool"):
        _net(2, encoder_only="yes")
    with pytest.raises(ValueError, match="size_divisor"):
        _net(2, size_divisor=0)


def test_layer_that_never_runs_is_reported():
    unet = BasicUNet(2, 1, 2, FEATURES)
    unet.unused = nn.Conv2d(4, 4, 1)
    with pytest.raises(ValueError, match=r"backbone layers \['unused'\] were never called"):
        ContrastivePretrainNet(2, 1, backbone=unet, decoder_layer="unused")
    probe = r"could not run the BasicUNet backbone on a probe input of shape \(1, 1, 6, 6\)"
    with pytest.raises(ValueError, match=probe):
        ContrastivePretrainNet(2, 1, backbone=BasicUNet(2, 1, 2, FEATURES), size_divisor=3)


def test_layer_output_without_spatial_axes_is_rejected():
    backbone = nn.Sequential()
    backbone.add_module("enc", nn.Conv2d(1, 3, 3, padding=1))
    backbone.add_module("flat", nn.Flatten())
    with pytest.raises(ValueError, match=r"layer 'flat' must output a \(B, C, \*spatial\) tensor with 2 spatial dims"):
        ContrastivePretrainNet(2, 1, backbone=backbone, encoder_layer="flat", decoder_layer="enc", size_divisor=1)
