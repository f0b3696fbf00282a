"""semi_supervised in the heart bundle's slices overlay (train_slices.json) at toy size, on the synthetic phantoms:
each method trains on the unlabelled slices of the pool patients (never a held-out patient's), the teacher is
checkpointed, a resume is exact, and the run record refuses a resume with other semi-supervised or budget options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from monai_cluster.engines import SemiSupervisedTrainer
from monai_cluster.workflows.segmentation_bundle import bundle_workflow, run_bundle

from _semi_checks import assert_same_student_and_teacher, run_and_check_teacher

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
HEART = REPO / "bundles" / "heart_ct_segmentation"
SLICES = ("train.json", "train_slices.json")
TOY = {
    "synthetic_n": 5,
    "synthetic_size": [32, 32, 16],
    "image_size": [32, 32],
    "features": [4, 4, 8, 8, 16, 4],
    "batch_size": 8,
    "num_labeled": 1,
    "num_val_patients": 1,
    "epochs": 2,
    "val_interval": 1,
    "use_pretrained": False,
    "consistency_threshold": 0.5,
    "ema_decay": 0.9,
    "device": "cpu",
}


def _workflow(root: Path, **overrides):
    return bundle_workflow(HEART, SLICES, bundle_root=root, **{**TOY, **overrides})


def _cause(error: BaseException) -> BaseException:
    while isinstance(error, RuntimeError) and error.__cause__ is not None:
        error = error.__cause__
    return error


@pytest.mark.parametrize("method", ["mean_teacher", "copy_paste"])
def test_method_trains_on_the_unlabelled_pool_slices_and_checkpoints_the_teacher(tmp_path, method):
    workflow = _workflow(tmp_path, semi_supervised=method)
    parser = workflow.parser
    trainer = parser.get_parsed_content("train#trainer")
    assert isinstance(trainer, SemiSupervisedTrainer) and trainer.method == method
    data, unlabeled = parser.get_parsed_content("data"), parser.get_parsed_content("unlabeled#data")
    selection = data["selection"]
    unlabeled_patients = set(selection["pool"]) - set(selection["labeled"])
    assert len(selection["val"]) == 1 and len(unlabeled_patients) == 3
    # every slice of the unlabelled pool patients, no held-out (or labeled) patient's, no label
    assert {it["patient"] for it in unlabeled} == unlabeled_patients
    assert not {it["patient"] for it in unlabeled} & set(selection["val"])
    assert len(unlabeled) == 3 * 16 and all("#s" in it["key"] and "label" not in it for it in unlabeled)
    sample = parser.get_parsed_content("unlabeled#dataset")[0]
    assert sample["image"].shape == (1, 32, 32) and sample["image"].dtype == torch.float32
    run_and_check_teacher(workflow, trainer, tmp_path / "models_slices")
    assert (tmp_path / "models_slices" / "model.pt").is_file()


def test_unlabeled_dir_is_sliced_alike_and_never_gives_a_held_out_patient(tmp_path):
    default = _workflow(tmp_path, semi_supervised="mean_teacher")
    data = default.parser.get_parsed_content("data")
    pooled = default.parser.get_parsed_content("unlabeled#data")
    # the dataset's own folder holds every patient: the held-out and labeled ones are left out
    images = tmp_path / "synthetic_data" / "images"
    workflow = _workflow(tmp_path, semi_supervised="mean_teacher", unlabeled_dir=str(images))
    unlabeled = workflow.parser.get_parsed_content("unlabeled#data")
    assert not {it["patient"] for it in unlabeled} & set(data["selection"]["val"])
    assert sorted((it["patient"], it["slice"]) for it in unlabeled) == sorted((it["patient"], it["slice"]) for it in pooled)
    # a link to a held-out volume under another folder is still recognised
    other = tmp_path / "other"
    other.mkdir()
    held_out = [v for v in data["all_volumes"] if v["patient"] in data["selection"]["val"]]
    unlabeled_one = next(v for v in data["all_volumes"] if v["patient"] == pooled[0]["patient"])
    for volume in (*held_out, unlabeled_one):
        (other / Path(volume["image"]).name).symlink_to(volume["image"])
    workflow = _workflow(tmp_path, semi_supervised="copy_paste", unlabeled_dir=str(other))
    unlabeled = workflow.parser.get_parsed_content("unlabeled#data")
    assert {it["patient"] for it in unlabeled} == {unlabeled_one["patient"]} and len(unlabeled) == 16


def test_bad_options_and_no_unlabelled_patient_are_refused_up_front(tmp_path):
    for overrides, match in [
        ({"semi_supervised": "fixmatch"}, r"option 'semi_supervised'"),
        ({"semi_supervised": "mean_teacher", "ema_decay": 2.0}, r"option 'ema_decay'"),
        ({"semi_supervised": "copy_paste", "num_labeled": 4}, r"needs unlabelled slices.*--num_labeled"),
    ]:
        with pytest.raises(RuntimeError) as raised:
            _workflow(tmp_path, **overrides)
        assert re.search(match, str(_cause(raised.value))), str(_cause(raised.value))
    assert not (tmp_path / "models_slices").exists()


@pytest.mark.parametrize("method", ["mean_teacher", "copy_paste"])
def test_resume_after_a_kill_ends_with_the_student_and_teacher_of_an_uninterrupted_run(tmp_path, method):
    settings = {"epochs": 3, "semi_supervised": method, "batch_size": 4}
    whole = run_bundle(HEART, SLICES, tmp_path / "whole", **{**TOY, **settings})
    cut = _workflow(tmp_path / "cut", **settings)
    trainer = cut.parser.get_parsed_content("train#trainer")
    per_epoch = len(cut.parser.get_parsed_content("train#dataloader"))

    def crash(engine):
        raise KeyboardInterrupt("simulated kill in the middle of epoch 2")

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=per_epoch + 1), crash)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    resumed = run_bundle(HEART, SLICES, tmp_path / "cut", resume=True, **{**TOY, **settings})
    assert_same_student_and_teacher(whole, resumed, 3 * per_epoch)


@pytest.mark.parametrize(
    "first, second, match",
    [
        ({"semi_supervised": "mean_teacher"}, {"semi_supervised": "mean_teacher", "ema_decay": 0.5},
         r"'ema_decay': outputs made with 0\.9, this run asks for 0\.5"),
        ({"semi_supervised": "mean_teacher"}, {"semi_supervised": "copy_paste"},
         r"'semi_supervised': outputs made with 'mean_teacher', this run asks for 'copy_paste'"),
        ({"max_steps": 2}, {"max_steps": 3}, r"'max_steps': outputs made with 2, this run asks for 3"),
        ({"max_steps": 2}, {"max_steps": 2, "optimizer_name": "Adam"},
         r"'optimizer_name': outputs made with 'AdamW', this run asks for 'Adam'"),
        ({"eval_every_steps": 1}, {"eval_every_steps": 2}, r"'eval_every_steps': outputs made with 1, this run asks for 2"),
    ],
)  # fmt: skip
def test_resume_with_other_semi_supervised_or_budget_options_is_refused_naming_both(tmp_path, first, second, match):
    run_bundle(HEART, SLICES, tmp_path, **{**TOY, "epochs": 1, **first})
    model = (tmp_path / "models_slices" / "model.pt").read_bytes()
    with pytest.raises(Exception) as raised:
        run_bundle(HEART, SLICES, tmp_path, resume=True, **{**TOY, "epochs": 1, **second})
    assert re.search(match, str(_cause(raised.value))), str(_cause(raised.value))
    assert (tmp_path / "models_slices" / "model.pt").read_bytes() == model
    run_bundle(HEART, SLICES, tmp_path, resume=True, **{**TOY, "epochs": 1, **first})  # the same settings resume
