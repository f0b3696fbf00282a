"""ContrastiveAutoEncoder: 2D/3D output dict, encode/decode consistency, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from monai_cluster.networks.nets.contrastive_autoencoder import ContrastiveAutoEncoder

CASES = [
    (2, 1, (16, 16), (4, 8), (2, 2)),
    (2, 3, (8, 12), (4,), (2,)),
    (3, 1, (8, 8, 4), (4, 8), (2, 2)),
]


@pytest.mark.parametrize("spatial_dims, in_channels, in_shape, channels, strides", CASES)
def test_shapes(spatial_dims, in_channels, in_shape, channels, strides):
    net = ContrastiveAutoEncoder(
        spatial_dims, in_channels, in_shape, latent_dim=6, channels=channels, strides=strides, proj_dim=5
    )
    x = torch.rand(4, in_channels, *in_shape)
    out = net(x)
    assert out["latent"].shape == (4, 6)
    assert out["projection"].shape == (4, 5)
    assert out["reconstruction"].shape == x.shape
    assert 0 <= float(out["reconstruction"].min()) and float(out["reconstruction"].max()) <= 1


def test_encode_decode_match_forward_and_options():
    net = ContrastiveAutoEncoder(
        2, 1, (8, 8), latent_dim=4, channels=(4,), strides=(2,), use_sigmoid=False, out_channels=2
    )
    net.eval()
    x = torch.rand(3, 1, 8, 8)
    out = net(x)
    torch.testing.assert_close(net.encode(x), out["latent"])
    torch.testing.assert_close(net.decode(out["latent"]), out["reconstruction"])
    assert out["reconstruction"].shape == (3, 2, 8, 8)
    assert net.projection.out_features == 128


@pytest.mark.parametrize("case", [CASES[0], CASES[2]])
def test_every_parameter_gets_a_finite_gradient(case):
    spatial_dims, in_channels, in_shape, channels, strides = case
    net = ContrastiveAutoEncoder(
        spatial_dims, in_channels, in_shape, latent_dim=4, channels=channels, strides=strides, proj_dim=3
    )
    out = net(torch.rand(4, in_channels, *in_shape))
    (out["reconstruction"].mean() + out["projection"].pow(2).mean()).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((1, 1, (8, 8)), {}, ValueError, "spatial_dims"),
        ((2, 0, (8, 8)), {}, ValueError, "in_channels"),
        ((2, 1, (1, 8, 8)), {}, ValueError, "in_shape must be a sequence of 2"),
        ((2, 1, (8, 6)), {"channels": (4, 8), "strides": (2, 2)}, ValueError, "in_shape .* divisible"),
        ((2, 1, (8, 8)), {"proj_dim": 0}, ValueError, "proj_dim"),
        ((2, 1, (8, 8)), {"strides": "22"}, ValueError, "strides must be a sequence"),
        ((2, 1, (8, 8)), {"latent_dim": 2.5}, TypeError, "latent_dim"),
    ],
)
def test_constructor_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ContrastiveAutoEncoder(*args, **kwargs)


def test_input_errors():
    net = ContrastiveAutoEncoder(2, 1, (8, 8), latent_dim=4, channels=(4,), strides=(2,))
    with pytest.raises(ValueError, match="x must have spatial size in_shape"):
        net(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="x must have 1 channel"):
        net(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"z must be \(B, 4\)"):
        net.decode(torch.rand(2, 5))


# ---------------------------------------------------------------- projection head and prototype-conditioned decoder
def test_reference_projection_head_has_three_plain_layers():
    net = ContrastiveAutoEncoder(2, 1, (8, 8), latent_dim=6, channels=(4,), strides=(2,), proj_dim=6, proj_layers=3,
                                 proj_norm=False)  # fmt: skip
    linears = [m for m in net.projection.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 12), (12, 12), (12, 6)]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in net.projection.modules())
    assert net(torch.rand(1, 1, 8, 8))["projection"].shape == (1, 6)  # no batch norm: a single image is fine


@pytest.mark.parametrize("spatial_dims, in_shape", [(2, (8, 8)), (3, (8, 8, 4))])
def test_prototype_conditioned_decoder(spatial_dims, in_shape):
    torch.manual_seed(0)
    net = ContrastiveAutoEncoder(spatial_dims, 1, in_shape, latent_dim=4, channels=(4,), strides=(2,), proj_dim=3,
                                 num_prototypes=3, prototype_temperature=0.5)  # fmt: skip
    net.eval()
    x = torch.rand(5, 1, *in_shape)
    out = net(x)
    assert out["assignment"].shape == (5, 3)
    torch.testing.assert_close(out["assignment"], torch.full((5, 3), 1 / 3))  # uniform before the prototypes
    prototypes = torch.randn(3, 4)
    net.set_prototypes(prototypes)
    z = net.encode(x)
    out = net(x)
    torch.testing.assert_close(out["assignment"], torch.softmax(z @ prototypes.t() / 0.5, dim=1))
    torch.testing.assert_close(out["reconstruction"], net.decode(z, out["assignment"]))
    # the decoder reads the assignment: another one gives another image
    other = torch.eye(3)[[0, 1, 2, 0, 1]]
    assert not torch.allclose(net.decode(z, other), out["reconstruction"])
    # the prototypes travel with the weights
    state = net.state_dict()
    assert torch.equal(state["prototypes"], prototypes) and bool(state["prototypes_set"])
    net.clear_prototypes()
    torch.testing.assert_close(net.assign(z), torch.full((5, 3), 1 / 3))


def test_prototype_conditioned_parameters_get_finite_gradients():
    net = ContrastiveAutoEncoder(2, 1, (8, 8), latent_dim=4, channels=(4,), strides=(2,), proj_dim=3,
                                 num_prototypes=2)  # fmt: skip
    net.set_prototypes(torch.randn(2, 4))
    out = net(torch.rand(4, 1, 8, 8))
    (out["reconstruction"].mean() + out["projection"].pow(2).mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_update_prototypes_moves_to_assigned_means_with_momentum():
    from monai_cluster.clustering import prototype_means

    net = ContrastiveAutoEncoder(2, 1, (8, 8), latent_dim=2, channels=(4,), strides=(2,), num_prototypes=2,
                                 prototype_temperature=0.1)  # fmt: skip
    start = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[2.0, 0.1], [3.0, -0.1], [0.1, 2.0]])
    net.set_prototypes(start)
    net.update_prototypes(z, assignment="hard")
    torch.testing.assert_close(net.prototypes, torch.tensor([[2.5, 0.0], [0.1, 2.0]]))
    net.set_prototypes(start)
    net.update_prototypes(z, assignment="soft", momentum=0.75)
    torch.testing.assert_close(net.prototypes, 0.75 * start + 0.25 * prototype_means(z, start, 0.1, "soft"))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda n, p: n.assign(torch.rand(2, 4)), ValueError, "needs a ContrastiveAutoEncoder built with num_protot"),
        (lambda n, p: n.decode(torch.rand(2, 4), torch.rand(2, 3)), ValueError, "assignment is only taken"),
        (lambda n, p: p.set_prototypes(torch.rand(2, 4)), ValueError, r"prototypes must be \(3, 4\)"),
        (lambda n, p: p.set_prototypes(torch.full((3, 4), float("nan"))), ValueError, "prototypes"),
        (lambda n, p: p.update_prototypes(torch.rand(2, 4)), ValueError, "call set_prototypes"),
        (lambda n, p: p.decode(torch.rand(2, 4), torch.rand(2, 2)), ValueError, r"assignment must be \(B, 3\)"),
    ],
)
def test_prototype_errors(call, error, match):
    plain = ContrastiveAutoEncoder(2, 1, (8, 8), latent_dim=4, channels=(4,), strides=(2,))
    conditioned = ContrastiveAutoEncoder(2, 1, (8, 8), latent_dim=4, channels=(4,), strides=(2,), num_prototypes=3)
    with pytest.raises(error, match=match):
        call(plain, conditioned)


def test_prototype_constructor_and_momentum_errors():
    with pytest.raises(ValueError, match="num_prototypes"):
        ContrastiveAutoEncoder(2, 1, (8, 8), num_prototypes=1)
    with pytest.raises(ValueError, match="prototype_temperature"):
        ContrastiveAutoEncoder(2, 1, (8, 8), num_prototypes=2, prototype_temperature=0.0)
    net = ContrastiveAutoEncoder(2, 1, (8, 8), latent_dim=4, channels=(4,), strides=(2,), num_prototypes=2)
    net.set_prototypes(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        net.update_prototypes(torch.rand(3, 4), momentum=1.0)
    with pytest.raises(ValueError, match="assignment must be one of"):
        net.update_prototypes(torch.rand(3, 4), assignment="fuzzy")
