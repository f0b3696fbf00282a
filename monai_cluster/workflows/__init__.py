"""Workflows behind the bundles: shared helpers (data, option checks, checkpoints, resume) and each bundle's stages.

Bundle configs call these so that the logic can be imported and tested outside ``python -m monai.bundle``:

- ``common``: dataset resolution, option validation, device/seed, atomic full-state checkpoints and resume;
- ``backbone_options``: the ``backbone`` option (and its per-backbone options) of the bundles that build a
  segmentation network;
- ``pretrain``, ``pretrain_data``, ``pretrain_stages``: ``bundles/cluster_contrastive_pretrain``;
  ``pretrain_slices``: its ``train_slices.json`` overlay (2D slices of 3D volumes, slice partitions);
- ``segmentation_*``: ``bundles/dermoscopy_segmentation`` and ``bundles/heart_ct_segmentation``, and
  :func:`run_bundle` to run any bundle's configs from Python;
- ``local_discrimination``: ``bundles/local_discrimination_pretrain``;
- ``image_clustering``: ``bundles/image_clustering``.
"""

from .common import (
    CHECKPOINT_FORMAT,
    TrainingCheckpointer,
    barrier,
    checkpoint_path,
    find_last_checkpoint,
    images_outside_mask_folders,
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
from .backbone_options import BACKBONE_OPTION_DEFAULTS, BACKBONE_OPTION_SPECS, check_backbone_bundle_options
from .run_outputs import RECORD_NAME, RunOutputs, data_fingerprint, rollback_open_runs
from .pretrain import (
    PRETRAIN_OPTION_DEFAULTS,
    PRETRAIN_OPTION_SPECS,
    SCHEDULES,
    PretrainProgress,
    check_pretrain_options,
    make_pretrain_checkpointer,
    make_recluster_handler,
    run_pretrain,
    table_from_extra,
    table_to_extra,
)
from .pretrain_checks import preflight_pretrain, pretrain_run_settings
from .pretrain_data import (
    VIEW_MODES,
    autoencoder_augmentation,
    autoencoder_transforms,
    base_transforms,
    check_batch_fits,
    check_image_size,
    feature_transforms,
    make_pseudo_class_transform,
    prepare_unlabeled,
    pretrain_augmentation,
    pretrain_transforms,
    pretrain_view_transform,
)
from .pretrain_slices import (
    SLICE_OPTION_SPECS,
    TakeSliced,
    check_slice_options,
    list_volume_slices,
    prepare_volume_slices,
    require_pseudo_classes,
    slice_base_transforms,
)
from . import image_clustering, local_discrimination
from .image_clustering import ImageClusteringTrainer, write_clusters_csv
from .local_discrimination import BestClusterDice, export_backbone, save_cluster_maps
from .segmentation_bundle import bundle_workflow, run_bundle, torchrun_command
from .segmentation_data import labeled_subset, segmentation_splits
from .segmentation_network import initialize_network, load_finetuned
from .segmentation_outputs import SegmentationMetricsWriter, SegmentationOutputWriter
from .pretrain_stages import build_autoencoder, cluster_pseudo_classes, load_autoencoder, run_autoencoder_stage

__all__ = [
    "BACKBONE_OPTION_DEFAULTS",
    "BACKBONE_OPTION_SPECS",
    "check_backbone_bundle_options",
    "BestClusterDice",
    "ImageClusteringTrainer",
    "SegmentationMetricsWriter",
    "SegmentationOutputWriter",
    "bundle_workflow",
    "export_backbone",
    "image_clustering",
    "initialize_network",
    "labeled_subset",
    "load_finetuned",
    "local_discrimination",
    "run_bundle",
    "save_cluster_maps",
    "segmentation_splits",
    "torchrun_command",
    "write_clusters_csv",
    "CHECKPOINT_FORMAT",
    "PRETRAIN_OPTION_SPECS",
    "SLICE_OPTION_SPECS",
    "TakeSliced",
    "check_slice_options",
    "list_volume_slices",
    "prepare_volume_slices",
    "require_pseudo_classes",
    "slice_base_transforms",
    "autoencoder_augmentation",
    "autoencoder_transforms",
    "barrier",
    "base_transforms",
    "check_batch_fits",
    "build_autoencoder",
    "check_image_size",
    "check_pretrain_options",
    "checkpoint_path",
    "cluster_pseudo_classes",
    "feature_transforms",
    "find_last_checkpoint",
    "images_outside_mask_folders",
    "is_main_process",
    "list_checkpoints",
    "list_unlabeled",
    "load_autoencoder",
    "load_checkpoint",
    "make_pretrain_checkpointer",
    "make_pseudo_class_transform",
    "make_recluster_handler",
    "prepare_unlabeled",
    "pretrain_augmentation",
    "pretrain_transforms",
    "pretrain_view_transform",
    "PretrainProgress",
    "SCHEDULES",
    "VIEW_MODES",
    "resolve_dataset",
    "resolve_device",
    "run_pretrain",
    "save_checkpoint",
    "seed_everything",
    "table_from_extra",
    "table_to_extra",
    "run_autoencoder_stage",
    "TrainingCheckpointer",
    "validate_option",
    "validate_options",
    "PRETRAIN_OPTION_DEFAULTS",
    "RECORD_NAME",
    "RunOutputs",
    "data_fingerprint",
    "preflight_pretrain",
    "pretrain_run_settings",
    "rollback_open_runs",
]
