"""Student's-t cluster assignment layer with learnable centroids (DEC's clustering layer).

References:
    - [0] DEC, 2016, https://arxiv.org/abs/1511.06335
    - [1] DVC, 2021, https://arxiv.org/abs/2109.10777
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from monai_cluster.clustering.dec import student_t_assignment
from monai_cluster.utils.validation import check_finite, check_positive_float, check_positive_int, check_tensor

__all__ = ["StudentTClusterAssignment"]


class StudentTClusterAssignment(nn.Module):
    """Soft assignment of embeddings to ``num_clusters`` learnable centroids under a Student's-t kernel.

    ``q_ij`` is DEC eq. 1 (see :func:`monai_cluster.clustering.dec.student_t_assignment`). The centroids are an
    ``nn.Parameter`` trained together with the encoder by the KL(P || Q) loss; they start from a Xavier-normal
    draw and are meant to be overwritten by :meth:`init_centroids` with k-means centres of the embedded dataset.

    Args:
        num_clusters: number of clusters ``K`` (``>= 2``).
        embed_dim: size ``D`` of the embeddings.
        alpha: degrees of freedom of the kernel (``> 0``; DEC and DVC use 1).

    Shapes:
        input ``(B, D)``, output ``(B, K)`` with rows summing to one.
    """

    def __init__(self, num_clusters: int, embed_dim: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.num_clusters = check_positive_int(num_clusters, "num_clusters", minimum=2)
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.alpha = check_positive_float(alpha, "alpha")
        self.centroids = nn.Parameter(torch.empty(self.num_clusters, self.embed_dim))
        nn.init.xavier_normal_(self.centroids)

    @torch.no_grad()
    def init_centroids(self, centroids: torch.Tensor | np.ndarray) -> None:
        """Overwrite the centroids in place (e.g. with k-means centres), keeping the parameter's dtype and device.

        Args:
            centroids: ``(K, D)`` array or tensor of finite values.

        Raises:
            TypeError: for other types or a non-numeric array.
            ValueError: for a shape other than ``(num_clusters, embed_dim)`` or non-finite values.
        """
        if isinstance(centroids, np.ndarray):
            if not np.issubdtype(centroids.dtype, np.number):
                raise TypeError(f"centroids must be numeric, got dtype {centroids.dtype}.")
            centroids = torch.from_numpy(np.ascontiguousarray(centroids))
        check_tensor(centroids, "centroids", ndim=2)
        expected = (self.num_clusters, self.embed_dim)
        if tuple(centroids.shape) != expected:
            raise ValueError(
                f"centroids must have shape (num_clusters, embed_dim) = {expected}, got {tuple(centroids.shape)}."
            )
        centroids = centroids.to(dtype=self.centroids.dtype, device=self.centroids.device)
        check_finite(centroids, "centroids")
        self.centroids.copy_(centroids)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return ``q`` ``(B, K)`` for embeddings ``z`` ``(B, embed_dim)``."""
        check_tensor(z, "z", ndim=2, floating=True)
        if z.shape[1] != self.embed_dim:
            raise ValueError(f"z must be (B, {self.embed_dim}) for embed_dim={self.embed_dim}, got {tuple(z.shape)}.")
        return student_t_assignment(z, self.centroids.to(z.dtype), self.alpha)

    def extra_repr(self) -> str:
        return f"num_clusters={self.num_clusters}, embed_dim={self.embed_dim}, alpha={self.alpha}"
