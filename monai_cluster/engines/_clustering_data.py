"""Shared private helpers of the image-clustering training procedures (:mod:`.dvc_trainer`, :mod:`.cae_trainer`).

Data is a tensor/array ``(N, C, *spatial)`` or a map-style dataset of images, ``(image, ...)`` tuples or dicts
with ``image_key``; :class:`IndexedImages` turns any of them into items ``{"index", "key", "image"[, "image_1"]}``.
The run helpers validate the shared arguments, seed torch without leaking into the caller's RNG, run one
optimisation epoch (stopping on a non-finite loss) and log per-epoch means to tqdm and TensorBoard. Under
``torch.distributed`` they train data-parallel: each rank gets its share of every epoch's permutation and the
gradients are averaged over the ranks before each step, so the ranks' models stay identical.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from monai_cluster.clustering.features import extract_features
from monai_cluster.engines._epoch_checkpoint import EpochCheckpoint
from monai_cluster.utils.precision import autocast
from monai_cluster.utils.validation import check_positive_float, check_positive_int

__all__ = [
    "IndexedImages",
    "check_run",
    "check_seed",
    "fit_epochs",
    "log_scalars",
    "make_loader",
    "record_epoch",
    "resolve_device",
    "seeded",
    "to_image",
    "train_epoch",
    "whole_dataset",
    "world_size",
]


def check_seed(seed: object) -> int:
    """Return ``seed`` as an int; ValueError naming ``seed`` unless it is an integer ``>= 0``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
    return int(seed)


def to_image(value: object, name: str) -> torch.Tensor:
    """A float tensor from a tensor, MONAI ``MetaTensor`` or numpy array (TypeError naming ``name`` otherwise)."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or numpy array, got {type(value).__name__}.")
    value = value.as_tensor() if hasattr(value, "as_tensor") else value  # MONAI MetaTensor: drop the metadata
    return value.float() if not value.is_floating_point() else value


class IndexedImages(Dataset):
    """Items ``{"index", "key", "image"}`` (and ``"image_1"`` when a second view is asked for and the dict items
    carry one) of a tensor or a dataset of images / tuples / dicts."""

    def __init__(self, data: object, image_key: str, with_second_view: bool) -> None:
        if isinstance(data, (torch.Tensor, np.ndarray)):
            data = to_image(data, "data")
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
                out["image_1"] = to_image(item["image_1"], f"data[{index}]['image_1']")
            item = item[self.image_key]
        elif isinstance(item, (tuple, list)):
            item = item[0]
        out["image"] = to_image(item, f"data[{index}]")
        return out


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """``device``, or the device of ``model``'s parameters when it is None (CPU for a model without any)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    return torch.device(device)


def check_run(
    model: nn.Module, device: object, epochs: object, batch_size: object, lr: object, seed: object, writer: object
) -> tuple[torch.device, int, int, float, int]:
    """Validate the arguments every training function shares; return ``(device, epochs, batch_size, lr, seed)``."""
    if writer is not None and not callable(getattr(writer, "add_scalar", None)):
        raise TypeError(f"writer must have add_scalar (a TensorBoard SummaryWriter), got {type(writer).__name__}.")
    return (
        resolve_device(model, device),
        check_positive_int(epochs, "epochs"),
        check_positive_int(batch_size, "batch_size"),
        check_positive_float(lr, "lr"),
        check_seed(seed),
    )


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[torch.Generator]:
    """Seed torch inside the block without leaking into the caller's global RNG state; yield a loader generator."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def world_size() -> int:
    """Processes of the ``torch.distributed`` group (1 outside one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def make_loader(
    dataset: Dataset, batch_size: int, generator: torch.Generator | None, drop_last: bool = False
) -> DataLoader:
    """Shuffled batches drawn with ``generator``; in order when it is None (never touching the global RNG,
    from which a DataLoader without a generator draws its base seed).

    Under ``torch.distributed`` (more than one process) a shuffled loader gives each rank its share of one
    permutation (a ``DistributedSampler`` seeded from ``generator``, whose state is the same on every rank), padded
    so every rank runs the same number of batches. The in-order loader (``generator=None``) always covers the
    whole dataset, so every rank computes the same whole-dataset quantities.

    ``drop_last=True`` drops the last batch only when it would hold a single sample (of this rank's share), which
    a contrastive loss cannot use; other incomplete batches are kept.
    """
    shuffle = generator is not None
    if shuffle and world_size() > 1:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=False)
        drop = drop_last and len(sampler) % batch_size == 1
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop)
    generator = generator if shuffle else torch.Generator()
    drop = drop_last and len(dataset) % batch_size == 1
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop)


def _average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Mean of every parameter's gradient over the ranks (the same model on each: data-parallel training)."""
    world = world_size()
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    for grad in grads:
        dist.all_reduce(grad)
        grad.div_(world)


def log_scalars(writer: object, prefix: str, values: Mapping[str, float], step: int) -> None:
    """``writer.add_scalar(f"{prefix}/{key}", value, step)`` for each value (nothing when ``writer`` is None)."""
    if writer is not None:
        for key, value in values.items():
            writer.add_scalar(f"{prefix}/{key}", value, step)


def train_epoch(
    batches: DataLoader,
    step: Callable,
    optimizer: torch.optim.Optimizer,
    keys: tuple[str, ...],
    where: str,
    amp: bool = False,
    device: torch.device | None = None,
) -> dict[str, float]:
    """One optimisation pass; ``step(batch) -> (parts, n)`` gives scalar losses (``parts["loss"]`` is optimised)
    for ``n`` samples. Returns the sample-weighted mean of each key; a non-finite loss raises.

    With ``amp``, ``step`` runs under :func:`monai_cluster.utils.autocast` on ``device`` (bfloat16 on a CPU that has
    it, float16 on CUDA); the losses keep float32 themselves."""
    sums, count = dict.fromkeys(keys, 0.0), 0
    for batch in batches:
        with autocast(amp, torch.device("cpu") if device is None else device):
            parts, n = step(batch)
        if not bool(torch.isfinite(parts["loss"].detach())):
            raise FloatingPointError(f"non-finite loss ({parts['loss'].item()}) {where}; lower lr or check the data.")
        optimizer.zero_grad()
        parts["loss"].backward()
        if world_size() > 1:
            _average_gradients(optimizer)
        optimizer.step()
        for key in keys:
            sums[key] += parts[key].item() * n
        count += n
    return {key: value / count for key, value in sums.items()}


def record_epoch(
    history: dict, means: Mapping[str, float], prefix: str, writer: object, tag: str, epoch: int, bar: object
) -> None:
    """Append ``means`` to ``history`` (keys prefixed), log them under ``tag`` and show the loss on ``bar``."""
    for key, value in means.items():
        history[f"{prefix}{key}"].append(value)
    log_scalars(writer, tag, means, epoch)
    bar.set_postfix(loss=f"{means['loss']:.4g}")


def fit_epochs(
    dataset: Dataset,
    step: Callable,
    optimizer: torch.optim.Optimizer,
    history: dict[str, list[float]],
    keys: tuple[str, ...],
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    writer: object,
    progress: bool,
    name: str,
    tag: str,
    prefix: str = "",
    drop_last: bool = False,
    checkpoint: EpochCheckpoint | None = None,
    model: nn.Module | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    settings: Mapping[str, object] | None = None,
    amp: bool = False,
) -> None:
    """``epochs`` seeded passes of :func:`train_epoch` over shuffled batches of ``dataset``, each epoch's means of
    ``keys`` appended to ``history`` (as ``prefix + key``), logged under ``tag`` and shown on a tqdm bar ``name``.

    With ``checkpoint`` (an :class:`~monai_cluster.engines.EpochCheckpoint`), the state of ``model``, ``optimizer``,
    ``history``, the RNGs and the extra ``generators`` is saved after every epoch as stage ``tag``, and a resumed
    stage continues after its last saved epoch with the same draws (``settings`` must match the checkpoint's).
    ``amp`` runs each step under mixed precision (see :func:`train_epoch`)."""
    if checkpoint is not None and model is None:
        raise ValueError("fit_epochs with a checkpoint needs the model whose state it saves.")
    generators = dict(generators or {})
    settings = {"epochs": epochs, "batch_size": batch_size, "seed": seed, **(settings or {})}
    settings.pop("epochs")  # more epochs on resume is allowed: the stage continues to the new count
    with seeded(seed, device) as generator:
        start = 0
        if checkpoint is not None:
            state = checkpoint.load(tag, model, optimizer, {"loader": generator, **generators}, settings, epochs)
            if state is not None:
                start = state["epoch"]
                for key, values in state["history"].items():
                    history[key] = list(values)
        bar = tqdm(range(start, epochs), desc=name, disable=not progress, initial=start, total=epochs)
        for epoch in bar:
            batches = make_loader(dataset, batch_size, generator, drop_last=drop_last)
            means = train_epoch(batches, step, optimizer, keys, f"in {name} epoch {epoch}", amp=amp, device=device)
            record_epoch(history, means, prefix, writer, tag, epoch, bar)
            if checkpoint is not None:
                checkpoint.save(tag, epoch + 1, model, optimizer, history, {"loader": generator, **generators}, settings)


def whole_dataset(
    model: nn.Module, dataset: Dataset, fn: Callable, batch_size: int, device: torch.device
) -> torch.Tensor:
    """``fn(model, x)`` over the whole dataset in order, in eval mode, without gradients (float32, CPU)."""
    loader = make_loader(dataset, batch_size, None)
    return torch.from_numpy(extract_features(model, loader, feature_fn=fn, device=device, progress=False)[0])
