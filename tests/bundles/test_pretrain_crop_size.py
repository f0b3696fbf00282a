"""``crop_size`` of the two pretraining bundles at toy size: the network trains on crops; bad values are refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ignite.engine import Events

sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_cluster_contrastive_pretrain as cg  # noqa: E402
import test_local_discrimination_pretrain as ld  # noqa: E402

pytestmark = pytest.mark.bundle


def _batch_shapes(workflow, trainer_id: str) -> list[tuple]:
    shapes = []
    trainer = workflow.parser.get_parsed_content(trainer_id)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: shapes.append(tuple(e.state.batch["image"].shape)))
    return shapes


def test_local_discrimination_trains_on_crops(tmp_path):
    workflow = ld.ConfigWorkflow(
        config_file=str(ld.CONFIGS / "train.json"), meta_file=str(ld.CONFIGS / "metadata.json"), logging_file=False,
        bundle_root=str(tmp_path), **{**ld.TOY, "spatial_size": [48, 48], "synthetic_size": 48, "crop_size": 32},
    )  # fmt: skip
    workflow.initialize()
    shapes = _batch_shapes(workflow, "train#trainer")
    workflow.run()
    assert shapes == [(2, 3, 32, 32)] * 2  # 4 training images, batch 2, crops of 32 from 48 px images
    assert workflow.parser.get_parsed_content("preflight")["embedding_size"] == [32, 32]
    assert workflow.parser.get_parsed_content("run_outputs").settings["pretrain"]["crop_size"] == [32, 32]


@pytest.mark.parametrize(
    ("override", "message"),
    [({"crop_size": 64}, "'crop_size'"), ({"crop_size": 32, "grid_size": 40}, "'grid_size'"),
     ({"crop_size": 32, "shape_prior": True}, "'crop_size'")],
)
def test_local_discrimination_refuses_bad_crops_naming_the_option(tmp_path, override, message):
    with pytest.raises(Exception) as info:
        ld._run(tmp_path, **{"spatial_size": [48, 48], "synthetic_size": 48, **override})
    assert message in ld._error_chain(info.value)
    assert not (tmp_path / "models").exists()


def test_cluster_contrastive_views_are_crops(tmp_path):
    workflow = cg._run(tmp_path, image_size=[64, 64], synthetic_size=64, crop_size=32, max_steps=2)
    assert workflow.parser.get_parsed_content("train#trainer").state.iteration == 2
    batch = next(iter(workflow.parser.get_parsed_content("train#dataloader")))
    assert tuple(batch["image"].shape) == tuple(batch["image_1"].shape) == (3, 3, 32, 32)  # two views of a crop
    assert workflow.parser.get_parsed_content("preflight")["dense_size"] == [32, 32]
    assert workflow.parser.get_parsed_content("options")["crop_size"] == [32, 32]


@pytest.mark.parametrize(("crop", "message"), [(80, "'crop_size'"), (40, "'crop_size'")])
def test_cluster_contrastive_refuses_bad_crops_naming_the_option(tmp_path, crop, message):
    with pytest.raises(Exception) as info:
        cg._run(tmp_path, image_size=[64, 64], synthetic_size=64, crop_size=crop)
    text, err = [], info.value
    while err is not None:
        text.append(str(err))
        err = err.__cause__ or err.__context__
    assert message in " | ".join(text)
    assert not (tmp_path / "models").exists()
