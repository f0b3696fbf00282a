"""The segmentation bundles' cheaper training step trains exactly as before.

Two changes make a fine-tuning step cheaper on the CPU: the random training chains run without MONAI's metadata
tracking (``monai_cluster.transforms.NoMetaRandomCompose``: the loading prefix that ``CacheDataset`` caches keeps it,
the per-sample random part does not), and the training metric is computed on the whole batch (``decollate: false``
and a batch-level softmax, argmax and one-hot with ``dim=1``) instead of per decollated sample. Here each bundle
trains a few steps at toy size from the same seed with the configs as they are and with the old behaviour restored
by overrides (``Compose`` chains, the per-sample post-processing, ``decollate: true``): the final weights must be
equal (``torch.equal``) and the ``train_mean_dice`` of every epoch equal within 1e-6, also with a semi-supervised
method (whose unlabelled chain changed alike). The slices overlay's training items come out as plain tensors,
the random part runs untracked, and the cache and the checkpointer's random sources are those of ``Compose``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import MetaTensor, get_track_meta
from monai.metrics import DiceMetric
from monai.transforms import Compose, Lambdad

from monai_cluster.transforms import NoMetaCompose, NoMetaRandomCompose
from monai_cluster.utils.random_state import random_sources
from monai_cluster.workflows.segmentation_bundle import bundle_workflow

pytestmark = pytest.mark.bundle

REPO = Path(__file__).resolve().parents[2]
HEART = REPO / "bundles" / "heart_ct_segmentation"
DERMOSCOPY = REPO / "bundles" / "dermoscopy_segmentation"
SLICES = ("train.json", "train_slices.json")
FEATURES = [4, 4, 8, 8, 16, 4]
SLICES_TOY = {"synthetic_n": 5, "synthetic_size": [32, 32, 16], "image_size": [32, 32], "features": FEATURES,
              "batch_size": 8, "num_val_patients": 1, "epochs": 2, "val_interval": 2, "use_pretrained": False,
              "device": "cpu", "seed": 3}  # fmt: skip
HEART_TOY = {"synthetic_n": 3, "synthetic_size": 32, "roi_size": [32, 32, 32], "features": FEATURES, "epochs": 2,
             "val_interval": 2, "use_pretrained": False, "device": "cpu", "seed": 3}  # fmt: skip
DERMOSCOPY_TOY = {"synthetic_n": 8, "synthetic_size": 48, "image_size": 32, "features": FEATURES, "batch_size": 4,
                  "epochs": 2, "val_interval": 2, "use_pretrained": False, "device": "cpu", "seed": 3}  # fmt: skip
SEMI = {"ema_decay": 0.9, "consistency_threshold": 0.5}


def _per_sample_postprocessing() -> dict:
    """The trainer's post-processing before: per decollated sample, softmax, argmax and one-hot on dim 0."""
    return {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "AsDiscreted",
                "keys": ["pred", "label"],
                "argmax": [True, False],
                "to_onehot": "@num_classes",
            },
        ],
    }


OLD_BEHAVIOUR = {
    "train#preprocessing#_target_": "Compose",
    "unlabeled#preprocessing#_target_": "Compose",
    "train#postprocessing": _per_sample_postprocessing(),
    "train#trainer#decollate": True,
}


def _train(bundle: Path, configs, root: Path, **overrides) -> dict:
    """Train ``configs`` of ``bundle``; the final weights, ``train_mean_dice`` per epoch (as the trainer logged it
    and, for a batch output, recomputed by hand from the post-processed outputs), the logged losses and the key
    objects."""
    workflow = bundle_workflow(bundle, configs, bundle_root=root, **overrides)
    parser = workflow.parser
    network = parser.get_parsed_content("network")
    start = {k: v.clone() for k, v in network.state_dict().items()}
    trainer = parser.get_parsed_content("train#trainer")
    loggers = [h for h in parser.get_parsed_content("train#handlers") if getattr(h, "tag_name", None) == "train_loss"]
    assert len(loggers) == 2  # StatsHandler and TensorBoardStatsHandler
    run = {"dice": [], "by_hand": [], "outputs": [], "losses": [], "samples": []}
    by_hand = DiceMetric(include_background=False)

    def iteration(engine):
        out = engine.state.output
        run["outputs"].append(type(out))
        # what the loss loggers get (the TensorBoard one, OutputScalars: a dict with the loss under its tag)
        got = [h.output_transform(out) for h in loggers]
        run["losses"].append([g["train_loss"] if isinstance(g, dict) else g for g in got])
        if isinstance(out, dict):  # the batch: one-hot predictions and labels of every sample the loss saw
            assert out["pred"].shape == out["label"].shape and not out["pred"].requires_grad
            assert torch.equal(out["pred"].sum(1), torch.ones_like(out["pred"][:, 0]))
            run["samples"].append(out["pred"].shape[0])
            by_hand(out["pred"], out["label"])

    def epoch(engine):
        run["dice"].append(float(engine.state.metrics["train_mean_dice"]))
        if run["samples"]:
            run["by_hand"].append(float(by_hand.aggregate()))
            by_hand.reset()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        workflow.run()
    workflow.finalize()
    run["warnings"] = [str(w.message) for w in caught]
    return {**run, "weights": network.state_dict(), "start": start, "trainer": trainer,
            "preprocessing": parser.get_parsed_content("train#preprocessing"),
            "val_dice": parser.get_parsed_content("validate#evaluator").state.metrics.get("val_mean_dice")}  # fmt: skip


def _assert_same_training(new: dict, old: dict, same_metric: bool = True) -> None:
    assert isinstance(new["preprocessing"], NoMetaRandomCompose)
    assert type(old["preprocessing"]) is Compose  # the overrides restored the old chain
    assert set(new["outputs"]) == {dict} and set(old["outputs"]) == {list}  # batch output vs decollated samples
    assert new["weights"].keys() == old["weights"].keys()
    differing = [k for k in new["weights"] if not torch.equal(new["weights"][k], old["weights"][k])]
    assert not differing, f"weights differ from the old behaviour's: {differing[:5]}"
    trained = [k for k in new["weights"] if not torch.equal(new["weights"][k], new["start"][k])]
    assert trained, "training changed no weight: the comparison would be vacuous"
    # the loss loggers get the same scalar loss from the batch output as from the decollated one
    assert len(new["losses"]) == len(old["losses"]) == new["trainer"].state.iteration
    for a, b in zip(new["losses"], old["losses"]):
        assert all(isinstance(x, float) or (isinstance(x, torch.Tensor) and x.ndim == 0) for x in a)  # one number
        assert all(isinstance(x, float) for x in b)  # decollated: a number per sample, the first one logged
        assert all(float(x) == b[0] for x in a + b)
    assert not [w for w in new["warnings"] if "non-scalar output" in w]
    assert len(new["dice"]) == len(old["dice"]) >= 2
    assert all(math.isfinite(d) for d in new["dice"])
    assert new["dice"] == pytest.approx(new["by_hand"], abs=1e-6, rel=0)
    if same_metric:
        assert new["dice"] == pytest.approx(old["dice"], abs=1e-6, rel=0)
    assert new["val_dice"] is not None and new["val_dice"] == pytest.approx(old["val_dice"], abs=1e-6, rel=0)


@pytest.mark.parametrize("semi_supervised", ["none", "mean_teacher", "copy_paste"])
def test_heart_slices_train_as_before(tmp_path, semi_supervised):
    settings = {**SLICES_TOY, "semi_supervised": semi_supervised}
    if semi_supervised != "none":
        settings.update(SEMI, num_labeled=1)
    new = _train(HEART, SLICES, tmp_path / "new", **settings)
    old = _train(HEART, SLICES, tmp_path / "old", **settings, **OLD_BEHAVIOUR)
    # copy_paste scores the 2B mixed predictions of a batch of B: decollated, the old post-processing (zipped with
    # the B batch items) reached only the first B of them and the metric scored the other B as raw logits, so its
    # train_mean_dice was wrong; the batch metric scores all 2B (checked by hand above), the weights are unchanged
    _assert_same_training(new, old, same_metric=semi_supervised != "copy_paste")
    batch = settings["batch_size"]  # the labelled slices (16 a patient) fill whole batches
    assert set(new["samples"]) == ({2 * batch} if semi_supervised == "copy_paste" else {batch})


def test_heart_3d_trains_as_before(tmp_path):
    new = _train(HEART, ("train.json",), tmp_path / "new", **HEART_TOY)
    old = _train(HEART, ("train.json",), tmp_path / "old", **HEART_TOY, **OLD_BEHAVIOUR)
    _assert_same_training(new, old)


def test_dermoscopy_trains_as_before(tmp_path):
    new = _train(DERMOSCOPY, ("train.json",), tmp_path / "new", **DERMOSCOPY_TOY)
    old = _train(DERMOSCOPY, ("train.json",), tmp_path / "old", **DERMOSCOPY_TOY, **OLD_BEHAVIOUR)
    _assert_same_training(new, old)


def test_batch_postprocessing_gives_the_per_sample_one_detached(tmp_path):
    """The trainer's chain on a batch equals the old chain on each sample; its outputs carry no graph."""
    workflow = bundle_workflow(HEART, SLICES, bundle_root=tmp_path, **SLICES_TOY)
    batch_chain = workflow.parser.get_parsed_content("train#postprocessing")
    workflow.parser["old_postprocessing"] = _per_sample_postprocessing()
    per_sample = workflow.parser.get_parsed_content("old_postprocessing")
    assert isinstance(batch_chain, NoMetaCompose) and type(per_sample) is Compose
    k = workflow.parser.get_parsed_content("num_classes")
    logits = torch.randn(6, k, 9, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    label = torch.randint(0, k, (6, 1, 9, 7), generator=torch.Generator().manual_seed(1)).float()
    out = batch_chain({"pred": logits * 1.0, "label": label})
    assert out["pred"].shape == out["label"].shape == (6, k, 9, 7) and not out["pred"].requires_grad
    assert type(out["pred"]) is torch.Tensor and type(out["label"]) is torch.Tensor
    assert torch.equal(out["pred"].argmax(1), logits.argmax(1))  # the predicted classes, as one-hot on dim 1
    for i in range(6):
        one = per_sample({"pred": logits[i].detach(), "label": label[i]})
        assert torch.equal(out["pred"][i], torch.as_tensor(one["pred"]))
        assert torch.equal(out["label"][i], torch.as_tensor(one["label"]))


def test_slice_training_items_are_plain_tensors_and_the_cache_is_compose_s(tmp_path):
    """A training item of the slices overlay is a plain tensor, the random part runs untracked (a spy before the
    chain's last step sees no MetaTensor), the cache holds what a ``Compose`` cached, and the checkpointer finds the
    same random sources as with ``Compose`` (so checkpoints of either resume with the other)."""
    new = bundle_workflow(HEART, SLICES, bundle_root=tmp_path / "new", **SLICES_TOY).parser
    old = bundle_workflow(HEART, SLICES, bundle_root=tmp_path / "old", **SLICES_TOY, **OLD_BEHAVIOUR).parser
    new_ds, old_ds = new.get_parsed_content("train#dataset"), old.get_parsed_content("train#dataset")
    chain = new_ds.transform
    assert isinstance(chain, NoMetaRandomCompose) and type(old_ds.transform) is Compose
    assert type(chain.transforms[chain.first_random]).__name__ == "RandFlipd"  # loading and resizing stay tracked
    # the cached deterministic prefix: the same items as Compose caches
    assert len(new_ds._cache) == len(old_ds._cache) > 0
    for a, b in zip(new_ds._cache, old_ds._cache):
        assert sorted(a) == sorted(b)
        for key in ("image", "label"):
            assert type(a[key]) is type(b[key]) and torch.equal(a[key], b[key]), key
    # the random part: spy on what reaches the last transform, in both chains
    seen = {}

    def spy(name):
        def record(x):
            seen[name] = (type(x), get_track_meta())
            return x

        return Lambdad("image", record)

    for name, ds in (("new", new_ds), ("old", old_ds)):
        ds.transform.transforms = (*ds.transform.transforms[:-1], spy(name), ds.transform.transforms[-1])
    item, old_item = new_ds[0], old_ds[0]
    assert seen["new"] == (torch.Tensor, False), seen["new"]
    assert seen["old"][0] is MetaTensor  # the old chain tracked: the check above can fail
    assert get_track_meta()  # the caller's flag is back
    for key in ("image", "label"):
        assert type(item[key]) is torch.Tensor and not isinstance(item[key], MetaTensor), key
        assert item[key].dtype == torch.float32 and item[key].shape == (1, 32, 32)
        assert torch.equal(item[key], torch.as_tensor(old_item[key])), key  # both seeded alike: the same draw
    # the checkpointer's random sources (random_objects) are Compose's, in the same order
    new_sources = [type(s).__name__ for s in random_sources([new_ds])]
    assert new_sources and new_sources == [type(s).__name__ for s in random_sources([old_ds])]
