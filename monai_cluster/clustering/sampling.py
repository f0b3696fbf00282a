"""Decode new images around cluster centres and reconstruct given images, for any decoder passed as a callable.

Both clustering models of this package are generative: Ferrante et al. decode latent codes around a cluster's
centre to show what a cluster looks like and to augment scarce classes, and DVC's decoder maps any latent
point back to an image. :func:`sample_around_centroids` draws ``z = c_k + s_k * eps`` with ``eps ~ N(0, I)``
for each centre ``c_k`` and decodes it; the noise scale ``s_k`` is either given or the per-dimension standard
deviation of the cluster's members (:func:`cluster_spread`). Nothing here imports a network: the decoder and
the model are callables handed in by the caller.

References:
    - [0] Contrastive autoencoder, 2023, https://arxiv.org/abs/2209.12005
    - [1] DVC, 2021, https://arxiv.org/abs/2109.10777
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from monai_cluster.utils.validation import check_finite, check_labels, check_positive_int, check_tensor

__all__ = ["cluster_spread", "sample_around_centroids", "reconstruct"]


def _as_float_tensor(value: object, name: str, ndim: int | None = None) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got dtype {value.dtype}.")
        value = torch.from_numpy(np.ascontiguousarray(value))
    t = check_tensor(value, name, ndim=ndim)
    if not t.is_floating_point():
        t = t.float()
    check_finite(t, name)
    return t


@contextlib.contextmanager
def _eval_mode(fn: Callable) -> Iterator[torch.Tensor | None]:
    """Put the module behind ``fn`` (a module or a bound method of one) in eval mode; yield its first parameter."""
    module = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
    if not isinstance(module, nn.Module):
        yield None
        return
    was_training = module.training
    param = next(module.parameters(), None)
    module.eval()
    try:
        yield param
    finally:
        module.train(was_training)


def cluster_spread(
    latents: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, num_clusters: int
) -> torch.Tensor:
    """Per-cluster, per-dimension standard deviation of latent codes.

    Args:
        latents: ``(N, D)`` latent codes.
        labels: ``(N,)`` cluster labels in ``[0, num_clusters)``.
        num_clusters: number of clusters ``K``.

    Returns:
        ``(K, D)`` float tensor; a cluster with fewer than two members has zero spread.
    """
    z = _as_float_tensor(latents, "latents", ndim=2)
    k = check_positive_int(num_clusters, "num_clusters")
    y = check_labels(labels, "labels", length=z.shape[0]).to(z.device)
    if y.ndim != 1:
        raise ValueError(f"labels must be (N,), got shape {tuple(y.shape)}.")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(f"labels must lie in [0, num_clusters={k}), got range [{int(y.min())}, {int(y.max())}].")
    spread = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device)
    for j in range(k):
        members = z[y == j]
        if members.shape[0] > 1:
            spread[j] = members.std(0)
    return spread


def sample_around_centroids(
    decode: Callable[[torch.Tensor], torch.Tensor],
    centroids: torch.Tensor | np.ndarray,
    n_per_cluster: int = 8,
    scale: float | torch.Tensor | np.ndarray | None = None,
    latents: torch.Tensor | np.ndarray | None = None,
    labels: torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``n_per_cluster`` latent codes drawn around each centroid.

    ``z = centroids[k] + s_k * eps``, ``eps ~ N(0, I)`` from a CPU generator seeded with ``seed`` (the same
    draws on every device). ``s_k`` is ``scale`` when given (a float for every cluster and dimension, ``(K,)``
    per cluster or ``(K, D)`` per cluster and dimension; 0 decodes the centroids themselves), else the spread
    of each cluster's members, which needs ``latents`` and ``labels``. The decoder runs without gradients; a
    module (or a bound method of one) is switched to eval mode for the call and restored afterwards.

    Args:
        decode: maps ``(b, D)`` latent codes to images, e.g. ``model.decode``.
        centroids: ``(K, D)`` cluster centres in the decoder's latent space.
        n_per_cluster: samples per cluster.
        scale: noise standard deviation, see above.
        latents: ``(N, D)`` latent codes of the clustered data (used when ``scale`` is None).
        labels: ``(N,)`` their cluster labels.
        seed: seed of the noise.
        batch_size: latent codes decoded per call.

    Returns:
        ``(images, cluster_ids)``: images ``(K * n_per_cluster, ...)`` (cluster 0's samples first), on the
        decoder's output device; ``cluster_ids`` ``(K * n_per_cluster,)`` int64.
    """
    if not callable(decode):
        raise TypeError(f"decode must be callable (e.g. model.decode), got {type(decode).__name__}.")
    c = _as_float_tensor(centroids, "centroids", ndim=2)
    n = check_positive_int(n_per_cluster, "n_per_cluster")
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}.")
    k, d = c.shape
    if scale is None:
        if latents is None or labels is None:
            raise ValueError("scale is None, so latents and labels are needed to measure each cluster's spread.")
        spread = cluster_spread(latents, labels, k)
        if spread.shape[1] != d:
            raise ValueError(f"latents must have D={d} columns like centroids, got shape {tuple(spread.shape)}.")
    elif isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"scale must be a finite number >= 0, got {scale}.")
        spread = torch.full((k, d), float(scale))
    else:
        spread = _as_float_tensor(scale, "scale")
        if spread.shape == (k,):
            spread = spread[:, None].expand(k, d)
        if tuple(spread.shape) != (k, d):
            raise ValueError(
                f"scale must be a number, (K,) = ({k},) or (K, D) = ({k}, {d}), got {tuple(spread.shape)}."
            )
        if bool((spread < 0).any()):
            raise ValueError("scale must be non-negative.")
    generator = torch.Generator().manual_seed(int(seed))
    eps = torch.randn(k, n, d, generator=generator, dtype=torch.float64)
    z = (c.double().cpu()[:, None] + spread.double().cpu()[:, None] * eps).reshape(k * n, d)
    cluster_ids = torch.arange(k).repeat_interleave(n)
    outputs = []
    with _eval_mode(decode) as param, torch.no_grad():
        z = z.to(device=c.device, dtype=c.dtype) if param is None else z.to(device=param.device, dtype=param.dtype)
        for start in range(0, z.shape[0], batch_size):
            out = decode(z[start : start + batch_size])
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"decode must return a tensor, got {type(out).__name__}.")
            outputs.append(out)
    return torch.cat(outputs), cluster_ids


def reconstruct(
    model: Callable,
    images: torch.Tensor | np.ndarray,
    batch_size: int = 64,
    key: str = "reconstruction",
) -> torch.Tensor:
    """Reconstructions of ``images`` by an autoencoder, in eval mode and without gradients.

    The model may return a tensor (MONAI ``AutoEncoder``), a tuple whose first item is the reconstruction
    (MONAI ``VarAutoEncoder``) or a dict holding ``key`` (this package's clustering networks).

    Args:
        model: the autoencoder; inputs go to the device and dtype of an ``nn.Module``'s parameters.
        images: ``(N, C, *spatial)`` images.
        batch_size: images per forward pass.
        key: the reconstruction's key when the model returns a dict.

    Returns:
        ``(N, C_out, *spatial)`` reconstructions on the CPU.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}.")
    x = _as_float_tensor(images, "images")
    if x.ndim not in (4, 5):
        raise ValueError(f"images must be (N, C, H, W) or (N, C, H, W, D), got shape {tuple(x.shape)}.")
    batch_size = check_positive_int(batch_size, "batch_size")
    outputs = []
    with _eval_mode(model) as param, torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size]
            out = model(batch if param is None else batch.to(device=param.device, dtype=param.dtype))
            if isinstance(out, Mapping):
                if key not in out:
                    raise ValueError(f"model output has no key {key!r} (keys: {sorted(out)}); pass key=....")
                out = out[key]
            elif isinstance(out, (tuple, list)):
                out = out[0]
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"model must return a tensor, tuple or dict of tensors, got {type(out).__name__}.")
            outputs.append(out.cpu())
    return torch.cat(outputs)
