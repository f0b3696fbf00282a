"""Checks shared by the semi-supervised bundle tests (``test_semi_supervised_bundles.py``, ``..._slices.py``)."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Events

from monai_cluster.workflows import load_checkpoint


def run_and_check_teacher(workflow, trainer, ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """Run ``workflow``; check that every loss was finite, that the EMA teacher took one step per iteration and that
    the newest checkpoint in ``ckpt_dir`` holds that teacher (its step and every tensor). Returns the teacher's
    state."""
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    workflow.run()
    workflow.finalize()
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert trainer.ema.step == trainer.state.iteration == len(losses)
    teacher = trainer.teacher.state_dict()
    saved = load_checkpoint(sorted(Path(ckpt_dir).glob("checkpoint_epoch*.pt"))[-1])["state"]["teacher"]
    assert saved["step"] == trainer.ema.step
    assert all(torch.equal(saved["teacher"][k], teacher[k]) for k in teacher)
    return teacher


def assert_same_student_and_teacher(whole, resumed, steps: int) -> None:
    """The ``network`` and ``ema_teacher`` of two finished bundle workflows are equal, the teacher after ``steps``."""
    for name in ("network", "ema_teacher"):
        a, b = (w.parser.get_parsed_content(name).state_dict() for w in (whole, resumed))
        if name == "ema_teacher":
            assert a["step"] == b["step"] == steps
            a, b = a["teacher"], b["teacher"]
        assert all(torch.equal(a[k], b[k]) for k in a), f"resumed {name} differs from the uninterrupted run"
