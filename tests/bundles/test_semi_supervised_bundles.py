"""semi_supervised in the segmentation bundles at toy size: each method trains in dermoscopy (2D) and heart (3D)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.transforms import Compose, SpatialPad

from monai_cluster.engines import SemiSupervisedTrainer
from monai_cluster.workflows.segmentation_bundle import bundle_workflow

from _semi_checks import assert_same_student_and_teacher, run_and_check_teacher

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
FEATURES = [4, 4, 8, 8, 16, 4]
BUNDLES = {
    "dermoscopy": (
        REPO / "bundles" / "dermoscopy_segmentation",
        {"synthetic_n": 8, "synthetic_size": 48, "image_size": 32, "features": FEATURES, "batch_size": 2},
    ),
    "heart": (
        REPO / "bundles" / "heart_ct_segmentation",
        {"synthetic_n": 5, "synthetic_size": 32, "roi_size": [32, 32, 32], "features": FEATURES, "num_samples": 1},
    ),
}
COMMON = {"device": "cpu", "use_pretrained": False, "label_fraction": 0.5, "learning_rate": 0.01}


def _workflow(kind: str, root: Path, **overrides):
    bundle, toy = BUNDLES[kind]
    return bundle_workflow(bundle, ("train.json",), bundle_root=root, **{**toy, **COMMON, **overrides})


@pytest.mark.parametrize("kind", ["dermoscopy", "heart"])
@pytest.mark.parametrize("method", ["mean_teacher", "copy_paste"])
def test_method_trains_with_the_unlabelled_pool_and_checkpoints_the_teacher(kind, method, tmp_path):
    workflow = _workflow(
        kind, tmp_path, semi_supervised=method, epochs=2, val_interval=1, consistency_threshold=0.5, ema_decay=0.9
    )
    parser = workflow.parser
    trainer = parser.get_parsed_content("train#trainer")
    network = parser.get_parsed_content("network")
    data, unlabeled = parser.get_parsed_content("data"), parser.get_parsed_content("unlabeled#data")
    assert isinstance(trainer, SemiSupervisedTrainer) and trainer.method == method
    # the default unlabelled images: the training pool minus the labelled subset, never a validation image
    labeled, val = {d["key"] for d in data["train"]}, {d["key"] for d in data["val"]}
    pool = {d["key"] for d in data["all"]} - val
    assert {d["key"] for d in unlabeled} == pool - labeled and unlabeled and "label" not in unlabeled[0]
    start = {k: v.clone() for k, v in network.state_dict().items()}
    teacher = run_and_check_teacher(workflow, trainer, tmp_path / "models")
    student = network.state_dict()
    assert any(not torch.equal(student[k], start[k]) for k in start)
    assert any(not torch.equal(teacher[k], start[k]) for k in start)  # the teacher moved ...
    assert any(not torch.equal(teacher[k], student[k]) for k in start)  # ... and is not the student
    assert (tmp_path / "models" / "model.pt").is_file()
    # TensorBoard holds the semi-supervised terms beside the loss, one value per iteration
    curves = _scalars(parser.get_parsed_content("log_dir"))
    assert len(curves["train_loss"]) == trainer.state.iteration
    kept = curves["train_kept_fraction"]
    assert len(kept) == trainer.state.iteration and all(0.0 <= v <= 1.0 for v in kept)
    if method == "mean_teacher":
        assert {"train_loss_supervised", "train_loss_consistency", "train_consistency_weight"} <= set(curves)
        assert any(v < 1.0 for v in kept) or kind == "dermoscopy"  # 2 classes: every max-probability passes 0.5
    else:
        assert kept == [1.0] * trainer.state.iteration and "train_loss_consistency" not in curves


def _scalars(log_dir) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[float]] = {}
    for events in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            curves.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return curves


@pytest.mark.parametrize("kind", ["dermoscopy", "heart"])
def test_unlabelled_images_are_loaded_and_scaled_once_into_the_cache(kind, tmp_path):
    """The unlabelled chain is the validation steps followed by the random ones in one flat list, so
    ``CacheDataset`` caches the loaded, scaled (and resized or padded) image; a nested ``Compose`` counts as random
    to MONAI's cache, which then cached nothing and re-read every image at every step."""
    parser = _workflow(kind, tmp_path, semi_supervised="mean_teacher", epochs=1).parser
    chain = parser.get_parsed_content("unlabeled#preprocessing")
    assert not any(isinstance(t, Compose) for t in chain.transforms)
    dataset = parser.get_parsed_content("unlabeled#dataset")
    item = parser.get_parsed_content("unlabeled#data")[0]
    validate = parser.get_parsed_content("validate#preprocessing")
    expected = validate({"image": item["image"]})["image"]
    if kind == "heart":  # the padding to the crop size is deterministic and cached as well
        expected = SpatialPad(parser.get_parsed_content("options")["roi_size"])(expected)
    cached = dataset._cache[0]["image"]
    assert isinstance(cached, torch.Tensor) and cached.dtype == torch.float32
    assert cached.shape == expected.shape and torch.equal(torch.as_tensor(cached), torch.as_tensor(expected))
    sample = dataset[0]
    sample = sample[0] if isinstance(sample, list) else sample  # the 3D chain crops num_samples patches
    assert sample["image"].ndim == (3 if kind == "dermoscopy" else 4)


def test_default_is_supervised_and_builds_nothing_unlabelled(tmp_path):
    workflow = _workflow("dermoscopy", tmp_path, epochs=1, label_fraction=1.0)
    parser = workflow.parser
    assert type(parser.get_parsed_content("train#trainer")) is SupervisedTrainer
    assert parser.get_parsed_content("unlabeled#dataloader") is None
    assert parser.get_parsed_content("ema_teacher") is None
    assert parser.get_parsed_content("unlabeled#data") == []


def test_unlabeled_dir_gives_the_unlabelled_images_but_never_labelled_or_validation_ones(tmp_path):
    other = _workflow("dermoscopy", tmp_path / "other", epochs=1, label_fraction=1.0)
    other_images = Path(other.parser.get_parsed_content("data")["all"][0]["image"]).parent
    own = _workflow("dermoscopy", tmp_path / "own", epochs=1, label_fraction=1.0)
    own_images = Path(own.parser.get_parsed_content("data")["all"][0]["image"]).parent
    # a folder of other images: all of them
    workflow = _workflow("dermoscopy", tmp_path / "own", semi_supervised="mean_teacher", unlabeled_dir=str(other_images))
    unlabeled = workflow.parser.get_parsed_content("unlabeled#data")
    assert sorted(Path(d["image"]) for d in unlabeled) == sorted(other_images.glob("*.png"))
    # the pool's own folder: its labelled and validation images are left out
    workflow = _workflow("dermoscopy", tmp_path / "own", semi_supervised="mean_teacher", unlabeled_dir=str(own_images))
    data = workflow.parser.get_parsed_content("data")
    held = {os.path.abspath(d["image"]) for split in ("train", "val") for d in data[split]}
    paths = {os.path.abspath(d["image"]) for d in workflow.parser.get_parsed_content("unlabeled#data")}
    assert paths and not paths & held and paths | held == {str(p.resolve()) for p in own_images.glob("*.png")}


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"semi_supervised": "fixmatch"}, "semi_supervised"),
        ({"semi_supervised": "mean_teacher", "ema_decay": 1.5}, "ema_decay"),
        ({"semi_supervised": "copy_paste", "copy_paste_fraction": 0}, "copy_paste_fraction"),
        ({"semi_supervised": "mean_teacher", "consistency_rampup": -1}, "consistency_rampup"),
        ({"semi_supervised": "mean_teacher", "consistency_cutmix": "maybe"}, "consistency_cutmix"),
        ({"semi_supervised": "mean_teacher", "unlabeled_dir": "/no/such/folder"}, "unlabeled_dir"),
    ],
)
def test_bad_options_are_refused_up_front_naming_them(tmp_path, overrides, match):
    with pytest.raises(RuntimeError) as info:  # MONAI wraps the error of the `initialize` expression
        _workflow("dermoscopy", tmp_path, **overrides)
    assert isinstance(info.value.__cause__, (ValueError, TypeError)) and match in str(info.value.__cause__)
    assert not (tmp_path / "models").exists()


def test_every_image_labelled_is_a_clear_error(tmp_path):
    workflow = _workflow("dermoscopy", tmp_path, semi_supervised="copy_paste", label_fraction=1.0)
    with pytest.raises(RuntimeError) as info:
        workflow.parser.get_parsed_content("train#trainer")
    assert "needs unlabelled images" in str(info.value.__cause__) and "--label_fraction" in str(info.value.__cause__)


@pytest.mark.parametrize("method", ["mean_teacher", "copy_paste"])
def test_resume_after_a_kill_ends_with_the_student_and_teacher_of_an_uninterrupted_run(tmp_path, method):
    settings = {"epochs": 3, "val_interval": 1, "semi_supervised": method, "consistency_threshold": 0.5}
    whole = _workflow("dermoscopy", tmp_path / "whole", **settings)
    whole.run()
    whole.finalize()
    cut = _workflow("dermoscopy", tmp_path / "cut", **settings)
    trainer = cut.parser.get_parsed_content("train#trainer")

    def crash(engine):
        raise KeyboardInterrupt("simulated kill in the middle of epoch 2")

    per_epoch = len(cut.parser.get_parsed_content("train#dataloader"))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=per_epoch + 1), crash)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    resumed = _workflow("dermoscopy", tmp_path / "cut", resume=True, **settings)
    resumed.run()
    resumed.finalize()
    assert_same_student_and_teacher(whole, resumed, 3 * per_epoch)


def test_resume_with_other_semi_supervised_options_is_refused_naming_both(tmp_path):
    settings = {"epochs": 1, "semi_supervised": "mean_teacher", "ema_decay": 0.9}
    workflow = _workflow("dermoscopy", tmp_path, **settings)
    workflow.run()
    workflow.finalize()
    for other, match in [
        ({"ema_decay": 0.5}, "'ema_decay': outputs made with 0.9, this run asks for 0.5"),
        ({"semi_supervised": "copy_paste"}, "'semi_supervised': outputs made with 'mean_teacher', this run asks for"),
    ]:
        resumed = _workflow("dermoscopy", tmp_path, resume=True, **{**settings, **other})
        with pytest.raises(Exception) as raised:
            resumed.run()
        cause = raised.value
        while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
            cause = cause.__cause__
        assert match in str(cause), str(cause)


def test_consistency_cutmix_reaches_the_trainer_and_the_run_record_only_when_on(tmp_path, caplog):
    from monai_cluster.workflows.semi_supervised import check_semi_supervised_options, semi_supervised_settings

    on = _workflow("dermoscopy", tmp_path / "on", semi_supervised="mean_teacher", consistency_cutmix=True)
    off = _workflow("dermoscopy", tmp_path / "off", semi_supervised="mean_teacher")
    assert on.parser.get_parsed_content("train#trainer").strong_mix is True
    assert off.parser.get_parsed_content("train#trainer").strong_mix is False
    # recorded when on; absent when off, as in the records of runs from before the option
    assert semi_supervised_settings(check_semi_supervised_options("mean_teacher", consistency_cutmix=True))[
        "consistency_cutmix"] is True  # fmt: skip
    assert "consistency_cutmix" not in semi_supervised_settings(check_semi_supervised_options("mean_teacher"))
    with caplog.at_level(logging.WARNING, logger="monai_cluster.workflows.semi_supervised"):
        check_semi_supervised_options("copy_paste", consistency_cutmix=True)
    assert "consistency_cutmix is ignored" in caplog.text and "'copy_paste'" in caplog.text
    # a run started without it is not resumed with it
    settings = {"epochs": 1, "val_interval": 1, "semi_supervised": "mean_teacher", "consistency_threshold": 0.5}
    first = _workflow("dermoscopy", tmp_path / "run", **settings)
    first.run()
    first.finalize()
    with pytest.raises(RuntimeError) as info:
        _workflow("dermoscopy", tmp_path / "run", resume=True, consistency_cutmix=True, **settings).run()
    assert "consistency_cutmix" in str(info.value) + str(info.value.__cause__)
