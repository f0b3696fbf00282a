"""SemiSupervisedTrainer at toy size: both methods run in 2D and 3D, the student learns, the teacher follows by EMA."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.losses import DiceCELoss
from monai.transforms import Randomizable

from monai_cluster.engines import BatchIntensityPerturbation, SemiSupervisedTrainer
from monai_cluster.handlers import EMATeacherHandler
from monai_cluster.transforms import RandCopyPaste


def _net(spatial_dims: int, k: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(1, 6, 3, padding=1), torch.nn.ReLU(), conv(6, k, 1))


def _loaders(spatial, n_labeled=6, n_unlabeled=4, batch=2, k=3):
    g = torch.Generator().manual_seed(0)
    labeled = [
        {"image": torch.rand(1, *spatial, generator=g), "label": torch.randint(0, k, (1, *spatial), generator=g).float()}
        for _ in range(n_labeled)
    ]
    unlabeled = [{"image": torch.rand(1, *spatial, generator=g)} for _ in range(n_unlabeled)]
    return DataLoader(labeled, batch_size=batch, shuffle=False), DataLoader(unlabeled, batch_size=batch, shuffle=True)


def _trainer(spatial, method, **kwargs):
    net = _net(len(spatial))
    labeled, unlabeled = _loaders(spatial)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    options = {"threshold": 0.0, "ema_decay": 0.7, "seed": 3, **kwargs}
    trainer = SemiSupervisedTrainer(
        "cpu", 2, labeled, unlabeled, net, opt, DiceCELoss(to_onehot_y=True, softmax=True), method=method, **options
    )
    return trainer, net


@pytest.mark.parametrize("spatial", [(8, 8), (8, 8, 8)])
@pytest.mark.parametrize("method", ["mean_teacher", "copy_paste"])
def test_iterations_run_student_changes_teacher_follows_by_ema(spatial, method):
    trainer, net = _trainer(spatial, method)
    start = copy.deepcopy(net.state_dict())
    students, outputs = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: students.append(copy.deepcopy(net.state_dict())))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output[0])))
    trainer.run()
    assert trainer.state.iteration == 6 and len(students) == 6  # 2 epochs x 3 labelled batches; 2 unlabelled cycled
    assert all(torch.isfinite(torch.as_tensor(o["loss"])) for o in outputs)
    assert not torch.equal(net.state_dict()["0.weight"], start["0.weight"])
    expected = {k: v.clone() for k, v in start.items()}
    for t, student in enumerate(students):
        d = min(0.7, 1 - 1 / (t + 1))
        expected = {k: expected[k] * d + s * (1 - d) for k, s in student.items()}
    for k, v in trainer.teacher.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-7)
    assert not torch.equal(trainer.teacher.state_dict()["0.weight"], net.state_dict()["0.weight"])
    if method == "mean_teacher":
        assert outputs[0]["kept_fraction"] == 1.0  # threshold 0 keeps every voxel
        assert outputs[0]["loss_consistency"] > 0


def test_mean_teacher_loss_is_supervised_plus_ramped_consistency():
    trainer, _ = _trainer((8, 8), "mean_teacher", consistency_weight=2.0, rampup_length=4)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output[0])))
    trainer.run()
    for t, out in enumerate(seen):
        w = 2.0 * (math.exp(-5 * (1 - min(t, 4) / 4) ** 2))
        assert out["consistency_weight"] == pytest.approx(w)
        assert float(out["loss"]) == pytest.approx(float(out["loss_supervised"]) + w * float(out["loss_consistency"]))


def test_copy_paste_mixes_labels_and_teacher_pseudo_labels_with_the_box():
    trainer, net = _trainer((8, 8), "copy_paste", copy_paste_fraction=0.5)
    first_teacher = copy.deepcopy(trainer.teacher)  # the teacher the first iteration used
    labeled = next(iter(trainer.data_loader))
    seen = {}

    def grab(engine):
        if engine.state.iteration == 1:
            seen["out"] = engine.state.output
            seen["mask"] = torch.as_tensor(trainer._mixer(2).last_mask)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, grab)
    trainer.run()
    m, out = seen["mask"], seen["out"]  # decollated: 2 samples of mix_ab, then 2 of mix_ba
    assert m.sum() == 16  # a 4 x 4 box in 8 x 8
    assert len(out) == 4
    for b in range(2):
        ab, ba = out[b], out[2 + b]
        u = ab["image"] * (1 - m) + ba["image"] * m  # the unlabelled image paired with labelled sample b
        pseudo = first_teacher(u[None]).argmax(1).float()
        x, y = labeled["image"][b], labeled["label"][b]
        torch.testing.assert_close(ab["image"], x * m + u * (1 - m))
        assert torch.equal(ab["label"], y * m + pseudo * (1 - m))  # labels in the box, pseudo-labels outside
        assert torch.equal(ba["label"], pseudo * m + y * (1 - m))
        assert not torch.equal(u, x)


class _Same(Randomizable):
    """A strong view that changes nothing, so what the student sees is the CutMix alone."""

    def __call__(self, x):
        return x


@pytest.mark.parametrize("spatial", [(8, 8), (8, 8, 8)])
@pytest.mark.parametrize("strong_mix", [True, False])
def test_strong_mix_cutmixes_the_strong_views_and_the_teacher_probabilities_with_one_box(spatial, strong_mix):
    seen = {}

    def consistency(logits, probs):
        seen.setdefault("probs", probs.detach().clone())
        return ((torch.softmax(logits, 1) - probs) ** 2).mean()

    trainer, net = _trainer(spatial, "mean_teacher", strong_mix=strong_mix, strong_view=_Same(),
                            consistency_loss=consistency, copy_paste_fraction=0.5)  # fmt: skip
    first_teacher = copy.deepcopy(trainer.teacher)
    draw = trainer._next_unlabeled
    trainer._next_unlabeled = lambda: seen.setdefault("unlabeled", draw())
    net.register_forward_pre_hook(lambda m, x: seen.setdefault("input", x[0].detach().clone()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.terminate())
    trainer.run()
    u, n_labeled = seen["unlabeled"], 2
    strong = seen["input"][n_labeled:]
    with torch.no_grad():
        p = torch.softmax(first_teacher(u), 1)
    if not strong_mix:
        assert torch.equal(strong, u) and torch.equal(seen["probs"], p)
        return
    m = torch.as_tensor(trainer._mixer(len(spatial)).last_mask)
    assert m.sum() == 4 ** len(spatial)  # a box of half of each side
    partner = torch.roll(torch.arange(u.shape[0]), -1)
    torch.testing.assert_close(strong, u * m + u[partner] * (1 - m))
    torch.testing.assert_close(seen["probs"], p * m + p[partner] * (1 - m))  # pseudo-labels follow their pixels
    assert not torch.equal(strong, u)


def test_same_seed_same_run_other_seed_other_run():
    weights = []
    for seed in (1, 1, 2):
        trainer, net = _trainer((8, 8), "mean_teacher", seed=seed)
        torch.manual_seed(0)  # the unlabelled loader's shuffle
        trainer.run()
        weights.append(net.state_dict()["0.weight"].clone())
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_given_ema_handler_is_attached_and_used():
    net = _net(2)
    labeled, unlabeled = _loaders((8, 8))
    ema = EMATeacherHandler(net, decay=0.5, warmup=False)
    trainer = SemiSupervisedTrainer(
        "cpu", 1, labeled, unlabeled, net, torch.optim.SGD(net.parameters(), lr=0.1),
        DiceCELoss(to_onehot_y=True, softmax=True), teacher=ema, threshold=0.5,
    )
    trainer.run()
    assert trainer.ema is ema and ema.step == 3


def test_strong_view_keeps_geometry_and_is_seeded():
    x = torch.rand(3, 1, 6, 6, 6)
    view = BatchIntensityPerturbation(noise_std=0.0, contrast=0.3, gamma=0.3).set_random_state(0)
    y = view(x)
    assert y.shape == x.shape and y.dtype == x.dtype and not torch.equal(x, y)
    # gamma and contrast are monotonic per sample: voxel order (hence where structures are) is unchanged
    for b in range(3):
        assert torch.equal(torch.argsort(x[b].flatten()), torch.argsort(y[b].flatten()))
    noisy = BatchIntensityPerturbation(noise_std=0.2)
    assert torch.equal(noisy.set_random_state(5)(x), noisy.set_random_state(5)(x))
    assert not torch.equal(noisy.set_random_state(5)(x), noisy.set_random_state(6)(x))


def test_bad_arguments_are_named():
    net = _net(2)
    labeled, unlabeled = _loaders((8, 8))
    args = ("cpu", 1, labeled, unlabeled, net, torch.optim.SGD(net.parameters(), lr=0.1), DiceCELoss())
    with pytest.raises(ValueError, match="method"):
        SemiSupervisedTrainer(*args, method="fixmatch")
    with pytest.raises(ValueError, match="unlabeled_data_loader"):
        SemiSupervisedTrainer(*args[:3], [], *args[4:])
    with pytest.raises(ValueError, match="consistency_weight"):
        SemiSupervisedTrainer(*args, consistency_weight=-1.0)
    with pytest.raises(ValueError, match="fraction"):
        SemiSupervisedTrainer(*args, method="copy_paste", copy_paste_fraction=2.0)
    with pytest.raises(ValueError, match="fraction"):
        SemiSupervisedTrainer(*args, strong_mix=True, copy_paste_fraction=0.0)
    with pytest.raises(TypeError, match="strong_mix must be a bool"):
        SemiSupervisedTrainer(*args, strong_mix="yes")
    with pytest.raises(ValueError, match="contrast"):
        BatchIntensityPerturbation(contrast=1.0)
    other = DataLoader([{"image": torch.rand(1, 6, 6)}], batch_size=1)
    trainer = SemiSupervisedTrainer(*args[:3], other, *args[4:], threshold=0.5)
    with pytest.raises(ValueError, match="spatial shape"):
        trainer.run()
    assert isinstance(RandCopyPaste(2), RandCopyPaste)
