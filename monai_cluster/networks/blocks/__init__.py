"""Network building blocks: projection heads and cluster-assignment layers, 2D/3D-aware."""

from .cluster_assignment import StudentTClusterAssignment
from .heads import DenseProjectionHead, ProjectionHead
from .shape_prior import ShapePriorDiscriminator

__all__ = [
    "DenseProjectionHead",
    "ProjectionHead",
    "ShapePriorDiscriminator",
    "StudentTClusterAssignment",
]
