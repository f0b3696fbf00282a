"""Shared private helpers of the image-clustering training procedures (:mod:`.dvc_trainer`, :mod:`.cae_trainer`).

Data is a tensor/array ``(N, C, *spatial)`` or a map-style dataset of images, ``(image, ...)`` tuples or dicts
with ``image_key``; :class:`IndexedImages` turns any of them into items ``{"index", "key", "image"[, "image_1"]}``.
The helpers validate the shared arguments, build the shuffled loaders (each rank its share of every epoch under
``torch.distributed``) and run whole-dataset passes; the training itself runs on
:class:`~monai_cluster.engines.step_trainer.StepTrainer` engines (:func:`~monai_cluster.engines.step_trainer.run_stage`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from monai_cluster.clustering.features import extract_features
from monai_cluster.utils.device import resolve_device
from monai_cluster.utils.distributed import world_size
from monai_cluster.utils.seeding import check_seed
from monai_cluster.utils.validation import check_positive_float, check_positive_int

__all__ = ["IndexedImages", "check_run", "log_scalars", "make_loader", "to_image", "whole_dataset"]


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


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    return model


def check_run(
    model: nn.Module, device: object, epochs: object, batch_size: object, lr: object, seed: object, writer: object
) -> tuple[torch.device, int, int, float, int]:
    """Validate the arguments every training function shares; return ``(device, epochs, batch_size, lr, seed)``."""
    if writer is not None and not callable(getattr(writer, "add_scalar", None)):
        raise TypeError(f"writer must have add_scalar (a TensorBoard SummaryWriter), got {type(writer).__name__}.")
    return (
        resolve_device(device, model=_check_model(model)),
        check_positive_int(epochs, "epochs"),
        check_positive_int(batch_size, "batch_size"),
        check_positive_float(lr, "lr"),
        check_seed(seed),
    )


class _Permutation(Sampler):
    """A new random order of ``range(n)`` per pass, drawn from ``generator`` when the pass starts.

    torch's ``RandomSampler`` draws a second permutation lazily when a pass runs out (for a remainder that is empty
    here), i.e. on an engine that reuses the loader at the next epoch's start, after that epoch's checkpoint: a
    resumed run would miss that draw. This sampler makes both draws up front, so the generator's state at an epoch's
    end is the one the next epoch needs, and the orders are those of ``RandomSampler`` (and of the per-epoch loops
    the engines replaced, whose measured results stay reproducible).
    """

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        torch.randperm(self.n, generator=self.generator)  # RandomSampler's draw at the end of a pass
        return iter(order)


def make_loader(
    dataset: Dataset, batch_size: int, generator: torch.Generator | None, drop_last: bool = False
) -> DataLoader:
    """Shuffled batches drawn with ``generator``; in order when it is None (never touching the global RNG,
    from which a DataLoader without a generator draws its base seed).

    Under ``torch.distributed`` (more than one process) a shuffled loader gives each rank its share of one
    permutation (a ``DistributedSampler`` seeded from ``generator``, whose state is the same on every rank; MONAI's
    engines set its epoch, so each epoch draws another permutation), padded so every rank runs the same number of
    batches. The in-order loader (``generator=None``) always covers the whole dataset, so every rank computes the
    same whole-dataset quantities.

    ``drop_last=True`` drops the last batch only when it would hold a single sample (of this rank's share), which
    a contrastive loss cannot use; other incomplete batches are kept.
    """
    shuffle = generator is not None
    if shuffle and world_size() > 1:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=False)
        drop = drop_last and len(sampler) % batch_size == 1
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop, generator=generator)
    drop = drop_last and len(dataset) % batch_size == 1
    if not shuffle:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator(), drop_last=drop)
    sampler = _Permutation(len(dataset), generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, drop_last=drop)


def log_scalars(writer: object, prefix: str, values: Mapping[str, float], step: int) -> None:
    """``writer.add_scalar(f"{prefix}/{key}", value, step)`` for each value (nothing when ``writer`` is None)."""
    if writer is not None:
        for key, value in values.items():
            writer.add_scalar(f"{prefix}/{key}", value, step)


def whole_dataset(
    model: nn.Module, dataset: Dataset, fn: Callable, batch_size: int, device: torch.device
) -> torch.Tensor:
    """``fn(model, x)`` over the whole dataset in order, in eval mode, without gradients (float32, CPU)."""
    loader = make_loader(dataset, batch_size, None)
    return torch.from_numpy(extract_features(model, loader, feature_fn=fn, device=device, progress=False)[0])
