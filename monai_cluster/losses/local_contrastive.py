"""Local contrastive loss on dense feature maps: the same anatomy in two views is the positive.

Two ways to know which locations correspond:

- the views share their geometry (intensity-only augmentations, Chaitanya et al.): the same pixel index;
- the views differ in geometry (independent random resized crops and flips, as the global loss wants), and each
  view's geometry is known (:class:`~monai_cluster.transforms.RandResizedCropd`): points are drawn in the
  overlap of the two views and both dense maps are sampled there by bilinear interpolation, as in PixPro and
  DenseCL.

References:
    - [0] Global and local contrastive learning, Chaitanya et al., NeurIPS 2020, https://arxiv.org/abs/2006.10511
    - [1] PixPro, Xie et al., CVPR 2021, https://arxiv.org/abs/2011.10043
    - [2] DenseCL, Wang et al., CVPR 2021, https://arxiv.org/abs/2011.09157
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai_cluster.losses._nt_xent import (
    check_reduction,
    check_temperature,
    reduce_losses,
    single_positive_nt_xent,
)
from monai_cluster.transforms.geometry.array import check_geometry, corresponding_points
from monai_cluster.utils.validation import check_finite, check_positive_int, check_spatial_tensor, check_tensor
from monai_cluster.utils.precision import float32_forward

__all__ = ["LocalContrastiveLoss", "local_contrastive_loss"]


def _check_maps(f1: object, f2: object) -> tuple[torch.Tensor, torch.Tensor]:
    a = check_tensor(check_spatial_tensor(f1, "f1"), "f1", floating=True)
    b = check_tensor(check_spatial_tensor(f2, "f2"), "f2", floating=True)
    if a.shape != b.shape:
        raise ValueError(
            f"f1 and f2 must have the same (B, C, *spatial) shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    check_finite(a, "f1")
    check_finite(b, "f2")
    return a, b


def _sample_locations(
    batch: int, available: int, num: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """``(B, num)`` distinct location indices per image, drawn from ``generator`` (global RNG when None)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
    draw_device = generator.device if generator is not None else device
    scores = torch.rand(batch, available, generator=generator, device=draw_device)
    return scores.topk(num, dim=1).indices.to(device)


def _sample_at(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``(B, K, C)`` of ``(B, C, *spatial)`` maps at ``(B, K, D)`` normalised points (axis order)."""
    dims = points.shape[-1]
    grid = points.flip(-1).to(maps.dtype).view(points.shape[0], points.shape[1], *([1] * (dims - 1)), dims)
    sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.flatten(2).transpose(1, 2)


def _nt_xent_per_image(
    u: torch.Tensor, v: torch.Tensor, temperature: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-anchor NT-Xent ``(B, 2K)`` of matched ``(B, K, C)`` unit vectors; negatives within each image.

    With ``valid`` ``(B, K)``, invalid points are neither anchors (loss 0) nor negatives.
    """
    count = u.shape[1]
    views = torch.cat([u, v], dim=1)  # (B, 2K, C)
    logits = torch.bmm(views / temperature, views.transpose(1, 2))  # (B, 2K, 2K)
    region = torch.arange(count, device=u.device).repeat(2)
    excluded = region[:, None] == region[None, :]  # self (and the positive, which is unmasked below)
    positive = torch.cat([region[count:] + count, region[:count]])
    if valid is None:
        return single_positive_nt_xent(logits, excluded, positive, inplace=True)
    both = valid.repeat(1, 2)  # (B, 2K)
    rows = torch.arange(2 * count, device=u.device)
    excluded[rows, positive] = False
    mask = excluded[None] | ~both[:, None, :]
    logits = logits.masked_fill_(mask, torch.finfo(logits.dtype).min / 4)
    per = F.cross_entropy(logits.flatten(0, 1), positive.repeat(u.shape[0]), reduction="none").view_as(both)
    return torch.where(both, per, per.new_zeros(()))


@float32_forward
def local_contrastive_loss(
    f1: torch.Tensor,
    f2: torch.Tensor,
    temperature: float = 0.1,
    num_locations: int = 64,
    region_size: int = 1,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    geometry1: torch.Tensor | None = None,
    geometry2: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local NT-Xent between two dense maps whose locations correspond.

    The maps are average-pooled into non-overlapping regions of ``region_size`` pixels (voxels) per side
    (skipped for 1); ``K = min(num_locations, regions)`` regions are drawn per image without replacement,
    the same ones in both views: the ``K`` highest scores of ``torch.rand(B, regions, generator=generator)``
    (all regions, in order, when there are no more than ``num_locations``).
    With ``u_k`` / ``v_k`` the L2-normalised feature vectors of region ``k`` of one image in view 1 / 2 and
    ``s(x, y) = <x, y> / temperature``, for anchor ``u_k`` (and symmetrically ``v_k``)::

        l(u_k) = -log( e^{s(u_k, v_k)} / (e^{s(u_k, v_k)} + sum_{j != k} (e^{s(u_k, u_j)} + e^{s(u_k, v_j)})) )

    so negatives are the other sampled regions of the same image in both views. Memory is ``O(B K^2)``,
    never quadratic in the number of pixels.

    **Views of different geometry.** With ``geometry1`` and ``geometry2`` (the ``(B, D+1, D+1)`` records of
    :class:`~monai_cluster.transforms.RandResizedCropd`, ``source = A @ view`` in normalised coordinates), the
    maps need not be aligned: ``K = num_locations`` points are drawn per image in the overlap of the two views
    (:func:`~monai_cluster.transforms.corresponding_points`), ``u_k`` and ``v_k`` are the bilinear samples of
    the (pooled) maps at the point's position in each view, and the loss is the same. A point outside the
    overlap (when the views share less than about a quarter of view 1) is neither anchor nor negative; the mean
    is over the valid anchors, and ``reduction="none"`` gives 0 for the others.

    Args:
        f1: ``(B, C, H, W)`` or ``(B, C, H, W, D)`` dense features of view 1.
        f2: same shape, view 2: spatially aligned with ``f1`` (intensity-only augmentations) unless the
            geometries are given.
        temperature: softmax temperature ``> 0``.
        num_locations: regions sampled per image (``K``).
        region_size: side of the pooled regions in pixels; every spatial size must be ``>= region_size``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, 2K)``: view-1 anchors, then view-2 anchors).
        generator: ``torch.Generator`` for the location draw (seed it for reproducibility); global RNG if None.
        geometry1: ``(B, D+1, D+1)`` geometry of view 1, or None for aligned views (then ``geometry2`` too).
        geometry2: ``(B, D+1, D+1)`` geometry of view 2.

    Returns:
        a scalar, or ``(B, 2K)`` with ``reduction="none"``.
    """
    temperature = check_temperature(temperature)
    reduction = check_reduction(reduction)
    num_locations = check_positive_int(num_locations, "num_locations")
    region_size = check_positive_int(region_size, "region_size")
    a, b = _check_maps(f1, f2)
    spatial = tuple(a.shape[2:])
    if min(spatial) < region_size:
        raise ValueError(
            f"region_size={region_size} must not exceed the spatial size of f1, got shape {tuple(a.shape)}."
        )
    if region_size > 1:
        pool = F.avg_pool2d if len(spatial) == 2 else F.avg_pool3d
        a, b = pool(a, region_size, stride=region_size), pool(b, region_size, stride=region_size)
    batch, channels = a.shape[:2]
    if (geometry1 is None) != (geometry2 is None):
        raise ValueError("geometry1 and geometry2 must both be given (views of different geometry) or both None.")
    if geometry1 is not None:
        g1 = check_geometry(geometry1, "geometry1", spatial_dims=len(spatial)).to(a.device)
        g2 = check_geometry(geometry2, "geometry2", spatial_dims=len(spatial)).to(a.device)
        if g1.shape != (batch, len(spatial) + 1, len(spatial) + 1) or g2.shape != g1.shape:
            raise ValueError(
                f"geometry1 and geometry2 must be ({batch}, {len(spatial) + 1}, {len(spatial) + 1}) for f1 of shape "
                f"{tuple(f1.shape)}, got {tuple(g1.shape)} and {tuple(g2.shape)}."
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        p1, p2, valid = corresponding_points(g1, g2, num_locations, generator)
        u = F.normalize(_sample_at(a, p1), dim=2)
        v = F.normalize(_sample_at(b, p2), dim=2)
        per_anchor = _nt_xent_per_image(u, v, temperature, valid)
        if reduction == "mean":
            return per_anchor.sum() / valid.sum().clamp(min=1) / 2
        return reduce_losses(per_anchor, reduction)
    flat1, flat2 = a.flatten(2), b.flatten(2)  # (B, C, M)
    available = flat1.shape[2]
    if available < 2:
        raise ValueError(
            f"f1 must hold at least 2 regions of size {region_size} to contrast, got shape {tuple(f1.shape)}."
        )
    count = min(num_locations, available)
    if count < available:
        index = _sample_locations(batch, available, count, a.device, generator)[:, None, :].expand(-1, channels, -1)
        flat1, flat2 = flat1.gather(2, index), flat2.gather(2, index)
    u = F.normalize(flat1.transpose(1, 2), dim=2)  # (B, K, C)
    v = F.normalize(flat2.transpose(1, 2), dim=2)
    return reduce_losses(_nt_xent_per_image(u, v, temperature), reduction)


class LocalContrastiveLoss(_Loss):
    """Local contrastive loss of Chaitanya et al. on dense maps, 2D or 3D; see :func:`local_contrastive_loss`.

    Negatives lie within each image, so there is nothing to gather across ranks: the mean of the per-rank
    losses equals the loss on the global batch.

    Args:
        temperature: softmax temperature ``> 0``.
        num_locations: regions sampled per image.
        region_size: side (pixels/voxels) of the average-pooled regions; 1 keeps single locations.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, 2K)``).

    References:
        - [0] Global and local contrastive learning, Chaitanya et al., NeurIPS 2020, https://arxiv.org/abs/2006.10511
    """

    def __init__(
        self, temperature: float = 0.1, num_locations: int = 64, region_size: int = 1, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.temperature = check_temperature(temperature)
        self.num_locations = check_positive_int(num_locations, "num_locations")
        self.region_size = check_positive_int(region_size, "region_size")

    @float32_forward
    def forward(
        self,
        f1: torch.Tensor,
        f2: torch.Tensor,
        generator: torch.Generator | None = None,
        geometry1: torch.Tensor | None = None,
        geometry2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            f1: ``(B, C, H, W)`` or ``(B, C, H, W, D)`` dense features of view 1.
            f2: same shape, view 2.
            generator: optional ``torch.Generator`` for the location draw.
            geometry1: ``(B, D+1, D+1)`` geometry of view 1 when the views differ in geometry, else None.
            geometry2: ``(B, D+1, D+1)`` geometry of view 2.

        Returns:
            a scalar, or ``(B, 2K)`` with ``reduction="none"``.
        """
        return local_contrastive_loss(
            f1, f2, self.temperature, self.num_locations, self.region_size, self.reduction, generator,
            geometry1, geometry2,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, num_locations={self.num_locations}, "
            f"region_size={self.region_size}, reduction={self.reduction!r}"
        )
