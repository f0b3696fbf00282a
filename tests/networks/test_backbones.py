"""The backbone registry: its layer names exist in the networks it builds, divisors are right, errors name the input."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SegResNet, SwinUNETR
from torch import nn

from monai_cluster.networks import ContrastivePretrainNet, build_pretrain_net
from monai_cluster.networks.backbones import (
    BACKBONES,
    backbone_of,
    backbone_spec,
    build_backbone,
    check_backbone_options,
    check_backbone_size,
    detect_backbone,
    size_divisor_of,
)
from monai_cluster.workflows import check_backbone_bundle_options, check_pretrain_options

TINY = {"features": (4, 4, 8, 8, 16, 4), "init_filters": 8, "feature_size": 12, "depths": (1, 1, 1, 1)}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_registered_names_exist_in_the_built_network(name, spatial_dims):
    spec = backbone_spec(name)
    net = build_backbone(name, spatial_dims, 1, 3, **TINY)
    assert isinstance(net, spec.network) and backbone_of(net) == name
    modules = dict(net.named_modules())
    for layer in (spec.encoder_layer, spec.decoder_layer, *spec.decoder_blocks, *spec.head):
        assert layer in modules, f"{name}: {layer!r} is not a submodule"
    assert spec.decoder_layer == spec.decoder_blocks[-1]
    assert size_divisor_of(net) == spec.size_divisor
    keys = list(net.state_dict())
    assert detect_backbone(keys) == name
    assert all(any(k.startswith(p) for k in keys) for p in spec.encoder_prefixes)
    assert detect_backbone(f"module.{k}" for k in keys) is None  # a wrapped state dict is no backbone's


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_pretrain_net_uses_the_registered_layers_and_divisor(name):
    spec = backbone_spec(name)
    size = 2 * spec.size_divisor
    net = build_pretrain_net(name, 2, 3, global_dim=8, dense_dim=4, **TINY)
    assert (net.encoder_layer, net.decoder_layer, net.size_divisor) == (spec.encoder_layer, spec.decoder_layer,
                                                                         (spec.size_divisor,) * 2)  # fmt: skip
    captured = net._capture(torch.zeros(1, 3, size, size), need_decoder=True)
    assert captured[spec.encoder_layer].shape[2:] == (2, 2)  # the bottleneck is at 1 / size_divisor
    assert captured[spec.decoder_layer].shape[2:] == (size, size)  # the default dense map is full resolution
    out = net(torch.rand(2, 3, size, size))
    assert out["global"].shape == (2, 8) and out["dense"].shape == (2, 4, size, size)
    # what the staged schedule trains: exactly the decoder blocks (plus the dense head), never the encoder
    names = {id(p): n for n, p in net.named_parameters()}
    decoder = {names[id(p)] for p in net.decoder_parameters()}
    blocks = tuple(f"backbone.{b}." for b in spec.decoder_blocks)
    expected = {n for n in names.values() if n.startswith(blocks) or n.startswith("dense_head.")}
    assert decoder == expected
    encoder = {names[id(p)] for p in net.encoder_parameters()}
    assert encoder and not encoder & decoder
    assert not any(n.startswith(tuple(f"backbone.{h}." for h in spec.head)) for n in encoder | decoder)
    with pytest.raises(ValueError, match="divisible by"):
        net(torch.rand(2, 3, size + spec.size_divisor // 2, size))


def test_contrastive_pretrain_net_infers_layers_of_a_registered_backbone():
    net = ContrastivePretrainNet(2, 1, backbone=SegResNet(2, init_filters=8, in_channels=1), global_dim=8)
    assert (net.encoder_layer, net.decoder_layer, net.size_divisor) == ("down_layers.3", "up_layers.2", (8, 8))
    swin = SwinUNETR(1, 2, feature_size=12, depths=(1, 1, 1, 1), spatial_dims=2)
    assert ContrastivePretrainNet(2, 1, backbone=swin, encoder_only=True).size_divisor == (32, 32)
    three = SegResNet(2, init_filters=8, in_channels=1, blocks_down=(1, 1, 1), blocks_up=(1, 1))  # divisor 4
    wrapped = ContrastivePretrainNet(2, 1, backbone=three, encoder_layer="down_layers.2", decoder_layer="up_layers.1")
    assert wrapped.size_divisor == (4, 4)
    plain = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    with pytest.raises(ValueError, match=r"encoder_layer must be given for a Sequential backbone.*'segresnet'"):
        ContrastivePretrainNet(2, 1, backbone=plain, size_divisor=1)


def test_basic_unet_is_built_exactly_as_before():
    torch.manual_seed(3)
    old = ContrastivePretrainNet(2, 3, features=TINY["features"], dense_dim=4)
    torch.manual_seed(3)
    new = build_pretrain_net("basic_unet", 2, 3, features=TINY["features"], dense_dim=4)
    assert list(old.state_dict()) == list(new.state_dict())
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in old.state_dict().items())


def test_unknown_backbone_lists_the_known_ones():
    known = r"\['basic_unet', 'segresnet', 'swin_unetr'\]"
    for call in (lambda: backbone_spec("vit"), lambda: build_backbone("vit", 2, 1, 2),
                 lambda: build_pretrain_net("unet", 2, 1), lambda: check_backbone_size("VIT", 64, 2)):  # fmt: skip
        with pytest.raises(ValueError, match=rf"backbone must be one of {known}, got str"):
            call()
    with pytest.raises(ValueError, match=rf"option 'backbone' \(--backbone\) must be one of {known}, got str 'vit'"):
        check_backbone_bundle_options(2, backbone="vit")


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("basic_unet", {"features": [4, 8]}, "features must be six BasicUNet feature sizes"),
        ("segresnet", {"init_filters": 12}, "init_filters=12 must be a multiple of 8 for backbone 'segresnet'"),
        ("swin_unetr", {"feature_size": 16}, "feature_size=16 must be a multiple of 12 for backbone 'swin_unetr'"),
        ("swin_unetr", {"depths": [1, 1, 1]}, r"depths must be four SwinUNETR stage depths, got \[1, 1, 1\]"),
    ],
)
def test_bad_backbone_options_name_the_option(name, options, match):
    with pytest.raises(ValueError, match=match):
        check_backbone_options(name, 2, **options)
    with pytest.raises(ValueError, match=match):
        build_backbone(name, 2, 1, 2, **options)


def test_sizes_are_checked_per_backbone():
    with pytest.raises(ValueError, match=r"roi_size \[48, 48, 48\] must be a multiple of 32 on every axis for "
                                         r"backbone 'swin_unetr'.*e\.g\. roi_size \[64, 64, 64\]"):  # fmt: skip
        check_backbone_bundle_options(3, size=[48, 48, 48], size_option="roi_size", backbone="swin_unetr")
    with pytest.raises(ValueError, match=r"image_size \[32, 32\] leaves a one-voxel bottleneck in backbone "
                                         r"'swin_unetr'.*e\.g\. image_size \[64, 32\]"):  # fmt: skip
        check_backbone_size("swin_unetr", 32, 2, "image_size")
    assert check_backbone_size("swin_unetr", [64, 32], 2) == [64, 32]
    with pytest.raises(ValueError, match="must be a multiple of 8 on every axis for backbone 'segresnet'"):
        check_backbone_size("segresnet", [36, 32], 2)
    assert check_backbone_size("basic_unet", 40, 3) == [40, 40, 40]  # BasicUNet pads: any fine-tune size
    with pytest.raises(ValueError, match="must be a multiple of 16"):
        check_backbone_size("basic_unet", 40, 2, strict=True)  # but the pretraining wrapper needs multiples
    with pytest.raises(ValueError, match=r"img_size must give 1 or 2 sizes for 2D data"):
        check_backbone_size("segresnet", [32, 32, 32], 2)


def test_pretraining_options_check_the_backbone_and_its_image_size():
    options = {"epochs": 1, "autoencoder_epochs": 1, "batch_size": 2, "image_size": 48, "learning_rate": 1e-3,
               "autoencoder_learning_rate": 1e-3, "features": [4, 4, 8, 8, 16, 4], "use_pseudo_classes": True,
               "pseudo_class_level": 0, "num_clusters": [2], "recluster_interval": 0, "temperature": 0.1,
               "global_weight": 1.0, "local_weight": 0.5, "schedule": "joint", "local_epochs": 1,
               "crop_scale": [0.5, 1.0], "resume": False, "seed": 0, "spatial_dims": 2, "in_channels": 3,
               "dataset_dir": None, "bundle_root": "/tmp/x"}  # fmt: skip
    assert check_pretrain_options(**options)["backbone"] == "basic_unet"  # the default when not given
    checked = check_pretrain_options(**options, backbone="segresnet", init_filters=32)
    assert checked["backbone"] == "segresnet" and checked["init_filters"] == 32
    with pytest.raises(ValueError, match=r"image_size \[48, 48\] must be a multiple of 32 .* 'swin_unetr'"):
        check_pretrain_options(**options, backbone="swin_unetr")
    with pytest.raises(ValueError, match=r"option 'backbone' \(--backbone\) must be one of"):
        check_pretrain_options(**options, backbone="unetr")
