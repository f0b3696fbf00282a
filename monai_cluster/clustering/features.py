"""Batched feature extraction: one ``(F,)`` vector per image from a trained encoder, keyed by the image key.

The features are what :func:`~monai_cluster.clustering.hierarchy.hierarchical_pseudo_classes` clusters
(step 2 of cluster-guided contrastive pretraining, Zhang et al. 2022); the keys index the pseudo-class table.

References:
    - [0] Cluster-guided contrastive pretraining, 2022, https://arxiv.org/abs/2211.08557
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from monai_cluster.utils.validation import check_positive_int

__all__ = ["extract_features", "default_feature_fn"]

_MAX_LISTED = 10


def default_feature_fn(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model.forward_features(x)`` when the model has it, else ``model(x)``, flattened to ``(B, F)``.

    A dict output (e.g. :class:`~monai_cluster.networks.ContrastivePretrainNet`) gives its ``"pooled"`` entry.

    Raises:
        TypeError: when the output is neither a tensor nor a dict with ``"pooled"``.
    """
    forward_features = getattr(model, "forward_features", None)
    out = forward_features(x) if callable(forward_features) else model(x)
    if isinstance(out, Mapping):
        if "pooled" not in out:
            raise TypeError(
                f"the model returned a dict with keys {sorted(out)} and no 'pooled' entry; pass feature_fn=..."
            )
        out = out["pooled"]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, not a tensor; pass feature_fn=(model, x) -> (B, F).")
    return out.reshape(out.shape[0], -1)


def _as_loader(data: Any, image_key: str, batch_size: int, num_workers: int, transform: Callable | None) -> Any:
    from monai.data import DataLoader, Dataset

    if isinstance(data, TorchDataLoader):
        return data
    if isinstance(data, TorchDataset):
        dataset = data
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if len(data) and not isinstance(data[0], Mapping):
            raise TypeError(f"data must be a list of dicts, got a list of {type(data[0]).__name__}.")
        if transform is None and len(data) and isinstance(data[0].get(image_key), str):
            raise ValueError(
                f"data[0][{image_key!r}] is a file path ({data[0][image_key]!r}); pass transform= that loads it "
                "(e.g. LoadImaged), or a Dataset that does."
            )
        dataset = Dataset(list(data), transform=transform)
    else:
        raise TypeError(
            f"data must be a MONAI/torch Dataset, a DataLoader or a list of dicts, got {type(data).__name__}."
        )
    if len(dataset) == 0:
        raise ValueError("data must hold at least one sample, got an empty dataset.")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def _batch_keys(batch: Any, key_field: str, size: int) -> list[str]:
    keys = batch[key_field]
    if isinstance(keys, str):
        keys = [keys]
    keys = [str(k) for k in keys]
    if len(keys) != size:
        raise ValueError(f"batch[{key_field!r}] holds {len(keys)} keys for a batch of {size} images.")
    return keys


def extract_features(
    model: torch.nn.Module,
    data: Any,
    image_key: str = "image",
    key_field: str = "key",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    feature_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    transform: Callable | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Run ``model`` over ``data`` in eval mode without gradients and collect one feature vector per image.

    The model's (and each submodule's) training mode is restored afterwards, also on error.

    Args:
        model: the encoder, e.g. :class:`~monai_cluster.networks.FeatureAutoEncoder`.
        data: a MONAI/torch ``Dataset`` of dicts, a ``DataLoader`` yielding dict batches (used as is), or a
            list of dicts (wrapped in a MONAI ``Dataset`` with ``transform``).
        image_key: the batch entry holding images ``(B, C, *spatial)``, 2D or 3D.
        key_field: the batch entry holding the image keys (``list[str]`` per batch).
        batch_size: batch size when a loader is built here.
        device: where the model runs; ``None`` uses the device of the model's first parameter.
        num_workers: loader workers when a loader is built here.
        feature_fn: ``feature_fn(model, x) -> (B, F)``; default :func:`default_feature_fn`.
        progress: show a tqdm progress bar.
        transform: per-sample transform when ``data`` is a list of dicts.

    Returns:
        ``(features, keys)``: float32 ``(N, F)`` and the ``N`` keys in iteration order.

    Raises:
        ValueError: on empty data, a batch without ``image_key`` or ``key_field``, features of changing
            width, or non-finite features (naming the keys of the offending images).
        TypeError: on unsupported ``data`` or model output.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    batch_size = check_positive_int(batch_size, "batch_size")
    num_workers = check_positive_int(num_workers, "num_workers", minimum=0)
    if feature_fn is not None and not callable(feature_fn):
        raise TypeError(f"feature_fn must be callable (model, x) -> (B, F), got {type(feature_fn).__name__}.")
    fn = feature_fn or default_feature_fn
    loader = _as_loader(data, image_key, batch_size, num_workers, transform)
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    modes = [(module, module.training) for module in model.modules()]
    chunks: list[np.ndarray] = []
    keys: list[str] = []
    bad_keys: list[str] = []
    model.eval()
    try:
        with torch.no_grad():
            total = len(loader) if hasattr(loader, "__len__") else None
            for batch in tqdm(loader, total=total, disable=not progress, desc="extract_features", leave=False):
                if not isinstance(batch, Mapping):
                    raise TypeError(f"data must yield dict batches, got {type(batch).__name__}.")
                for name in (image_key, key_field):
                    if name not in batch:
                        raise ValueError(f"the batch has no {name!r} entry; it has {sorted(batch)}.")
                x = torch.as_tensor(batch[image_key]).to(device)
                if hasattr(x, "as_tensor"):  # MONAI MetaTensor: drop the metadata
                    x = x.as_tensor()
                batch_keys = _batch_keys(batch, key_field, x.shape[0])
                out = fn(model, x)
                if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
                    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                    raise ValueError(f"feature_fn must return a (B, F) tensor with B={x.shape[0]}, got {got}.")
                feats = out.detach().to("cpu", torch.float32).numpy()
                if chunks and feats.shape[1] != chunks[0].shape[1]:
                    raise ValueError(
                        f"features changed width from {chunks[0].shape[1]} to {feats.shape[1]} "
                        f"at key {batch_keys[0]!r}."
                    )
                finite = np.isfinite(feats).all(axis=1)
                bad_keys.extend(k for k, ok in zip(batch_keys, finite) if not ok)
                chunks.append(feats)
                keys.extend(batch_keys)
    finally:
        for module, mode in modes:
            module.training = mode
    if not chunks:
        raise ValueError("data must hold at least one sample, got no batch.")
    if bad_keys:
        raise ValueError(
            f"features of {len(bad_keys)} image(s) hold NaN or Inf: {bad_keys[:_MAX_LISTED]}"
            + (" ..." if len(bad_keys) > _MAX_LISTED else "")
            + "; check those images and the model."
        )
    return np.concatenate(chunks, axis=0), keys
