"""A budget in steps, the warm-up + cosine schedule and evaluations at chosen steps averaged over the last ones."""

from __future__ import annotations

import json
from pathlib import Path
import math

import pytest
import torch
from ignite.engine import Engine, Events

from monai_cluster.handlers import (
    PeriodicEvaluationHandler,
    StepBudgetHandler,
    average_summaries,
    budget_epochs,
    evaluation_steps,
)
from monai_cluster.optimizers import WarmupCosineLR, build_optimizer
from monai_cluster.workflows.step_budget import build_lr_scheduler, check_step_budget_options


def test_step_budget_stops_mid_epoch_and_completes():
    engine = Engine(lambda e, b: None)
    StepBudgetHandler(7).attach(engine)
    completed = []
    engine.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    engine.run(range(4), max_epochs=budget_epochs(1, 7, 4))
    assert engine.state.iteration == 7 and engine.state.epoch == 2 and completed == [7]
    assert budget_epochs(5, None, 4) == 5 and budget_epochs(5, 9, 4) == 3
    with pytest.raises(ValueError, match="max_steps"):
        StepBudgetHandler(0)


def test_warmup_cosine_matches_the_protocol_formula():
    net = torch.nn.Linear(2, 2)
    opt = build_optimizer("AdamW", net.parameters(), lr=1.0, weight_decay=1e-4)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 1e-4
    sched = WarmupCosineLR(opt, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    for s in range(120):
        expected = min(1.0, (s + 1) / 10) * (0.55 + 0.45 * math.cos(math.pi * min(s, 100) / 100))
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        opt.step()
        sched.step()
    plain = WarmupCosineLR(build_optimizer("Adam", net.parameters(), 1.0), 4)
    assert [plain.factor(s) for s in (0, 2, 4)] == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="name"):
        build_optimizer("SGD", net.parameters(), 1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLR(opt, 5, warmup_steps=6)


def test_budget_options_are_checked_by_name():
    ok = check_step_budget_options(epochs=3, max_steps=None, warmup_steps=0, min_lr_ratio=0.0,
                                   optimizer_name="Adam", weight_decay=1e-5)  # fmt: skip
    assert ok["max_steps"] is None
    opt = build_optimizer("Adam", torch.nn.Linear(1, 1).parameters(), 1.0)
    assert isinstance(build_lr_scheduler(opt, epochs=3), torch.optim.lr_scheduler.CosineAnnealingLR)
    assert isinstance(build_lr_scheduler(opt, 3, max_steps=10, warmup_steps=2), WarmupCosineLR)
    base = dict(epochs=3, max_steps=None, warmup_steps=0, min_lr_ratio=0.0, optimizer_name="Adam", weight_decay=0.0)
    for bad, match in [({"warmup_steps": 5}, "warmup_steps.*max_steps"), ({"max_steps": 0}, "max_steps"),
                       ({"max_steps": 4, "warmup_steps": 5}, "at most max_steps"),
                       ({"optimizer_name": "SGD"}, "optimizer_name"), ({"min_lr_ratio": 1.5}, "min_lr_ratio")]:
        with pytest.raises(ValueError, match=match):
            check_step_budget_options(**{**base, **bad})


def test_periodic_evaluation_averages_the_last_ones_and_keeps_them_on_resume(tmp_path):
    calls = []

    def evaluate(output_path):
        step = len(calls) + 1
        summary = {"mean_dice": 0.1 * step, "dice": {"RV": 0.1 * step, "LV": None}, "volumes": [1], "unit": "voxel"}
        calls.append(output_path)
        (tmp_path / "e").mkdir(exist_ok=True)
        with open(output_path, "w") as f:
            json.dump(summary, f)
        return summary

    steps = evaluation_steps(6, 2, 2)
    assert steps == [4, 6]
    engine = Engine(lambda e, b: None)
    StepBudgetHandler(6).attach(engine)
    PeriodicEvaluationHandler(evaluate, steps, tmp_path / "e").attach(engine)
    engine.run(range(4), max_epochs=2)
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["steps"] == [4, 6] and metrics["mean_dice"] == pytest.approx(0.15)
    assert metrics["dice"] == {"RV": pytest.approx(0.15), "LV": None} and "volumes" not in metrics
    engine2 = Engine(lambda e, b: None)  # a rerun finds the evaluations on disk and does not redo them
    PeriodicEvaluationHandler(evaluate, steps, tmp_path / "e").attach(engine2)
    engine2.run(range(3), max_epochs=2)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="do not fit"):
        evaluation_steps(5, 3, 3)
    with pytest.raises(ValueError, match="at least one"):
        average_summaries([])


def test_periodic_evaluation_records_the_curve_without_averaging_it(tmp_path):
    seen = []

    def evaluate(output_path):
        step = int(Path(output_path).stem.split("_")[1])
        seen.append(step)
        summary = {"mean_dice": step / 10, "dice": {"RV": step / 20}, "volumes": [step], "unit": "voxel"}
        Path(output_path).write_text(json.dumps(summary))
        return summary

    engine = Engine(lambda e, b: None)
    StepBudgetHandler(6).attach(engine)
    handler = PeriodicEvaluationHandler(evaluate, [5, 6], tmp_path / "e", curve_steps=range(2, 7, 2))
    handler.attach(engine)
    engine.run(range(4), max_epochs=2)
    assert seen == [2, 4, 5, 6]  # 6 is a scored step and a curve step: evaluated once
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["steps"] == [5, 6] and metrics["mean_dice"] == pytest.approx(0.55)  # the curve is not averaged
    assert [e["step"] for e in metrics["evaluations"]] == [2, 4, 5, 6]
    assert metrics["evaluations"][1] == {"step": 4, "mean_dice": pytest.approx(0.4), "dice": {"RV": pytest.approx(0.2)}}
    assert "unit" not in metrics["evaluations"][0] and "volumes" not in metrics["evaluations"][0]
    plain = PeriodicEvaluationHandler(evaluate, [5, 6], tmp_path / "p")
    engine2 = Engine(lambda e, b: None)
    StepBudgetHandler(6).attach(engine2)
    plain.attach(engine2)
    engine2.run(range(4), max_epochs=2)
    assert "evaluations" not in json.loads((tmp_path / "p" / "metrics.json").read_text())
    with pytest.raises(ValueError, match="curve_steps"):
        PeriodicEvaluationHandler(evaluate, [5], tmp_path / "x", curve_steps=[0, 3])
