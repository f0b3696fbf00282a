"""Shared helpers: data location, atomic writes, input validation and mixed precision."""

from .allocator import keep_freed_memory
from .io import atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_json, remove_stale_temp_files
from .paths import DATA_ENV_VAR, find_real_data, get_data_root
from .precision import amp_mode, autocast, cpu_bf16, cpu_supports_bf16, cuda_amp, float32, float32_forward, to_float32
from .validation import (
    check_choice,
    check_embeddings,
    check_finite,
    check_labels,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_spatial_dims,
    check_spatial_tensor,
    check_tensor,
)

__all__ = [
    "DATA_ENV_VAR",
    "amp_mode",
    "autocast",
    "cpu_bf16",
    "cpu_supports_bf16",
    "cuda_amp",
    "float32",
    "float32_forward",
    "to_float32",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_choice",
    "check_embeddings",
    "check_finite",
    "check_labels",
    "check_positive_float",
    "check_positive_int",
    "check_probability",
    "check_spatial_dims",
    "check_spatial_tensor",
    "check_tensor",
    "find_real_data",
    "get_data_root",
    "keep_freed_memory",
    "remove_stale_temp_files",
]
