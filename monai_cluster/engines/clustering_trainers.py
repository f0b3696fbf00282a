"""Training procedures of the two image-clustering models: deep variational clustering and the contrastive autoencoder.

DVC (Soleymani et al.), :func:`train_dvc`: (1) :func:`pretrain_vae` trains the VAE on the negative ELBO;
(2) :func:`init_dvc_centroids` runs k-means over the latent means of the WHOLE dataset and copies the centres into
the Student's-t layer; (3) :func:`train_dvc_clustering` minimises reconstruction + ``beta`` * KL prior + ``gamma`` *
KL(P || Q). P is recomputed over the whole dataset, in eval mode, at the start of epochs 0, u, 2u, ...
(``u = update_interval``); training stops at a refresh (not the first, which only compares with the k-means
labels) where fewer than ``tol`` of the hard labels changed since the previous refresh (DEC's rule), or after
``epochs``.

Contrastive autoencoder (Ferrante et al.): :func:`train_cae` minimises NT-Xent between two views' projections plus
the reconstruction of both views; :func:`cluster_cae` clusters the latent codes by k-means, optionally refined
into prototypes as in the authors' code (assign ``argmax_k softmax(z . b_k / T)``, move each prototype to the mean
of its codes, repeat until no label changes).

Data is a tensor/array ``(N, C, *spatial)`` or a map-style dataset of images, ``(image, ...)`` tuples or dicts
with ``image_key`` (for the CAE, ``"image_1"`` is used as the second view when present, as
:class:`monai_cluster.transforms.MultiViewd` writes it). Every function takes the device and a seed, shows tqdm
progress over epochs and writes scalars to an optional TensorBoard ``SummaryWriter``.

References:
    - [0] DVC, 2021, https://arxiv.org/abs/2109.10777
    - [1] DEC, 2016, https://arxiv.org/abs/1511.06335
    - [2] Contrastive autoencoder, 2023, https://arxiv.org/abs/2209.12005
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from monai_cluster.clustering.dec import assignment_change_fraction, target_distribution
from monai_cluster.clustering.features import extract_features
from monai_cluster.clustering.kmeans import kmeans
from monai_cluster.losses.contrastive_autoencoder import ContrastiveAutoEncoderLoss
from monai_cluster.losses.dec import DECClusteringLoss
from monai_cluster.losses.elbo import ELBOLoss
from monai_cluster.utils.validation import check_choice, check_positive_float, check_positive_int

__all__ = [
    "DVCTrainingResult",
    "CAETrainingResult",
    "CAEClusteringResult",
    "RandomViewAugment",
    "pretrain_vae",
    "init_dvc_centroids",
    "train_dvc_clustering",
    "train_dvc",
    "train_cae",
    "cluster_cae",
]

logger = logging.getLogger(__name__)


@dataclass
class DVCTrainingResult:
    """Outcome of the DVC clustering stage.

    Attributes:
        labels: ``(N,)`` final hard cluster labels (argmax of ``q``).
        centroids: ``(K, D)`` final centroids.
        initial_labels: ``(N,)`` k-means labels the stage started from.
        history: per-epoch ``loss``, ``reconstruction``, ``kl``, ``clustering`` (unweighted KL(P||Q)), and per
            refresh ``refresh_epochs`` and ``changed_fraction``; ``pretrain_*`` lists when :func:`train_dvc` ran
            the pretraining.
        epochs_run: clustering epochs trained.
        stop_reason: ``"tol"`` or ``"max_epochs"``.
        gamma: the weight of KL(P || Q) that was used.
    """

    labels: np.ndarray
    centroids: np.ndarray
    initial_labels: np.ndarray
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    stop_reason: str = "max_epochs"
    gamma: float = 0.0


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
        self.generator = torch.Generator().manual_seed(_check_seed(seed))

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


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
    return int(seed)


def _to_image(value: object, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or numpy array, got {type(value).__name__}.")
    value = value.as_tensor() if hasattr(value, "as_tensor") else value  # MONAI MetaTensor: drop the metadata
    return value.float() if not value.is_floating_point() else value


class _Indexed(Dataset):
    """Items ``{"index", "key", "image"}`` (and ``"image_1"`` when a second view is asked for and the dict items
    carry one) of a tensor or a dataset of images / tuples / dicts."""

    def __init__(self, data: object, image_key: str, with_second_view: bool) -> None:
        if isinstance(data, (torch.Tensor, np.ndarray)):
            data = _to_image(data, "data")
            if data.ndim not in (4, 5):
                raise ValueError(f"data must be (N, C, H, W) or (N, C, H, W, D), got shape {tuple(data.shape)}.")
        elif not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            raise TypeError(f"data must be a tensor, numpy array or map-style dataset, got {type(data).__name__}.")
        if len(data) == 0:
            raise ValueError("data must hold at least one image, got an empty dataset.")
        self.data, self.image_key = data, image_key
        first = data[0]
        self.second_view = with_second_view and isinstance(first, Mapping) and "image_1" in first

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        item, out = self.data[index], {"index": index, "key": str(index)}
        if isinstance(item, Mapping):
            for key in (self.image_key, "image_1") if self.second_view else (self.image_key,):
                if key not in item:
                    raise ValueError(f"data items must hold the key {key!r}, got keys {sorted(item)} at index {index}.")
            if self.second_view:
                out["image_1"] = _to_image(item["image_1"], f"data[{index}]['image_1']")
            item = item[self.image_key]
        elif isinstance(item, (tuple, list)):
            item = item[0]
        out["image"] = _to_image(item, f"data[{index}]")
        return out


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    return torch.device(device)


def _check_run(
    model: nn.Module, device: object, epochs: object, batch_size: object, lr: object, seed: object, writer: object
) -> tuple[torch.device, int, int, float, int]:
    """Validate the arguments every training function shares; return ``(device, epochs, batch_size, lr, seed)``."""
    if writer is not None and not callable(getattr(writer, "add_scalar", None)):
        raise TypeError(f"writer must have add_scalar (a TensorBoard SummaryWriter), got {type(writer).__name__}.")
    return (
        _resolve_device(model, device),
        check_positive_int(epochs, "epochs"),
        check_positive_int(batch_size, "batch_size"),
        check_positive_float(lr, "lr"),
        _check_seed(seed),
    )


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[torch.Generator]:
    """Seed torch inside the block without leaking into the caller's global RNG state; yield a loader generator."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def _loader(
    dataset: Dataset, batch_size: int, generator: torch.Generator | None, drop_last: bool = False
) -> DataLoader:
    """Shuffled batches drawn with ``generator``; in order when it is None (never touching the global RNG,
    from which a DataLoader without a generator draws its base seed)."""
    shuffle = generator is not None
    generator = generator if shuffle else torch.Generator()
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last)


def _log(writer: object, prefix: str, values: Mapping[str, float], step: int) -> None:
    if writer is not None:
        for key, value in values.items():
            writer.add_scalar(f"{prefix}/{key}", value, step)


def _train_epoch(
    batches: DataLoader, step: Callable, optimizer: torch.optim.Optimizer, keys: tuple[str, ...], where: str
) -> dict[str, float]:
    """One optimisation pass; ``step(batch) -> (parts, n)`` gives scalar losses (``parts["loss"]`` is optimised)
    for ``n`` samples. Returns the sample-weighted mean of each key; a non-finite loss raises."""
    sums, count = dict.fromkeys(keys, 0.0), 0
    for batch in batches:
        parts, n = step(batch)
        if not bool(torch.isfinite(parts["loss"].detach())):
            raise FloatingPointError(f"non-finite loss ({parts['loss'].item()}) {where}; lower lr or check the data.")
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        for key in keys:
            sums[key] += parts[key].item() * n
        count += n
    return {key: value / count for key, value in sums.items()}


def _record(history: dict, means: Mapping[str, float], prefix: str, writer: object, tag: str, epoch: int, bar) -> None:
    for key, value in means.items():
        history[f"{prefix}{key}"].append(value)
    _log(writer, tag, means, epoch)
    bar.set_postfix(loss=f"{means['loss']:.4g}")


def _whole_dataset(
    model: nn.Module, dataset: Dataset, fn: Callable, batch_size: int, device: torch.device
) -> torch.Tensor:
    """``fn(model, x)`` over the whole dataset in order, in eval mode, without gradients (float32, CPU)."""
    loader = _loader(dataset, batch_size, None)
    return torch.from_numpy(extract_features(model, loader, feature_fn=fn, device=device, progress=False)[0])


def _dvc_q(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.assign(model.encode(x)[0])


def pretrain_vae(
    model: nn.Module,
    data: object,
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    beta: float = 1.0,
    recon: str = "mse",
    device: str | torch.device | None = None,
    seed: int = 0,
    writer: object = None,
    progress: bool = True,
    image_key: str = "image",
) -> dict[str, list[float]]:
    """DVC step 1: train the VAE of a :class:`DeepVariationalClustering` on the negative ELBO (Adam).

    Returns:
        per-epoch ``pretrain_loss``, ``pretrain_reconstruction``, ``pretrain_kl`` (means over samples).
    """
    device, epochs, batch_size, lr, seed = _check_run(model, device, epochs, batch_size, lr, seed, writer)
    elbo = ELBOLoss(beta=beta, recon=recon)
    dataset = _Indexed(data, image_key, with_second_view=False)
    history: dict[str, list[float]] = {"pretrain_loss": [], "pretrain_reconstruction": [], "pretrain_kl": []}
    model.to(device).train()
    optimizer = torch.optim.Adam(model.vae.parameters(), lr=lr)

    def step(batch: tuple) -> tuple[dict[str, torch.Tensor], int]:
        x = batch["image"].to(device)
        out = model(x)
        return elbo.components(out["reconstruction"], x, out["mu"], out["logvar"]), x.shape[0]

    with _seeded(seed, device) as generator:
        bar = tqdm(range(epochs), desc="DVC pretraining", disable=not progress)
        for epoch in bar:
            batches = _loader(dataset, batch_size, generator)
            means = _train_epoch(batches, step, optimizer, ("loss", "reconstruction", "kl"), f"in VAE epoch {epoch}")
            _record(history, means, "pretrain_", writer, "dvc/pretrain", epoch, bar)
    return history


def init_dvc_centroids(
    model: nn.Module,
    data: object,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    image_key: str = "image",
    **kmeans_kwargs: object,
) -> np.ndarray:
    """DVC step 2: k-means (faiss) over the latent means of the whole dataset; the centres initialise the
    Student's-t layer.

    Returns:
        ``(N,)`` k-means labels.
    """
    device = _resolve_device(model, device)
    dataset = _Indexed(data, image_key, with_second_view=False)
    model.to(device)
    mu = _whole_dataset(
        model, dataset, lambda m, x: m.encode(x)[0], check_positive_int(batch_size, "batch_size"), device
    )
    labels, centroids = kmeans(mu.numpy(), model.num_clusters, seed=_check_seed(seed), **kmeans_kwargs)
    model.assignment.init_centroids(centroids)
    return labels


def train_dvc_clustering(
    model: nn.Module,
    data: object,
    initial_labels: np.ndarray,
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    beta: float = 1.0,
    gamma: float | None = None,
    recon: str = "mse",
    update_interval: int = 1,
    tol: float = 1e-3,
    device: str | torch.device | None = None,
    seed: int = 0,
    writer: object = None,
    progress: bool = True,
    image_key: str = "image",
) -> DVCTrainingResult:
    """DVC step 3: reconstruction + ``beta`` * KL prior + ``gamma`` * KL(P || Q), P refreshed every
    ``update_interval`` epochs over the whole dataset, stopping when fewer than ``tol`` of the labels change.

    Args:
        initial_labels: ``(N,)`` labels from :func:`init_dvc_centroids` (the first refresh is compared to them).
        gamma: weight of KL(P || Q). The ELBO here is a per-sample SUM over voxels, so the weight has to grow
            with the image size to matter; ``None`` uses ``0.1 * C * prod(spatial) / K``, the weight of
            Soleymani et al.'s released code (per-voxel mean reconstruction + 0.1 * kl_div's elementwise mean
            over K clusters) in these units.
        tol: fraction in ``[0, 1]``; 0 never stops early.
        The others as in :func:`pretrain_vae`.
    """
    device, epochs, batch_size, lr, seed = _check_run(model, device, epochs, batch_size, lr, seed, writer)
    update_interval = check_positive_int(update_interval, "update_interval")
    tol = check_positive_float(tol, "tol", allow_zero=True)
    if tol > 1:
        raise ValueError(f"tol must be a fraction in [0, 1], got {tol}.")
    dataset = _Indexed(data, image_key, with_second_view=False)
    if gamma is None:
        gamma = 0.1 * dataset[0]["image"].numel() / model.num_clusters
    gamma = check_positive_float(gamma, "gamma", allow_zero=True)
    previous = np.asarray(initial_labels)
    if previous.shape != (len(dataset),) or not np.issubdtype(previous.dtype, np.integer):
        raise ValueError(
            f"initial_labels must be integer (N,) with N={len(dataset)}, got {previous.dtype} {previous.shape}."
        )
    elbo, dec = ELBOLoss(beta=beta, recon=recon), DECClusteringLoss()
    keys = ("loss", "reconstruction", "kl", "clustering")
    history: dict[str, list[float]] = {key: [] for key in (*keys, "refresh_epochs", "changed_fraction")}
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    stop_reason, epochs_run, labels = "max_epochs", 0, None

    def step(p_all: torch.Tensor, batch: tuple) -> tuple[dict[str, torch.Tensor], int]:
        index, x = batch["index"], batch["image"].to(device)
        out = model(x)
        parts = elbo.components(out["reconstruction"], x, out["mu"], out["logvar"])
        parts["clustering"] = dec(out["q"], p_all[index].to(device))
        parts["loss"] = parts["loss"] + gamma * parts["clustering"]
        return parts, x.shape[0]

    with _seeded(seed, device) as generator:
        bar = tqdm(range(epochs), desc="DVC clustering", disable=not progress)
        for epoch in bar:
            if epoch % update_interval == 0:
                q_all = _whole_dataset(model, dataset, _dvc_q, batch_size, device)
                p_all = target_distribution(q_all)
                labels = q_all.argmax(1).numpy()
                changed = assignment_change_fraction(previous, labels)
                history["refresh_epochs"].append(epoch)
                history["changed_fraction"].append(changed)
                _log(writer, "dvc/cluster", {"changed_fraction": changed}, epoch)
                previous = labels
                if len(history["refresh_epochs"]) > 1 and changed < tol:
                    stop_reason = "tol"
                    logger.info(
                        "DVC stopped at epoch %d: %.4g of the labels changed (< tol %.4g).", epoch, changed, tol
                    )
                    break
            batches = _loader(dataset, batch_size, generator)
            means = _train_epoch(batches, partial(step, p_all), optimizer, keys, f"in DVC clustering epoch {epoch}")
            _record(history, means, "", writer, "dvc/cluster", epoch, bar)
            epochs_run = epoch + 1
    if stop_reason == "max_epochs":
        labels = _whole_dataset(model, dataset, _dvc_q, batch_size, device).argmax(1).numpy()
    return DVCTrainingResult(
        labels=labels.astype(np.int64),
        centroids=model.centroids.detach().cpu().numpy().copy(),
        initial_labels=np.asarray(initial_labels).astype(np.int64),
        history=history,
        epochs_run=epochs_run,
        stop_reason=stop_reason,
        gamma=gamma,
    )


def train_dvc(
    model: nn.Module,
    data: object,
    pretrain_epochs: int = 50,
    cluster_epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    beta: float = 1.0,
    gamma: float | None = None,
    recon: str = "mse",
    update_interval: int = 1,
    tol: float = 1e-3,
    device: str | torch.device | None = None,
    seed: int = 0,
    writer: object = None,
    progress: bool = True,
    image_key: str = "image",
) -> DVCTrainingResult:
    """The whole DVC procedure: :func:`pretrain_vae`, :func:`init_dvc_centroids`, :func:`train_dvc_clustering`.

    ``pretrain_epochs`` and ``cluster_epochs`` are the stages' ``epochs``; the other arguments are passed to the
    stages that take them (``gamma=None`` scales with the image size, see :func:`train_dvc_clustering`). The
    result's history also holds the pretraining curves (``pretrain_loss``, ...).
    """
    common = {"batch_size": batch_size, "device": device, "seed": seed, "image_key": image_key}
    pre = pretrain_vae(
        model, data, pretrain_epochs, lr=lr, beta=beta, recon=recon, writer=writer, progress=progress, **common
    )
    initial = init_dvc_centroids(model, data, **common)
    result = train_dvc_clustering(
        model, data, initial, cluster_epochs, lr=lr, beta=beta, gamma=gamma, recon=recon,
        update_interval=update_interval, tol=tol, writer=writer, progress=progress, **common,
    )  # fmt: skip
    result.history.update(pre)
    return result


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
) -> CAEClusteringResult:
    """Cluster the latent codes of a trained :class:`ContrastiveAutoEncoder` over the whole dataset.

    ``"kmeans"``: faiss k-means on the codes. ``"prototypes"``: start from the k-means centres, assign each code
    to ``argmax_k softmax(z . b_k / temperature)`` and move every prototype to the mean of its codes, until no
    label changes or ``max_iter`` rounds (Ferrante et al.'s prototype update, run on the whole dataset).
    """
    method = check_choice(method, "method", ("kmeans", "prototypes"))
    temperature = check_positive_float(temperature, "temperature")
    max_iter = check_positive_int(max_iter, "max_iter")
    device = _resolve_device(model, device)
    dataset = _Indexed(data, image_key, with_second_view=False)
    model.to(device)
    latents = _whole_dataset(
        model, dataset, lambda m, x: m.encode(x), check_positive_int(batch_size, "batch_size"), device
    )
    labels, centroids = kmeans(latents.numpy(), num_clusters, seed=_check_seed(seed))
    iterations = 0
    if method == "prototypes":
        z, prototypes = latents.double(), torch.from_numpy(centroids).double()
        labels = torch.softmax(z @ prototypes.t() / temperature, dim=1).argmax(1)
        while iterations < max_iter:
            iterations += 1
            for k in range(prototypes.shape[0]):
                if bool((labels == k).any()):
                    prototypes[k] = z[labels == k].mean(0)
            new = torch.softmax(z @ prototypes.t() / temperature, dim=1).argmax(1)
            changed, labels = bool((new != labels).any()), new
            if not changed:
                break
        labels, centroids = labels.numpy(), prototypes.float().numpy()
    return CAEClusteringResult(labels.astype(np.int64), centroids, latents.numpy(), method, iterations)


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
) -> CAETrainingResult:
    """Train a :class:`ContrastiveAutoEncoder` with :class:`ContrastiveAutoEncoderLoss` (Adam), then optionally
    cluster its latent space with :func:`cluster_cae`.

    Views: dataset items with ``"image_1"`` give their own second view; otherwise ``augment`` (default
    :class:`RandomViewAugment` seeded with ``seed``) is applied twice to each batch. Batches of one sample are
    dropped (NT-Xent needs two samples), so ``data`` must hold at least two images.
    """
    device, epochs, batch_size, lr, seed = _check_run(model, device, epochs, batch_size, lr, seed, writer)
    batch_size = check_positive_int(batch_size, "batch_size", minimum=2)
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be a callable on a batch tensor, got {type(augment).__name__}.")
    augment = augment if augment is not None else RandomViewAugment(seed=seed)
    criterion = ContrastiveAutoEncoderLoss(temperature=temperature, recon_weight=recon_weight, recon=recon)
    dataset = _Indexed(data, image_key, with_second_view=True)
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

    with _seeded(seed, device) as generator:
        bar = tqdm(range(epochs), desc="CAE training", disable=not progress)
        for epoch in bar:
            batches = _loader(dataset, batch_size, generator, drop_last=len(dataset) % batch_size == 1)
            means = _train_epoch(batches, step, optimizer, tuple(history), f"in CAE epoch {epoch}")
            _record(history, means, "", writer, "cae", epoch, bar)
    clustering = None
    if num_clusters is not None:
        clustering = cluster_cae(
            model, data, num_clusters, method=cluster_method, device=device, seed=seed, image_key=image_key
        )
    return CAETrainingResult(history=history, epochs_run=epochs, clustering=clustering)
