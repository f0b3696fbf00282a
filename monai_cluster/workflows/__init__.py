"""Workflows behind the bundles: shared helpers (data, option checks, checkpoints, resume) and the pretraining stages.

Bundle configs call these so that the logic can be imported and tested outside ``python -m monai.bundle``.
"""

from .common import (
    CHECKPOINT_FORMAT,
    TrainingCheckpointer,
    barrier,
    checkpoint_path,
    find_last_checkpoint,
    is_main_process,
    list_checkpoints,
    list_unlabeled,
    load_checkpoint,
    resolve_dataset,
    resolve_device,
    save_checkpoint,
    seed_everything,
    validate_option,
    validate_options,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainingCheckpointer",
    "barrier",
    "checkpoint_path",
    "find_last_checkpoint",
    "is_main_process",
    "list_checkpoints",
    "list_unlabeled",
    "load_checkpoint",
    "resolve_dataset",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "validate_option",
    "validate_options",
]
