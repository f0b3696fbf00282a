"""Pure functions on numpy features: extraction, k-means, hierarchical pseudo-classes, tables and metrics.

Cluster-guided contrastive pretraining (Zhang et al., 2022) clusters autoencoder features hierarchically
into nested pseudo-classes: :func:`extract_features` -> :func:`hierarchical_pseudo_classes` (or
:func:`compute_pseudo_class_table`) -> :func:`write_pseudo_class_table`; training reads the table back with
:func:`read_pseudo_class_table`.
"""

from .dec import assignment_change_fraction, student_t_assignment, target_distribution
from .distributed import extract_features_sharded, shard_bounds
from .features import default_feature_fn, extract_features
from .hierarchy import (
    EXACT_MAX_SAMPLES,
    default_num_centroids,
    hierarchical_pseudo_classes,
    relabel_nested,
    ward_linkage,
)
from .kmeans import faiss_gpu_count, kmeans, kmeans_assign
from .metrics import cluster_accuracy, clustering_scores, contingency_matrix
from .prototypes import PROTOTYPE_ASSIGNMENTS, prototype_assignment, prototype_means
from .sampling import cluster_spread, reconstruct, sample_around_centroids
from .table import (
    TABLE_MAGIC,
    PseudoClassTable,
    compute_pseudo_class_table,
    read_pseudo_class_table,
    write_pseudo_class_table,
)
from .ward import cut_linkage, weighted_ward_linkage

__all__ = [
    "EXACT_MAX_SAMPLES",
    "PROTOTYPE_ASSIGNMENTS",
    "PseudoClassTable",
    "TABLE_MAGIC",
    "assignment_change_fraction",
    "cluster_accuracy",
    "cluster_spread",
    "clustering_scores",
    "compute_pseudo_class_table",
    "contingency_matrix",
    "cut_linkage",
    "default_feature_fn",
    "default_num_centroids",
    "extract_features",
    "extract_features_sharded",
    "hierarchical_pseudo_classes",
    "faiss_gpu_count",
    "kmeans",
    "kmeans_assign",
    "prototype_assignment",
    "prototype_means",
    "read_pseudo_class_table",
    "reconstruct",
    "relabel_nested",
    "shard_bounds",
    "sample_around_centroids",
    "student_t_assignment",
    "target_distribution",
    "ward_linkage",
    "weighted_ward_linkage",
    "write_pseudo_class_table",
]
