"""The EMA teacher follows the student by the EMA recomputed by hand, and a resume restores it exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Engine, Events

from monai_cluster.handlers import EMATeacherHandler, ema_decay, make_teacher
from monai_cluster.workflows import TrainingCheckpointer


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 2, 1))


def _trainer(net: torch.nn.Module, opt: torch.optim.Optimizer, history: list | None = None) -> Engine:
    def step(engine, batch):
        opt.zero_grad()
        loss = net(batch).pow(2).mean()
        loss.backward()
        opt.step()
        if history is not None:
            history.append(copy.deepcopy(net.state_dict()))
        return {"loss": loss.detach()}

    return Engine(step)


def _data(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 1, 8, 8, generator=g) for _ in range(n)]


@pytest.mark.parametrize("warmup", [True, False])
def test_teacher_equals_the_ema_recomputed_by_hand(warmup):
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    history: list = []
    trainer = _trainer(net, opt, history)
    start = copy.deepcopy(net.state_dict())
    ema = EMATeacherHandler(net, decay=0.9, warmup=warmup)
    ema.attach(trainer)
    trainer.run(_data(), max_epochs=2)  # 8 iterations
    expected = {k: v.clone() for k, v in start.items()}
    for t, student in enumerate(history):
        d = min(0.9, 1 - 1 / (t + 1)) if warmup else 0.9
        for k, s in student.items():
            expected[k] = expected[k] * d + s * (1 - d) if s.is_floating_point() else s.clone()
    got = ema.teacher.state_dict()
    assert ema.step == 8 and len(history) == 8
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-7)
    # the teacher moved, differs from the student, and got no gradient
    assert not torch.equal(got["0.weight"], start["0.weight"])
    assert not torch.equal(got["0.weight"], net.state_dict()["0.weight"])
    assert all(not p.requires_grad for p in ema.teacher.parameters())
    assert torch.equal(got["1.num_batches_tracked"], net.state_dict()["1.num_batches_tracked"])


def test_warmup_first_update_copies_the_student():
    net = _net()
    ema = EMATeacherHandler(net, teacher=torch.nn.Sequential(*[copy.deepcopy(m) for m in net]), decay=0.99)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert ema.update() == 0.0
    assert torch.equal(ema.teacher[0].weight, net[0].weight)
    assert ema.update() == 0.5 and ema_decay(0.99, 1000, True) == 0.99 and ema_decay(0.5, 0, False) == 0.5


def test_resume_restores_the_teacher_exactly(tmp_path):
    data = _data()
    # uninterrupted: 4 epochs
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = _trainer(net, opt)
    ema = EMATeacherHandler(net, decay=0.8)
    ema.attach(trainer)
    trainer.run(data, max_epochs=4)
    # interrupted: 2 epochs with checkpoints, then a fresh process resumes to 4
    first_net = _net()
    first_opt = torch.optim.SGD(first_net.parameters(), lr=0.1)
    first = _trainer(first_net, first_opt)
    first_ema = EMATeacherHandler(first_net, decay=0.8)
    first_ema.attach(first)
    objects = {"network": first_net, "optimizer": first_opt, "teacher": first_ema}
    TrainingCheckpointer(tmp_path, objects, save_interval=1).attach(first)
    first.run(data, max_epochs=2)
    saved = copy.deepcopy(first_ema.teacher.state_dict())

    net2 = _net()
    with torch.no_grad():
        for p in net2.parameters():
            p.add_(5.0)  # the resumed weights must come from the checkpoint
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1)
    second = _trainer(net2, opt2)
    ema2 = EMATeacherHandler(net2, decay=0.8)
    ema2.attach(second)
    loader = {}
    TrainingCheckpointer(tmp_path, {"network": net2, "optimizer": opt2, "teacher": ema2}, resume=True).attach(second)
    second.add_event_handler(Events.STARTED, lambda e: loader.update(copy.deepcopy(ema2.state_dict())))
    second.run(data, max_epochs=4)
    assert loader["step"] == 8
    for k, v in saved.items():
        assert torch.equal(loader["teacher"][k], v)  # restored exactly at start
    assert ema2.step == ema.step == 16
    for k, v in ema.teacher.state_dict().items():
        assert torch.equal(ema2.teacher.state_dict()[k], v)  # and continued like the uninterrupted run


def test_student_from_the_engine_and_bad_arguments():
    net = _net()
    engine = _trainer(net, torch.optim.SGD(net.parameters(), lr=0.1))
    engine.network = net
    ema = EMATeacherHandler(decay=0.5)
    ema.attach(engine)
    engine.run(_data(2), max_epochs=1)
    assert ema.step == 2 and ema.student is net
    with pytest.raises(ValueError, match="decay"):
        EMATeacherHandler(net, decay=1.5)
    with pytest.raises(ValueError, match="architecture"):
        EMATeacherHandler(net, teacher=torch.nn.Conv2d(1, 3, 3))
    with pytest.raises(ValueError, match="decay"):
        EMATeacherHandler(net, decay=0.3).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="'teacher' and 'step'"):
        ema.load_state_dict({"weights": 1})
    with pytest.raises(ValueError, match="no student"):
        EMATeacherHandler().attach(Engine(lambda e, b: None))
    assert not make_teacher(net).training
