"""Latent-space plots: a 2D embedding (PCA or t-SNE) of features, coloured by cluster and by label."""

from __future__ import annotations

import inspect
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from monai_cluster.utils.validation import check_choice, check_positive_int

from .display import as_numpy, check_png_path, save_figure

__all__ = ["embed_2d", "plot_latent_space"]

_MAX_LEGEND = 20
_TSNE_PCA_DIMS = 50  # t-SNE runs on at most this many principal components, as is customary


def embed_2d(
    features: object,
    method: str = "pca",
    seed: int = 0,
    perplexity: float | None = None,
    tsne_iterations: int = 1000,
) -> np.ndarray:
    """Project ``(N, F)`` features to ``(N, 2)`` with scikit-learn's PCA or t-SNE.

    Args:
        features: ``(N, F)`` finite real numbers (numpy or torch), ``N >= 2``.
        method: ``"pca"`` or ``"tsne"``.
        seed: random state of t-SNE (PCA is deterministic).
        perplexity: t-SNE perplexity; default ``min(30, (N - 1) / 3)`` (it must stay below N).
        tsne_iterations: t-SNE optimisation steps (at least 250).

    Returns:
        ``(N, 2)`` float array. With ``F == 1`` the second coordinate is zero.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    method = check_choice(method, "method", ["pca", "tsne"])
    tsne_iterations = check_positive_int(tsne_iterations, "tsne_iterations", minimum=250)
    x = _check_features(features).astype(np.float64)
    n, f = x.shape
    if f == 1:
        return np.concatenate([x - x.mean(), np.zeros((n, 1))], axis=1)
    if method == "pca":
        return PCA(n_components=2).fit_transform(x)
    if f > _TSNE_PCA_DIMS and n > _TSNE_PCA_DIMS:
        x = PCA(n_components=_TSNE_PCA_DIMS, random_state=seed).fit_transform(x)
    if perplexity is None:
        perplexity = max(1.0, min(30.0, (n - 1) / 3))
    if not 0 < perplexity < n:
        raise ValueError(f"perplexity must lie in (0, N={n}) for t-SNE, got {perplexity}.")
    # scikit-learn renamed n_iter to max_iter in 1.5
    steps = {"max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter": tsne_iterations}
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, **steps)
    return tsne.fit_transform(x)


def _check_features(features: object) -> np.ndarray:
    x = as_numpy(features, "features")
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"features must be (N, F) with N >= 2 samples and F >= 1, got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"features must hold real numbers, got dtype {x.dtype}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"features must be finite, but {int((~np.isfinite(x)).sum())} values are NaN or Inf.")
    return x


def _check_per_sample(values: object, name: str, n: int) -> np.ndarray | None:
    if values is None:
        return None
    arr = as_numpy(values, name)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be one value per sample, shape ({n},), got shape {arr.shape}.")
    return arr


def _scatter(ax, xy: np.ndarray, values: np.ndarray | None, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if values is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=12, color="#4363d8", alpha=0.8, linewidths=0)
        return
    categories, index = np.unique(values, return_inverse=True)
    cmap = colormaps["tab10" if len(categories) <= 10 else "tab20" if len(categories) <= 20 else "turbo"]
    colours = cmap(np.linspace(0, 1, len(categories))) if len(categories) > 20 else cmap(np.arange(len(categories)))
    for k, category in enumerate(categories):
        sel = index == k
        ax.scatter(xy[sel, 0], xy[sel, 1], s=12, color=colours[k], alpha=0.85, linewidths=0, label=str(category))
    if len(categories) <= _MAX_LEGEND:
        ax.legend(fontsize=7, markerscale=1.5, loc="best", frameon=False)


def plot_latent_space(
    features: object,
    path: str | os.PathLike,
    labels: object | None = None,
    clusters: object | None = None,
    method: str = "pca",
    title: str | None = None,
    seed: int = 0,
    perplexity: float | None = None,
    tsne_iterations: int = 1000,
    dpi: int = 100,
) -> np.ndarray:
    """Save a 2D embedding of features as a PNG: one panel coloured by cluster, one by label when given.

    When both ``clusters`` and ``labels`` are given, the label panel's title reports how well the clusters
    agree with the labels (normalised mutual information and adjusted Rand index).

    Args:
        features: ``(N, F)`` features (numpy or torch), ``N >= 2``, finite.
        path: the ``.png`` file to write.
        labels: ``(N,)`` ground-truth classes (ints or strings), or ``None``.
        clusters: ``(N,)`` cluster assignments, or ``None``.
        method: ``"pca"`` or ``"tsne"``.
        title: figure title.
        seed: random state of t-SNE.
        perplexity: t-SNE perplexity (default ``min(30, (N - 1) / 3)``).
        tsne_iterations: t-SNE optimisation steps (at least 250).
        dpi: resolution of the PNG.

    Returns:
        the ``(N, 2)`` embedding that was plotted.

    Raises:
        ValueError: when ``features`` is not ``(N, F)`` with ``N >= 2`` and finite values, or ``labels`` /
            ``clusters`` do not have one entry per sample (the message names the argument).
    """
    path = check_png_path(path)
    method = check_choice(method, "method", ["pca", "tsne"])
    x = _check_features(features)
    labels = _check_per_sample(labels, "labels", x.shape[0])
    clusters = _check_per_sample(clusters, "clusters", x.shape[0])

    xy = embed_2d(x, method=method, seed=seed, perplexity=perplexity, tsne_iterations=tsne_iterations)
    panels = [(clusters, f"clusters ({len(np.unique(clusters))})" if clusters is not None else "features")]
    if labels is not None:
        label_title = "labels"
        if clusters is not None:
            from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

            nmi = normalized_mutual_info_score(labels, clusters)
            ari = adjusted_rand_score(labels, clusters)
            label_title += f" (clusters vs labels: NMI {nmi:.2f}, ARI {ari:.2f})"
        panels = [(labels, label_title)] if clusters is None else [*panels, (labels, label_title)]
    fig = Figure(figsize=(4.5 * len(panels), 4.3))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (values, panel_title) in zip(axes, panels):
        _scatter(ax, xy, values, panel_title)
    axes[0].set_xlabel(f"{method.upper()} 1", fontsize=9)
    axes[0].set_ylabel(f"{method.upper()} 2", fontsize=9)
    fig.suptitle(title or f"latent space ({x.shape[0]} samples, {x.shape[1]} features, {method.upper()})", fontsize=11)
    save_figure(fig, path, dpi=dpi)
    return xy
