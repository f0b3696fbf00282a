"""Full-state training checkpoints of every training in the package: write, find, load, and resume exactly.

:func:`save_checkpoint` writes ``{"format", "epoch", "iteration", "state", "extra", "rng", "settings"}``
atomically; :class:`TrainingCheckpointer` saves one every epoch and resumes from the newest complete one (with every
random state when given ``random_objects``, refusing a changed learning rate or other recorded settings). The
bundles' trainers and the image-clustering procedures (:mod:`monai_cluster.engines`) all checkpoint through it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_cluster.utils.distributed import barrier, is_main_process
from monai_cluster.utils.io import atomic_torch_save, remove_stale_temp_files
from monai_cluster.utils.random_state import capture_random_states, restore_random_states
from monai_cluster.utils.validation import check_positive_int

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainingCheckpointer",
    "checkpoint_path",
    "find_last_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "monai_cluster training checkpoint v1"
"""Value of the ``"format"`` entry of every checkpoint written by :func:`save_checkpoint`."""

_CHECKPOINT_RE = re.compile(r"^checkpoint_epoch(\d+)\.pt$")
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _check_flag(value: object, name: str) -> bool:
    """``value`` as a bool (also ``"true"``/``"false"``, as shells pass them); TypeError naming ``name``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TypeError(f"TrainingCheckpointer argument '{name}' must be a bool, got {type(value).__name__} {value!r}.")


def checkpoint_path(checkpoint_dir: str | os.PathLike, epoch: int) -> Path:
    """``<checkpoint_dir>/checkpoint_epoch<epoch:04d>.pt``."""
    return Path(checkpoint_dir) / f"checkpoint_epoch{int(epoch):04d}.pt"


def _state_dict(obj: Any) -> Any:
    module = getattr(obj, "module", None)  # DistributedDataParallel / DataParallel: save the wrapped keys
    if isinstance(obj, torch.nn.Module) and isinstance(module, torch.nn.Module):
        obj = module
    return obj.state_dict()


def save_checkpoint(
    path: str | os.PathLike,
    objects: Mapping[str, Any],
    epoch: int,
    iteration: int,
    extra: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write the full training state to ``path`` atomically.

    The file holds ``{"format": CHECKPOINT_FORMAT, "epoch", "iteration", "state": {name: obj.state_dict()},
    "extra": dict, "rng", "settings": dict}``. Networks wrapped in ``DistributedDataParallel`` are saved with their own keys.
    Keep ``extra`` to plain values (numbers, strings, lists, dicts, tensors) so it loads with ``weights_only``.

    Args:
        path: destination file.
        objects: e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": sched}``; each has ``state_dict()``.
        epoch: the number of completed epochs.
        iteration: the number of completed iterations.
        extra: anything else to restore (e.g. the pseudo-class table in use and its path).
        rng: the random states of :func:`~monai_cluster.utils.random_state.capture_random_states`, or ``None``.
        settings: plain values that shaped the training (a resume with others is refused), or ``None``.
    """
    if not isinstance(objects, Mapping) or not objects:
        raise TypeError("objects must be a non-empty dict of objects with state_dict(), e.g. {'network': net}.")
    bad = [name for name, obj in objects.items() if not callable(getattr(obj, "state_dict", None))]
    if bad:
        raise TypeError(f"objects {bad} have no state_dict() method and cannot be checkpointed.")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "iteration": int(iteration),
        "state": {name: _state_dict(obj) for name, obj in objects.items()},
        "extra": dict(extra or {}),
        "rng": None if rng is None else dict(rng),
        "settings": dict(settings or {}),
    }
    atomic_torch_save(payload, path)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, objects: Mapping[str, Any] | None = None) -> dict:
    """Read a checkpoint of :func:`save_checkpoint`, and load its state into ``objects`` (by name) when given.

    Returns:
        the checkpoint dict (``"epoch"``, ``"iteration"``, ``"state"``, ``"extra"``).

    Raises:
        ValueError: when the file cannot be read, is not such a checkpoint, lacks one of ``objects``, or a
            state does not fit its object (e.g. a checkpoint of another network); the file is named.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, unpicklable content
        raise ValueError(f"checkpoint {path} could not be read ({type(err).__name__}: {err}).") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT!r} file.")
    _load_states(path, payload, objects or {})
    return payload


def _load_states(path: Path, payload: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
    """Load the states of a read checkpoint ``payload`` into ``objects`` by name (errors as :func:`load_checkpoint`)."""
    for name, obj in objects.items():
        if name not in payload["state"]:
            raise ValueError(f"checkpoint {path} holds no state for {name!r} (it has {sorted(payload['state'])}).")
        target = obj.module if isinstance(getattr(obj, "module", None), torch.nn.Module) else obj
        try:
            target.load_state_dict(payload["state"][name])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"checkpoint {path}: the state of {name!r} does not fit {type(target).__name__}: {err}")


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files ``checkpoint_epochNNNN.pt`` in ``checkpoint_dir``, oldest epoch first (none: ``[]``)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_RE.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def find_last_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``checkpoint_dir`` that loads completely, or ``None`` when there is none.

    Unreadable files (e.g. damaged outside this package's atomic writes) are skipped with a warning.
    """
    for path in reversed(list_checkpoints(checkpoint_dir)):
        try:
            load_checkpoint(path)
        except ValueError as err:
            logger.warning("skipping checkpoint %s: %s", path, err)
            continue
        return path
    return None


def _base_learning_rates(optimizer_state: Mapping[str, Any]) -> list[float]:
    """The configured learning rate of each parameter group: ``initial_lr`` (set by a scheduler) or ``lr``."""
    return [float(g.get("initial_lr", g["lr"])) for g in optimizer_state.get("param_groups", [])]


def _check_resumed_learning_rates(path: Path, payload: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
    """Refuse a resume whose optimisers ask for another learning rate than the checkpoint was trained with.

    Loading the optimiser's state would silently bring back the old rate (and its schedule), so a changed
    learning rate would do nothing; a clear error is the honest answer.
    """
    for name, obj in objects.items():
        if not isinstance(obj, torch.optim.Optimizer) or name not in payload.get("state", {}):
            continue
        configured, saved = _base_learning_rates(obj.state_dict()), _base_learning_rates(payload["state"][name])
        if len(configured) == len(saved) and any(
            abs(a - b) > 1e-12 * max(abs(a), abs(b), 1.0) for a, b in zip(configured, saved)
        ):
            raise ValueError(
                f"resume: checkpoint {path} was trained with learning rate {saved} for {name!r}, but this run asks "
                f"for {configured}. A resumed optimiser keeps the checkpoint's rate and schedule, so resume with the "
                "same learning rate, or start a new run (resume=False, or another checkpoint_dir) to use a new one."
            )


class TrainingCheckpointer:
    """Ignite handler: save the full training state every ``save_interval`` epochs, and resume from the last one.

    On ``EPOCH_COMPLETED`` (every ``save_interval`` epochs, and at the last epoch) rank 0 writes
    ``checkpoint_epochNNNN.pt`` atomically with :func:`save_checkpoint` (``extra`` from ``extra_fn()``) and keeps
    the newest ``n_saved``. With ``resume=True``, on ``STARTED`` the newest complete checkpoint is loaded into
    ``objects``, the engine's epoch and iteration are set from it (ignite then continues to ``max_epochs``; an
    already finished run does no further epoch), and ``on_resume(extra)`` is called (e.g. to restore the
    pseudo-class table). Without a checkpoint, ``resume=True`` starts from scratch with a log line. A resume whose
    optimisers are configured with another learning rate than the checkpoint's is refused with a ``ValueError``
    (the loaded optimiser state would silently keep the old rate).

    Attach it after :class:`~monai_cluster.handlers.NonFiniteLossHandler` or before; that handler stops a
    non-finite epoch before it completes, so the last good checkpoint stays.

    Args:
        checkpoint_dir: folder of the checkpoints.
        objects: ``{name: obj}`` with ``state_dict``/``load_state_dict`` (network, optimizer, lr_scheduler, ...).
        resume: load the newest checkpoint when the engine starts.
        save_interval: save every this many epochs (>= 1).
        n_saved: how many checkpoints to keep (>= 1).
        extra_fn: returns the ``extra`` dict to save, or ``None``.
        on_resume: called with the loaded ``extra`` after a resume, or ``None``.
        random_objects: transform chains, datasets, batch preparers and ``torch.Generator`` objects (a loader's
            order) whose random states (with the global Python, numpy and torch ones) are saved and restored, so the
            resumed run makes the draws of an uninterrupted one (:mod:`~monai_cluster.utils.random_state`). The save
            then comes after every epoch-end handler attached before the run starts. ``None`` saves no random state.
        settings: plain values that shape the training (batch size, seed, loss weights, ...), saved with each
            checkpoint; a resume whose ``settings`` differ is refused with a ``ValueError`` naming each of them.
        strict_epochs: refuse a resume from a checkpoint of more completed epochs than the engine's
            ``max_epochs`` (False: such a run just does no further epoch).

    Attributes:
        resumed_from: the checkpoint loaded at start, or ``None``.
        resumed_epoch: the completed epochs of that checkpoint (0 when the run started afresh).
        last_saved: the newest checkpoint written, or ``None``.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        objects: Mapping[str, Any],
        resume: bool = False,
        save_interval: int = 1,
        n_saved: int = 2,
        extra_fn: Callable[[], Mapping[str, Any]] | None = None,
        on_resume: Callable[[dict], None] | None = None,
        random_objects: Sequence[Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        strict_epochs: bool = False,
    ) -> None:
        if not isinstance(objects, Mapping) or not objects:
            raise TypeError("objects must be a non-empty dict of objects with state_dict(), e.g. {'network': net}.")
        if settings is not None and not isinstance(settings, Mapping):
            raise TypeError(f"settings must be a dict of plain values or None, got {type(settings).__name__}.")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.objects = dict(objects)
        self.resume = _check_flag(resume, "resume")
        self.strict_epochs = _check_flag(strict_epochs, "strict_epochs")
        self.save_interval = check_positive_int(save_interval, "TrainingCheckpointer argument 'save_interval'")
        self.n_saved = check_positive_int(n_saved, "TrainingCheckpointer argument 'n_saved'")
        self.settings = dict(settings or {})
        for name, fn in (("extra_fn", extra_fn), ("on_resume", on_resume)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}.")
        self.extra_fn = extra_fn
        self.on_resume = on_resume
        self.random_objects = None if random_objects is None else list(random_objects)
        self.resumed_from: Path | None = None
        self.resumed_epoch = 0
        self.last_saved: Path | None = None

    def attach(self, engine: Engine) -> None:
        """Register the resume on ``STARTED`` and the save on ``EPOCH_COMPLETED``.

        With ``random_objects``, the save is registered when the run starts, so it comes after every epoch-end
        handler attached with the trainer (validation, re-clustering): the random states it records are those
        the next epoch starts from.
        """
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        if self.random_objects is None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        else:
            engine.add_event_handler(Events.STARTED, self._attach_save_last)

    def _attach_save_last(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.save, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def load(self, engine: Engine) -> None:
        """Restore the newest complete checkpoint into the objects and the engine state."""
        if is_main_process() and Path(self.checkpoint_dir).is_dir():
            remove_stale_temp_files(self.checkpoint_dir)  # left by a run killed while it saved
        path = find_last_checkpoint(self.checkpoint_dir)
        if path is None:
            logger.info("resume: no checkpoint in %s; starting from epoch 0", self.checkpoint_dir)
            return
        payload = load_checkpoint(path)  # read once: check settings and learning rates before any state is loaded
        self._check_settings(path, payload, engine)
        _check_resumed_learning_rates(path, payload, self.objects)
        _load_states(path, payload, self.objects)
        engine.state.epoch = payload["epoch"]
        engine.state.iteration = payload["iteration"]
        self.resumed_from, self.resumed_epoch = path, int(payload["epoch"])
        logger.info("resumed from %s (epoch %d, iteration %d)", path, payload["epoch"], payload["iteration"])
        if self.on_resume is not None:
            self.on_resume(payload["extra"])
        if self.random_objects is not None and payload.get("rng") is not None:
            restore_random_states(payload["rng"], self.random_objects)

    def _check_settings(self, path: Path, payload: Mapping[str, Any], engine: Engine) -> None:
        """Refuse a checkpoint of other ``settings`` or (``strict_epochs``) of more epochs than asked for now."""
        saved = payload.get("settings") or {}
        changed = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"resume: checkpoint {path} was trained with other settings ({detail}); resume with the same "
                "settings, or start afresh (resume=False, or another checkpoint_dir)."
            )
        max_epochs = engine.state.max_epochs
        if self.strict_epochs and max_epochs is not None and payload["epoch"] > max_epochs:
            raise ValueError(
                f"resume: checkpoint {path} has {payload['epoch']} epochs done, more than the {max_epochs} asked for "
                f"now; ask for at least {payload['epoch']} or start afresh."
            )

    def save(self, engine: Engine) -> None:
        """Write the checkpoint of the epoch that just completed (rank 0) and prune old ones."""
        epoch = engine.state.epoch
        last = engine.state.max_epochs is not None and epoch >= engine.state.max_epochs
        if epoch % self.save_interval and not last:
            return
        if is_main_process():
            extra = self.extra_fn() if self.extra_fn is not None else None
            rng = None if self.random_objects is None else capture_random_states(self.random_objects)
            path = checkpoint_path(self.checkpoint_dir, epoch)
            self.last_saved = save_checkpoint(
                path, self.objects, epoch, engine.state.iteration, extra, rng, self.settings
            )
            for old in list_checkpoints(self.checkpoint_dir)[: -self.n_saved]:
                old.unlink(missing_ok=True)
            logger.info("checkpoint saved: %s", path)
        barrier()
