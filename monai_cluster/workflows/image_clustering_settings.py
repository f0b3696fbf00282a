"""The image-clustering bundle's settings: what each override may be, their relations, what defines a run, and the
training budget of a small folder. :mod:`.image_clustering` re-exports every name here."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from monai_cluster.workflows.common import validate_option, validate_options
from monai_cluster.workflows.run_outputs import data_fingerprint

from ._image_clustering_data import ClusteringData

__all__ = [
    "CAE_HEADS",
    "CAE_SETTINGS_SPECS",
    "CLUSTERING_METHODS",
    "RECONSTRUCTIONS",
    "SETTINGS_SPECS",
    "TRAINING_SETTINGS_SPECS",
    "VIEW_AUGMENTS",
    "check_cae_variant",
    "check_clustering_settings",
    "clustering_run_settings",
    "scaled_epochs",
]

logger = logging.getLogger(__name__)


CLUSTERING_METHODS = ("contrastive_ae", "dvc")

CAE_HEADS = {
    "simclr": {"proj_dim": 64, "proj_layers": 2, "proj_norm": True},
    "reference": {"proj_dim": None, "proj_layers": 3, "proj_norm": False},
}
"""Projection heads of the contrastive autoencoder by name: SimCLR's (2 layers with batch norm, 64 outputs) and
Ferrante et al.'s released one (3 layers, no norm, ``latent_dim`` outputs); both have ``2 * latent_dim`` hidden."""

VIEW_AUGMENTS = ("default", "flip_rot90")
"""The contrastive autoencoder's views: :class:`~monai_cluster.engines.RandomViewAugment` (intensity, noise, small
shifts) or :class:`~monai_cluster.engines.FlipRot90ViewAugment` (the same plus a random flip and 90-degree rotation)."""


SETTINGS_SPECS = {
    "method": "choice:" + "|".join(CLUSTERING_METHODS),
    "num_clusters": "int>=2",
    "epochs": "int>=1",
    "bundle_root": "path",
    "dataset_dir": "path?",
}
"""Specs (:func:`monai_cluster.workflows.validate_options`) of the bundle's main overrides."""

CAE_SETTINGS_SPECS = {
    "cluster_method": "choice:kmeans|prototypes",
    "projection_head": "choice:" + "|".join(CAE_HEADS),
    "prototype_epochs": "int>=0",
    "prototype_assignment": "choice:soft|hard",
    "recon_weight": "float>=0",
    "contrastive": "bool",
    "view_augment": "choice:" + "|".join(VIEW_AUGMENTS),
}
"""Specs of the contrastive autoencoder's overrides, checked with the main ones when given."""

TRAINING_SETTINGS_SPECS = {
    "npz_split": "choice:all|train|val|test",
    "labels_csv": "path?",
    "cluster_epochs": "int>=1",
    "budget_images": "int?>=1",
    "batch_size": "int>=2",
    "learning_rate": "float>0",
    "latent_dim": "int>=1",
    "channels": "ints>=1",
    "strides": "ints>=1",
    "spatial_size": "ints?>=1",
    "temperature": "float>0",
    "prototype_temperature": "float>0",
    "cluster_beta": "float>=0",
    "resume": "bool",
    "recon": "choice:mse|bce|l1",
    "gamma": "float?>=0",
    "update_interval": "int>=1",
    "tol": "float>=0",
    "seed": "int>=0",
    "progress": "bool",
    "montage_per_cluster": "int>=1",
    "synthetic_n": "int>=2",
    "synthetic_size": "ints>=8",
}
"""Specs of the training, data and output overrides, checked with the main ones when given."""

RECONSTRUCTIONS = {"contrastive_ae": ("mse", "l1"), "dvc": ("mse", "bce")}
"""The ``recon`` values each method understands."""


def check_clustering_settings(
    method: object, num_clusters: object, epochs: object, bundle_root: object, dataset_dir: object = None, **cae: object
) -> dict:
    """Validate the main overrides of the image-clustering bundle before anything is loaded or built.

    Args:
        method: ``"contrastive_ae"`` or ``"dvc"``.
        num_clusters: integer ``>= 2``.
        epochs: integer ``>= 1``.
        bundle_root: where outputs go; must not be an existing file.
        dataset_dir: ``None``/``""`` (synthetic data), an existing folder or an existing ``.npz`` file.
        cae: any of :data:`CAE_SETTINGS_SPECS` (``cluster_method``, ``projection_head``, ``prototype_epochs``,
            ``prototype_assignment``, ``recon_weight``, ``contrastive``, ``view_augment``) or
            :data:`TRAINING_SETTINGS_SPECS`.

    Returns:
        the settings normalised.

    Raises:
        ValueError/TypeError: naming the option (``--num_clusters``) and what was expected.
    """
    specs = {**CAE_SETTINGS_SPECS, **TRAINING_SETTINGS_SPECS}
    unknown = sorted(set(cae) - set(specs))
    if unknown:
        raise TypeError(f"check_clustering_settings got unknown options {unknown}; known: {sorted(specs)}.")
    settings = validate_options(
        {"method": method, "num_clusters": num_clusters, "epochs": epochs, "bundle_root": bundle_root,
         "dataset_dir": dataset_dir, **cae},
        {**SETTINGS_SPECS, **{k: specs[k] for k in cae}},
    )  # fmt: skip
    _check_relations(settings)
    if Path(settings["bundle_root"]).is_file():
        raise ValueError(f"option 'bundle_root' (--bundle_root) must be a folder, got the file {bundle_root!r}.")
    if settings["dataset_dir"] not in (None, "None", "null"):
        path = Path(settings["dataset_dir"])
        if not (path.is_dir() or (path.is_file() and path.suffix == ".npz")):
            raise ValueError(
                "option 'dataset_dir' (--dataset_dir) must be an existing folder of images/volumes or a MedMNIST "
                f".npz file (or null for synthetic data), got {dataset_dir!r}."
            )
    return settings


def _check_relations(settings: dict) -> None:
    """The combinations of :func:`check_clustering_settings`'s options that a later stage would refuse."""
    method = settings["method"]
    if "recon" in settings and settings["recon"] not in RECONSTRUCTIONS[method]:
        raise ValueError(
            f"option 'recon' (--recon) must be one of {list(RECONSTRUCTIONS[method])} with method {method!r}, "
            f"got {settings['recon']!r}."
        )
    if settings.get("tol", 0.0) > 1:
        raise ValueError(
            f"option 'tol' (--tol) must be a fraction of labels in [0, 1] (0: never stop early), got {settings['tol']}."
        )
    check_cae_variant(
        method, settings.get("contrastive", True), settings.get("view_augment", "default"),
        settings.get("prototype_epochs", 0), settings.get("cluster_method", "kmeans"),
    )  # fmt: skip
    channels, strides = settings.get("channels"), settings.get("strides")
    if channels is not None and strides is not None and len(channels) != len(strides):
        raise ValueError(
            f"option 'strides' (--strides) must have one entry per 'channels' entry ({len(channels)}: {channels}), "
            f"got {strides}."
        )
    factor = int(np.prod(strides)) if strides is not None else 1
    sizes = settings.get("spatial_size")
    if sizes is not None and any(n % factor for n in sizes):
        raise ValueError(
            f"option 'spatial_size' (--spatial_size) {sizes} must be divisible by the product of 'strides' "
            f"{strides} (= {factor}); use other strides or another spatial_size."
        )
    count = settings.get("synthetic_n")
    if settings["dataset_dir"] in (None, "None", "null") and count is not None and count < settings["num_clusters"]:
        raise ValueError(
            f"option 'num_clusters' (--num_clusters) {settings['num_clusters']} exceeds the {count} synthetic images "
            "(synthetic_n); use fewer clusters or more images."
        )


def check_cae_variant(
    method: str, contrastive: bool, view_augment: str, prototype_epochs: int, cluster_method: str
) -> None:
    """Refuse the contrastive autoencoder's settings that ``method`` or the other settings would ignore.

    ``contrastive=False`` trains the contrastive autoencoder's network on reconstruction alone
    (:func:`~monai_cluster.engines.train_autoencoder`: no views, no projection head, no prototype phase), then
    k-means on its latent codes: the plain-autoencoder baseline.

    Raises:
        ValueError: naming the option: ``cluster_method``, ``contrastive`` or ``view_augment`` other than the
            default with ``dvc``; ``prototype_epochs > 0``, ``cluster_method="prototypes"`` or a ``view_augment``
            other than ``"default"`` with ``contrastive=False``.
    """
    if method == "dvc":
        for name, value, default in (("cluster_method", cluster_method, "kmeans"), ("contrastive", contrastive, True),
                                     ("view_augment", view_augment, "default")):  # fmt: skip
            if value != default:
                raise ValueError(
                    f"option {name!r} (--{name}) {value!r} is a contrastive_ae setting: dvc would ignore it; "
                    f"leave it {default!r} or use method contrastive_ae."
                )
        return
    if contrastive:
        return
    for name, value, default in (("prototype_epochs", prototype_epochs, 0), ("cluster_method", cluster_method, "kmeans"),
                                 ("view_augment", view_augment, "default")):  # fmt: skip
        if value != default:
            raise ValueError(
                f"option {name!r} (--{name}) {value!r} needs contrastive training: 'contrastive' false trains on "
                f"reconstruction alone and clusters by k-means; set {name} {default!r} or contrastive true."
            )


def clustering_run_settings(data: ClusteringData, settings: dict, **options: object) -> dict[str, dict]:
    """The settings that define the bundle's outputs, for :class:`~monai_cluster.workflows.RunOutputs`: the
    checked ``settings`` but epochs, resume and output options, plus which images were clustered."""
    left_out = {"epochs", "cluster_epochs", "budget_images", "resume", "progress", "montage_per_cluster", "bundle_root"}
    defining = {k: v for k, v in {**settings, **options}.items() if k not in left_out}
    for name, default in (("contrastive", True), ("view_augment", "default")):  # as recorded before these options
        if defining.get(name, default) == default:
            defining.pop(name, None)
    return {"train": {**defining, "data": data_fingerprint(data.keys), "image_shape": list(data.image_shape)}}


def scaled_epochs(epochs: int, num_images: int, budget_images: int | None) -> int:
    """Epochs that give a folder of ``num_images`` as many training steps as ``epochs`` passes over ``budget_images``.

    The bundle's defaults were measured on 1,000 images; a budget in epochs shrinks with the folder, so a folder of 468
    images trained 40 epochs is undertrained (BENCHMARKS.md, "Image clustering", the budget floor). Folders of at least
    ``budget_images`` images, ``epochs == 0`` and ``budget_images=None`` keep ``epochs``.

    Args:
        epochs: the stage's epochs as configured (``>= 0``).
        num_images: images in the folder (``>= 1``).
        budget_images: the folder size the budget was set for, or ``None`` for plain epochs.

    Returns:
        ``ceil(epochs * budget_images / num_images)`` when the folder is smaller, else ``epochs``.
    """
    epochs = validate_option("epochs", epochs, "int>=0")
    num_images = validate_option("num_images", num_images, "int>=1")
    budget_images = validate_option("budget_images", budget_images, "int?>=1")
    if budget_images is None or epochs == 0 or num_images >= budget_images:
        return epochs
    scaled = math.ceil(epochs * budget_images / num_images)
    logger.info("%d images < budget_images %d: %d epochs become %d (the same number of steps)", num_images,
                budget_images, epochs, scaled)
    return scaled
