"""An ignite handler that the crash-safety tests put into a bundle run through a config override.

``test_resume.py`` starts the pretraining bundle with ``python -m monai.bundle run`` in a subprocess, with this
folder on ``PYTHONPATH`` and ``--train#handlers#5 "{'_target_': 'resume_probe.ResumeProbe', ...}"`` (replacing
the epoch-level ``StatsHandler``). The probe

- prints ``PROBE iteration epoch=E iteration=I`` after every iteration (flushed), so the test knows where the
  run is when it sends SIGKILL, and sleeps ``delay`` seconds to leave a wide window in the middle of an epoch;
- on ``STARTED`` (after the checkpointer has resumed, which is attached earlier) saves what the run starts from:
  epoch, iteration, network, optimizer and scheduler states and the pseudo-class table in use;
- on ``EPOCH_COMPLETED`` (after the checkpointer has saved) saves the network state of that epoch;
- from iteration ``nan_from`` on, sets the loss's global weight to NaN (a diverging run).

It is not a test module; it has no state outside ``out_dir``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events

__all__ = ["ResumeProbe"]


def _table_rows(transform) -> list | None:
    table = getattr(transform, "table", None)
    return None if table is None else [list(table.keys), table.labels.tolist()]


class ResumeProbe:
    def __init__(
        self,
        out_dir: str,
        network,
        optimizer,
        lr_scheduler,
        loss=None,
        pseudo_class_transform=None,
        delay: float = 0.0,
        nan_from: int = 0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.network, self.optimizer, self.lr_scheduler = network, optimizer, lr_scheduler
        self.loss, self.pseudo_class_transform = loss, pseudo_class_transform
        self.delay, self.nan_from = float(delay), int(nan_from)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def _save(self, obj, name: str) -> None:
        torch.save(obj, self.out_dir / name)

    def started(self, engine: Engine) -> None:
        state = {
            "pid": os.getpid(),
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "network": {k: v.detach().clone() for k, v in self.network.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "pseudo_class_table": _table_rows(self.pseudo_class_transform),
        }
        self._save(state, f"started_{os.getpid()}.pt")
        print(f"PROBE started epoch={engine.state.epoch} iteration={engine.state.iteration}", flush=True)

    def iteration_started(self, engine: Engine) -> None:
        if self.nan_from and engine.state.iteration >= self.nan_from and self.loss is not None:
            self.loss.global_weight = float("nan")

    def iteration_completed(self, engine: Engine) -> None:
        print(f"PROBE iteration epoch={engine.state.epoch} iteration={engine.state.iteration}", flush=True)
        if self.delay:
            time.sleep(self.delay)

    def epoch_completed(self, engine: Engine) -> None:
        network = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        self._save(network, f"network_epoch{engine.state.epoch}.pt")
        print(f"PROBE epoch_completed epoch={engine.state.epoch}", flush=True)
