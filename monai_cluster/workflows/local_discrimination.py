"""The local-discrimination pretraining workflow behind ``bundles/local_discrimination_pretrain``.

The bundle's configs are declarative and call these:

- :func:`prepare_pretrain_data`: the training and monitoring listings: a DRIVE/CHASE_DB1 folder, any image folder
  (unlabeled), or a synthetic fundus set (2D, :func:`~monai_cluster.data.make_synthetic_fundus`) or heart set
  (3D) generated once under ``<bundle_root>/synthetic_data``;
- :func:`validate_pretrain_options`: command-line overrides checked first, each named when wrong;
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
import math
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
from monai_cluster.networks.nets.local_discrimination import ASSIGNMENT_ACTIVATIONS
from monai_cluster.utils.io import atomic_torch_save, atomic_write_json
from monai_cluster.workflows.common import list_unlabeled, resolve_dataset, validate_options
from monai_cluster.workflows.run_outputs import data_fingerprint

__all__ = [
    "BestClusterDice",
    "LossComponentsLogger",
    "PRETRAIN_OPTION_SPECS",
    "check_distributed_options",
    "export_backbone",
    "load_prior_masks",
    "local_discrimination_run_settings",
    "preflight_local_discrimination",
    "prepare_pretrain_data",
    "save_cluster_maps",
    "validate_pretrain_options",
]

logger = logging.getLogger(__name__)

PRETRAIN_OPTION_SPECS = {
    "bundle_root": "path",
    "dataset_dir": "path?",
    "data_kind": "choice:fundus|heart|dermoscopy",
    "synthetic_n": "int?>=1",
    "synthetic_size": "int?>=8",
    "num_val": "int>=0",
    "check_data": "bool",
    "seed": "int>=0",
    "amp": "bool",
    "spatial_dims": "int>=2",
    "in_channels": "int>=1",
    "spatial_size": "ints>=8",
    "features": "ints>=1",
    "embed_dim": "int>=1",
    "num_clusters": "int>=2",
    "assignment_activation": "choice:" + "|".join(ASSIGNMENT_ACTIVATIONS),
    "epochs": "int>=1",
    "warmup_epochs": "int>=0",
    "val_interval": "int>=1",
    "batch_size": "int>=2",
    "learning_rate": "float>0",
    "patch_weight": "float>=0",
    "mixup_weight": "float>=0",
    "region_weight": "float>=0",
    "entropy_weight": "float>=0",
    "patch_temperature": "float>0",
    "region_temperature": "float>0",
    "grid_size": "ints>=1",
    "shape_prior": "bool",
    "shape_prior_weight": "float>=0",
    "shape_prior_cluster": "int>=0",
    "prior_mask_dir": "path?",
    "num_cluster_maps": "int>=0",
    "resume": "bool",
}
"""What :func:`validate_pretrain_options` expects of each bundle option (specs of
:func:`~monai_cluster.workflows.common.validate_option`)."""

_RUN_SETTINGS = (
    "seed", "dataset_dir", "data_kind", "num_val", "spatial_dims", "in_channels", "spatial_size", "features",
    "embed_dim", "num_clusters", "assignment_activation", "batch_size", "learning_rate", "patch_weight",
    "mixup_weight", "region_weight", "entropy_weight", "patch_temperature", "region_temperature", "grid_size",
    "shape_prior",
)  # fmt: skip


def validate_pretrain_options(**options: Any) -> dict[str, Any]:
    """Check the bundle's options (overrides included) against :data:`PRETRAIN_OPTION_SPECS`, and their relations.

    Only the options given are checked (the bundle gives them all). Beyond each option's own spec, and when the
    options involved are given:

    - ``dataset_dir`` and ``prior_mask_dir`` (with ``shape_prior``) must be existing folders; a 3D shape prior
      needs ``prior_mask_dir`` (the synthetic priors are 2D vessel trees);
    - ``spatial_dims`` is 2 or 3, ``spatial_size`` and ``grid_size`` have one value or one per spatial axis,
      ``grid_size`` does not exceed ``spatial_size`` on any axis, ``features`` holds BasicUNet's six sizes;
    - ``shape_prior_cluster`` is one of the ``num_clusters`` clusters;
    - ``warmup_epochs`` leaves at least one epoch with the clustering terms.

    Degenerate settings, under which a term or a part of the network would train nothing, are refused with the
    reason: every loss weight 0; a ``grid_size`` of one patch per image while patch discrimination or mixup is on
    (no local patch to tell apart: it would compare whole images); no term on the clustering head (``region_weight``
    and ``entropy_weight`` 0 without the shape prior: the cluster maps would stay random); a warm-up while
    ``patch_weight`` and ``mixup_weight`` are 0 (the warm-up epochs would train nothing); ``shape_prior`` with a
    ``shape_prior_weight`` of 0 (the prior would never reach the network).

    Returns:
        the checked options, ``spatial_size`` and ``grid_size`` as one value per spatial axis when
        ``spatial_dims`` is given.

    Raises:
        TypeError/ValueError: naming the first bad option, e.g. ``option 'epochs' (--epochs) must be an integer
            >= 1, got str 'abc'``.
    """
    specs = {k: v for k, v in PRETRAIN_OPTION_SPECS.items() if k in options}
    unknown = sorted(set(options) - set(PRETRAIN_OPTION_SPECS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known: {sorted(PRETRAIN_OPTION_SPECS)}.")
    checked = validate_options(options, specs)
    dataset_dir = checked.get("dataset_dir")
    if dataset_dir is not None and not Path(dataset_dir).is_dir():
        raise ValueError(f"option 'dataset_dir' (--dataset_dir) must be an existing folder, got {dataset_dir!r}.")
    if "warmup_epochs" in checked and "epochs" in checked and checked["warmup_epochs"] >= checked["epochs"]:
        raise ValueError(
            f"option 'warmup_epochs' (--warmup_epochs) must be below 'epochs' ({checked['epochs']}) so that the "
            f"clustering terms train at all, got {checked['warmup_epochs']}."
        )
    _check_geometry(checked)
    _check_terms(checked)
    return checked


def _per_axis(checked: dict[str, Any], name: str, dims: int) -> None:
    values = checked[name]
    if len(values) not in (1, dims):
        raise ValueError(
            f"option {name!r} (--{name}) must hold one value or one per spatial axis ({dims} for spatial_dims "
            f"{dims}), got {values}."
        )
    checked[name] = list(values) * dims if len(values) == 1 else list(values)


def _check_geometry(checked: dict[str, Any]) -> None:
    """Ranks and sizes: spatial_dims, spatial_size, grid_size, features, the shape prior's cluster and masks."""
    dims = checked.get("spatial_dims")
    if dims is not None and dims not in (2, 3):
        raise ValueError(f"option 'spatial_dims' (--spatial_dims) must be 2 or 3, got {dims}.")
    if dims is not None:
        for name in ("spatial_size", "grid_size"):
            if name in checked:
                _per_axis(checked, name, dims)
        if "spatial_size" in checked and "grid_size" in checked:
            if any(g > s for g, s in zip(checked["grid_size"], checked["spatial_size"])):
                raise ValueError(
                    f"option 'grid_size' (--grid_size) {checked['grid_size']} must not exceed 'spatial_size' "
                    f"{checked['spatial_size']} on any axis: each patch must hold at least one pixel of the "
                    "embedding map."
                )
    if "features" in checked and len(checked["features"]) != 6:
        raise ValueError(
            f"option 'features' (--features) must hold BasicUNet's six feature sizes, got {checked['features']}."
        )
    if checked.get("shape_prior") and "shape_prior_cluster" in checked and "num_clusters" in checked:
        if checked["shape_prior_cluster"] >= checked["num_clusters"]:
            raise ValueError(
                f"option 'shape_prior_cluster' (--shape_prior_cluster) must be one of the {checked['num_clusters']} "
                f"clusters of 'num_clusters' (0 to {checked['num_clusters'] - 1}), got {checked['shape_prior_cluster']}."
            )
    if checked.get("shape_prior") and "prior_mask_dir" in checked:
        folder = checked["prior_mask_dir"]
        if folder is not None and not Path(folder).is_dir():
            raise ValueError(f"option 'prior_mask_dir' (--prior_mask_dir) must be an existing folder, got {folder!r}.")
        if folder is None and dims == 3:
            raise ValueError(
                "option 'prior_mask_dir' (--prior_mask_dir) is needed for a 3D shape prior: the synthetic prior "
                "shapes are 2D vessel trees; give a folder of 3D prior masks or set shape_prior false."
            )


def _check_terms(checked: dict[str, Any]) -> None:
    """Refuse the settings under which a loss term, or the clustering head, would train nothing."""
    weights = {k: checked[f"{k}_weight"] for k in ("patch", "mixup", "region", "entropy") if f"{k}_weight" in checked}
    if len(weights) < 4:
        return
    prior = bool(checked.get("shape_prior")) and checked.get("shape_prior_weight", 1.0) > 0
    if not any(weights.values()) and not prior:
        raise ValueError(
            "options 'patch_weight', 'mixup_weight', 'region_weight' and 'entropy_weight' are all 0 (and no shape "
            "prior): the loss would train nothing; give at least one term a weight > 0."
        )
    local = weights["patch"] > 0 or weights["mixup"] > 0
    if local and "grid_size" in checked and math.prod(checked["grid_size"]) == 1:
        raise ValueError(
            f"option 'grid_size' (--grid_size) {checked['grid_size']} gives one patch per image: patch "
            "discrimination and mixup would compare whole images, with no local patch to tell apart; use a "
            "grid_size of at least 2 on some axis."
        )
    if weights["region"] == 0 and weights["entropy"] == 0 and not prior:
        raise ValueError(
            "options 'region_weight' and 'entropy_weight' are both 0 without the shape prior: no term reaches the "
            "clustering head, so the cluster maps would stay random; give region_weight (10 in the paper) a weight "
            "> 0."
        )
    if not local and checked.get("warmup_epochs", 0) > 0:
        raise ValueError(
            f"option 'warmup_epochs' (--warmup_epochs) is {checked['warmup_epochs']} but 'patch_weight' and "
            "'mixup_weight' are 0: the warm-up trains only those terms, so its epochs would train nothing; set "
            "warmup_epochs 0."
        )
    if checked.get("shape_prior") and checked.get("shape_prior_weight", 1.0) == 0:
        raise ValueError(
            "option 'shape_prior_weight' (--shape_prior_weight) is 0 while 'shape_prior' is true: the "
            "discriminator would train but the prior would never reach the network; give it a weight > 0 or set "
            "shape_prior false."
        )


def _probe_embedding_size(options: Mapping[str, Any]) -> tuple[int, ...]:
    """The spatial size of the embedding map at ``spatial_size``, from a throwaway network (global RNG untouched)."""
    from monai_cluster.networks import LocalDiscriminationNet

    with torch.random.fork_rng(devices=[]):
        net = LocalDiscriminationNet(
            options["spatial_dims"], options["in_channels"], embed_dim=options["embed_dim"],
            num_clusters=options["num_clusters"], features=options["features"],
            assignment_activation=options["assignment_activation"],
        )  # fmt: skip
        net.eval()
        with torch.no_grad():
            out = net(torch.zeros(1, options["in_channels"], *options["spatial_size"]))
    return tuple(int(s) for s in out["embedding"].shape[2:])


def preflight_local_discrimination(
    options: Mapping[str, Any], data: Mapping[str, Sequence[Mapping]], prior_masks: torch.Tensor | None = None
) -> dict[str, Any]:
    """Check, before the run writes anything, what needs the listings or the built network.

    Args:
        options: the checked options (:func:`validate_pretrain_options`, every option given).
        data: the listings (:func:`prepare_pretrain_data`).
        prior_masks: the shape prior's masks (``load_prior_masks``) when ``shape_prior``, else ``None``.

    Returns:
        ``{"embedding_size": spatial size of the embedding map, "batches": full batches per epoch and process}``.

    Raises:
        ValueError: naming the option: ``batch_size`` above the training images per process (an epoch without a
            full batch; at least 2 images are needed for mixup and for negatives from other images),
            ``grid_size`` above the embedding map's size, prior masks of another rank than ``spatial_dims``.
    """
    from .pretrain_data import check_batch_fits

    batches = check_batch_fits(data["train"], options["batch_size"])
    size = _probe_embedding_size(options)
    if any(g > s for g, s in zip(options["grid_size"], size)):
        raise ValueError(
            f"option 'grid_size' (--grid_size) {options['grid_size']} must not exceed the embedding map "
            f"{list(size)} at spatial_size {options['spatial_size']}."
        )
    if options["shape_prior"] and prior_masks is not None and prior_masks.ndim - 2 != options["spatial_dims"]:
        raise ValueError(
            f"option 'prior_mask_dir' (--prior_mask_dir) gives {prior_masks.ndim - 2}D prior masks, but "
            f"'spatial_dims' is {options['spatial_dims']}."
        )
    return {"embedding_size": list(size), "batches": batches}


def local_discrimination_run_settings(
    options: Mapping[str, Any], data: Mapping[str, Sequence[Mapping]]
) -> dict[str, dict[str, Any]]:
    """The settings that define a pretraining run's outputs, for :class:`~monai_cluster.workflows.RunOutputs`.

    Seed, data (folder, kind, the training and monitoring listings), network, loss (weights, temperatures, grid,
    the shape prior's weight, cluster and masks when it is on), batch size and learning rate. Not recorded:
    ``epochs`` and ``warmup_epochs`` (a resume may extend the run; the warm-up defaults to a quarter of the epochs),
    ``val_interval``, ``num_cluster_maps``, AMP, ``resume``.

    Args:
        options: the checked options (:func:`validate_pretrain_options`).
        data: the listings (:func:`prepare_pretrain_data`).
    """
    settings = {name: options[name] for name in _RUN_SETTINGS}
    settings["data"] = {"train": data_fingerprint(data["train"]), "val": data_fingerprint(data["val"])}
    if options["shape_prior"]:
        settings.update({name: options[name] for name in ("shape_prior_weight", "shape_prior_cluster", "prior_mask_dir")})
    return {"pretrain": settings}


def check_distributed_options(shape_prior: bool, num_train: int, batch_size: int) -> None:
    """Refuse what the multi-GPU overlay cannot train correctly, before anything is built.

    The shape prior's discriminator has its own optimiser outside ``DistributedDataParallel``, so its weights would
    drift apart between ranks; and every rank needs at least one full batch of its share of the images.

    Raises:
        ValueError: for ``shape_prior=True``, or fewer than ``world_size * batch_size`` training images.
    """
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if shape_prior:
        raise ValueError(
            "option 'shape_prior' (--shape_prior) is not supported by multi_gpu_train.json: the discriminator "
            "would train apart on every rank; pretrain with the shape prior on one GPU (configs/train.json)."
        )
    if num_train < world * batch_size:
        raise ValueError(
            f"multi-GPU pretraining needs at least world_size * batch_size = {world} * {batch_size} training images "
            f"(one batch per rank), got {num_train}; lower --batch_size or use fewer processes."
        )


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
