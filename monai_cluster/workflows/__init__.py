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
from .pretrain import (
    PRETRAIN_OPTION_SPECS,
    PretrainProgress,
    check_pretrain_options,
    make_pretrain_checkpointer,
    make_recluster_handler,
    run_pretrain,
    table_from_extra,
    table_to_extra,
)
from .pretrain_data import (
    autoencoder_transforms,
    base_transforms,
    check_image_size,
    feature_transforms,
    make_pseudo_class_transform,
    prepare_unlabeled,
    pretrain_transforms,
)
from .pretrain_stages import build_autoencoder, cluster_pseudo_classes, load_autoencoder, train_autoencoder

__all__ = [
    "CHECKPOINT_FORMAT",
    "PRETRAIN_OPTION_SPECS",
    "autoencoder_transforms",
    "barrier",
    "base_transforms",
    "build_autoencoder",
    "check_image_size",
    "check_pretrain_options",
    "checkpoint_path",
    "cluster_pseudo_classes",
    "feature_transforms",
    "find_last_checkpoint",
    "is_main_process",
    "list_checkpoints",
    "list_unlabeled",
    "load_autoencoder",
    "load_checkpoint",
    "make_pretrain_checkpointer",
    "make_pseudo_class_transform",
    "make_recluster_handler",
    "prepare_unlabeled",
    "pretrain_transforms",
    "PretrainProgress",
    "resolve_dataset",
    "resolve_device",
    "run_pretrain",
    "save_checkpoint",
    "seed_everything",
    "table_from_extra",
    "table_to_extra",
    "train_autoencoder",
    "TrainingCheckpointer",
    "validate_option",
    "validate_options",
]
