"""AutocastInferer: the network runs under autocast, the engine gets float32 back (issue 20)."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from monai_cluster.inferers import AutocastInferer


class Recorder(torch.nn.Module):
    """A 1x1 convolution that records whether autocast was on and returns a dict, as the pretraining net does."""

    def __init__(self, dims: int = 2) -> None:
        super().__init__()
        self.conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(1, 2, 1)
        self.autocast_seen: list[bool] = []

    def forward(self, x):
        self.autocast_seen.append(torch.is_autocast_enabled("cpu"))
        y = self.conv(x)
        return {"dense": y, "pooled": y.flatten(2).mean(2)}


@pytest.mark.parametrize("dims", [2, 3])
def test_network_runs_in_bfloat16_outputs_are_float32(dims):
    net = Recorder(dims)
    x = torch.randn(2, 1, *([8] * dims))
    out = AutocastInferer()(x, net)
    assert net.autocast_seen == [True]
    assert out["dense"].dtype == torch.float32 and out["pooled"].dtype == torch.float32
    reference = net(x)["dense"]
    torch.testing.assert_close(out["dense"], reference, rtol=2e-2, atol=2e-2)  # bfloat16 convolution
    assert not torch.equal(out["dense"], reference)  # it really ran in bfloat16


def test_gradients_flow_to_the_weights():
    net = Recorder()
    out = AutocastInferer()(torch.randn(2, 1, 8, 8), net)
    out["dense"].square().mean().backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.dtype == torch.float32
    assert net.conv.weight.grad.abs().sum() > 0


def test_disabled_is_the_wrapped_inferer_unchanged():
    net = Recorder()
    x = torch.randn(2, 1, 8, 8)
    out = AutocastInferer(enabled=False)(x, net)
    assert net.autocast_seen == [False]
    assert torch.equal(out["dense"], net(x)["dense"])


def test_wraps_a_sliding_window_inferer():
    net = torch.nn.Conv3d(1, 2, 1)
    x = torch.randn(1, 1, 12, 12, 12)
    inner = SlidingWindowInferer(roi_size=(8, 8, 8), sw_batch_size=2, overlap=0.25)
    out = AutocastInferer(inner)(x, net)
    assert out.shape == (1, 2, 12, 12, 12) and out.dtype == torch.float32
    torch.testing.assert_close(out, inner(x, net), rtol=2e-2, atol=2e-2)


def test_float16_outputs_kept_when_asked():
    out = AutocastInferer(float32_outputs=False)(torch.randn(2, 1, 8, 8), Recorder())
    assert out["dense"].dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"dtype": "float64"}, ValueError, "dtype must be one of"),
        ({"dtype": torch.float32}, ValueError, "dtype must be torch.bfloat16 or torch.float16"),
        ({"enabled": "yes"}, TypeError, "enabled must be a bool"),
        ({"inferer": 3}, TypeError, "inferer must be a MONAI Inferer"),
        ({"float32_outputs": 1}, TypeError, "float32_outputs must be a bool"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        AutocastInferer(**kwargs)
