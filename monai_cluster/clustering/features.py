"""Batched feature extraction: one ``(F,)`` vector per image from a trained encoder, keyed by the image key.

The features are what :func:`~monai_cluster.clustering.hierarchy.hierarchical_pseudo_classes` clusters
(step 2 of cluster-guided contrastive pretraining, Zhang et al. 2022); the keys index the pseudo-class table.

References:
    - [0] Cluster-guided contrastive pretraining, 2022, https://arxiv.org/abs/2211.08557
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from monai_cluster.utils.validation import check_positive_int

__all__ = ["extract_features", "default_feature_fn"]

_MAX_LISTED = 10


class _MemmapSink:
    """Rows written into a memory-mapped ``.npy`` beside ``path``, moved onto ``path`` only when complete."""

    def __init__(self, path: str | os.PathLike, num_rows: int) -> None:
        self.path = Path(path)
        if self.path.suffix != ".npy":
            raise ValueError(f"out_path must name a .npy file, got {str(path)!r}.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial.npy")
        self.num_rows, self.row, self.array = num_rows, 0, None

    def add(self, feats: np.ndarray, first_key: str) -> None:
        if self.array is None:
            self.array = np.lib.format.open_memmap(
                self.tmp, mode="w+", dtype=np.float32, shape=(self.num_rows, feats.shape[1])
            )
        elif feats.shape[1] != self.array.shape[1]:
            raise ValueError(
                f"features changed width from {self.array.shape[1]} to {feats.shape[1]} at key {first_key!r}."
            )
        end = self.row + feats.shape[0]
        if end > self.num_rows:
            raise ValueError(f"the data yielded more than the {self.num_rows} samples its length announced.")
        self.array[self.row : end] = feats
        self.row = end

    def finish(self) -> np.ndarray:
        if self.array is None or self.row != self.num_rows:
            raise ValueError(f"the data yielded {self.row} samples, but its length announced {self.num_rows}.")
        self.array.flush()
        self.array = None
        os.replace(self.tmp, self.path)
        return np.load(self.path, mmap_mode="c")  # copy-on-write: writable in memory, the file stays as written

    def abort(self) -> None:
        self.array = None
        self.tmp.unlink(missing_ok=True)


def _num_samples(data: Any, loader: Any) -> int:
    for source in (getattr(loader, "dataset", None), data):
        if source is not None and hasattr(source, "__len__") and not isinstance(source, TorchDataLoader):
            return len(source)
    raise TypeError("out_path needs data of known length (a Dataset or a list), to size the file before writing.")


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
    out_path: str | os.PathLike | None = None,
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
        out_path: a ``.npy`` file to stream the features into instead of holding them in memory (10,000,000 x
            128 float32 features are 5 GB): rows are written batch by batch into a memory-mapped temporary file
            next to it, which is moved onto ``out_path`` only once complete (a failed run leaves nothing), and
            the returned features are that file mapped copy-on-write. Needs data of known length.

    Returns:
        ``(features, keys)``: float32 ``(N, F)`` (a memory map with ``out_path``) and the ``N`` keys in iteration
        order.

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
    sink = None if out_path is None else _MemmapSink(out_path, _num_samples(data, loader))
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
                if sink is None:
                    chunks.append(feats)
                else:
                    sink.add(feats, batch_keys[0])
                keys.extend(batch_keys)
        if not keys:
            raise ValueError("data must hold at least one sample, got no batch.")
        if bad_keys:
            raise ValueError(
                f"features of {len(bad_keys)} image(s) hold NaN or Inf: {bad_keys[:_MAX_LISTED]}"
                + (" ..." if len(bad_keys) > _MAX_LISTED else "")
                + "; check those images and the model."
            )
        if sink is not None:
            return sink.finish(), keys
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        for module, mode in modes:
            module.training = mode
    return np.concatenate(chunks, axis=0), keys
