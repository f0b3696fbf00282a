"""Region discrimination and assignment entropy of unsupervised local discrimination (Chen et al.), 2D and 3D.

The clustering branch softly assigns every pixel ``p`` of image ``n`` to ``K`` clusters (``a_nk(p) >= 0``,
summing to 1 over ``k``); the embedding branch gives it a unit vector ``e_n(p)``. With ``P`` pixels per image:

- **region embedding** of cluster ``k`` in image ``n``: ``r_nk = normalize( (1/P) sum_p a_nk(p) e_n(p) )``
  (:func:`region_embeddings`), the assignment-weighted mean direction of the region's pixels;
- **cluster centre** ``c_k = normalize( (1/N) sum_n r_nk )`` (:func:`cluster_centres`), over all ``N`` images
  (all views) of the batch;
- **region discrimination** (``granularity="region"``, the paper's ``L_rd``): each region is pulled to its own
  centre and pushed from the other centres, a ``K``-way softmax with temperature ``tau`` (0.2)::

      l_nk = -log( e^{<r_nk, c_k>/tau} / sum_j e^{<r_nk, c_j>/tau} )

  averaged over images and clusters. It makes the clusters of different images agree (same structure, same
  cluster) and pushes the embeddings of different structures apart;
- ``granularity="pixel"`` applies the same softmax to every pixel, weighted by its assignment: each pixel is
  pulled to the centres of the clusters it belongs to and pushed from the others,
  ``l_n(p) = -sum_k a_nk(p) log softmax_j(<e_n(p), c_j>/tau)_k``, averaged over pixels. This is the per-pixel
  reading of the same idea (not what the authors' code computes), offered as an option;
- **assignment entropy** (``L_ent``): the mean binary entropy (in bits) of every assignment value,
  ``h(a) = -a log2 a - (1 - a) log2(1 - a)``, minimised so that each pixel's assignment becomes confident
  (each ``a_nk(p)`` near 0 or 1, i.e. one-hot); it does *not* balance cluster sizes.

Memory is linear in pixels: the largest intermediates are ``(N, K, P)`` (the assignments themselves, or the
per-pixel logits of ``granularity="pixel"``); pixels are only ever compared with the ``K`` centres.

These follow the region-discrimination section of the paper and the authors' released code (region
embeddings from the l1-normalised assignment map, centres as the normalised batch mean, temperature 0.2,
binary entropy in bits, loss weights 10 and 0.1).

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
    - [1] Unsupervised learning of local discriminative representation for medical images, Chen et al.,
      IPMI 2021, https://arxiv.org/abs/2012.09333
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai_cluster.losses._nt_xent import check_reduction, check_temperature, reduce_losses
from monai_cluster.utils.validation import check_choice, check_finite, check_spatial_tensor, check_tensor
from monai_cluster.utils.precision import float32_forward

__all__ = [
    "AssignmentEntropyLoss",
    "GRANULARITIES",
    "RegionDiscriminationLoss",
    "assignment_entropy_loss",
    "check_assignment",
    "cluster_centres",
    "region_discrimination_loss",
    "region_embeddings",
]

GRANULARITIES = ("region", "pixel")
"""What region discrimination compares with the cluster centres: region embeddings (paper) or single pixels."""


def check_assignment(assignment: object, name: str = "assignment") -> torch.Tensor:
    """Check a soft assignment map ``(N, K, *spatial)``: floating, finite, ``K >= 2``, values in ``[0, 1]``."""
    a = check_tensor(check_spatial_tensor(assignment, name), name, floating=True)
    if a.shape[1] < 2:
        raise ValueError(f"{name} must have K >= 2 clusters in dim 1, got shape {tuple(a.shape)}.")
    check_finite(a, name)
    low, high = float(a.detach().min()), float(a.detach().max())
    if low < 0 or high > 1:
        raise ValueError(f"{name} must hold probabilities in [0, 1], got values in [{low:.4g}, {high:.4g}].")
    return a


def _check_pair(embedding: object, assignment: object) -> tuple[torch.Tensor, torch.Tensor]:
    e = check_tensor(check_spatial_tensor(embedding, "embedding"), "embedding", floating=True)
    check_finite(e, "embedding")
    a = check_assignment(assignment)
    if e.shape[0] != a.shape[0] or e.shape[2:] != a.shape[2:]:
        raise ValueError(
            f"embedding (N, D, *spatial) and assignment (N, K, *spatial) must share N and the spatial size, got "
            f"{tuple(e.shape)} and {tuple(a.shape)}."
        )
    return e, a


def region_embeddings(embedding: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """Unit region embeddings ``r_nk`` ``(N, K, D)``: assignment-weighted mean embedding of each cluster per image.

    Args:
        embedding: ``(N, D, *spatial)`` per-pixel embeddings.
        assignment: ``(N, K, *spatial)`` soft assignments.
    """
    return _regions(*_check_pair(embedding, assignment))


def _regions(e: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    pixels = math.prod(e.shape[2:])
    weighted = torch.bmm(a.flatten(2), e.flatten(2).transpose(1, 2)) / pixels  # (N, K, D), linear in pixels
    return F.normalize(weighted, dim=2)


def cluster_centres(regions: torch.Tensor) -> torch.Tensor:
    """Unit cluster centres ``c_k`` ``(K, D)``: the normalised mean over images of region embeddings ``(N, K, D)``."""
    r = check_tensor(regions, "regions", ndim=3, floating=True)
    return F.normalize(r.mean(dim=0), dim=1)


@float32_forward
def region_discrimination_loss(
    embedding: torch.Tensor,
    assignment: torch.Tensor,
    temperature: float = 0.2,
    granularity: str = "region",
    reduction: str = "mean",
) -> torch.Tensor:
    """Region-to-centre discrimination; see the module docstring for both granularities.

    Args:
        embedding: ``(N, D, *spatial)`` per-pixel embeddings of all images (all views) of the batch.
        assignment: ``(N, K, *spatial)`` their soft cluster assignments.
        temperature: softmax temperature ``> 0`` (0.2 in the paper).
        granularity: ``"region"`` (paper) or ``"pixel"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(N, K)`` for regions, ``(N, *spatial)`` for pixels).

    Returns:
        a scalar, or the per-region / per-pixel losses with ``reduction="none"``.
    """
    temperature = check_temperature(temperature)
    granularity = check_choice(granularity, "granularity", GRANULARITIES)
    reduction = check_reduction(reduction)
    e, a = _check_pair(embedding, assignment)
    regions = _regions(e, a)
    centres = F.normalize(regions.mean(dim=0), dim=1)  # (K, D), as cluster_centres
    if granularity == "region":
        logits = torch.matmul(regions, centres.T) / temperature  # (N, K, K)
        per_item = torch.logsumexp(logits, dim=2) - logits.diagonal(dim1=1, dim2=2)
    else:
        pixels = F.normalize(e.flatten(2), dim=1)  # (N, D, P)
        logits = torch.matmul(centres, pixels) / temperature  # (N, K, P), linear in pixels
        per_pixel = -(a.flatten(2) * torch.log_softmax(logits, dim=1)).sum(dim=1)  # (N, P)
        per_item = per_pixel.view(e.shape[0], *e.shape[2:])
    return reduce_losses(per_item, reduction)


@float32_forward
def assignment_entropy_loss(assignment: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary entropy in bits of every assignment value, ``-a log2 a - (1 - a) log2(1 - a)``.

    Values are clamped to ``[eps, 1 - eps]`` (``eps`` the dtype's machine epsilon) so the log stays finite.

    Args:
        assignment: ``(N, K, *spatial)`` soft assignments.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (same shape as ``assignment``).
    """
    reduction = check_reduction(reduction)
    a = check_assignment(assignment)
    eps = torch.finfo(a.dtype).eps
    a = a.clamp(eps, 1 - eps)
    entropy = -(a * torch.log(a) + (1 - a) * torch.log1p(-a)) / math.log(2.0)
    return reduce_losses(entropy, reduction)


class RegionDiscriminationLoss(_Loss):
    """Region discrimination of Chen et al.; see :func:`region_discrimination_loss`.

    Args:
        temperature: softmax temperature ``> 0`` (0.2 in the paper).
        granularity: ``"region"`` (paper: region embeddings against centres) or ``"pixel"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    References:
        - [0] Unsupervised local discrimination for medical images, 2021, https://arxiv.org/abs/2108.09440
    """

    def __init__(self, temperature: float = 0.2, granularity: str = "region", reduction: str = "mean") -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.temperature = check_temperature(temperature)
        self.granularity = check_choice(granularity, "granularity", GRANULARITIES)

    @float32_forward
    def forward(self, embedding: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
        """
        Args:
            embedding: ``(N, D, *spatial)`` per-pixel embeddings.
            assignment: ``(N, K, *spatial)`` soft assignments.
        """
        return region_discrimination_loss(embedding, assignment, self.temperature, self.granularity, self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, granularity={self.granularity!r}, reduction={self.reduction!r}"


class AssignmentEntropyLoss(_Loss):
    """Mean binary entropy (bits) of soft assignments, minimised for confident clusters.

    See :func:`assignment_entropy_loss`.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    References:
        - [0] Unsupervised local discrimination for medical images, 2021, https://arxiv.org/abs/2108.09440
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction=check_reduction(reduction))

    @float32_forward
    def forward(self, assignment: torch.Tensor) -> torch.Tensor:
        """
        Args:
            assignment: ``(N, K, *spatial)`` soft assignments.
        """
        return assignment_entropy_loss(assignment, self.reduction)
