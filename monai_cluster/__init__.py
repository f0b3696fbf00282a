"""monai_cluster: learn from unlabeled medical images with MONAI.

Cluster-guided contrastive pretraining, its global + local contrastive baseline, pixel-level local
discrimination and deep (variational) clustering, for 2D images and 3D volumes. Subpackages:
``data``, ``transforms``, ``networks``, ``losses``, ``clustering``, ``engines``, ``handlers``, ``visualize``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
