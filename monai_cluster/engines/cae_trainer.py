"""Contrastive autoencoder (Ferrante et al.): training, latent-space clustering, and a plain-autoencoder baseline.

:func:`train_cae` minimises NT-Xent between two views' projections plus the reconstruction of both views, then
optionally runs the authors' second phase (``prototype_epochs``): prototypes set from k-means on the latent codes,
the decoder conditioned on each code's soft similarity to them, reconstruction alone, and the prototypes moved to
their assigned codes' mean after every batch. :func:`cluster_cae` clusters the latent codes by k-means, or by
prototypes (the trained ones, or k-means centres refined over the whole dataset: soft assignments
``softmax(z . b_k / T)`` weight each prototype's update, labels are their argmax, repeated until no label changes
and the prototypes settle). :func:`train_autoencoder` trains an autoencoder on reconstruction alone: the same
network as the plain-autoencoder baseline, and the pretraining bundle's stage-1 feature autoencoder.

Every training runs on a MONAI/Ignite engine (:class:`~monai_cluster.engines.step_trainer.StepTrainer`), with
``handlers`` attached to each stage's engine and the one checkpoint handler for an exact resume inside every stage;
under ``torch.distributed`` the step's forward passes run through ``DistributedDataParallel``.

Data is a tensor/array ``(N, C, *spatial)`` or a map-style dataset of images, ``(image, ...)`` tuples or dicts
with ``image_key`` (``"image_1"`` is used as the second view when present, as
:class:`monai_cluster.transforms.MultiViewd` writes it). Every function takes the device and a seed, shows tqdm
progress over epochs and writes scalars to an optional TensorBoard ``SummaryWriter``.

References:
    - [0] Contrastive autoencoder, 2023, https://arxiv.org/abs/2209.12005
    - [1] SimCLR, 2020, https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from monai_cluster.clustering.kmeans import kmeans
from monai_cluster.clustering.prototypes import PROTOTYPE_ASSIGNMENTS, prototype_means
from monai_cluster.engines._clustering_data import IndexedImages, check_run, whole_dataset
from monai_cluster.engines._epoch_checkpoint import EpochCheckpoint
from monai_cluster.engines.step_trainer import StepForward, run_stage
from monai_cluster.losses.contrastive_autoencoder import ContrastiveAutoEncoderLoss, mean_reconstruction_error
from monai_cluster.utils.device import resolve_device
from monai_cluster.utils.distributed import broadcast_buffers, data_parallel
from monai_cluster.utils.precision import amp_mode
from monai_cluster.utils.seeding import check_seed
from monai_cluster.utils.validation import check_choice, check_positive_float, check_positive_int, check_probability

__all__ = [
    "CAEClusteringResult",
    "CAETrainingResult",
    "FlipRot90ViewAugment",
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
    """Per-epoch ``history`` (``loss``, ``contrastive``, ``reconstruction``; with the prototype phase also
    ``prototype_loss`` and ``prototype_reconstruction``), ``epochs_run`` (first phase) and, when asked for, the
    ``clustering`` of the trained latent space."""

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


class FlipRot90ViewAugment(RandomViewAugment):
    """:class:`RandomViewAugment`'s views, then per sample a random flip of the last axis and 0-3 rotations by 90
    degrees in the last two axes: views for images without an orientation, such as dermoscopy (not for anatomy,
    where left and right differ). The flips and rotations draw from ``self.generator`` too, so a checkpoint of it
    resumes them.

    Raises:
        ValueError: for a batch whose last two axes differ (a rotation by 90 degrees would change its shape).
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return an augmented, flipped and rotated copy of the batch ``x`` ``(B, C, *spatial)``."""
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"flips and 90-degree rotations need square images, got the batch shape {tuple(x.shape)}.")
        out = super().__call__(x)
        draws = torch.randint(0, 4, (x.shape[0], 2), generator=self.generator).tolist()
        views = [torch.rot90(img.flip(-1) if flip % 2 else img, k, dims=(-2, -1)) for img, (flip, k) in zip(out, draws)]
        return torch.stack(views)


def cluster_cae(
    model: nn.Module,
    data: object,
    num_clusters: int,
    method: str = "kmeans",
    temperature: float = 1.0,
    max_iter: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    image_key: str = "image",
    assignment: str = "soft",
    tol: float = 1e-6,
) -> CAEClusteringResult:
    """Cluster the latent codes of a trained :class:`ContrastiveAutoEncoder` over the whole dataset.

    ``"kmeans"``: faiss k-means on the codes. ``"prototypes"``: Ferrante et al.'s prototypes. They start from the
    model's own prototypes when it has trained ones (a model built with ``num_prototypes=num_clusters`` after
    :func:`train_cae`'s prototype phase), else from the k-means centres. Each round computes the similarities
    ``s_ik = z_i . b_k / temperature`` and

    - ``assignment="soft"`` (default): moves every prototype to the mean of all codes weighted by the soft
      assignments ``p_ik = softmax_k(s_ik)``, so the temperature sets how far a prototype is pulled by codes
      near other prototypes (small ``T``: towards the hard mean of its own codes; large ``T``: towards the global
      mean, which merges clusters);
    - ``assignment="hard"``: moves every prototype to the plain mean of the codes whose argmax is ``k``. The
      temperature then changes nothing, since the argmax of a softmax does not depend on it.

    Labels are ``argmax_k s_ik``. Rounds stop when no label changes and no prototype moved by more than ``tol``
    (relative to the largest prototype norm), or after ``max_iter`` rounds; ``max_iter=0`` takes the argmax of
    the starting prototypes as they are, the authors' reading of their trained prototypes and the default
    (``None``) for trained ones; ``None`` means 50 rounds from k-means centres.

    Raises:
        ValueError: for an unknown ``method`` / ``assignment``, a non-positive ``temperature`` or a negative
            ``max_iter``.
    """
    method = check_choice(method, "method", ("kmeans", "prototypes"))
    assignment = check_choice(assignment, "assignment", PROTOTYPE_ASSIGNMENTS)
    temperature = check_positive_float(temperature, "temperature")
    tol = check_positive_float(tol, "tol", allow_zero=True)
    from_model = method == "prototypes" and trained_prototypes(model, num_clusters)
    max_iter = (0 if from_model else 50) if max_iter is None else check_positive_int(max_iter, "max_iter", minimum=0)
    device = resolve_device(device, model=model)
    dataset = IndexedImages(data, image_key, with_second_view=False)
    model.to(device)
    latents = whole_dataset(
        model, dataset, lambda m, x: m.encode(x), check_positive_int(batch_size, "batch_size"), device
    )
    iterations = 0
    if from_model:
        start = model.prototypes.detach().cpu().double()
    else:
        labels, centroids = kmeans(latents.numpy(), num_clusters, seed=check_seed(seed))
        start = torch.from_numpy(centroids).double()
    if method == "prototypes":
        labels, prototypes, iterations = _refine_prototypes(
            latents.double(), start, temperature, assignment, max_iter, tol
        )
        labels, centroids = labels.numpy(), prototypes.float().numpy()
    return CAEClusteringResult(labels.astype(np.int64), centroids, latents.numpy(), method, iterations)


def trained_prototypes(model: nn.Module, num_clusters: int | None = None) -> bool:
    """Whether ``model`` carries prototypes set by training (and ``num_clusters`` of them, when given)."""
    k = getattr(model, "num_prototypes", None)
    return k is not None and bool(model.prototypes_set) and (num_clusters is None or k == num_clusters)


def _refine_prototypes(
    z: torch.Tensor, prototypes: torch.Tensor, temperature: float, assignment: str, max_iter: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prototype rounds of :func:`cluster_cae` on codes ``z`` ``(N, D)`` from ``prototypes`` ``(K, D)``."""
    labels = (z @ prototypes.t()).argmax(1)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        new_prototypes = prototype_means(z, prototypes, temperature, assignment)
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
    prototype_epochs: int = 0,
    prototype_assignment: str = "soft",
    prototype_momentum: float = 0.0,
    amp: bool = False,
    handlers: Sequence | None = None,
) -> CAETrainingResult:
    """Train a :class:`ContrastiveAutoEncoder` with :class:`ContrastiveAutoEncoderLoss` (Adam), optionally run the
    prototype phase, then optionally cluster its latent space with :func:`cluster_cae`.

    **Phase 1** (``epochs``): NT-Xent between two views' projections + ``recon_weight`` * reconstruction. A model
    built with ``num_prototypes`` decodes with uniform assignments here (its prototypes are cleared first).

    **Phase 2** (``prototype_epochs > 0``, Ferrante et al.'s second phase; needs ``num_prototypes``): the
    prototypes are set to the k-means centres of every image's latent code, then each batch trains on the
    reconstruction of both views alone (mean error), with the decoder conditioned on the codes' soft assignments
    ``softmax(z . B^T / T)`` (``T`` the model's ``prototype_temperature``), and after it the prototypes move to
    the mean of view 1's codes, weighted by ``prototype_assignment`` (``"soft"``: the soft assignments;
    ``"hard"``: the argmax, the authors' update) and kept by ``prototype_momentum`` (0: replaced, as the authors
    do). Its own Adam optimiser starts afresh.

    Views: dataset items with ``"image_1"`` give their own second view; otherwise ``augment`` (default
    :class:`RandomViewAugment` seeded with ``seed``) is applied twice to each batch. Batches of one sample are
    dropped (NT-Xent needs two samples), so ``data`` must hold at least two images. With ``num_clusters``, the
    latent space is clustered by ``cluster_method``: ``"kmeans"``, or ``"prototypes"`` (after phase 2 the argmax
    of the trained prototypes, which then must number ``num_clusters``; without it k-means centres refined with
    soft assignments at ``prototype_temperature``; see :func:`cluster_cae`). With ``checkpoint``
    (:class:`~monai_cluster.engines.EpochCheckpoint`) each phase is saved after every epoch, the view generator's
    state included, and a rerun resumes exactly where it stopped. ``amp`` trains both phases under mixed precision
    (:func:`monai_cluster.utils.autocast`: bfloat16 on a CPU that has it, on CUDA bfloat16 where the GPU has it,
    else float16; losses in float32).
    ``handlers`` (ignite handlers) are attached to the engine of each phase.

    Raises:
        ValueError/TypeError: for bad settings (each names the argument), ``prototype_epochs`` without
            ``num_prototypes``, or prototype clustering after phase 2 with another number of clusters.
    """
    device, epochs, batch_size, lr, seed = check_run(model, device, epochs, batch_size, lr, seed, writer)
    amp_mode(amp, device)
    batch_size = check_positive_int(batch_size, "batch_size", minimum=2)
    cluster_method = check_choice(cluster_method, "cluster_method", ("kmeans", "prototypes"))
    prototype_temperature = check_positive_float(prototype_temperature, "prototype_temperature")
    prototype_epochs = check_positive_int(prototype_epochs, "prototype_epochs", minimum=0)
    prototype_assignment = check_choice(prototype_assignment, "prototype_assignment", PROTOTYPE_ASSIGNMENTS)
    prototype_momentum = check_probability(prototype_momentum, "prototype_momentum")
    if prototype_momentum >= 1.0:
        raise ValueError(
            f"prototype_momentum must lie in [0, 1) (1 never moves the prototypes), got {prototype_momentum}."
        )
    conditioned = getattr(model, "num_prototypes", None)
    if prototype_epochs and conditioned is None:
        raise ValueError(
            f"prototype_epochs={prototype_epochs} needs a ContrastiveAutoEncoder built with num_prototypes (the "
            "prototype-conditioned decoder); build it with num_prototypes=<clusters> or set prototype_epochs=0."
        )
    if prototype_epochs and num_clusters is not None and cluster_method == "prototypes" and conditioned != num_clusters:
        raise ValueError(
            f"cluster_method='prototypes' after the prototype phase reads the model's {conditioned} prototypes, "
            f"but num_clusters={num_clusters}; build the model with num_prototypes={num_clusters}."
        )
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a callable on a batch tensor, got {type(augment).__name__}.")
    augment = augment if augment is not None else RandomViewAugment(seed=seed)
    criterion = ContrastiveAutoEncoderLoss(temperature=temperature, recon_weight=recon_weight, recon=recon)
    dataset = IndexedImages(data, image_key, with_second_view=True)
    if len(dataset) < 2:
        raise ValueError(f"data must hold at least two images for the contrastive loss, got {len(dataset)}.")
    history: dict[str, list[float]] = {"loss": [], "contrastive": [], "reconstruction": []}
    model.to(device).train()
    if conditioned is not None:
        model.clear_prototypes()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = getattr(augment, "generator", None)
    random_objects = [generator] if isinstance(generator, torch.Generator) else []
    two_views = data_parallel(StepForward(model, _both_views), device)

    def views(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch["image"]
        x1, x2 = (x, batch["image_1"]) if dataset.second_view else (augment(x), augment(x))
        return x1.to(device), x2.to(device)

    def step(batch: dict) -> tuple[dict[str, torch.Tensor], int]:
        x1, x2 = views(batch)
        return criterion.components(*two_views(x1, x2), x1, x2), x1.shape[0]

    common = {"writer": writer, "progress": progress, "drop_last": True, "checkpoint": checkpoint,
              "random_objects": random_objects, "amp": amp, "handlers": handlers}  # fmt: skip
    run_stage(
        dataset, step, model, optimizer, history, tuple(history), epochs, batch_size, seed, device, "CAE training",
        "cae", settings={"lr": lr, "temperature": temperature, "recon_weight": recon_weight, "recon": recon},
        **common,
    )  # fmt: skip
    if prototype_epochs:
        if checkpoint is not None and checkpoint.resumed_epochs.get("cae", 0) < epochs:
            checkpoint.discard("cae/prototypes")  # phase 1 trained on in this call: a saved phase 2 is stale
        _prototype_phase(
            model, dataset, views, two_views, prototype_epochs, batch_size, lr, recon, prototype_assignment,
            prototype_momentum, seed, device, history, common,
        )  # fmt: skip
    clustering = None
    if num_clusters is not None:
        clustering = cluster_cae(
            model, data, num_clusters, method=cluster_method, temperature=prototype_temperature, device=device,
            seed=seed, image_key=image_key,
        )  # fmt: skip
    return CAETrainingResult(history=history, epochs_run=epochs, clustering=clustering)


def _both_views(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> tuple[dict, dict]:
    return model(x1), model(x2)


def _prototype_phase(
    model: nn.Module,
    dataset: IndexedImages,
    views: Callable[[dict], tuple[torch.Tensor, torch.Tensor]],
    two_views: nn.Module,
    epochs: int,
    batch_size: int,
    lr: float,
    recon: str,
    assignment: str,
    momentum: float,
    seed: int,
    device: torch.device,
    history: dict[str, list[float]],
    common: Mapping[str, object],
) -> None:
    """Phase 2 of :func:`train_cae`: k-means prototypes, then reconstruction with the conditioned decoder and a
    prototype update after every batch (history keys ``prototype_loss``, ``prototype_reconstruction``);
    ``common``: :func:`~monai_cluster.engines.step_trainer.run_stage`'s shared arguments."""
    broadcast_buffers(model)  # every rank clusters the same codes
    latents = whole_dataset(model, dataset, lambda m, x: m.encode(x), batch_size, device)
    model.set_prototypes(kmeans(latents.numpy(), model.num_prototypes, seed=seed)[1])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history.update({"prototype_loss": [], "prototype_reconstruction": []})

    def step(batch: dict) -> tuple[dict[str, torch.Tensor], int]:
        x1, x2 = views(batch)
        out1, out2 = two_views(x1, x2)
        error = torch.cat(
            [
                mean_reconstruction_error(out1["reconstruction"], x1, recon, "x1"),
                mean_reconstruction_error(out2["reconstruction"], x2, recon, "x2"),
            ]
        ).mean()
        # the assignments above keep the prototypes they were computed with for the backward pass
        model.update_prototypes(out1["latent"], assignment=assignment, momentum=momentum)
        return {"loss": error, "reconstruction": error}, x1.shape[0]

    run_stage(
        dataset, step, model, optimizer, history, ("loss", "reconstruction"), epochs, batch_size, seed + 1, device,
        "CAE prototype phase", "cae/prototypes", prefix="prototype_",
        settings={"lr": lr, "recon": recon, "assignment": assignment, "momentum": momentum,
                  "prototype_temperature": model.prototype_temperature}, **common,
    )  # fmt: skip


def _reconstruction(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model.decode(model.encode(x))`` for a network with those methods (:class:`ContrastiveAutoEncoder`: no
    projection head, no prototypes), else ``model(x)`` (a tensor, or a dict's ``"reconstruction"``)."""
    if callable(getattr(type(model), "encode", None)) and callable(getattr(type(model), "decode", None)):
        return model.decode(model.encode(x))
    out = model(x)
    return out["reconstruction"] if isinstance(out, Mapping) else out


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
    amp: bool = False,
    transform: Callable | None = None,
    handlers: Sequence | None = None,
) -> CAETrainingResult:
    """Train an autoencoder on reconstruction alone (Adam), then optionally k-means its latent space with
    :func:`cluster_cae`: the plain-autoencoder baseline of the contrastive autoencoder (the same network and
    optimiser, neither views nor projection head), and stage 1 of the pretraining bundle (a
    :class:`~monai_cluster.networks.FeatureAutoEncoder`, see :func:`monai_cluster.workflows.run_autoencoder_stage`).

    Args:
        model: a :class:`ContrastiveAutoEncoder` (reconstruction ``decode(encode(x))``) or any network whose
            ``forward(x)`` returns the reconstruction (a tensor, or a dict with ``"reconstruction"``).
        data: as :func:`train_cae`'s; with ``transform``, a sequence of sample dicts (e.g. ``{"image": path}``)
            loaded through ``monai.data.CacheDataset`` with that chain (a MONAI ``Randomizable`` chain is seeded with
            ``seed``; its random transforms draw from their own states, which the checkpoint saves).
        recon: ``"mse"`` or ``"l1"``, the mean over channels and voxels of each image (as in
            :class:`ContrastiveAutoEncoderLoss`).
        num_clusters: cluster the latent codes (needs a model with ``encode``).
        transform: loading chain of ``data``'s dicts, or ``None`` for tensors and ready datasets.
        handlers: ignite handlers attached to the training engine.
        The others as in :func:`train_cae`.

    Returns:
        per-epoch ``history`` (``loss``, equal to ``reconstruction``) and, with ``num_clusters``, the clustering.
    """
    device, epochs, batch_size, lr, seed = check_run(model, device, epochs, batch_size, lr, seed, writer)
    amp_mode(amp, device)
    recon = check_choice(recon, "recon", ("mse", "l1"))
    if num_clusters is not None and not callable(getattr(model, "encode", None)):
        raise ValueError(f"num_clusters needs a model with encode(x) for its latent codes, got {type(model).__name__}.")
    random_objects = []
    if transform is not None:
        from monai.data import CacheDataset
        from monai.transforms import Randomizable

        if not callable(transform):
            raise TypeError(f"transform must be a callable on a sample dict, got {type(transform).__name__}.")
        if isinstance(transform, Randomizable):
            transform.set_random_state(seed=seed)  # the augmentation's draws follow ``seed`` too
        data = CacheDataset(list(data), transform=transform, cache_rate=1.0, num_workers=0, progress=False)
        random_objects = [transform]
    dataset = IndexedImages(data, image_key, with_second_view=False)
    history: dict[str, list[float]] = {"loss": [], "reconstruction": []}
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    reconstruct = data_parallel(StepForward(model, _reconstruction), device)

    def step(batch: dict) -> tuple[dict[str, torch.Tensor], int]:
        x = batch["image"].to(device)
        error = mean_reconstruction_error(reconstruct(x), x, recon).mean()
        return {"loss": error, "reconstruction": error}, x.shape[0]

    run_stage(
        dataset, step, model, optimizer, history, tuple(history), epochs, batch_size, seed, device,
        "autoencoder training", "autoencoder", writer=writer, progress=progress, checkpoint=checkpoint,
        settings={"lr": lr, "recon": recon}, random_objects=random_objects, amp=amp, handlers=handlers,
    )  # fmt: skip
    clustering = None
    if num_clusters is not None:
        clustering = cluster_cae(model, data, num_clusters, device=device, seed=seed, image_key=image_key)
    return CAETrainingResult(history=history, epochs_run=epochs, clustering=clustering)
