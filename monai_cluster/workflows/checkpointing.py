"""Re-export of :mod:`monai_cluster.handlers.checkpoint` (its former home), for existing imports and configs."""

from monai_cluster.handlers.checkpoint import (
    CHECKPOINT_FORMAT,
    TrainingCheckpointer,
    checkpoint_path,
    find_last_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainingCheckpointer",
    "checkpoint_path",
    "find_last_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]
