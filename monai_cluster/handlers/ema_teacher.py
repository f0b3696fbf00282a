"""An exponential-moving-average (EMA) teacher of a student network, updated after every training iteration.

Mean teacher (Tarvainen & Valpola, 2017) and the semi-supervised segmentation methods built on it (UA-MT, BCP,
UniMatch's teacher variants) keep a teacher whose weights are the EMA of the student's::

    teacher <- d_t * teacher + (1 - d_t) * student,     d_t = decay                       (warmup=False)
                                                        d_t = min(decay, 1 - 1/(t + 1))   (warmup=True)

where ``t`` counts the updates done before this one (0 for the first, which therefore copies the student when
warming up). Every floating entry of the state dict (parameters and floating buffers such as batch-norm running
statistics) follows the EMA; integer buffers (``num_batches_tracked``) are copied. The teacher never receives
gradients. :meth:`EMATeacherHandler.state_dict` / :meth:`~EMATeacherHandler.load_state_dict` hold the teacher's
weights and the update count, so the handler goes into a checkpoint like a network (e.g. in the ``objects`` of
:class:`~monai_cluster.workflows.TrainingCheckpointer`) and a resumed run continues the same EMA.

References:
    - [0] Mean teachers are better role models, Tarvainen & Valpola, NeurIPS 2017, https://arxiv.org/abs/1703.01780
    - [1] Uncertainty-aware self-ensembling model for semi-supervised 3D left atrium segmentation, Yu et al.,
      MICCAI 2019, https://arxiv.org/abs/1907.07034
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["EMATeacherHandler", "ema_decay", "make_teacher", "unwrap_network"]


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel``, else ``network`` itself."""
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
    inner = getattr(network, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else network


def make_teacher(student: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``student`` (unwrapped from DDP) on the same device, without gradients, in eval mode."""
    teacher = copy.deepcopy(unwrap_network(student))
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def ema_decay(decay: float, step: int, warmup: bool) -> float:
    """The decay of update number ``step`` (0-based): ``decay``, or ``min(decay, 1 - 1/(step + 1))`` with ``warmup``."""
    return min(decay, 1.0 - 1.0 / (step + 1)) if warmup else decay


class EMATeacherHandler:
    """Ignite handler: after every iteration, move the teacher towards the student by EMA (see the module docstring).

    Args:
        student: the network being trained (may be wrapped in ``DistributedDataParallel``); ``None`` takes the
            engine's ``network`` at :meth:`attach`.
        teacher: the teacher network (same architecture); ``None`` builds one with :func:`make_teacher` from the
            student (at construction, or at :meth:`attach` when ``student`` is ``None``).
        decay: EMA decay in ``[0, 1]`` (0 copies the student, 1 freezes the teacher).
        warmup: use ``min(decay, 1 - 1/(t + 1))`` so the early teacher is the plain average of the first students.
        interval: update every this many iterations (``t`` then counts updates, not iterations).

    Attributes:
        teacher: the teacher network (kept in eval mode; its parameters do not require gradients).
        step: the number of updates done.

    Example:
        >>> ema = EMATeacherHandler(network, decay=0.99)
        >>> ema.attach(trainer)
        >>> checkpointer = TrainingCheckpointer(ckpt_dir, {"network": network, "teacher": ema})
    """

    def __init__(
        self,
        student: torch.nn.Module | None = None,
        teacher: torch.nn.Module | None = None,
        decay: float = 0.99,
        warmup: bool = True,
        interval: int = 1,
    ) -> None:
        if student is not None and not isinstance(student, torch.nn.Module):
            raise TypeError(f"student must be a torch.nn.Module or None, got {type(student).__name__}.")
        if teacher is not None and not isinstance(teacher, torch.nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module or None, got {type(teacher).__name__}.")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"decay must be a number in [0, 1], got {decay!r}.")
        if not isinstance(warmup, bool):
            raise TypeError(f"warmup must be a bool, got {type(warmup).__name__}.")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be an integer >= 1, got {interval!r}.")
        self.student = student
        self.decay = float(decay)
        self.warmup = warmup
        self.interval = interval
        self.step = 0
        if teacher is None and student is not None:
            teacher = make_teacher(student)
        self.teacher = teacher
        if teacher is not None and student is not None:
            self._check_pair()
        if self.teacher is not None:
            self._freeze(self.teacher)

    @staticmethod
    def _freeze(teacher: torch.nn.Module) -> None:
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()

    def _check_pair(self) -> None:
        s_state, t_state = unwrap_network(self.student).state_dict(), self.teacher.state_dict()
        if list(s_state) != list(t_state) or any(s_state[k].shape != t_state[k].shape for k in s_state):
            raise ValueError(
                "teacher must have the student's architecture (same state-dict keys and shapes); "
                f"got {len(t_state)} teacher entries for {len(s_state)} student entries."
            )

    def attach(self, engine: Engine) -> None:
        """Register :meth:`update` on ``ITERATION_COMPLETED`` (every ``interval`` iterations)."""
        if self.student is None:
            network = getattr(engine, "network", None)
            if not isinstance(network, torch.nn.Module):
                raise ValueError("EMATeacherHandler has no student and the engine has no `network` to take.")
            self.student = network
            if self.teacher is None:
                self.teacher = make_teacher(network)
            self._check_pair()
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine | None = None) -> None:
        self.update()

    @torch.no_grad()
    def update(self) -> float:
        """One EMA step of the teacher towards the student; returns the decay used."""
        if self.student is None or self.teacher is None:
            raise ValueError("EMATeacherHandler.update needs a student and a teacher (attach it to a trainer first).")
        d = ema_decay(self.decay, self.step, self.warmup)
        s_state = unwrap_network(self.student).state_dict()
        for name, t in self.teacher.state_dict().items():
            s = s_state[name].detach()
            if t.is_floating_point():
                t.mul_(d).add_(s.to(t.dtype), alpha=1.0 - d)
            else:
                t.copy_(s)
        self.step += 1
        return d

    def state_dict(self) -> dict[str, Any]:
        """``{"teacher": teacher.state_dict(), "step": int, "decay": float}`` (loads with ``weights_only``)."""
        if self.teacher is None:
            raise ValueError("EMATeacherHandler has no teacher yet; give a student or attach it before saving.")
        return {"teacher": self.teacher.state_dict(), "step": self.step, "decay": self.decay}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the teacher's weights and the update count from :meth:`state_dict`.

        Raises:
            ValueError: when ``state`` lacks an entry, or the weights do not fit the teacher.
        """
        if not isinstance(state, Mapping) or not {"teacher", "step"} <= set(state):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"state must be an EMATeacherHandler state dict with 'teacher' and 'step', got {got}.")
        if self.teacher is None:
            raise ValueError("EMATeacherHandler has no teacher to load into; give a student or attach it first.")
        step = state["step"]
        if isinstance(step, torch.Tensor):
            step = int(step.item())
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state['step'] must be a non-negative integer, got {step!r}.")
        saved_decay = state.get("decay")
        if saved_decay is not None and not math.isclose(float(saved_decay), self.decay, rel_tol=0, abs_tol=1e-12):
            raise ValueError(
                f"the saved teacher was trained with decay {float(saved_decay)}, but this handler uses {self.decay}; "
                "resume with the same decay or start a new run."
            )
        self.teacher.load_state_dict(state["teacher"])
        self.step = step
