"""The local-discrimination pretraining workflow behind ``bundles/local_discrimination_pretrain``.

The bundle's configs are declarative and call these:

- :func:`prepare_pretrain_data`: the training and monitoring listings: a DRIVE/CHASE_DB1 folder, any image folder
  (unlabeled), or a synthetic fundus set (2D, :func:`~monai_cluster.data.make_synthetic_fundus`) or heart set
  (3D) generated once under ``<bundle_root>/synthetic_data``;
- :func:`validate_pretrain_options`: command-line overrides checked first, each named when wrong (with the run
  settings and the preflight in :mod:`.local_discrimination_checks`); :func:`check_local_discrimination_slice_options`:
  those ``train_slices.json`` adds, which pretrains on the 2D slices of 3D volumes listed and loaded by
  :mod:`.pretrain_slices`;
- the evaluator's metric :class:`~monai_cluster.handlers.BestClusterDice` and the trainer's
  :class:`~monai_cluster.handlers.LossComponentsLogger` live in :mod:`monai_cluster.handlers` and are re-exported
  here, their former home;
- :func:`export_backbone`: ``models/model.pt``, a ``BasicUNet`` state dict with BasicUNet's own keys that the
  segmentation bundles load through ``pretrained_path``;
- :func:`save_cluster_maps`: PNG cluster maps (argmax of the assignment) of a few images;
- :func:`load_prior_masks`: prior shapes for the optional adversarial shape prior.

References:
    - [0] Unsupervised local discrimination for medical images, Chen et al., 2021, https://arxiv.org/abs/2108.09440
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai_cluster.data import check_dataset, list_fundus_pairs, prepare_dataset, read_image, write_png
from monai_cluster.handlers.loss_components import LossComponentsLogger
from monai_cluster.handlers.metrics import BestClusterDice
from monai_cluster.utils.io import atomic_torch_save, atomic_write_json
from monai_cluster.workflows.common import list_unlabeled, resolve_dataset

from .local_discrimination_checks import (
    PRETRAIN_OPTION_SPECS,
    check_distributed_options,
    check_local_discrimination_slice_options,
    local_discrimination_run_settings,
    preflight_local_discrimination,
    validate_pretrain_options,
)

__all__ = [
    "BestClusterDice",
    "LossComponentsLogger",
    "PRETRAIN_OPTION_SPECS",
    "check_distributed_options",
    "check_local_discrimination_slice_options",
    "export_backbone",
    "load_prior_masks",
    "local_discrimination_run_settings",
    "preflight_local_discrimination",
    "prepare_pretrain_data",
    "save_cluster_maps",
    "validate_pretrain_options",
]

logger = logging.getLogger(__name__)

def _real_listing(dataset_dir: str, kind: str, bundle_root: str, check: bool, channels, spatial_dims) -> list[dict]:
    """Labelled pairs when the folder has a known layout, else its images without labels."""
    if kind == "fundus":
        try:
            items = list_fundus_pairs(dataset_dir)
        except ValueError as err:
            logger.info("%s is not a DRIVE/CHASE_DB1 folder (%s); trying other layouts", dataset_dir, err)
        else:
            if check:
                check_dataset(items, channels=channels, spatial_dims=spatial_dims)
            return [{k: it[k] for k in ("image", "label", "key")} for it in items]
    try:
        return resolve_dataset(dataset_dir, bundle_root, kind=kind if kind != "fundus" else "dermoscopy",
                               check=check, channels=channels, spatial_dims=spatial_dims)
    except ValueError as err:
        logger.info("%s has no image/mask pairs (%s); pretraining on its images without labels", dataset_dir, err)
    return list_unlabeled(dataset_dir, bundle_root, check=check, channels=channels, spatial_dims=spatial_dims)


def prepare_pretrain_data(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    kind: str = "fundus",
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    num_val: int = 2,
    check: bool = True,
    channels: int | None = None,
    spatial_dims: int | None = None,
) -> dict[str, list[dict]]:
    """The listings of a pretraining run: ``{"train": [...], "val": [...]}``.

    Pretraining uses no labels. Labelled images (when the data has masks) are split: the last ``num_val`` are
    held out as ``"val"``, which the evaluator only uses to measure how well one cluster matches the masks;
    without masks ``"val"`` is empty and no evaluation runs.

    Args:
        dataset_dir: a DRIVE or CHASE_DB1 folder, a folder of image/mask pairs (any layout of
            :func:`~monai_cluster.data.list_image_mask_pairs`), or any folder of images; ``None``/``""``
            generates a synthetic set under ``<bundle_root>/synthetic_data``.
        bundle_root: the bundle root.
        kind: ``"fundus"`` (2D RGB, vessels), ``"heart"`` (3D CT phantoms) or ``"dermoscopy"`` (2D RGB lesions),
            for the synthetic set (and to try the fundus layouts first for a real folder).
        n: synthetic sample count (default 16 fundus; the generator's default otherwise).
        size: synthetic image size (default 64).
        seed: synthetic generation seed.
        num_val: held-out labelled images for monitoring (0: none).
        check: decode every file first so that a bad file stops the run before training, named.
        channels: expected image channels when ``check``.
        spatial_dims: expected spatial rank when ``check``.

    Raises:
        ValueError: for an unknown ``kind``, a missing folder, no images, or a bad file (named).
    """
    if kind not in ("fundus", "heart", "dermoscopy"):
        raise ValueError(f"kind must be one of ['fundus', 'heart', 'dermoscopy'], got {kind!r}.")
    if isinstance(num_val, bool) or not isinstance(num_val, int) or num_val < 0:
        raise ValueError(f"num_val must be an integer >= 0, got {num_val!r}.")
    if dataset_dir is not None and str(dataset_dir) != "":
        items = _real_listing(str(dataset_dir), kind, str(bundle_root), check, channels, spatial_dims)
    elif kind == "fundus":
        items = prepare_dataset(synthetic_dir=Path(os.path.abspath(bundle_root)) / "synthetic_data", kind="fundus",
                                n=n or 16, size=size or 64, seed=seed)
        if check:
            check_dataset(items, channels=channels, spatial_dims=spatial_dims)
    else:
        items = resolve_dataset(None, bundle_root, kind=kind, n=n, size=size, seed=seed, check=check,
                                channels=channels, spatial_dims=spatial_dims)
    labelled = all("label" in it for it in items)
    if not labelled or num_val == 0:
        return {"train": items, "val": []}
    if len(items) - num_val < 2:
        raise ValueError(
            f"the dataset holds {len(items)} image(s); with num_val={num_val} held out for monitoring fewer than 2 "
            "are left to pretrain on; add images or lower num_val."
        )
    return {"train": items[:-num_val], "val": items[-num_val:]}


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    module = getattr(network, "module", None)
    return module if isinstance(module, torch.nn.Module) else network


def export_backbone(
    network: torch.nn.Module, path: str | os.PathLike, info: Mapping[str, Any] | None = None
) -> Path:
    """Write ``network.backbone_state_dict()`` (BasicUNet's own keys, no ``final_conv``) atomically to ``path``.

    With ``info`` (e.g. ``spatial_dims``, ``in_channels``, ``features``), ``<stem>_info.json`` beside it records
    which segmentation network the weights fit.

    A segmentation ``BasicUNet(spatial_dims, in_channels, out_channels, features)`` with the pretraining
    network's ``spatial_dims``, ``in_channels`` and ``features`` loads it with
    :func:`monai_cluster.networks.load_pretrained` (every tensor but the fresh ``final_conv``).

    Raises:
        TypeError: when ``network`` has no ``backbone_state_dict`` (e.g. not a LocalDiscriminationNet).
    """
    net = _unwrap(network)
    if not callable(getattr(net, "backbone_state_dict", None)):
        raise TypeError(
            f"network must provide backbone_state_dict() (LocalDiscriminationNet), got {type(net).__name__}."
        )
    state = {k: v.detach().cpu() for k, v in net.backbone_state_dict().items()}
    atomic_torch_save(state, path)
    if info is not None:
        info_path = Path(path).with_name(Path(path).stem + "_info.json")
        atomic_write_json({**dict(info), "num_tensors": len(state)}, info_path)
    logger.info("exported %d BasicUNet tensors to %s", len(state), path)
    return Path(path)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    return np.round((img - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)


@torch.no_grad()
def save_cluster_maps(
    network: torch.nn.Module,
    items: Sequence[Mapping],
    transform: Callable,
    out_dir: str | os.PathLike,
    num_images: int = 4,
    device: str | torch.device = "cpu",
    image_key: str = "image",
) -> list[Path]:
    """Write PNG panels ``image | cluster map | reference mask`` for the first ``num_images`` items.

    The cluster map is the argmax of the assignment, coloured by a fixed palette; 3D volumes show their middle
    slice along the last axis. The reference panel appears when the item has a ``"label"``.

    Args:
        network: a :class:`~monai_cluster.networks.LocalDiscriminationNet` (or its DDP wrapper).
        items: listing dicts (``{"image", "key"[, "label"]}``).
        transform: the deterministic preprocessing (load, channel first, scale, resize) of one item.
        out_dir: destination folder (``<bundle_root>/eval/cluster_maps``).
        num_images: how many items to draw.
        device: where the network runs.
        image_key: the image entry.

    Returns:
        the written paths.
    """
    net = _unwrap(network)
    was_training = net.training
    net.eval()
    out = Path(out_dir)
    palette = np.random.default_rng(0).integers(0, 256, (max(getattr(net, "num_clusters", 16), 2), 3), np.uint8)
    written = []
    try:
        for index, item in enumerate(list(items)[:num_images]):
            data = transform(dict(item))
            image = torch.as_tensor(data[image_key]).float()
            clusters = net(image[None].to(device))["assignment"].argmax(1)[0].cpu().numpy()
            img = image.cpu().numpy()
            if img.ndim == 4:  # 3D: middle slice of the last axis
                mid = img.shape[-1] // 2
                img, clusters = img[..., mid], clusters[..., mid]
            rgb = np.repeat(img[:1], 3, 0) if img.shape[0] != 3 else img
            panels = [_to_uint8(np.moveaxis(rgb, 0, -1)), palette[clusters]]
            if "label" in data:
                label = torch.as_tensor(data["label"]).cpu().numpy()
                label = label[..., label.shape[-1] // 2] if label.ndim == 4 else label
                panels.append(np.repeat((label[0] > 0)[..., None] * np.uint8(255), 3, -1))
            stem = Path(str(item.get("key", f"image{index}"))).name.split(".")[0]
            path = out / f"{index:02d}_{stem}_clusters.png"
            write_png(np.concatenate(panels, axis=1), path)
            written.append(path)
    finally:
        net.train(was_training)
    logger.info("wrote %d cluster maps to %s", len(written), out)
    return written


def load_prior_masks(
    source: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    spatial_size: Sequence[int],
    n: int = 16,
    seed: int = 1234,
) -> torch.Tensor:
    """Prior shapes ``(N, 1, *spatial_size)`` in ``[0, 1]`` for the adversarial shape prior.

    Args:
        source: a folder of mask images (every image in it and below, values > 0 are foreground), or ``None``
            for ``n`` synthetic vessel trees (:func:`~monai_cluster.data.make_synthetic_fundus`, another seed than
            the training images) generated under ``<bundle_root>/synthetic_data/priors``.
        bundle_root: the bundle root.
        spatial_size: the training size; masks are resized to it (area interpolation, thresholded at 0.5).
        n: synthetic prior count.
        seed: synthetic prior seed.

    Raises:
        ValueError: for a missing folder, no mask images, or a size of the wrong rank (named).
    """
    size = tuple(int(s) for s in spatial_size)
    if source is None or str(source) == "":
        if len(size) != 2:
            raise ValueError(f"synthetic vessel priors are 2D; give a prior mask folder for spatial_size {size}.")
        items = prepare_dataset(synthetic_dir=Path(os.path.abspath(bundle_root)) / "synthetic_data" / "priors",
                                kind="fundus", n=n, size=size, seed=seed)
        paths = [it["label"] for it in items]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"prior mask folder {folder} does not exist or is not a folder.")
        from monai_cluster.data import list_images

        paths = [it["image"] for it in list_images(folder)]
    masks = []
    for path in paths:
        arr = read_image(path).array.astype(np.float32)
        arr = arr[..., 0] if arr.ndim == len(size) + 1 else arr
        if arr.ndim != len(size):
            raise ValueError(
                f"prior mask {path} has {arr.ndim} spatial axes; the training size {size} has {len(size)}."
            )
        t = torch.from_numpy((arr > 0).astype(np.float32))[None, None]
        t = F.interpolate(t, size=size, mode="area") if t.shape[2:] != size else t
        masks.append((t[0] > 0.5).float())
    return torch.stack(masks)
