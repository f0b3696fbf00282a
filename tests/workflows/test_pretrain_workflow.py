"""Unit tests of the pretraining workflow pieces: option checks, transforms, stages 1-2, table in checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from monai_cluster.clustering import PseudoClassTable, read_pseudo_class_table, write_pseudo_class_table
from monai_cluster.transforms import PseudoClassd
from monai_cluster.handlers import PretrainProgress
from monai_cluster.workflows import (
    autoencoder_transforms,
    build_autoencoder,
    check_pretrain_options,
    cluster_pseudo_classes,
    feature_transforms,
    load_autoencoder,
    make_pseudo_class_transform,
    prepare_unlabeled,
    pretrain_transforms,
    run_pretrain,
    table_from_extra,
    run_autoencoder_stage,
    table_to_extra,
)

OPTIONS = {
    "epochs": 2,
    "autoencoder_epochs": 1,
    "batch_size": 4,
    "image_size": 32,
    "learning_rate": 1e-3,
    "autoencoder_learning_rate": 1e-3,
    "features": [4, 4, 8, 8, 16, 4],
    "use_pseudo_classes": "true",
    "pseudo_class_level": -1,
    "num_clusters": [2, 3],
    "recluster_interval": 0,
    "temperature": 0.1,
    "global_weight": 1.0,
    "local_weight": 0.0,
    "schedule": "joint",
    "local_epochs": 1,
    "crop_scale": [0.35, 1.0],
    "resume": False,
    "seed": 0,
    "spatial_dims": 2,
    "in_channels": 3,
    "dataset_dir": None,
    "bundle_root": "/tmp/x",
}


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    return prepare_unlabeled(None, root, n=6, size=32, channels=3, spatial_dims=2)


def test_check_pretrain_options_normalises_and_checks_combinations():
    checked = check_pretrain_options(**OPTIONS)
    assert checked["image_size"] == [32, 32] and checked["use_pseudo_classes"] is True
    with pytest.raises(ValueError, match="'global_weight' and 'local_weight' are both 0"):
        check_pretrain_options(**{**OPTIONS, "global_weight": 0, "local_weight": 0})
    with pytest.raises(ValueError, match="features must be six BasicUNet feature sizes"):
        check_pretrain_options(**{**OPTIONS, "features": [4, 8]})
    with pytest.raises(ValueError, match="option 'spatial_dims' must be 2 or 3, got 4"):
        check_pretrain_options(**{**OPTIONS, "spatial_dims": 4})
    with pytest.raises(ValueError, match=r"option 'image_size' must give 1 or 2 sizes for 2D data, got \[32, 32, 32\]"):
        check_pretrain_options(**{**OPTIONS, "image_size": [32, 32, 32]})
    with pytest.raises(TypeError, match=r"option 'batch_size' \(--batch_size\) must be an integer >= 2, got str"):
        check_pretrain_options(**{**OPTIONS, "batch_size": "8x"})
    with pytest.raises(ValueError, match=r"option 'schedule' \(--schedule\) must be one of \['joint', 'staged'\]"):
        check_pretrain_options(**{**OPTIONS, "schedule": "both"})
    with pytest.raises(ValueError, match="option 'crop_scale' must be \\[low, high\\]"):
        check_pretrain_options(**{**OPTIONS, "crop_scale": [0.5, 1.5]})
    with pytest.raises(ValueError, match="'staged' but 'global_weight' is 0"):
        check_pretrain_options(**{**OPTIONS, "schedule": "staged", "global_weight": 0, "local_weight": 1})


def test_pretrain_transforms_make_aligned_views_with_pseudo_classes(items, tmp_path):
    table = PseudoClassTable([it["key"] for it in items], np.array([[0, 0], [0, 1]] * 3), (2, 3), "test")
    chain = pretrain_transforms(2, 32, views="intensity", pseudo_class_transform=PseudoClassd(table))
    chain.set_random_state(0)
    out = chain(items[1])
    assert out["image"].shape == out["image_1"].shape == (3, 32, 32)
    assert "image_geometry" not in out  # intensity-only views are aligned voxel by voxel
    assert out["image"].dtype == torch.float32 and torch.isfinite(out["image"]).all()
    assert not torch.equal(out["image"], out["image_1"])  # each view has its own intensity augmentation
    assert out["pseudo_class"].tolist() == [0, 1] and out["pseudo_class"].dtype == np.int64
    base = feature_transforms(2, 32)(items[1])["image"]
    assert 0.0 <= float(base.min()) and float(base.max()) <= 1.0
    simclr = pretrain_transforms(2, [32, 32], views="geometric")(items[0])
    assert "pseudo_class" not in simclr and simclr["image_1"].shape == (3, 32, 32)
    assert simclr["image_geometry"].shape == simclr["image_geometry_1"].shape == (3, 3)
    assert not torch.equal(simclr["image_geometry"], simclr["image_geometry_1"])  # each view its own crop
    with pytest.raises(ValueError, match="option 'views' must be one of"):
        pretrain_transforms(2, 32, views="spatial")
    with pytest.raises(ValueError, match="'image_size' must be a multiple of 16"):
        pretrain_transforms(2, 24)
    with pytest.raises(ValueError, match="'intensity_range' must be \\(low, high\\) with high > low"):
        feature_transforms(2, 32, intensity_range=(1.0, 0.0))


class _Killed(Exception):
    pass


def test_autoencoder_stage_killed_mid_epoch_resumes_inside_the_stage(items, tmp_path, monkeypatch):
    """Stage 1 killed in its third epoch and rerun with resume ends with the weights of an uninterrupted run."""
    from ignite.engine import Events

    from monai_cluster.engines import step_trainer

    def stage(root, **kwargs):
        torch.manual_seed(0)
        net = build_autoencoder(2, 3, channels=(4, 8))
        run_autoencoder_stage(net, items, autoencoder_transforms(2, 32), root / "autoencoder.pt", epochs=4,
                              batch_size=4, learning_rate=5e-3, **kwargs)  # fmt: skip
        return net

    whole = stage(tmp_path / "whole")
    original = step_trainer.StepTrainer.__init__

    def killing_init(self, *args, **kwargs):  # a kill in the middle of epoch 3 (iteration 2 of 2)
        original(self, *args, **kwargs)

        @self.on(Events.ITERATION_COMPLETED(once=6))
        def kill(engine):
            raise _Killed

    monkeypatch.setattr(step_trainer.StepTrainer, "__init__", killing_init)
    with pytest.raises(_Killed):
        stage(tmp_path / "cut")
    monkeypatch.setattr(step_trainer.StepTrainer, "__init__", original)
    assert not (tmp_path / "cut" / "autoencoder.pt").exists()
    checkpoints = sorted(p.name for p in (tmp_path / "cut" / "autoencoder_checkpoints" / "autoencoder").iterdir())
    assert checkpoints == ["checkpoint_epoch0002.pt"]
    torch.manual_seed(7)  # another initialisation: everything comes from the checkpoint
    resumed = build_autoencoder(2, 3, channels=(4, 8))
    result = run_autoencoder_stage(resumed, items, autoencoder_transforms(2, 32), tmp_path / "cut" / "autoencoder.pt",
                                   epochs=4, batch_size=4, learning_rate=5e-3, resume=True)  # fmt: skip
    assert result["skipped"] is False and len(result["loss"]) == 4
    assert not (tmp_path / "cut" / "autoencoder_checkpoints").exists()  # a finished stage keeps only its weights
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_autoencoder_and_clustering_stages(items, tmp_path):
    torch.manual_seed(0)
    net = build_autoencoder(2, 3, channels=(4, 8, 8, 8))
    weights = tmp_path / "models" / "autoencoder.pt"
    result = run_autoencoder_stage(net, items, autoencoder_transforms(2, 32), weights, epochs=4, batch_size=3,
                                   learning_rate=5e-3, log_dir=tmp_path / "runs")
    assert result["loss"][-1] < result["loss"][0] and weights.is_file()
    assert list((tmp_path / "runs").glob("events.out.tfevents.*"))
    skipped = run_autoencoder_stage(build_autoencoder(2, 3, channels=(4, 8, 8, 8)), items,
                                    autoencoder_transforms(2, 32), weights, epochs=4, resume=True)
    assert skipped["skipped"] is True

    table_path = tmp_path / "models" / "pseudo_classes.csv"
    fresh = build_autoencoder(2, 3, channels=(4, 8, 8, 8))
    table = cluster_pseudo_classes(fresh, items, feature_transforms(2, 32), table_path, num_clusters=(2, 3),
                                   autoencoder_path=weights)
    assert torch.equal(fresh.state_dict()["encode.encode_0.conv.unit0.conv.weight"],
                       net.state_dict()["encode.encode_0.conv.unit0.conv.weight"])
    assert read_pseudo_class_table(table_path, expected_keys=[it["key"] for it in items]) == table
    assert table.feature_model == "FeatureAutoEncoder (autoencoder.pt)"
    with pytest.raises(ValueError, match="'num_clusters' asks for 8 clusters at the finest level, but .* only 6"):
        cluster_pseudo_classes(fresh, items, feature_transforms(2, 32), table_path, num_clusters=(2, 8))
    with pytest.raises(ValueError, match="'num_clusters' must increase strictly"):
        cluster_pseudo_classes(fresh, items, feature_transforms(2, 32), table_path, num_clusters=(3, 2))
    with pytest.raises(ValueError, match="autoencoder weights .*missing.pt do not exist; run the autoencoder stage"):
        load_autoencoder(fresh, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="do not fit the configured autoencoder"):
        load_autoencoder(build_autoencoder(2, 3, channels=(8, 8, 8, 8)), weights)


def test_pseudo_class_transform_and_table_in_checkpoints(items, tmp_path):
    keys = [it["key"] for it in items]
    table = PseudoClassTable(keys, np.array([[0, 0], [1, 2]] * 3), (2, 3), "feature model")
    assert table_from_extra(table_to_extra(table)) == table and table_to_extra(None) is None
    path = write_pseudo_class_table(table, tmp_path / "pseudo_classes.csv")
    assert make_pseudo_class_transform(path, False) is None
    assert make_pseudo_class_transform(path, "true", items).table == table
    with pytest.raises(ValueError, match="missing.csv does not exist; run the clustering stage first"):
        make_pseudo_class_transform(tmp_path / "missing.csv", True)
    other = PseudoClassTable([f"images/OTHER{i}.png" for i in range(6)], table.labels, (2, 3), "x")
    write_pseudo_class_table(other, tmp_path / "other.csv")
    with pytest.raises(ValueError, match="another dataset"):
        make_pseudo_class_transform(tmp_path / "other.csv", True, items)


def test_progress_and_run_pretrain_reject_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="loss_function must expose last_components"):
        PretrainProgress(torch.nn.MSELoss())
    engine = Engine(lambda e, b: None)
    engine.state.epoch_length = 0
    with pytest.raises(ValueError, match="option 'batch_size' is larger than the number of unlabeled images"):
        run_pretrain(engine, torch.nn.Linear(2, 2), tmp_path / "model.pt")


def test_check_batch_fits_counts_batches_and_names_the_option():
    from monai_cluster.workflows import check_batch_fits

    items = [{"image": f"{i}.png", "key": f"{i}.png"} for i in range(10)]
    assert check_batch_fits(items, 4) == 2
    with pytest.raises(ValueError, match=r"option 'batch_size'.*10 images over 1 process.*got 16"):
        check_batch_fits(items, 16)
