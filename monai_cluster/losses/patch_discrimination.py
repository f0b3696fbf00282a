"""Patch discrimination and mixup consistency of unsupervised local discrimination (Chen et al.), 2D and 3D.

Both terms work on *patch embeddings*: the per-pixel embedding map ``(B, D, *spatial)`` is average-pooled onto
a fixed grid of ``G = prod(grid_size)`` patches per image and each patch vector is re-normalised to unit length
(:func:`pool_patches`). The number of compared vectors is ``B * G`` whatever the image size, so memory is
linear in pixels (the pooling) plus ``O((B G)^2)`` for the similarity matrix, never ``pixels x pixels``.

Both use the invariant-spreading criterion of Ye et al. (:func:`invariant_spreading_loss`): with ``2M`` unit
vectors (``M`` anchors ``u_i`` and their positives ``v_i``), ``s_ij = <x_i, x_j> / temperature`` and the
softmax over all other vectors of the batch ``p_ij = e^{s_ij} / sum_{k != i} e^{s_ik}``, each vector ``i``
with positive ``i+`` contributes::

    l_i = -log p_{i, i+} - sum_{j != i, i+} log(1 - p_ij)

(the positive is recognised as the same instance and every other patch, of the same or another image, is
recognised as a different instance), averaged over all ``2M`` vectors.

- **Patch discrimination** (``L_pd``): ``u`` are the patches of view 1, ``v`` the same patches of view 2 after
  its flip/rotation was undone on the embedding map (:func:`~monai_cluster.transforms.undo_flip_rot90`).
- **Mixup consistency** (``L_mix``): the patches of a mixed image ``x_m = w x_a + (1 - w) x_b`` should embed
  like the normalised mix of the patch embeddings ``normalize(w p_a + (1 - w) p_b)`` (a fixed, detached target);
  ``u`` are the mixed image's patches, ``v`` the targets, and the same criterion applies.

These follow the paper's patch-discrimination section and the authors' released code (pooled 8x8 patch grid,
temperature 0.1, mixing weights uniform in [0.2, 0.8], detached mixup targets). One deliberate difference:
the released criterion detaches the columns of the similarity matrix (gradient only through each anchor's
row); here the gradient flows through both sides, which is the formula as written.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
    - [1] Unsupervised embedding learning via invariant and spreading instance feature, Ye et al., CVPR 2019,
      https://arxiv.org/abs/1904.03436
    - [2] mixup, Zhang et al., ICLR 2018, https://arxiv.org/abs/1710.09412
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep
from torch.nn.modules.loss import _Loss

from monai_cluster.losses._nt_xent import check_reduction, check_temperature, reduce_losses
from monai_cluster.utils.validation import (
    check_finite,
    check_positive_int,
    check_probability,
    check_spatial_tensor,
    check_tensor,
)
from monai_cluster.utils.precision import float32_forward

__all__ = [
    "MixupConsistencyLoss",
    "PatchDiscriminationLoss",
    "invariant_spreading_loss",
    "mixup_consistency_loss",
    "mixup_images",
    "patch_discrimination_loss",
    "pool_patches",
]

_LN2 = math.log(2.0)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, stably in both tails and with finite gradients (x is clamped below 0)."""
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    near = x > -_LN2
    a = torch.log(-torch.expm1(torch.where(near, x, torch.full_like(x, -_LN2))))
    b = torch.log1p(-torch.exp(torch.where(near, torch.full_like(x, -_LN2), x)))
    return torch.where(near, a, b)


@float32_forward
def invariant_spreading_loss(
    u: torch.Tensor, v: torch.Tensor, temperature: float = 0.1, reduction: str = "mean"
) -> torch.Tensor:
    """Invariant-spreading criterion (Ye et al.) of ``M`` positive pairs ``(u_i, v_i)`` against each other.

    See the module docstring for the formula; vectors are L2-normalised first. Computed from log-probabilities
    (log-sum-exp and ``log(1 - e^x)`` from ``expm1``/``log1p``), never from a bare exponential.

    Args:
        u: ``(M, D)`` anchors.
        v: ``(M, D)`` positives, row ``i`` pairs with ``u[i]``.
        temperature: softmax temperature ``> 0`` (0.1 in the paper).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(2M,)``: the ``u`` rows, then the ``v`` rows).

    Returns:
        a scalar, or ``(2M,)`` with ``reduction="none"``.

    Raises:
        TypeError/ValueError: for non-tensors, shapes other than equal ``(M, D)`` with ``M >= 1``, or non-finite
            values (each named).
    """
    temperature = check_temperature(temperature)
    reduction = check_reduction(reduction)
    a = check_tensor(u, "u", ndim=2, floating=True)
    b = check_tensor(v, "v", ndim=2, floating=True)
    if a.shape != b.shape or a.shape[0] < 1:
        raise ValueError(
            f"u and v must have the same (M, D) shape with M >= 1, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    check_finite(a, "u")
    check_finite(b, "v")
    m = a.shape[0]
    x = F.normalize(torch.cat([a, b]), dim=1)  # (2M, D)
    logits = (x / temperature) @ x.T  # (2M, 2M)
    eye = torch.eye(2 * m, dtype=torch.bool, device=x.device)
    logits = logits.masked_fill(eye, torch.finfo(logits.dtype).min / 4)
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # log p_ij, softmax over j != i
    partner = torch.arange(2 * m, device=x.device).roll(m)  # i+ = i + M (mod 2M)
    pos = log_p.gather(1, partner[:, None]).squeeze(1)
    negatives = ~(eye | F.one_hot(partner, 2 * m).bool())
    per_vector = -pos - (_log1mexp(log_p) * negatives).sum(dim=1)
    return reduce_losses(per_vector, reduction)


def _grid(grid_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    if isinstance(grid_size, Sequence) and not isinstance(grid_size, (str, bytes)) and len(grid_size) != spatial_dims:
        raise ValueError(
            f"grid_size must be an int or {spatial_dims} ints for a {spatial_dims}D map, got {grid_size!r}."
        )
    grid = ensure_tuple_rep(grid_size, spatial_dims)
    return tuple(check_positive_int(g, "grid_size") for g in grid)


def pool_patches(embedding: torch.Tensor, grid_size: int | Sequence[int] = 8, name: str = "embedding") -> torch.Tensor:
    """Average-pool a per-pixel embedding map onto a patch grid and re-normalise each patch vector.

    Args:
        embedding: ``(B, D, *spatial)`` (2D or 3D).
        grid_size: patches per spatial axis (an int for all axes, or one per axis); each must not exceed the
            map's size along that axis. Adaptive pooling: patches are equal when the sizes divide evenly.
        name: the input's name in error messages.

    Returns:
        ``(B, D, *grid)`` unit vectors along dim 1.
    """
    e = check_tensor(check_spatial_tensor(embedding, name), name, floating=True)
    spatial = tuple(e.shape[2:])
    grid = _grid(grid_size, len(spatial))
    if any(g > s for g, s in zip(grid, spatial)):
        raise ValueError(f"grid_size {grid} must not exceed the spatial size {spatial} of {name}.")
    pool = F.adaptive_avg_pool2d if len(spatial) == 2 else F.adaptive_avg_pool3d
    return F.normalize(pool(e, grid), dim=1)


def _rows(patches: torch.Tensor) -> torch.Tensor:
    """``(B, D, *grid)`` -> ``(B * G, D)``, image-major."""
    return patches.flatten(2).transpose(1, 2).reshape(-1, patches.shape[1])


@float32_forward
def patch_discrimination_loss(
    embedding: torch.Tensor,
    embedding_1: torch.Tensor,
    temperature: float = 0.1,
    grid_size: int | Sequence[int] = 8,
    reduction: str = "mean",
) -> torch.Tensor:
    """Patch discrimination between two aligned views (the second view's flip/rotation already undone).

    Args:
        embedding: ``(B, D, *spatial)`` per-pixel embeddings of view 1.
        embedding_1: same shape, view 2 on the same voxel grid as ``embedding``.
        temperature: softmax temperature ``> 0``.
        grid_size: patches per axis (8 in the paper).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(2 B G,)``: view-1 patches image-major, then view 2).

    Returns:
        a scalar, or ``(2 B G,)`` with ``reduction="none"``.
    """
    p0 = pool_patches(embedding, grid_size, "embedding")
    p1 = pool_patches(embedding_1, grid_size, "embedding_1")
    if p0.shape != p1.shape or embedding.shape != embedding_1.shape:
        raise ValueError(
            f"embedding and embedding_1 must have the same (B, D, *spatial) shape, got {tuple(embedding.shape)} "
            f"and {tuple(embedding_1.shape)}."
        )
    return invariant_spreading_loss(_rows(p0), _rows(p1), temperature, reduction)


def _check_mix(mix_weight: object, mix_partner: object, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = check_tensor(mix_weight, "mix_weight", ndim=1, floating=True)
    p = check_tensor(mix_partner, "mix_partner", ndim=1)
    if w.shape[0] != batch or p.shape[0] != batch:
        raise ValueError(
            f"mix_weight and mix_partner must have one entry per image (B={batch}), got {tuple(w.shape)} and "
            f"{tuple(p.shape)}."
        )
    if p.is_floating_point() or p.dtype == torch.bool:
        raise TypeError(f"mix_partner must be an integer tensor of batch indices, got dtype {p.dtype}.")
    if batch and (int(p.min()) < 0 or int(p.max()) >= batch):
        raise ValueError(f"mix_partner must hold indices in [0, {batch}), got {p.tolist()}.")
    check_finite(w, "mix_weight")
    if batch and (float(w.min()) < 0 or float(w.max()) > 1):
        raise ValueError(f"mix_weight must lie in [0, 1], got {w.tolist()}.")
    return w, p.long()


@float32_forward
def mixup_consistency_loss(
    mixed_embedding: torch.Tensor,
    embedding: torch.Tensor,
    mix_weight: torch.Tensor,
    mix_partner: torch.Tensor,
    temperature: float = 0.1,
    grid_size: int | Sequence[int] = 8,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mixup consistency: patches of ``w x_b + (1 - w) x_{partner(b)}`` should embed like the mix of the embeddings.

    The target of image ``b`` is ``normalize(w_b p_b + (1 - w_b) p_{partner(b)})`` with ``p`` the pooled patch
    embeddings of the un-mixed images (``embedding``), detached; the criterion is
    :func:`invariant_spreading_loss` between the mixed image's patches and these targets.

    Args:
        mixed_embedding: ``(B, D, *spatial)`` embeddings of the mixed images (from :func:`mixup_images`).
        embedding: ``(B, D, *spatial)`` embeddings of the un-mixed images, in the mixed images' orientation.
        mix_weight: ``(B,)`` weights ``w`` in ``[0, 1]``.
        mix_partner: ``(B,)`` int64 index of the second image of each mix.
        temperature: softmax temperature ``> 0``.
        grid_size: patches per axis.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(2 B G,)``).
    """
    pm = pool_patches(mixed_embedding, grid_size, "mixed_embedding")
    p = pool_patches(embedding, grid_size, "embedding")
    if mixed_embedding.shape != embedding.shape:
        raise ValueError(
            f"mixed_embedding and embedding must have the same (B, D, *spatial) shape, got "
            f"{tuple(mixed_embedding.shape)} and {tuple(embedding.shape)}."
        )
    w, partner = _check_mix(mix_weight, mix_partner, p.shape[0])
    with torch.no_grad():
        w = w.to(p.dtype).view(-1, *([1] * (p.ndim - 1)))
        target = F.normalize(w * p + (1 - w) * p[partner], dim=1)
    return invariant_spreading_loss(_rows(pm), _rows(target), temperature, reduction)


def mixup_images(
    images: torch.Tensor,
    low: float = 0.2,
    high: float = 0.8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix every image of a batch with another one: ``w_b x_b + (1 - w_b) x_{partner(b)}``.

    ``w_b`` is uniform in ``[low, high]`` per image; ``partner(b) = (b + s) mod B`` with one shift ``s`` drawn
    uniformly from ``1 .. B-1``, so no image is mixed with itself.

    Args:
        images: ``(B, C, *spatial)`` with ``B >= 2``.
        low: smallest weight, in ``[0, 1]``.
        high: largest weight, in ``[low, 1]``.
        generator: ``torch.Generator`` for the draws (global RNG when None).

    Returns:
        ``(mixed (B, C, *spatial), mix_weight (B,), mix_partner (B,) int64)`` on ``images``' device.
    """
    x = check_tensor(check_spatial_tensor(images, "images"), "images", floating=True)
    low, high = check_probability(low, "low"), check_probability(high, "high")
    if low > high:
        raise ValueError(f"low must not exceed high, got low={low} and high={high}.")
    batch = x.shape[0]
    if batch < 2:
        raise ValueError(f"images must hold at least 2 images to mix (B >= 2), got shape {tuple(x.shape)}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
    device = generator.device if generator is not None else x.device
    weight = (low + (high - low) * torch.rand(batch, generator=generator, device=device)).to(x.device, x.dtype)
    shift = int(torch.randint(1, batch, (1,), generator=generator, device=device))
    partner = (torch.arange(batch, device=x.device) + shift) % batch
    w = weight.view(-1, *([1] * (x.ndim - 1)))
    return w * x + (1 - w) * x[partner], weight, partner


class PatchDiscriminationLoss(_Loss):
    """Patch discrimination of Chen et al.; see :func:`patch_discrimination_loss`.

    Args:
        temperature: softmax temperature ``> 0`` (0.1 in the paper).
        grid_size: patches per spatial axis (8 in the paper), an int or one per axis.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    References:
        - [0] Unsupervised local discrimination for medical images, 2021, https://arxiv.org/abs/2108.09440
        - [1] Invariant and spreading instance feature, Ye et al., CVPR 2019, https://arxiv.org/abs/1904.03436
    """

    def __init__(
        self, temperature: float = 0.1, grid_size: int | Sequence[int] = 8, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.temperature = check_temperature(temperature)
        self.grid_size = _check_grid_size(grid_size)

    @float32_forward
    def forward(self, embedding: torch.Tensor, embedding_1: torch.Tensor) -> torch.Tensor:
        """
        Args:
            embedding: ``(B, D, *spatial)`` view-1 embeddings.
            embedding_1: same shape, view 2 realigned onto view 1's grid.
        """
        return patch_discrimination_loss(embedding, embedding_1, self.temperature, self.grid_size, self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, grid_size={self.grid_size}, reduction={self.reduction!r}"


class MixupConsistencyLoss(_Loss):
    """Mixup consistency of Chen et al.; see :func:`mixup_consistency_loss` and :func:`mixup_images`.

    Args:
        temperature: softmax temperature ``> 0`` (0.1 in the paper).
        grid_size: patches per spatial axis, an int or one per axis.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    References:
        - [0] Unsupervised local discrimination for medical images, 2021, https://arxiv.org/abs/2108.09440
        - [1] mixup, Zhang et al., ICLR 2018, https://arxiv.org/abs/1710.09412
    """

    def __init__(
        self, temperature: float = 0.1, grid_size: int | Sequence[int] = 8, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        self.temperature = check_temperature(temperature)
        self.grid_size = _check_grid_size(grid_size)

    @float32_forward
    def forward(
        self,
        mixed_embedding: torch.Tensor,
        embedding: torch.Tensor,
        mix_weight: torch.Tensor,
        mix_partner: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            mixed_embedding: ``(B, D, *spatial)`` embeddings of the mixed images.
            embedding: ``(B, D, *spatial)`` embeddings of the un-mixed images.
            mix_weight: ``(B,)`` mixing weights.
            mix_partner: ``(B,)`` partner indices.
        """
        return mixup_consistency_loss(
            mixed_embedding, embedding, mix_weight, mix_partner, self.temperature, self.grid_size, self.reduction
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, grid_size={self.grid_size}, reduction={self.reduction!r}"


def _check_grid_size(grid_size: object) -> int | tuple[int, ...]:
    if isinstance(grid_size, Sequence) and not isinstance(grid_size, (str, bytes)):
        if len(grid_size) not in (2, 3):
            raise ValueError(f"grid_size must be an int or a sequence of 2 or 3 ints, got {grid_size!r}.")
        return tuple(check_positive_int(g, "grid_size") for g in grid_size)
    return check_positive_int(grid_size, "grid_size")
