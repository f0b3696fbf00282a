"""Contrastive autoencoder (Ferrante et al.): training, latent-space clustering, and a plain-autoencoder baseline.

:func:`train_cae` minimises NT-Xent between two views' projections plus the reconstruction of both views;
:func:`cluster_cae` clusters the latent codes by k-means, optionally refined into prototypes as in the authors'
code: soft assignments ``softmax(z . b_k / T)`` weight each prototype's update, labels are their argmax, repeated
until no label changes and the prototypes settle). :func:`train_autoencoder` trains the same network on reconstruction alone (the plain-autoencoder
baseline whose latent space is then clustered the same way).

Data is a tensor/array ``(N, C, *spatial)`` or a map-style dataset of images, ``(image, ...)`` tuples or dicts
with ``image_key`` (``"image_1"`` is used as the second view when present, as
:class:`monai_cluster.transforms.MultiViewd` writes it). Every function takes the device and a seed, shows tqdm
progress over epochs and writes scalars to an optional TensorBoard ``SummaryWriter``.

References:
    - [0] Contrastive autoencoder, 2023, https://arxiv.org/abs/2209.12005
    - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from monai_cluster.clustering.kmeans import kmeans
from monai_cluster.engines._epoch_checkpoint import EpochCheckpoint
from monai_cluster.engines._clustering_data import (
    IndexedImages,
    check_run,
    check_seed,
    fit_epochs,
    resolve_device,
    whole_dataset,
)
from monai_cluster.losses.contrastive_autoencoder import ContrastiveAutoEncoderLoss
from monai_cluster.utils.validation import check_choice, check_positive_float, check_positive_int

__all__ = [
    "CAEClusteringResult",
    "CAETrainingResult",
    "RandomViewAugment",
    "cluster_cae",
    "train_autoencoder",
    "train_cae",
]


@dataclass
class CAEClusteringResult:
    """Clusters of the contrastive autoencoder's latent codes: ``labels`` ``(N,)``, ``centroids`` ``(K, D)``,
    ``latents`` ``(N, D)``, the ``method`` and the prototype ``iterations`` (0 for plain k-means)."""

    labels: np.ndarray
    centroids: np.ndarray
    latents: np.ndarray
    method: str
    iterations: int = 0


@dataclass
class CAETrainingResult:
    """Per-epoch ``history`` (``loss``, ``contrastive``, ``reconstruction``), ``epochs_run`` and, when asked for,
    the ``clustering`` of the trained latent space."""

    history: dict[str, list[float]]
    epochs_run: int
    clustering: CAEClusteringResult | None = None


class RandomViewAugment:
    """Default view generator of the CAE: per-sample intensity scale and shift, Gaussian noise, a random shift
    of up to ``max_shift`` voxels per spatial axis (circular), clamped to the batch's intensity range.

    No flips: they can swap what distinguishes groups (left/right anatomy). Draws come from ``self.generator``.

    Args:
        max_shift: largest translation in voxels (0 disables it).
        noise_std: standard deviation of the additive noise.
        intensity: scale drawn from ``U(1 - intensity, 1 + intensity)``, shift from ``U(-intensity, intensity)``.
        seed: seed of the generator.
    """

    def __init__(self, max_shift: int = 2, noise_std: float = 0.05, intensity: float = 0.1, seed: int = 0) -> None:
        self.max_shift = check_positive_int(max_shift, "max_shift", minimum=0)
        self.noise_std = check_positive_float(noise_std, "noise_std", allow_zero=True)
        self.intensity = check_positive_float(intensity, "intensity", allow_zero=True)
        self.generator = torch.Generator().manual_seed(check_seed(seed))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return an augmented copy of the batch ``x`` ``(B, C, *spatial)``."""
        b, g = x.shape[0], self.generator
        view_shape = (b,) + (1,) * (x.ndim - 1)
        scale = 1 + self.intensity * (2 * torch.rand(view_shape, generator=g) - 1)
        shift = self.intensity * (2 * torch.rand(view_shape, generator=g) - 1)
        out = x * scale.to(x) + shift.to(x) + self.noise_std * torch.randn(x.shape, generator=g).to(x)
        if self.max_shift:
            offsets = torch.randint(-self.max_shift, self.max_shift + 1, (b, x.ndim - 2), generator=g).tolist()
            dims = tuple(range(1, x.ndim - 1))
            out = torch.stack([torch.roll(out[i], shifts=tuple(offsets[i]), dims=dims) for i in range(b)])
        return out.clamp(x.min(), x.max())


def cluster_cae(
    model: nn.Module,
    data: object,
    num_clusters: int,
    method: str = "kmeans",
    temperature: float = 1.0,
    max_iter: int = 50,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    image_key: str = "image",
    assignment: str = "soft",
    tol: float = 1e-6,
) -> CAEClusteringResult:
    """Cluster the latent codes of a trained :class:`ContrastiveAutoEncoder` over the whole dataset.

    ``"kmeans"``: faiss k-means on the codes. ``"prototypes"``: start from the k-means centres and refine them as
    Ferrante et al.'s prototypes. Each round computes the similarities ``s_ik = z_i . b_k / temperature`` and

    - ``assignment="soft"`` (default): moves every prototype to the mean of all codes weighted by the soft
      assignments ``p_ik = softmax_k(s_ik)``, so the temperature sets how far a prototype is pulled by codes
      near other prototypes (small ``T``: towards the hard mean of its own codes; large ``T``: towards the global
      mean, which merges clusters);
    - ``assignment="hard"``: moves every prototype to the plain mean of the codes whose argmax is ``k``. The
      temperature then changes nothing, since the argmax of a softmax does not depend on it.

    Labels are ``argmax_k s_ik``. Rounds stop when no label changes and no prototype moved by more than ``tol``
    (relative to the largest prototype norm), or after ``max_iter`` rounds.

    Raises:
        ValueError: for an unknown ``method`` / ``assignment`` or a non-positive ``temperature`` / ``max_iter``.
    """
    method = check_choice(method, "method", ("kmeans", "prototypes"))
    assignment = check_choice(assignment, "assignment", ("soft", "hard"))
    temperature = check_positive_float(temperature, "temperature")
    tol = check_positive_float(tol, "tol", allow_zero=True)
    max_iter = check_positive_int(max_iter, "max_iter")
    device = resolve_device(model, device)
    dataset = IndexedImages(data, image_key, with_second_view=False)
    model.to(device)
    latents = whole_dataset(
        model, dataset, lambda m, x: m.encode(x), check_positive_int(batch_size, "batch_size"), device
    )
    labels, centroids = kmeans(latents.numpy(), num_clusters, seed=check_seed(seed))
    iterations = 0
    if method == "prototypes":
        labels, prototypes, iterations = _refine_prototypes(
            latents.double(), torch.from_numpy(centroids).double(), temperature, assignment, max_iter, tol
        )
        labels, centroids = labels.numpy(), prototypes.float().numpy()
    return CAEClusteringResult(labels.astype(np.int64), centroids, latents.numpy(), method, iterations)


def _refine_prototypes(
    z: torch.Tensor, prototypes: torch.Tensor, temperature: float, assignment: str, max_iter: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prototype rounds of :func:`cluster_cae` on codes ``z`` ``(N, D)`` from ``prototypes`` ``(K, D)``."""
    labels = (z @ prototypes.t()).argmax(1)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        if assignment == "soft":
            weights = torch.softmax(z @ prototypes.t() / temperature, dim=1)  # (N, K)
            mass = weights.sum(0)
            new_prototypes = torch.where(
                (mass > 0)[:, None], (weights.t() @ z) / mass.clamp_min(1e-300)[:, None], prototypes
            )
        else:
            one_hot = torch.nn.functional.one_hot(labels, prototypes.shape[0]).to(z)
            count = one_hot.sum(0)
            new_prototypes = torch.where(
                (count > 0)[:, None], (one_hot.t() @ z) / count.clamp_min(1)[:, None], prototypes
            )
        moved = float((new_prototypes - prototypes).norm(dim=1).max())
        scale = float(new_prototypes.norm(dim=1).max().clamp_min(1e-12))
        prototypes = new_prototypes
        new_labels = (z @ prototypes.t()).argmax(1)
        changed, labels = bool((new_labels != labels).any()), new_labels
        if not changed and moved <= tol * scale:
            break
    return labels, prototypes, iterations


def train_cae(
    model: nn.Module,
    data: object,
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    temperature: float = 0.5,
    recon_weight: float = 1.0,
    recon: str = "mse",
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_clusters: int | None = None,
    cluster_method: str = "kmeans",
    device: str | torch.device | None = None,
    seed: int = 0,
    writer: object = None,
    progress: bool = True,
    image_key: str = "image",
    prototype_temperature: float = 1.0,
    checkpoint: EpochCheckpoint | None = None,
) -> CAETrainingResult:
    """Train a :class:`ContrastiveAutoEncoder` with :class:`ContrastiveAutoEncoderLoss` (Adam), then optionally
    cluster its latent space with :func:`cluster_cae`.

    Views: dataset items with ``"image_1"`` give their own second view; otherwise ``augment`` (default
    :class:`RandomViewAugment` seeded with ``seed``) is applied twice to each batch. Batches of one sample are
    dropped (NT-Xent needs two samples), so ``data`` must hold at least two images. With ``num_clusters``, the
    latent space is clustered by ``cluster_method`` (``"kmeans"`` or ``"prototypes"``, the latter with soft
    assignments at ``prototype_temperature``; see :func:`cluster_cae`). With ``checkpoint``
    (:class:`~monai_cluster.engines.EpochCheckpoint`) training is saved after every epoch, the view generator's
    state included, and a rerun resumes exactly where it stopped.
    """
    device, epochs, batch_size, lr, seed = check_run(model, device, epochs, batch_size, lr, seed, writer)
    batch_size = check_positive_int(batch_size, "batch_size", minimum=2)
    cluster_method = check_choice(cluster_method, "cluster_method", ("kmeans", "prototypes"))
    prototype_temperature = check_positive_float(prototype_temperature, "prototype_temperature")
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a callable on a batch tensor, got {type(augment).__name__}.")
    augment = augment if augment is not None else RandomViewAugment(seed=seed)
    criterion = ContrastiveAutoEncoderLoss(temperature=temperature, recon_weight=recon_weight, recon=recon)
    dataset = IndexedImages(data, image_key, with_second_view=True)
    if len(dataset) < 2:
        raise ValueError(f"data must hold at least two images for the contrastive loss, got {len(dataset)}.")
    history: dict[str, list[float]] = {"loss": [], "contrastive": [], "reconstruction": []}
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(batch: tuple) -> tuple[dict[str, torch.Tensor], int]:
        x = batch["image"]
        x1, x2 = (x, batch["image_1"]) if dataset.second_view else (augment(x), augment(x))
        x1, x2 = x1.to(device), x2.to(device)
        return criterion.components(model(x1), model(x2), x1, x2), x1.shape[0]

    fit_epochs(
        dataset, step, optimizer, history, tuple(history), epochs, batch_size, seed, device, writer, progress,
        "CAE training", "cae", drop_last=True, checkpoint=checkpoint, model=model,
        generators={"augment": augment.generator} if isinstance(getattr(augment, "generator", None), torch.Generator)
        else None,
        settings={"lr": lr, "temperature": temperature, "recon_weight": recon_weight, "recon": recon},
    )  # fmt: skip
    clustering = None
    if num_clusters is not None:
        clustering = cluster_cae(
            model, data, num_clusters, method=cluster_method, temperature=prototype_temperature, device=device,
            seed=seed, image_key=image_key,
        )
    return CAETrainingResult(history=history, epochs_run=epochs, clustering=clustering)


def train_autoencoder(
    model: nn.Module,
    data: object,
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    recon: str = "mse",
    num_clusters: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    writer: object = None,
    progress: bool = True,
    image_key: str = "image",
    checkpoint: EpochCheckpoint | None = None,
) -> CAETrainingResult:
    """Train a :class:`ContrastiveAutoEncoder` on reconstruction alone (Adam), then optionally k-means its latent
    space with :func:`cluster_cae`: the plain-autoencoder baseline of the contrastive autoencoder, with the same
    network and optimiser but neither views nor projection head.

    Args:
        recon: ``"mse"`` or ``"l1"``, the mean over channels and voxels of each image (as in
            :class:`ContrastiveAutoEncoderLoss`).
        The others as in :func:`train_cae`.

    Returns:
        per-epoch ``history`` (``loss``, equal to ``reconstruction``) and, with ``num_clusters``, the clustering.
    """
    device, epochs, batch_size, lr, seed = check_run(model, device, epochs, batch_size, lr, seed, writer)
    recon = check_choice(recon, "recon", ("mse", "l1"))
    dataset = IndexedImages(data, image_key, with_second_view=False)
    history: dict[str, list[float]] = {"loss": [], "reconstruction": []}
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(batch: dict) -> tuple[dict[str, torch.Tensor], int]:
        x = batch["image"].to(device)
        diff = model.decode(model.encode(x)) - x
        error = (diff.pow(2) if recon == "mse" else diff.abs()).flatten(1).mean(1).mean()
        return {"loss": error, "reconstruction": error}, x.shape[0]

    fit_epochs(
        dataset, step, optimizer, history, tuple(history), epochs, batch_size, seed, device, writer, progress,
        "autoencoder training", "autoencoder", checkpoint=checkpoint, model=model, settings={"lr": lr, "recon": recon},
    )  # fmt: skip
    clustering = None
    if num_clusters is not None:
        clustering = cluster_cae(model, data, num_clusters, device=device, seed=seed, image_key=image_key)
    return CAETrainingResult(history=history, epochs_run=epochs, clustering=clustering)
