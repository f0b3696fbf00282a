"""keep_freed_memory: tunes glibc's malloc for CPU training only, once, and says no where it cannot."""

import sys

import torch

from monai_cluster.utils import allocator, keep_freed_memory


def test_gpu_devices_leave_the_allocator_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)
    assert keep_freed_memory("cuda") is False
    assert keep_freed_memory(torch.device("cuda", 1)) is False
    assert allocator._done is False


def test_cpu_on_linux_is_tuned_once(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)
    if not sys.platform.startswith("linux"):
        assert keep_freed_memory("cpu") is False
        return
    calls = []
    real = allocator.ctypes.CDLL

    class Recording:
        def __init__(self, name):
            self.mallopt = _Fn(real(name).mallopt, calls)

    monkeypatch.setattr(allocator.ctypes, "CDLL", Recording)
    assert keep_freed_memory(torch.device("cpu")) is True
    assert calls == [(allocator._M_MMAP_MAX, 0), (allocator._M_TRIM_THRESHOLD, allocator._INT_MAX)]
    assert keep_freed_memory("cpu") is True and len(calls) == 2  # once per process
    x = torch.ones(64, 64, 64, 32)  # 32 MB: allocations still work
    assert float(x.sum()) == 64 * 64 * 64 * 32


class _Fn:
    def __init__(self, fn, calls):
        self.fn, self.calls, self.argtypes, self.restype = fn, calls, None, None

    def __call__(self, option, value):
        self.calls.append((option, value))
        return self.fn(option, value)


def test_other_platforms_do_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert keep_freed_memory("cpu") is False
