"""Tests for LocalDiscriminationNet: shapes, unit embeddings, assignments summing to 1, grads, checkpoint, errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_cluster.networks import load_pretrained
from monai_cluster.networks.nets.local_discrimination import LocalDiscriminationNet
from monai_cluster.utils import atomic_torch_save

FEATURES = (4, 4, 8, 8, 16, 4)


def _size(spatial_dims: int) -> tuple[int, ...]:
    return (32, 16) if spatial_dims == 2 else (16, 16, 32)


def _net(spatial_dims: int, **kwargs) -> LocalDiscriminationNet:
    kwargs.setdefault("features", FEATURES)
    return LocalDiscriminationNet(spatial_dims, 2, embed_dim=6, num_clusters=5, **kwargs)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_shapes_unit_embeddings_and_assignments(spatial_dims, activation):
    net = _net(spatial_dims, assignment_activation=activation)
    x = torch.randn(2, 2, *_size(spatial_dims))
    out = net(x)
    assert list(out) == ["embedding", "assignment", "logits"]
    assert out["embedding"].shape == (2, 6, *_size(spatial_dims))
    assert out["assignment"].shape == out["logits"].shape == (2, 5, *_size(spatial_dims))
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(2, *_size(spatial_dims)))
    torch.testing.assert_close(out["assignment"].sum(dim=1), torch.ones(2, *_size(spatial_dims)))
    assert float(out["assignment"].min()) >= 0
    torch.testing.assert_close(out["assignment"], net.assign(out["logits"]))
    if activation == "softmax":
        torch.testing.assert_close(out["assignment"], torch.softmax(out["logits"], dim=1))
    else:
        gate = torch.sigmoid(out["logits"])
        torch.testing.assert_close(out["assignment"], gate / gate.sum(1, keepdim=True))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_heads_read_the_backbone_decoder_map(spatial_dims):
    net = _net(spatial_dims).eval()
    x = torch.randn(1, 2, *_size(spatial_dims))
    decoded = net.backbone(x)
    assert decoded.shape == (1, FEATURES[5], *_size(spatial_dims))
    out = net(x)
    torch.testing.assert_close(out["embedding"], torch.nn.functional.normalize(net.embedding_head(decoded), dim=1))
    torch.testing.assert_close(out["logits"], net.clustering_head(decoded))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_parameter_gets_a_finite_gradient(spatial_dims):
    net = _net(spatial_dims)
    out = net(torch.randn(1, 2, *_size(spatial_dims)))
    target = torch.randn_like(out["embedding"])
    (out["embedding"] * target).sum().backward(retain_graph=True)
    (out["assignment"][:, 0] ** 2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_backbone_checkpoint_initialises_a_segmentation_basic_unet(tmp_path):
    net = _net(2)
    state = net.backbone_state_dict()
    assert not any(k.startswith(("backbone.", "final_conv")) for k in state)
    path = tmp_path / "model.pt"
    atomic_torch_save(state, path)
    seg = BasicUNet(2, 2, 3, FEATURES)
    report = load_pretrained(seg, path)
    assert report["matched"] == report["total"] == len(state)
    for key, value in state.items():
        torch.testing.assert_close(seg.state_dict()[key], value)
    assert seg.final_conv.out_channels == 3


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="spatial_dims"):
        LocalDiscriminationNet(1, 1)
    with pytest.raises(ValueError, match="in_channels"):
        LocalDiscriminationNet(2, 0)
    with pytest.raises(ValueError, match="num_clusters"):
        LocalDiscriminationNet(2, 1, num_clusters=1)
    with pytest.raises(TypeError, match="embed_dim"):
        LocalDiscriminationNet(2, 1, embed_dim=2.5)
    with pytest.raises(ValueError, match="features must be a sequence of six"):
        LocalDiscriminationNet(2, 1, features=(4, 4, 8))
    with pytest.raises(ValueError, match=r"features\[2\]"):
        LocalDiscriminationNet(2, 1, features=(4, 4, 0, 8, 16, 4))
    with pytest.raises(ValueError, match="head_channels"):
        LocalDiscriminationNet(2, 1, features=FEATURES, head_channels=0)
    with pytest.raises(ValueError, match="assignment_activation"):
        LocalDiscriminationNet(2, 1, features=FEATURES, assignment_activation="relu")


def test_input_errors_name_x():
    net = _net(2)
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\) for spatial_dims=2"):
        net(torch.zeros(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="x must have 2 channel"):
        net(torch.zeros(1, 1, 32, 32))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        net(torch.zeros(1, 2, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 2, 32, 24))
    with pytest.raises(ValueError, match="one-voxel bottleneck"):
        net(torch.zeros(1, 2, 16, 16))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        net([[0.0]])
