"""What ``amp`` means on each device, and the float32 islands inside autocast (issue 20)."""

from __future__ import annotations

import logging

import pytest
import torch

from monai_cluster.utils import precision
from monai_cluster.utils.precision import amp_mode, autocast, cpu_bf16, cuda_amp, float32, float32_forward, to_float32


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend the CPU has (or lacks) native bfloat16."""

    def set_(value: bool) -> None:
        monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: value)

    return set_


def test_amp_off_is_float32_everywhere():
    assert amp_mode(False, "cpu") is None
    assert amp_mode(False, torch.device("cuda:1")) is None
    assert not cuda_amp(False, "cuda") and not cpu_bf16(False, "cpu")


def test_amp_on_cuda_is_monai_amp():
    assert amp_mode(True, "cuda:0") == "cuda"
    assert cuda_amp(True, torch.device("cuda")) and not cpu_bf16(True, "cuda")


def test_amp_on_cpu_follows_the_hardware(bf16_cpu, caplog):
    bf16_cpu(True)
    assert amp_mode(True, "cpu") == "cpu_bf16" and cpu_bf16(True, "cpu") and not cuda_amp(True, "cpu")
    bf16_cpu(False)
    precision._WARNED.discard("cpu")
    with caplog.at_level(logging.WARNING, logger=precision.__name__):
        assert amp_mode(True, "cpu") is None
    assert "no native bfloat16" in caplog.text


@pytest.mark.parametrize("bad", [1, "true", None, 1.0])
def test_amp_must_be_bool(bad):
    with pytest.raises(TypeError, match="amp must be a bool"):
        amp_mode(bad, "cpu")


def test_bad_device_is_named():
    with pytest.raises(ValueError, match="device must name a torch device"):
        amp_mode(True, "gpu0")
    with pytest.raises(TypeError, match="device must be a str or torch.device"):
        amp_mode(True, 0)


def test_autocast_context(bf16_cpu):
    bf16_cpu(True)
    with autocast(True, "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    bf16_cpu(False)
    with autocast(True, "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(False, "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_to_float32_nested():
    half = torch.ones(2, dtype=torch.bfloat16)
    out = to_float32({"a": half, "b": [half, torch.ones(2, dtype=torch.int64)], "c": (half,), "d": "text"})
    assert out["a"].dtype == torch.float32 and out["b"][0].dtype == torch.float32
    assert out["b"][1].dtype == torch.int64 and out["c"][0].dtype == torch.float32 and out["d"] == "text"
    f64 = torch.ones(2, dtype=torch.float64)
    assert to_float32(f64) is f64  # only reduced precision is cast


def test_float32_block_turns_autocast_off():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
        with float32():
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")


def test_float32_forward_casts_inputs_and_keeps_gradients():
    seen = {}

    @float32_forward
    def fn(x, extra=None):
        seen["dtype"], seen["extra"] = x.dtype, extra["y"].dtype
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return (x @ x.T).sum()

    x = torch.randn(3, 4).to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(x, extra={"y": x})
    assert seen == {"dtype": torch.float32, "extra": torch.float32, "autocast": False}
    assert out.dtype == torch.float32
    out.backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16 and x.grad.abs().sum() > 0


def test_cuda_steps_use_bfloat16_where_the_gpu_has_it(monkeypatch):
    """The hand-written loops run without a gradient scaler: bfloat16 on a GPU that has it, float16 only on older."""
    from monai_cluster.utils.precision import cuda_autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert cuda_autocast_dtype() == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert cuda_autocast_dtype() == torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_autocast_dtype() == torch.float16
