"""Shared helpers: data location, atomic writes, input validation, mixed precision, the device resolver, seeding,
rank helpers and random-state capture."""

from .allocator import keep_freed_memory
from .device import resolve_device
from .distributed import barrier, broadcast_buffers, data_parallel, is_main_process, world_size
from .io import atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_json, remove_stale_temp_files
from .paths import DATA_ENV_VAR, find_real_data, get_data_root
from .precision import amp_mode, autocast, cpu_bf16, cpu_supports_bf16, cuda_amp, float32, float32_forward, to_float32
from .random_state import capture_random_states, random_sources, restore_random_states
from .seeding import check_seed, seed_everything, seeded
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
    "barrier",
    "broadcast_buffers",
    "capture_random_states",
    "check_seed",
    "data_parallel",
    "is_main_process",
    "random_sources",
    "resolve_device",
    "restore_random_states",
    "seed_everything",
    "seeded",
    "world_size",
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
