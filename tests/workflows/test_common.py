"""Tests of the helpers every bundle shares: option checks, data resolution, device, checkpoints and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

from monai_cluster.handlers import NonFiniteLossHandler
from monai_cluster.workflows import (
    TrainingCheckpointer,
    checkpoint_path,
    find_last_checkpoint,
    list_checkpoints,
    list_unlabeled,
    load_checkpoint,
    resolve_dataset,
    resolve_device,
    save_checkpoint,
    seed_everything,
    validate_option,
    validate_options,
)


# ------------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "value, spec, expected",
    [
        (3, "int>=1", 3),
        (2.0, "int>=1", 2),
        (0, "int>=0", 0),
        (1e-3, "float>0", 1e-3),
        (2, "float>0", 2.0),
        ("true", "bool", True),
        ("No", "bool", False),
        (True, "bool", True),
        (None, "path?", None),
        ("", "path?", None),
        ("/x", "path?", "/x"),
        ([4, 8], "ints>=2", [4, 8]),
        (8, "ints>=2", [8]),
        ("avg", "choice:avg|max", "avg"),
        (None, "int?>=1", None),
    ],
)
def test_validate_option_accepts_and_normalises(value, spec, expected):
    assert validate_option("x", value, spec) == expected


@pytest.mark.parametrize(
    "value, spec, error, match",
    [
        ("abc", "int>=1", TypeError, r"option 'epochs' \(--epochs\) must be an integer >= 1, got str 'abc'"),
        (0, "int>=1", ValueError, r"'epochs'.*integer >= 1, got int 0"),
        (1.5, "int>=1", TypeError, r"'epochs'.*integer"),
        (True, "int>=1", TypeError, r"'epochs'.*got bool"),
        (-1, "float>0", ValueError, r"'epochs'.*finite number > 0.0, got float -1.0"),
        (float("nan"), "float>=0", ValueError, r"'epochs'.*finite number"),
        ("maybe", "bool", TypeError, r"'epochs'.*boolean"),
        ([4, 0], "ints>=2", ValueError, r"'epochs\[1\]'.*integer >= 2"),
        ("8,64", "ints>=2", TypeError, r"'epochs'.*non-empty list of integers"),
        ("max", "choice:avg|mean", ValueError, r"'epochs'.*one of \['avg', 'mean'\]"),
        (None, "path", TypeError, r"'epochs'.*non-empty path"),
    ],
)
def test_validate_option_rejects_naming_the_option(value, spec, error, match):
    with pytest.raises(error, match=match):
        validate_option("epochs", value, spec)


def test_validate_options_checks_all_and_names_the_first_bad_one():
    specs = {"epochs": "int>=1", "learning_rate": "float>0", "resume": "bool"}
    assert validate_options({"epochs": 2, "learning_rate": 0.1, "resume": "false"}, specs) == {
        "epochs": 2,
        "learning_rate": 0.1,
        "resume": False,
    }
    with pytest.raises(ValueError, match="'learning_rate'.*> 0.0, got float -1.0"):
        validate_options({"epochs": 2, "learning_rate": -1, "resume": False}, specs)
    with pytest.raises(ValueError, match=r"no spec for \['typo'\], no value for \['resume'\]"):
        validate_options({"epochs": 2, "learning_rate": 0.1, "typo": 1}, specs)
    with pytest.raises(ValueError, match="spec for option 'a' is not understood"):
        validate_option("a", 1, "integer")


# ---------------------------------------------------------------------------------------------- data and device


def test_resolve_dataset_generates_synthetic_data_once_under_the_bundle_root(tmp_path):
    items = resolve_dataset(None, tmp_path, kind="dermoscopy", n=3, size=32, num_classes=2, channels=3)
    assert len(items) == 3 and (tmp_path / "synthetic_data" / "images").is_dir()
    assert all(set(it) >= {"image", "label", "key"} for it in items)
    stamp = (tmp_path / "synthetic_data" / "images" / "SYN0000.png").stat().st_mtime_ns
    resolve_dataset("", tmp_path, kind="dermoscopy", n=3, size=32)
    assert (tmp_path / "synthetic_data" / "images" / "SYN0000.png").stat().st_mtime_ns == stamp


def test_list_unlabeled_excludes_masks_and_names_bad_files(tmp_path):
    root = tmp_path / "ph2like"
    for folder in ("images", "masks", "unlabeled"):
        (root / folder).mkdir(parents=True)
    rgb = np.zeros((16, 16, 3), np.uint8)
    Image.fromarray(rgb).save(root / "images" / "A.png")
    Image.fromarray(rgb[..., 0]).save(root / "masks" / "A_lesion.png")
    Image.fromarray(rgb).save(root / "unlabeled" / "B.png")
    items = list_unlabeled(root, tmp_path, channels=3)
    assert [it["key"] for it in items] == ["images/A.png", "unlabeled/B.png"]
    assert all("label" not in it for it in items)
    (root / "unlabeled" / "C.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="C.png"):
        list_unlabeled(root, tmp_path, channels=3)
    synthetic = list_unlabeled(None, tmp_path / "bundle", n=2, size=32)
    assert len(synthetic) == 2 and all(set(it) == {"image", "key"} for it in synthetic)


def test_resolve_device_and_seed():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu0")
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(3)
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="'seed'"):
        seed_everything(-1)


# ---------------------------------------------------------------------------------------------------- checkpoints


def _objects():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return net, opt, sched


def test_save_and_load_checkpoint_round_trip(tmp_path):
    net, opt, sched = _objects()
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    path = save_checkpoint(
        checkpoint_path(tmp_path, 3),
        {"network": net, "optimizer": opt, "lr_scheduler": sched},
        epoch=3,
        iteration=12,
        extra={"table": "models/pseudo_classes.csv"},
    )
    assert path.name == "checkpoint_epoch0003.pt" and not list(tmp_path.glob(".*.tmp"))
    net2, opt2, sched2 = _objects()
    payload = load_checkpoint(path, {"network": net2, "optimizer": opt2, "lr_scheduler": sched2})
    assert payload["epoch"] == 3 and payload["iteration"] == 12 and payload["extra"]["table"].endswith(".csv")
    assert torch.equal(net2.weight, net.weight)
    assert sched2.get_last_lr() == sched.get_last_lr() == [0.05]
    momentum = [o.state_dict()["state"][0]["momentum_buffer"] for o in (opt, opt2)]
    assert torch.equal(*momentum)
    with pytest.raises(ValueError, match="state of 'network' does not fit Linear"):
        load_checkpoint(path, {"network": torch.nn.Linear(4, 2)})
    with pytest.raises(ValueError, match="holds no state for 'ema'"):
        load_checkpoint(path, {"ema": net2})


def test_find_last_checkpoint_skips_damaged_files(tmp_path):
    assert find_last_checkpoint(tmp_path / "none") is None
    net, opt, _ = _objects()
    save_checkpoint(checkpoint_path(tmp_path, 1), {"network": net}, 1, 4)
    save_checkpoint(checkpoint_path(tmp_path, 2), {"network": net}, 2, 8)
    checkpoint_path(tmp_path, 3).write_bytes(b"truncated")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"checkpoint_epoch000{i}.pt" for i in (1, 2, 3)]
    assert find_last_checkpoint(tmp_path) == checkpoint_path(tmp_path, 2)
    with pytest.raises(ValueError, match="checkpoint_epoch0003.pt could not be read"):
        load_checkpoint(checkpoint_path(tmp_path, 3))


def _train_engine(net, opt, losses=None):
    def step(engine, batch):
        opt.zero_grad()
        loss = (net(batch) ** 2).mean()
        if losses is not None:
            loss = loss * losses(engine)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    return Engine(step)


def test_training_checkpointer_saves_each_epoch_and_resumes_to_the_same_epoch_count(tmp_path):
    data = [torch.randn(4, 3) for _ in range(3)]
    net, opt, sched = _objects()
    engine = _train_engine(net, opt)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
    saver = TrainingCheckpointer(
        tmp_path, {"network": net, "optimizer": opt, "lr_scheduler": sched}, n_saved=2, extra_fn=lambda: {"k": 1}
    )
    saver.attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())  # "crash" after epoch 2
    engine.run(data, max_epochs=4)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint_epoch0001.pt", "checkpoint_epoch0002.pt"]
    after_two = net.weight.detach().clone()

    net2, opt2, sched2 = _objects()
    seen = []
    engine2 = _train_engine(net2, opt2)
    engine2.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched2.step())
    resumer = TrainingCheckpointer(
        tmp_path, {"network": net2, "optimizer": opt2, "lr_scheduler": sched2}, resume=True, on_resume=seen.append
    )
    resumer.attach(engine2)
    started = []
    engine2.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append((e.state.epoch, net2.weight.clone())))
    engine2.run(data, max_epochs=4)
    assert resumer.resumed_from == checkpoint_path(tmp_path, 2) and seen == [{"k": 1}]
    assert started[0][0] == 3 and torch.equal(started[0][1], after_two)
    assert engine2.state.epoch == 4 and engine2.state.iteration == 12
    assert sched2.get_last_lr() == [0.1 * 0.5**4]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint_epoch0003.pt", "checkpoint_epoch0004.pt"]

    # resuming a finished run trains no further epoch
    net3, opt3, _ = _objects()
    engine3 = _train_engine(net3, opt3)
    TrainingCheckpointer(tmp_path, {"network": net3}, resume=True).attach(engine3)
    engine3.run(data, max_epochs=4)
    assert engine3.state.epoch == 4 and engine3.state.iteration == 12


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path):
    data = [torch.randn(4, 3) for _ in range(2)]
    net, opt, _ = _objects()
    engine = _train_engine(net, opt, losses=lambda e: float("nan") if e.state.epoch == 2 else 1.0)
    TrainingCheckpointer(tmp_path, {"network": net, "optimizer": opt}).attach(engine)
    NonFiniteLossHandler().attach(engine)
    with pytest.raises(FloatingPointError, match="non-finite loss nan at epoch 2"):
        engine.run(data, max_epochs=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint_epoch0001.pt"]
    state = load_checkpoint(find_last_checkpoint(tmp_path))["state"]["network"]
    assert torch.isfinite(state["weight"]).all()


def test_training_checkpointer_rejects_bad_arguments(tmp_path):
    net, _, _ = _objects()
    with pytest.raises(TypeError, match="objects must be a non-empty dict"):
        TrainingCheckpointer(tmp_path, {})
    with pytest.raises(ValueError, match="'n_saved'"):
        TrainingCheckpointer(tmp_path, {"network": net}, n_saved=0)
    with pytest.raises(TypeError, match="'resume'"):
        TrainingCheckpointer(tmp_path, {"network": net}, resume="perhaps")
    with pytest.raises(TypeError, match="objects \\['x'\\] have no state_dict"):
        save_checkpoint(tmp_path / "c.pt", {"x": 3}, 1, 1)


@pytest.mark.real_data
def test_list_unlabeled_on_ph2_leaves_the_masks_out(real_data):
    root = real_data("dermoscopy", "ph2")
    items = list_unlabeled(root, root, check=False)
    folders = {it["key"].split("/")[0] for it in items}
    assert folders == {"images", "unlabeled"}
    assert len(items) == len(list((root / "images").iterdir())) + len(list((root / "unlabeled").iterdir()))


def test_resume_with_another_learning_rate_is_refused_naming_both(tmp_path):
    data = [torch.randn(4, 3) for _ in range(2)]
    net, opt, sched = _objects()
    engine = _train_engine(net, opt)
    TrainingCheckpointer(tmp_path, {"network": net, "optimizer": opt, "lr_scheduler": sched}).attach(engine)
    engine.run(data, max_epochs=1)
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.05)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    engine2 = _train_engine(net2, opt2)
    TrainingCheckpointer(tmp_path, {"network": net2, "optimizer": opt2, "lr_scheduler": sched2}, resume=True).attach(
        engine2
    )
    before = net2.weight.detach().clone()
    asks = r"trained with learning rate \[0.1\] for 'optimizer', but this run asks for \[0.05\]"
    with pytest.raises(ValueError, match=asks):
        engine2.run(data, max_epochs=2)
    assert torch.equal(net2.weight, before)  # refused before anything was loaded
    # the same rate resumes (a scheduler having decayed the current rate does not count as a change)
    net3, opt3, sched3 = _objects()
    engine3 = _train_engine(net3, opt3)
    TrainingCheckpointer(tmp_path, {"network": net3, "optimizer": opt3, "lr_scheduler": sched3}, resume=True).attach(
        engine3
    )
    engine3.run(data, max_epochs=2)
    assert engine3.state.epoch == 2
