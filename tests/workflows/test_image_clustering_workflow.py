"""Image-clustering workflow: data loading (folders, volumes, npz), settings checks, training and every output."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from monai_cluster.data.image_io import write_nifti, write_png
from monai_cluster.networks import ContrastiveAutoEncoder, DeepVariationalClustering
from monai_cluster.workflows.image_clustering import (
    ClusteringData,
    ImageClusteringTrainer,
    build_clustering_network,
    check_clustering_settings,
    load_clustering_data,
    write_clusters_csv,
)


def _two_groups(n_per_group: int = 8, size: int = 16, seed: int = 0) -> ClusteringData:
    """Grey images: a bright square top-left (group 0) or bottom-right (group 1), plus noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for group in (0, 1):
        for _ in range(n_per_group):
            image = rng.uniform(0, 0.1, (1, size, size))
            where = slice(1, size // 2) if group == 0 else slice(size // 2, size - 1)
            image[0, where, where] = 0.9
            images.append(image)
            labels.append(group)
    keys = [f"img{i:02d}.png" for i in range(len(images))]
    x = torch.tensor(np.stack(images), dtype=torch.float32)
    return ClusteringData(x, keys, np.array(labels), ["top_left", "bottom_right"], "test")


@pytest.mark.parametrize("method", ["contrastive_ae", "dvc"])
def test_trainer_writes_every_output_and_finds_the_groups(tmp_path, method):
    data = _two_groups()
    net = build_clustering_network(method, data.image_shape, 2, latent_dim=4, channels=(4, 8), strides=(2, 2))
    trainer = ImageClusteringTrainer(
        net, data, 2, epochs=15, output_dir=tmp_path / "eval", model_dir=tmp_path / "models",
        log_dir=tmp_path / "runs", cluster_epochs=3, batch_size=8, lr=3e-3, progress=False, montage_per_cluster=3,
    )  # fmt: skip
    summary = trainer.run()
    assert summary["method"] == method and summary["num_images"] == 16 and sum(summary["cluster_sizes"]) == 16
    with open(tmp_path / "eval" / "clusters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["key"] for r in rows] == data.keys and set(rows[0]) == {"key", "cluster", "confidence", "label"}
    confidence = np.array([float(r["confidence"]) for r in rows])
    assert ((confidence >= 0.5) & (confidence <= 1.0)).all()  # the assigned cluster is the most probable of 2
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == 1.0 and metrics["nmi"] == pytest.approx(1.0)
    for name in ("latent_space.png", "cluster_montage.png", "cluster_samples.png", "summary.json"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert set(state) == set(net.state_dict())
    centres = torch.load(tmp_path / "models" / "centroids.pt", weights_only=True)
    assert centres["centroids"].shape == (2, 4) and centres["method"] == method
    assert any((tmp_path / "runs").iterdir())  # TensorBoard event file


def test_trainer_without_labels_writes_no_metrics(tmp_path):
    data = _two_groups(n_per_group=3)
    data.labels = data.class_names = None
    net = build_clustering_network("contrastive_ae", data.image_shape, 2, latent_dim=4, channels=(4,), strides=(2,))
    ImageClusteringTrainer(net, data, 2, 1, tmp_path / "eval", tmp_path / "models", progress=False).run()
    assert not (tmp_path / "eval" / "metrics.json").exists()
    assert (tmp_path / "eval" / "clusters.csv").read_text().splitlines()[0] == "key,cluster,confidence"


def test_folder_loading_excludes_masks_reads_labels_and_resizes(tmp_path):
    rng = np.random.default_rng(0)
    for name, diagnosis in (("a1", "nevus"), ("a2", "melanoma"), ("a3", "nevus")):
        write_png(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), tmp_path / "images" / f"{name}.png")
        write_png(np.zeros((40, 48), dtype=np.uint8), tmp_path / "masks" / f"{name}_lesion.png")
    write_png(rng.integers(0, 255, (20, 20), dtype=np.uint8), tmp_path / "unlabeled" / "b1.png")  # grey -> 3 channels
    (tmp_path / "diagnosis.csv").write_text("image_name,diagnosis\na1,nevus\na2,melanoma\na3,nevus\nb1,melanoma\n")
    data = load_clustering_data(tmp_path, tmp_path / "root", spatial_size=16)
    assert data.keys == ["images/a1.png", "images/a2.png", "images/a3.png", "unlabeled/b1.png"]
    assert data.images.shape == (4, 3, 16, 16) and 0.0 <= float(data.images.min()) <= float(data.images.max()) <= 1.0
    assert data.class_names == ["melanoma", "nevus"] and data.labels.tolist() == [1, 0, 1, 0]
    torch.testing.assert_close(data.images[3, 0], data.images[3, 2])
    (tmp_path / "diagnosis.csv").write_text("image_name,diagnosis\na1,nevus\n")
    with pytest.raises(ValueError, match="has no row for 3 of 4 images"):
        load_clustering_data(tmp_path, tmp_path / "root")
    with pytest.raises(ValueError, match="labels_csv .* does not exist"):
        load_clustering_data(tmp_path, tmp_path / "root", labels_csv=tmp_path / "nope.csv")


def test_volumes_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        write_nifti(rng.normal(100, 50, (12, 12, 8)).astype(np.float32), np.eye(4), tmp_path / "vol" / f"v{i}.nii.gz")
    data = load_clustering_data(tmp_path / "vol", tmp_path / "root")
    assert data.spatial_dims == 3 and data.images.shape == (3, 1, 32, 32, 32) and data.labels is None
    native = load_clustering_data(tmp_path / "vol", tmp_path / "root", spatial_size=[12, 12, 8]).images
    assert native.shape == (3, 1, 12, 12, 8) and (native.amin((1, 2, 3, 4)) == 0).all()  # min-max scaled per volume
    assert (native.amax((1, 2, 3, 4)) == 1).all()
    net = build_clustering_network("dvc", data.image_shape, 2, latent_dim=3, channels=(2, 4), strides=(2, 2))
    assert isinstance(net, DeepVariationalClustering) and net.spatial_dims == 3
    npz = tmp_path / "mini.npz"
    images = rng.integers(0, 255, (6, 28, 28), dtype=np.uint8)
    zeros = np.zeros((2, 1), dtype=np.int64)
    np.savez(npz, train_images=images, train_labels=np.array([[0], [1], [0], [1], [0], [2]]),
             val_images=images[:2], val_labels=zeros, test_images=images[:2], test_labels=zeros)  # fmt: skip
    data = load_clustering_data(npz, tmp_path / "root", npz_split="train")
    assert data.images.shape == (6, 1, 28, 28) and data.keys[0] == "train/00000" and data.labels.tolist()[-1] == 2
    assert data.class_names == ["0", "1", "2"]
    resized = load_clustering_data(npz, tmp_path / "root", npz_split="all", spatial_size=16)
    assert resized.images.shape == (10, 1, 16, 16)
    with pytest.raises(ValueError, match="npz_split must be one of"):
        load_clustering_data(npz, tmp_path / "root", npz_split="everything")


def test_settings_and_argument_errors(tmp_path):
    ok = check_clustering_settings("dvc", 3, 2, str(tmp_path), None)
    assert ok["method"] == "dvc" and ok["num_clusters"] == 3 and ok["dataset_dir"] is None
    with pytest.raises(ValueError, match=r"option 'method' \(--method\) must be one of \['contrastive_ae', 'dvc'\]"):
        check_clustering_settings("kmeans", 3, 2, str(tmp_path))
    with pytest.raises(ValueError, match=r"option 'num_clusters' \(--num_clusters\) must be an integer >= 2"):
        check_clustering_settings("dvc", 1, 2, str(tmp_path))
    with pytest.raises(TypeError, match=r"option 'epochs' \(--epochs\) must be an integer >= 1"):
        check_clustering_settings("dvc", 3, "abc", str(tmp_path))
    with pytest.raises(ValueError, match=r"option 'dataset_dir' \(--dataset_dir\) must be an existing folder"):
        check_clustering_settings("dvc", 3, 2, str(tmp_path), str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"option 'bundle_root' \(--bundle_root\) must be a folder"):
        check_clustering_settings("dvc", 3, 2, str(tmp_path / "file"))
    with pytest.raises(ValueError, match="dataset_dir must be a folder of images/volumes or a MedMNIST .npz"):
        load_clustering_data(tmp_path / "missing", tmp_path)
    data = _two_groups(n_per_group=1)
    cae = build_clustering_network("contrastive_ae", data.image_shape, 2, latent_dim=4, channels=(4,), strides=(2,))
    assert isinstance(cae, ContrastiveAutoEncoder)
    with pytest.raises(ValueError, match="num_clusters .3. must not exceed the number of images .2."):
        ImageClusteringTrainer(cae, data, 3, 1, tmp_path, tmp_path)
    with pytest.raises(TypeError, match="network must be a ContrastiveAutoEncoder or DeepVariationalClustering"):
        ImageClusteringTrainer(torch.nn.Linear(2, 2), data, 2, 1, tmp_path, tmp_path)
    with pytest.raises(TypeError, match="data must be ClusteringData"):
        ImageClusteringTrainer(cae, data.images, 2, 1, tmp_path, tmp_path)
    dvc = build_clustering_network("dvc", data.image_shape, 3, latent_dim=4, channels=(4,), strides=(2,))
    with pytest.raises(ValueError, match=r"num_clusters \(2\) must match the DVC network's \(3\)"):
        ImageClusteringTrainer(dvc, data, 2, 1, tmp_path, tmp_path)
    with pytest.raises(ValueError, match="divisible by the product of strides"):
        build_clustering_network("dvc", (1, 15, 15), 2, strides=(2, 2))
    with pytest.raises(ValueError, match="one entry per image"):
        write_clusters_csv(tmp_path / "c.csv", ["a", "b"], np.array([0]), np.array([1.0]))


def test_trainer_cae_prototypes_and_dvc_prior_options(tmp_path):
    data = _two_groups()
    net = build_clustering_network("contrastive_ae", data.image_shape, 2, latent_dim=4, channels=(4, 8), strides=(2, 2))
    summary = ImageClusteringTrainer(
        net, data, 2, epochs=15, output_dir=tmp_path / "eval", model_dir=tmp_path / "models", batch_size=8, lr=3e-3,
        progress=False, cluster_method="prototypes", prototype_temperature=0.5,
    ).run()  # fmt: skip
    assert summary["cluster_method"] == "prototypes" and summary["metrics"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="cluster_method must be one of"):
        ImageClusteringTrainer(net, data, 2, 1, tmp_path, tmp_path, cluster_method="gmm")
    with pytest.raises(ValueError, match="prototype_temperature"):
        ImageClusteringTrainer(net, data, 2, 1, tmp_path, tmp_path, prototype_temperature=0.0)
    with pytest.raises(ValueError, match="cluster_beta"):
        ImageClusteringTrainer(net, data, 2, 1, tmp_path, tmp_path, cluster_beta=-1.0)


def test_trainer_plain_autoencoder_and_flip_rot90_views(tmp_path):
    """contrastive=False: reconstruction alone (the projection head never moves), k-means on the codes;
    view_augment="flip_rot90": the CAE trains on flipped and rotated views; both refused where they do not apply."""
    data = _two_groups()
    torch.manual_seed(0)
    net = build_clustering_network("contrastive_ae", data.image_shape, 2, latent_dim=4, channels=(4, 8), strides=(2, 2))
    head = {k: v.clone() for k, v in net.projection.state_dict().items()}
    rest = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("projection.")}
    summary = ImageClusteringTrainer(
        net, data, 2, epochs=15, output_dir=tmp_path / "ae" / "eval", model_dir=tmp_path / "ae" / "models", batch_size=8,
        lr=3e-3, progress=False, contrastive=False,
    ).run()  # fmt: skip
    assert summary["contrastive"] is False and summary["metrics"]["accuracy"] == 1.0
    assert summary["final_loss"] == summary["final_reconstruction"]  # no contrastive term in the loss
    assert all(torch.equal(head[k], v) for k, v in net.projection.state_dict().items())
    assert any(not torch.equal(rest[k], v) for k, v in net.state_dict().items() if k in rest)  # the autoencoder trained
    assert (tmp_path / "ae" / "models" / "checkpoints").is_dir()
    summary = ImageClusteringTrainer(
        net, data, 2, epochs=1, output_dir=tmp_path / "fr" / "eval", model_dir=tmp_path / "fr" / "models", batch_size=8,
        progress=False, view_augment="flip_rot90",
    ).run()  # fmt: skip
    assert summary["view_augment"] == "flip_rot90" and summary["contrastive"] is True
    proto = build_clustering_network("contrastive_ae", data.image_shape, 2, latent_dim=4, channels=(4,), strides=(2,),
                                     prototype_epochs=2)  # fmt: skip
    for bad, message in (
        ({"contrastive": False, "prototype_epochs": 2}, "option 'prototype_epochs' .* needs contrastive training"),
        ({"contrastive": False, "cluster_method": "prototypes"}, "option 'cluster_method' .* needs contrastive"),
        ({"contrastive": False, "view_augment": "flip_rot90"}, "option 'view_augment' .* needs contrastive"),
        ({"view_augment": "mixup"}, "view_augment must be one of"),
        ({"contrastive": 3}, "contrastive"),
    ):
        network = proto if "prototype_epochs" in bad else net
        with pytest.raises((ValueError, TypeError), match=message):
            ImageClusteringTrainer(network, data, 2, 1, tmp_path, tmp_path, **bad)
    dvc = build_clustering_network("dvc", data.image_shape, 2, latent_dim=4, channels=(4,), strides=(2,))
    for bad in ({"contrastive": False}, {"view_augment": "flip_rot90"}, {"cluster_method": "prototypes"}):
        with pytest.raises(ValueError, match=f"option '{next(iter(bad))}' .* is a contrastive_ae setting"):
            ImageClusteringTrainer(dvc, data, 2, 1, tmp_path, tmp_path, **bad)
    wide = ClusteringData(torch.rand(4, 1, 8, 16), ["a", "b", "c", "d"])
    wide_net = build_clustering_network("contrastive_ae", wide.image_shape, 2, latent_dim=4, channels=(4,), strides=(2,))
    with pytest.raises(ValueError, match=r"option 'view_augment' 'flip_rot90' needs square images, got the shape"):
        ImageClusteringTrainer(wide_net, wide, 2, 1, tmp_path, tmp_path, view_augment="flip_rot90")


def test_settings_check_the_cae_variant_options(tmp_path):
    base = {"method": "contrastive_ae", "num_clusters": 2, "epochs": 1, "bundle_root": str(tmp_path)}
    settings = check_clustering_settings(**base, contrastive=False, prototype_epochs=0, view_augment="default")
    assert settings["contrastive"] is False
    with pytest.raises(ValueError, match=r"option 'prototype_epochs' \(--prototype_epochs\) 20 needs contrastive"):
        check_clustering_settings(**base, contrastive=False, prototype_epochs=20)
    with pytest.raises(ValueError, match=r"option 'view_augment' \(--view_augment\) must be one of"):
        check_clustering_settings(**base, view_augment="mixup")
    with pytest.raises(ValueError, match=r"option 'contrastive' \(--contrastive\) False is a contrastive_ae setting"):
        check_clustering_settings(**{**base, "method": "dvc"}, contrastive=False)
    from monai_cluster.workflows.image_clustering import clustering_run_settings

    defaults = clustering_run_settings(_two_groups(), {**base, "contrastive": True, "view_augment": "default"})
    assert "contrastive" not in defaults["train"] and "view_augment" not in defaults["train"]  # as recorded before
    plain = clustering_run_settings(_two_groups(), {**base, "contrastive": False, "view_augment": "default"})
    assert plain["train"]["contrastive"] is False
