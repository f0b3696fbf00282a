"""A MONAI trainer for training steps that are not supervised, and the stage runner of the clustering procedures.

:class:`StepTrainer` is a :class:`monai.engines.Trainer` whose iteration is a given ``step(batch) -> (parts, n)``:
the image-clustering procedures (:mod:`.cae_trainer`, :mod:`.dvc_trainer`, :mod:`.autoencoder_trainer`) train two
views of a batch, update prototypes after a batch or read a target distribution refreshed at each epoch's start,
none of which fits ``SupervisedTrainer``'s ``loss(network(image), label)``. :func:`run_stage` builds one for a stage
with its loader, its per-epoch means (:class:`EpochMeans`), the caller's ``handlers`` and the one checkpoint handler
(:class:`~monai_cluster.handlers.TrainingCheckpointer`, through :class:`~monai_cluster.engines.EpochCheckpoint`), and
runs it with seeded RNGs. Under ``torch.distributed`` the step's network is wrapped in ``DistributedDataParallel``
by the caller (:func:`monai_cluster.utils.data_parallel`) and the loader gives each rank its share of every epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import Trainer
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from monai_cluster.engines._clustering_data import make_loader
from monai_cluster.utils.distributed import is_main_process
from monai_cluster.utils.precision import autocast
from monai_cluster.utils.seeding import seeded

__all__ = ["EpochMeans", "StepForward", "StepTrainer", "run_stage"]

logger = logging.getLogger(__name__)


class StepTrainer(Trainer):
    """A MONAI/Ignite trainer whose iteration runs ``step`` on the batch and one optimiser step on its loss.

    ``step(batch)`` returns ``(parts, n)``: scalar tensors (``parts["loss"]`` is minimised) computed on ``n``
    samples. A non-finite loss raises ``FloatingPointError`` before the optimiser step, naming the trainer and the
    epoch (0-based). The engine's ``state.output`` after an iteration is ``{key: detached part, "batch_size": n}``.

    Args:
        device: the device the network lives on.
        max_epochs: epochs to train.
        train_data_loader: the batches (a ``DataLoader``; a ``DistributedSampler``'s epoch is set by MONAI).
        optimizer: updated after each step.
        step: the training step (forward passes and loss; see above).
        name: how errors and progress name this training (e.g. ``"CAE training"``).
        amp: run ``step`` under :func:`monai_cluster.utils.autocast` (bfloat16 on a CPU that has it; on CUDA
            bfloat16 where the GPU has it, else float16; no gradient scaler; the losses keep float32 themselves).
        handlers: ignite handlers (objects with ``attach(engine)``) attached when the trainer is built.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Any,
        optimizer: torch.optim.Optimizer,
        step: Callable[[Any], tuple[Mapping[str, torch.Tensor], int]],
        name: str = "training",
        amp: bool = False,
        handlers: Sequence | None = None,
    ) -> None:
        if not callable(step):
            raise TypeError(f"step must be callable, got {type(step).__name__}.")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        if not isinstance(amp, bool):
            raise TypeError(f"amp must be a bool, got {type(amp).__name__} {amp!r}.")
        # MONAI's own amp is torch.autocast("cuda") with a GradScaler; this trainer autocasts per device itself
        super().__init__(
            device=device, max_epochs=max_epochs, data_loader=train_data_loader, handlers=handlers, amp=False,
            decollate=False,
        )  # fmt: skip
        self.optimizer, self.step, self.name, self.mixed_precision = optimizer, step, name, amp
        self.training_device = torch.device(device)

    def _iteration(self, engine: Engine, batchdata: Any) -> dict[str, Any]:
        with autocast(self.mixed_precision, self.training_device):
            parts, n = self.step(batchdata)
        loss = parts["loss"]
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(
                f"non-finite loss ({loss.item()}) in {self.name} epoch {engine.state.epoch - 1}; lower lr or check "
                "the data."
            )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {**{key: value.detach() for key, value in parts.items()}, "batch_size": int(n)}


class EpochMeans:
    """Ignite handler: the sample-weighted mean of each of ``keys`` of the trainer's output over an epoch, appended
    to ``history[prefix + key]``, written as ``f"{tag}/{key}"`` at the 0-based epoch to ``writer`` and shown on a
    tqdm bar over the epochs (``progress``, rank 0 only)."""

    def __init__(
        self,
        history: dict[str, list[float]],
        keys: Sequence[str],
        prefix: str = "",
        writer: object = None,
        tag: str = "train",
        name: str = "training",
        progress: bool = True,
    ) -> None:
        self.history, self.keys, self.prefix, self.writer, self.tag = history, tuple(keys), prefix, writer, tag
        self.name, self.progress = name, progress
        self.sums: dict[str, float] = {}
        self.count = 0
        self.bar: tqdm | None = None

    def attach(self, engine: Engine) -> None:
        """Register the bar on ``STARTED``, the sums per iteration and the means at ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._add)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._record)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._fail)

    def _open(self, engine: Engine) -> None:
        self.bar = tqdm(
            total=engine.state.max_epochs, desc=self.name, disable=not (self.progress and is_main_process()),
            initial=engine.state.epoch,
        )  # fmt: skip

    def _reset(self, engine: Engine) -> None:
        self.sums, self.count = dict.fromkeys(self.keys, 0.0), 0

    def _add(self, engine: Engine) -> None:
        out, n = engine.state.output, engine.state.output["batch_size"]
        for key in self.keys:
            self.sums[key] += out[key].item() * n
        self.count += n

    def _record(self, engine: Engine) -> None:
        means = {key: value / self.count for key, value in self.sums.items()}
        for key, value in means.items():
            self.history[f"{self.prefix}{key}"].append(value)
            if self.writer is not None:
                self.writer.add_scalar(f"{self.tag}/{key}", value, engine.state.epoch - 1)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{means['loss']:.4g}")

    def _close(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _fail(self, engine: Engine, error: BaseException) -> None:
        self._close(engine)
        raise error


def run_stage(
    dataset: Dataset,
    step: Callable[[Any], tuple[Mapping[str, torch.Tensor], int]],
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    history: dict[str, list[float]],
    keys: Sequence[str],
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    name: str,
    tag: str,
    prefix: str = "",
    writer: object = None,
    progress: bool = True,
    drop_last: bool = False,
    checkpoint: Any = None,
    settings: Mapping[str, Any] | None = None,
    random_objects: Sequence[Any] = (),
    amp: bool = False,
    handlers: Sequence | None = None,
    before: Sequence[Callable[[Engine], None]] = (),
    extra_fn: Callable[[], Mapping[str, Any]] | None = None,
    on_resume: Callable[[dict], None] | None = None,
) -> StepTrainer:
    """Train one stage on a :class:`StepTrainer` and return it (``state.epoch`` counts the epochs run).

    Inside :func:`monai_cluster.utils.seeded` (``seed``; the caller's RNG states are given back) a loader of
    ``dataset`` is built (:func:`~monai_cluster.engines._clustering_data.make_loader`, shuffled by a seeded
    generator), the trainer gets, in this order, the ``before`` callables on ``EPOCH_STARTED`` (e.g. DVC's target
    refresh, which may ``engine.terminate()``), :class:`EpochMeans` of ``keys`` into ``history``, the caller's
    ``handlers``, and with ``checkpoint`` (an :class:`~monai_cluster.engines.EpochCheckpoint`) the checkpoint handler
    of stage ``tag``: the network, the optimiser, ``history`` (+ ``extra_fn()``), every random state (the loader's
    generator and ``random_objects``) and ``settings`` after every epoch; a rerun resumes after the last saved epoch
    and hands the saved extra to ``on_resume``.
    """
    with seeded(seed, device) as generator:
        loader = make_loader(dataset, batch_size, generator, drop_last=drop_last)
        trainer = StepTrainer(device, epochs, loader, optimizer, step, name=name, amp=amp)
        for fn in before:
            trainer.add_event_handler(Events.EPOCH_STARTED, fn)
        EpochMeans(history, keys, prefix, writer, tag, name, progress).attach(trainer)
        for handler in handlers or ():
            if not callable(getattr(handler, "attach", None)):
                raise TypeError(f"handlers must have attach(engine) (ignite handlers), got {type(handler).__name__}.")
            handler.attach(trainer)
        if checkpoint is not None:

            def extra() -> dict:
                return {"history": {k: list(v) for k, v in history.items()}, **(extra_fn() if extra_fn else {})}

            def restore(saved: dict) -> None:
                history.clear()
                history.update({k: list(v) for k, v in saved["history"].items()})
                if on_resume is not None:
                    on_resume(saved)

            settings = {"batch_size": batch_size, "seed": seed, **(settings or {})}
            checkpoint.handler(
                tag, {"network": network, "optimizer": optimizer}, settings=settings, extra_fn=extra,
                on_resume=restore, random_objects=[generator, *random_objects],
            ).attach(trainer)  # fmt: skip
        trainer.run()
    return trainer


class StepForward(torch.nn.Module):
    """``fn(model, *inputs)`` as a module's ``forward``, so one training step's forward passes (both views of a
    batch, an encode-decode) run in one call of a ``DistributedDataParallel`` wrapper, which then averages the
    gradients of every parameter they used. Its parameters are ``model``'s."""

    def __init__(self, model: torch.nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}.")
        self.model, self.fn = model, fn

    def forward(self, *inputs: Any) -> Any:
        return self.fn(self.model, *inputs)
