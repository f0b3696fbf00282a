"""Network building blocks: projection heads and cluster-assignment layers, 2D/3D-aware."""

from .cluster_assignment import StudentTClusterAssignment
from .heads import DenseProjectionHead, ProjectionHead

__all__ = [
    "DenseProjectionHead",
    "ProjectionHead",
    "StudentTClusterAssignment",
]
