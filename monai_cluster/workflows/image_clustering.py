"""Image-clustering workflow: cluster a set of 2D images or 3D volumes with a contrastive autoencoder or DVC.

What the ``bundles/image_clustering`` configs call (the logic lives here so it can be imported and tested):

1. :func:`check_clustering_settings` (with the other settings pieces in :mod:`.image_clustering_settings`) validates
   the bundle's overridable settings with messages that name them.
2. :func:`load_clustering_data` (from :mod:`._image_clustering_data`) loads a folder, a MedMNIST ``.npz`` or
   synthetic data into one ``(N, C, *spatial)`` tensor with keys and, when known, labels.
3. :func:`build_clustering_network` makes a :class:`ContrastiveAutoEncoder` (``"contrastive_ae"``) or a
   :class:`DeepVariationalClustering` (``"dvc"``) for that image shape.
4. :class:`ImageClusteringTrainer` trains it (:func:`train_cae` + k-means on the latent codes, or the whole DVC
   procedure), saves the weights, and writes ``clusters.csv`` (``key,cluster,confidence[,label]``), ``metrics.json``
   (Hungarian accuracy, NMI, ARI when labels are known), ``summary.json`` and three pictures: the latent space
   coloured by cluster (and label), the most confident images of each cluster, and images decoded around each
   cluster's centre. Confidence is the Student's-t soft assignment of the image's latent code to its cluster
   (DVC's own ``q``; for the CAE the same kernel on the k-means centres).

References:
    - [0] Contrastive autoencoder, 2023, https://arxiv.org/abs/2209.12005
    - [1] DVC, 2021, https://arxiv.org/abs/2109.10777
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from monai_cluster.clustering.dec import student_t_assignment
from monai_cluster.clustering.features import extract_features
from monai_cluster.clustering.metrics import clustering_scores
from monai_cluster.clustering.sampling import sample_around_centroids
from monai_cluster.engines._epoch_checkpoint import EpochCheckpoint
from monai_cluster.engines.cae_trainer import FlipRot90ViewAugment, train_autoencoder, train_cae
from monai_cluster.engines.dvc_trainer import train_dvc
from monai_cluster.networks.nets.contrastive_autoencoder import ContrastiveAutoEncoder
from monai_cluster.networks.nets.dvc import DeepVariationalClustering
from monai_cluster.utils.io import atomic_torch_save, atomic_write, atomic_write_json
from monai_cluster.utils.validation import check_choice
from monai_cluster.visualize.latent import plot_latent_space
from monai_cluster.visualize.overlay import save_montage

from monai_cluster.utils.precision import amp_mode
from monai_cluster.workflows.common import is_main_process, resolve_device, validate_option

from ._image_clustering_data import ClusteringData, load_clustering_data, load_image_items
from .image_clustering_settings import (
    CAE_HEADS,
    CAE_SETTINGS_SPECS,
    CLUSTERING_METHODS,
    RECONSTRUCTIONS,
    SETTINGS_SPECS,
    TRAINING_SETTINGS_SPECS,
    VIEW_AUGMENTS,
    check_cae_variant,
    check_clustering_settings,
    clustering_run_settings,
    scaled_epochs,
)

__all__ = [
    "CAE_HEADS",
    "CAE_SETTINGS_SPECS",
    "CLUSTERING_METHODS",
    "SETTINGS_SPECS",
    "ClusteringData",
    "ImageClusteringTrainer",
    "RECONSTRUCTIONS",
    "TRAINING_SETTINGS_SPECS",
    "VIEW_AUGMENTS",
    "build_clustering_network",
    "check_cae_variant",
    "check_clustering_settings",
    "clustering_run_settings",
    "preflight_clustering",
    "load_clustering_data",
    "load_image_items",
    "scaled_epochs",
    "write_clusters_csv",
]

logger = logging.getLogger(__name__)

def preflight_clustering(data: ClusteringData, settings: dict, **network_options: object) -> nn.Module:
    """Check, before the first stage writes, what needs the loaded images: the cluster count and batch size
    against the number of images, and the network's strides against the image size (a throwaway network is
    built with the global random state untouched).

    Args:
        data: the loaded images (:func:`load_clustering_data`).
        settings: :func:`check_clustering_settings`'s result (``method``, ``num_clusters``, ``batch_size``).
        network_options: the other :func:`build_clustering_network` arguments (``latent_dim``, ``channels``,
            ``strides``, ``projection_head``, ``prototype_epochs``, ``prototype_temperature``).

    Returns:
        the throwaway network.

    Raises:
        ValueError: naming the option: ``num_clusters`` above the number of images, fewer than 2 images (a
            contrastive batch has no negative), ``view_augment="flip_rot90"`` on images that are not square, or image
            sizes the strides cannot halve evenly.
    """
    count = len(data.keys)
    if settings["num_clusters"] > count:
        raise ValueError(
            f"option 'num_clusters' (--num_clusters) {settings['num_clusters']} exceeds the number of images "
            f"({count} in {data.source})."
        )
    if count < 2:
        raise ValueError(f"option 'dataset_dir' (--dataset_dir) holds {count} image: clustering needs at least 2.")
    shape = data.image_shape
    if settings.get("view_augment") == "flip_rot90" and shape[-1] != shape[-2]:
        raise ValueError(f"option 'view_augment' 'flip_rot90' needs square images, got the shape {list(shape)}.")
    with torch.random.fork_rng(devices=[]):
        try:
            return build_clustering_network(settings["method"], data.image_shape, settings["num_clusters"],
                                            **network_options)  # fmt: skip
        except ValueError as err:
            raise ValueError(
                f"options 'channels'/'strides' (--strides) do not fit the images of shape {list(data.image_shape)} "
                f"(set 'spatial_size' to resize them): {err}"
            ) from err


def build_clustering_network(
    method: str,
    image_shape: tuple[int, ...],
    num_clusters: int,
    latent_dim: int = 10,
    channels: tuple[int, ...] = (16, 32),
    strides: tuple[int, ...] = (2, 2),
    proj_dim: int | None = 64,
    proj_layers: int = 2,
    proj_norm: bool = True,
    prototype_epochs: int = 0,
    prototype_temperature: float = 1.0,
    projection_head: str | None = None,
) -> nn.Module:
    """The network of ``method`` for channel-first images of ``image_shape`` ``(C, *spatial)``.

    ``"contrastive_ae"``: :class:`ContrastiveAutoEncoder` with a projection head of ``proj_layers`` layers,
    ``proj_dim`` outputs (``None``: ``latent_dim``) and batch norm when ``proj_norm`` (or the named
    ``projection_head`` of :data:`CAE_HEADS`, which then sets all three); with ``prototype_epochs > 0`` its decoder
    is conditioned on ``num_clusters`` prototypes at ``prototype_temperature`` (the authors' second phase).
    ``"dvc"``: :class:`DeepVariationalClustering` with ``num_clusters`` centroids. The spatial sizes must be
    divisible by the product of ``strides`` (the error says so).
    """
    method = check_choice(method, "method", CLUSTERING_METHODS)
    shape = tuple(int(s) for s in image_shape)
    spatial_dims = len(shape) - 1
    if method == "dvc":
        return DeepVariationalClustering(
            spatial_dims, shape, latent_dim=latent_dim, num_clusters=num_clusters,
            channels=tuple(channels), strides=tuple(strides),
        )  # fmt: skip
    if projection_head is not None:
        head = CAE_HEADS[check_choice(projection_head, "projection_head", tuple(CAE_HEADS))]
        proj_dim, proj_layers, proj_norm = head["proj_dim"], head["proj_layers"], head["proj_norm"]
    prototype_epochs = validate_option("prototype_epochs", prototype_epochs, "int>=0")
    return ContrastiveAutoEncoder(
        spatial_dims, shape[0], shape[1:], latent_dim=latent_dim, channels=tuple(channels), strides=tuple(strides),
        proj_dim=latent_dim if proj_dim is None else proj_dim, proj_layers=proj_layers, proj_norm=proj_norm,
        num_prototypes=num_clusters if prototype_epochs else None, prototype_temperature=prototype_temperature,
    )  # fmt: skip


def write_clusters_csv(
    path: str | os.PathLike,
    keys: list[str],
    clusters: np.ndarray,
    confidence: np.ndarray,
    label_names: list[str] | None = None,
) -> Path:
    """Write ``key,cluster,confidence`` (plus ``label`` when ``label_names`` gives one per image) atomically."""
    lengths = {len(keys), len(clusters), len(confidence)} | ({len(label_names)} if label_names is not None else set())
    if len(lengths) != 1:
        raise ValueError(
            f"keys, clusters, confidence (and label_names) must have one entry per image, got {len(keys)}, "
            f"{len(clusters)}, {len(confidence)}" + ("" if label_names is None else f", {len(label_names)}") + "."
        )
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "cluster", "confidence"] + ([] if label_names is None else ["label"]))
        for i, key in enumerate(keys):
            row = [key, int(clusters[i]), f"{float(confidence[i]):.6f}"]
            writer.writerow(row + ([] if label_names is None else [label_names[i]]))
    return Path(path)


class ImageClusteringTrainer:
    """Train a clustering network on :class:`ClusteringData`, then write its clusters, metrics and pictures.

    Args:
        network: from :func:`build_clustering_network` (its class decides the procedure).
        data: the images to cluster.
        num_clusters: ``K``.
        epochs: CAE epochs, or DVC's VAE pretraining epochs.
        output_dir: where ``clusters.csv``, ``metrics.json``, ``summary.json`` and the PNGs go.
        model_dir: where ``model.pt`` (the network's ``state_dict``) and ``centroids.pt`` go.
        log_dir: TensorBoard folder, or ``None`` for no logs.
        cluster_epochs: DVC's clustering epochs (stops earlier by ``tol``).
        batch_size, lr, seed, device: training settings.
        temperature: NT-Xent temperature (CAE).
        cluster_method: how the CAE's latent space is clustered, ``"kmeans"`` or ``"prototypes"`` (Ferrante et al.'s
            prototypes: the trained ones after the prototype phase, else k-means centres refined with soft
            assignments; see :func:`monai_cluster.engines.cluster_cae`).
        prototype_temperature: temperature of the prototypes' soft assignments (``cluster_method="prototypes"``;
            with the prototype phase it is the network's own, set by :func:`build_clustering_network`).
        recon_weight: weight of the CAE's reconstruction term (Ferrante et al.'s code: 0.2).
        prototype_epochs: epochs of the CAE's prototype phase (decoder conditioned on the soft assignments to the
            prototypes, prototypes moved every batch); needs a network built with ``num_prototypes=num_clusters``
            (:func:`build_clustering_network` with the same ``prototype_epochs``). 0: none.
        prototype_assignment: how the prototype phase moves each prototype: ``"soft"`` (mean weighted by the soft
            assignments) or ``"hard"`` (mean of the codes whose argmax it is, the authors' update).
        recon: reconstruction error, ``"mse"`` (both) or ``"bce"`` (DVC) / ``"l1"`` (CAE).
        gamma, update_interval, tol: DVC's clustering settings (``gamma=None`` scales with the image size).
        cluster_beta: weight of the KL prior in DVC's clustering stage (0: the authors' loss, reconstruction +
            gamma * KL(P || Q)).
        resume: continue every training stage from its last epoch in ``model_dir/checkpoints`` (written after
            every epoch either way), with the same random draws as an uninterrupted run; other settings than the
            checkpoint's are refused with a message.
        progress: tqdm progress bars.
        montage_per_cluster: images per cluster in the confident-images montage and decoded samples.
        contrastive: ``False`` trains the contrastive autoencoder's network on reconstruction alone
            (:func:`~monai_cluster.engines.train_autoencoder`), then k-means on its codes: the plain-autoencoder
            baseline (no prototype phase, k-means clustering, default views; see :func:`check_cae_variant`).
        view_augment: the CAE's views, ``"default"`` (:class:`~monai_cluster.engines.RandomViewAugment`) or
            ``"flip_rot90"`` (:class:`~monai_cluster.engines.FlipRot90ViewAugment`, square images only).
        amp: mixed precision for the training steps: bfloat16 autocast on a CPU with native bfloat16, on CUDA
            bfloat16 where the GPU has it, else float16 (:func:`monai_cluster.utils.autocast`); losses and the
            clustering stay float32.
    """

    def __init__(
        self,
        network: nn.Module,
        data: ClusteringData,
        num_clusters: int,
        epochs: int,
        output_dir: str | os.PathLike,
        model_dir: str | os.PathLike,
        log_dir: str | os.PathLike | None = None,
        cluster_epochs: int = 20,
        batch_size: int = 32,
        lr: float = 1e-3,
        temperature: float = 0.5,
        recon: str = "mse",
        gamma: float | None = None,
        update_interval: int = 1,
        tol: float = 1e-3,
        seed: int = 0,
        cluster_method: str = "kmeans",
        prototype_temperature: float = 1.0,
        cluster_beta: float = 0.0,
        device: str | torch.device = "cpu",
        progress: bool = True,
        montage_per_cluster: int = 6,
        resume: bool = False,
        recon_weight: float = 1.0,
        prototype_epochs: int = 0,
        prototype_assignment: str = "soft",
        amp: bool = False,
        contrastive: bool = True,
        view_augment: str = "default",
    ) -> None:
        if not isinstance(network, (ContrastiveAutoEncoder, DeepVariationalClustering)):
            raise TypeError(
                f"network must be a ContrastiveAutoEncoder or DeepVariationalClustering, got {type(network).__name__}."
            )
        if not isinstance(data, ClusteringData):
            raise TypeError(f"data must be ClusteringData (from load_clustering_data), got {type(data).__name__}.")
        self.network, self.data = network, data
        self.method = "dvc" if isinstance(network, DeepVariationalClustering) else "contrastive_ae"
        self.num_clusters = validate_option("num_clusters", num_clusters, "int>=2")
        if self.num_clusters > len(data.keys):
            raise ValueError(
                f"num_clusters ({self.num_clusters}) must not exceed the number of images ({len(data.keys)})."
            )
        if self.method == "dvc" and network.num_clusters != self.num_clusters:
            raise ValueError(
                f"num_clusters ({self.num_clusters}) must match the DVC network's ({network.num_clusters})."
            )
        self.epochs = validate_option("epochs", epochs, "int>=1")
        self.cluster_epochs = validate_option("cluster_epochs", cluster_epochs, "int>=1")
        self.output_dir, self.model_dir = Path(output_dir), Path(model_dir)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.batch_size = validate_option("batch_size", batch_size, "int>=2")
        self.lr = validate_option("lr", lr, "float>0")
        self.temperature = validate_option("temperature", temperature, "float>0")
        self.recon = check_choice(recon, "recon", RECONSTRUCTIONS[self.method])
        self.gamma = validate_option("gamma", gamma, "float?>=0")
        self.update_interval = validate_option("update_interval", update_interval, "int>=1")
        self.tol = validate_option("tol", tol, "float>=0")
        if self.tol > 1:
            raise ValueError(f"tol must be a fraction of labels in [0, 1] (0: never stop early), got {self.tol}.")
        if cluster_method not in ("kmeans", "prototypes"):
            raise ValueError(f"cluster_method must be one of ('kmeans', 'prototypes'), got {cluster_method!r}.")
        self.cluster_method = cluster_method
        self.prototype_temperature = validate_option("prototype_temperature", prototype_temperature, "float>0")
        self.cluster_beta = validate_option("cluster_beta", cluster_beta, "float>=0")
        self.recon_weight = validate_option("recon_weight", recon_weight, "float>=0")
        self.prototype_epochs = validate_option("prototype_epochs", prototype_epochs, "int>=0")
        self.prototype_assignment = validate_option("prototype_assignment", prototype_assignment, "choice:soft|hard")
        if self.method == "contrastive_ae" and self.prototype_epochs and network.num_prototypes != self.num_clusters:
            raise ValueError(
                f"prototype_epochs ({self.prototype_epochs}) needs the contrastive autoencoder built with "
                f"num_prototypes=num_clusters ({self.num_clusters}), got {network.num_prototypes}: pass the same "
                "prototype_epochs to build_clustering_network."
            )
        self.resume = validate_option("resume", resume, "bool")
        self.seed, self.device = validate_option("seed", seed, "int>=0"), resolve_device(device)
        self.progress = validate_option("progress", progress, "bool")
        self.montage_per_cluster = validate_option("montage_per_cluster", montage_per_cluster, "int>=1")
        self.amp = validate_option("amp", amp, "bool")
        amp_mode(self.amp, self.device)
        self.contrastive = validate_option("contrastive", contrastive, "bool")
        self.view_augment = check_choice(view_augment, "view_augment", VIEW_AUGMENTS)
        check_cae_variant(self.method, self.contrastive, self.view_augment, self.prototype_epochs, self.cluster_method)
        shape = data.image_shape
        if self.view_augment == "flip_rot90" and shape[-1] != shape[-2]:
            raise ValueError(f"option 'view_augment' 'flip_rot90' needs square images, got the shape {list(shape)}.")

    def _train(self, writer: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Train and cluster; return ``(labels, latents, centroids, info)``."""
        x, common = self.data.images, {
            "batch_size": self.batch_size, "lr": self.lr, "device": self.device, "seed": self.seed,
            "writer": writer, "progress": self.progress, "amp": self.amp,
            "checkpoint": EpochCheckpoint(self.model_dir / "checkpoints", resume=self.resume),
        }  # fmt: skip
        if self.method == "dvc":
            result = train_dvc(
                self.network, x, pretrain_epochs=self.epochs, cluster_epochs=self.cluster_epochs, gamma=self.gamma,
                recon=self.recon, update_interval=self.update_interval, tol=self.tol, cluster_beta=self.cluster_beta,
                **common,
            )  # fmt: skip
            items = [{"image": image, "key": key} for image, key in zip(x, self.data.keys)]
            latents = extract_features(
                self.network, items, batch_size=self.batch_size, device=self.device, progress=False,
                feature_fn=lambda m, b: m.encode(b)[0],
            )[0]  # fmt: skip
            info = {"stop_reason": result.stop_reason, "cluster_epochs_run": result.epochs_run, "gamma": result.gamma,
                    "final_loss": result.history["loss"][-1] if result.history["loss"] else None,
                    "final_pretrain_loss": result.history["pretrain_loss"][-1]}  # fmt: skip
            return result.labels, latents, result.centroids, info
        if not self.contrastive:
            result = train_autoencoder(
                self.network, x, epochs=self.epochs, recon=self.recon, num_clusters=self.num_clusters, **common
            )
        else:
            result = train_cae(
                self.network, x, epochs=self.epochs, temperature=self.temperature, recon=self.recon,
                num_clusters=self.num_clusters, cluster_method=self.cluster_method,
                prototype_temperature=self.prototype_temperature, recon_weight=self.recon_weight,
                prototype_epochs=self.prototype_epochs, prototype_assignment=self.prototype_assignment,
                augment=FlipRot90ViewAugment(seed=self.seed) if self.view_augment == "flip_rot90" else None, **common,
            )  # fmt: skip
        info = {"cluster_method": self.cluster_method, "final_loss": result.history["loss"][-1],
                "final_reconstruction": result.history["reconstruction"][-1],
                "prototype_epochs": self.prototype_epochs, "contrastive": self.contrastive,
                "view_augment": self.view_augment}  # fmt: skip
        if self.prototype_epochs:
            info["final_prototype_reconstruction"] = result.history["prototype_reconstruction"][-1]
        return result.clustering.labels, result.clustering.latents, result.clustering.centroids, info

    def run(self) -> dict:
        """Train, cluster, save the weights and write every output; return the summary (also ``summary.json``)."""
        start = time.perf_counter()
        writer = None
        main = is_main_process()
        if self.log_dir is not None and main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(self.log_dir))
        try:
            labels, latents, centroids, info = self._train(writer)
        finally:
            if writer is not None:
                writer.close()
        if not main:  # data-parallel: rank 0 holds the same model and writes every output
            return {"method": self.method, "rank": torch.distributed.get_rank(), **info}
        q = student_t_assignment(torch.from_numpy(latents).double(), torch.from_numpy(centroids).double()).numpy()
        confidence = q[np.arange(len(labels)), labels]
        atomic_torch_save(self.network.state_dict(), self.model_dir / "model.pt")
        centres = {"centroids": torch.from_numpy(centroids), "method": self.method}
        atomic_torch_save(centres, self.model_dir / "centroids.pt")
        names = None
        if self.data.labels is not None and self.data.class_names is not None:
            names = [self.data.class_names[int(y)] for y in self.data.labels]
        write_clusters_csv(self.output_dir / "clusters.csv", self.data.keys, labels, confidence, names)
        summary = {
            "method": self.method, "num_clusters": self.num_clusters, "num_images": len(labels),
            "image_shape": list(self.data.image_shape), "source": self.data.source, "epochs": self.epochs,
            "cluster_sizes": np.bincount(labels, minlength=self.num_clusters).tolist(),
            "mean_confidence": float(confidence.mean()), **info,
        }  # fmt: skip
        if self.data.labels is not None:
            metrics = {
                **clustering_scores(self.data.labels, labels), "num_images": len(labels),
                "num_clusters": self.num_clusters, "classes": self.data.class_names, "method": self.method,
            }  # fmt: skip
            atomic_write_json(metrics, self.output_dir / "metrics.json")
            summary["metrics"] = {k: metrics[k] for k in ("accuracy", "nmi", "ari")}
            logger.info("clusters vs labels: accuracy %.3f, NMI %.3f, ARI %.3f", *summary["metrics"].values())
        self._pictures(labels, latents, centroids, confidence, names)
        summary["seconds"] = time.perf_counter() - start
        atomic_write_json(summary, self.output_dir / "summary.json")
        return summary

    def _pictures(
        self, labels: np.ndarray, latents: np.ndarray, centroids: np.ndarray, confidence: np.ndarray, names: list | None
    ) -> None:
        k, m = self.num_clusters, self.montage_per_cluster
        plot_latent_space(
            latents, self.output_dir / "latent_space.png", labels=names, clusters=labels, seed=self.seed,
            title=f"{self.method} latent space, {len(labels)} images, {k} clusters (PCA)",
        )  # fmt: skip
        images = self.data.images
        blank = torch.zeros_like(images[0])
        tiles, titles = [], []
        for cluster in range(k):
            members = np.flatnonzero(labels == cluster)
            top = members[np.argsort(-confidence[members], kind="stable")][:m]
            for j in range(m):
                tiles.append(images[top[j]] if j < len(top) else blank)
                titles.append(f"c{cluster} {confidence[top[j]]:.2f}" if j < len(top) else f"c{cluster} -")
        save_montage(tiles, self.output_dir / "cluster_montage.png", nrow=m, titles=titles)
        samples, ids = sample_around_centroids(
            self.network.decode, torch.from_numpy(centroids).float(), n_per_cluster=m, latents=latents, labels=labels,
            seed=self.seed,
        )  # fmt: skip
        save_montage(
            samples.cpu(), self.output_dir / "cluster_samples.png", nrow=m, titles=[f"c{int(c)}" for c in ids]
        )

