"""Helpers every bundle shares: data resolution, option checks, device, seeding, checkpoints and resume.

The bundles' configs stay declarative and call these:

- :func:`resolve_dataset` / :func:`list_unlabeled`: a real folder or a synthetic set generated once under
  ``<bundle_root>/synthetic_data``, optionally checked file by file (:func:`monai_cluster.data.check_dataset`)
  before any training.
- :func:`validate_options`: command-line overrides (``--epochs abc``, ``--learning_rate -1``) fail with the
  option's name and what was expected, before anything is built.
- :func:`resolve_device`, :func:`seed_everything`, :func:`is_main_process`, :func:`barrier`.
- :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`find_last_checkpoint` and the ignite handler
  :class:`TrainingCheckpointer`: full training state (networks, optimizer, scheduler, epoch, iteration and
  ``extra``) written atomically every epoch, and resumed from the last complete checkpoint.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from monai_cluster.data import check_dataset, list_images, prepare_dataset
from monai_cluster.utils.io import atomic_torch_save, remove_stale_temp_files
from monai_cluster.workflows.random_state import capture_random_states, restore_random_states

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainingCheckpointer",
    "barrier",
    "checkpoint_path",
    "find_last_checkpoint",
    "images_outside_mask_folders",
    "is_main_process",
    "list_checkpoints",
    "list_unlabeled",
    "load_checkpoint",
    "resolve_dataset",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "validate_option",
    "validate_options",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "monai_cluster training checkpoint v1"
"""Value of the ``"format"`` entry of every checkpoint written by :func:`save_checkpoint`."""

_MASK_FOLDERS = frozenset({"masks", "labels", "labelsTr", "labelsTs"})
_CHECKPOINT_RE = re.compile(r"^checkpoint_epoch(\d+)\.pt$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


# ----------------------------------------------------------------------------------------------------------- data


def resolve_dataset(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    kind: str = "dermoscopy",
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    layout: str = "auto",
    check: bool = True,
    num_classes: int | None = None,
    channels: int | None = None,
    spatial_dims: int | None = None,
) -> list[dict]:
    """Image/mask pairs of ``dataset_dir``, or of a synthetic set generated once under ``<bundle_root>/synthetic_data``.

    Args:
        dataset_dir: a real dataset folder (see :func:`monai_cluster.data.list_image_mask_pairs`), or
            ``None``/``""`` for synthetic data.
        bundle_root: the bundle root; synthetic data goes to its ``synthetic_data`` folder.
        kind: synthetic kind, ``"dermoscopy"`` (2D RGB) or ``"heart"`` (3D CT).
        n: number of synthetic samples (``None``: the generator's default).
        size: synthetic image size.
        seed: synthetic generation seed.
        layout: layout of ``dataset_dir``.
        check: decode every file first (:func:`monai_cluster.data.check_dataset`) so that a bad file stops
            the run, named, before training.
        num_classes: label range checked when ``check``.
        channels: image channel count checked when ``check``.
        spatial_dims: spatial rank checked when ``check``.

    Returns:
        ``{"image", "label", "key"}`` dicts sorted by key.
    """
    items = prepare_dataset(
        dataset_dir=dataset_dir or None,
        synthetic_dir=Path(bundle_root) / "synthetic_data",
        kind=kind,
        n=n,
        size=size,
        seed=seed,
        layout=layout,
    )
    if check:
        check_dataset(items, num_classes=num_classes, channels=channels, spatial_dims=spatial_dims)
    return items


def images_outside_mask_folders(root: str | os.PathLike) -> list[dict]:
    """``{"image", "key"}`` for every image under ``root`` (recursively) except those in mask folders
    (``masks/``, ``labels/``, ``labelsTr/``, ``labelsTs/``); may be empty."""
    return [
        {"image": it["image"], "key": it["key"]}
        for it in list_images(root)
        if not _MASK_FOLDERS.intersection(Path(it["key"]).parts[:-1])
    ]


def list_unlabeled(
    dataset_dir: str | os.PathLike | None,
    bundle_root: str | os.PathLike,
    kind: str = "dermoscopy",
    n: int | None = None,
    size: int | Sequence[int] | None = None,
    seed: int = 0,
    check: bool = True,
    channels: int | None = None,
    spatial_dims: int | None = None,
) -> list[dict]:
    """Every image of a dataset, without masks, as ``{"image", "key"}`` (keys relative to the dataset root).

    A real ``dataset_dir`` is searched recursively; files in mask folders (``masks/``, ``labels/``,
    ``labelsTr/``, ``labelsTs/``) are left out, so a PH2 folder gives ``images/`` and ``unlabeled/`` images.
    Without ``dataset_dir`` the synthetic set of :func:`resolve_dataset` is generated and its images listed.

    Raises:
        ValueError: when no image is left, or (with ``check``) when a file is unreadable, non-finite or has the
            wrong channel count or rank (the file is named).
    """
    if dataset_dir is None or str(dataset_dir) == "":
        pairs = resolve_dataset(None, bundle_root, kind=kind, n=n, size=size, seed=seed, check=False)
        items = [{"image": p["image"], "key": p["key"]} for p in pairs]
    else:
        root = Path(os.path.abspath(dataset_dir))
        items = images_outside_mask_folders(root)
        if not items:
            raise ValueError(
                f"dataset_dir {root} holds no images outside its mask folders {sorted(_MASK_FOLDERS)}."
            )
    if check:
        check_dataset(items, channels=channels, spatial_dims=spatial_dims)
    return items


# -------------------------------------------------------------------------------------------------------- options

_SPEC_RE = re.compile(r"^(int|float|bool|str|path|ints|floats|choice)(\?)?(?:(>=|>)(-?[\d.]+))?(?::(.+))?$")


def _fail(name: str, expected: str, value: object, exc: type[Exception]) -> Exception:
    return exc(f"option {name!r} (--{name}) must be {expected}, got {type(value).__name__} {value!r}.")


def _number(value: object, name: str, kind: str, op: str | None, bound: float | None) -> int | float:
    is_int = kind == "int"
    expected = "an integer" if is_int else "a finite number"
    if op:
        expected += f" {op} {int(bound) if is_int else bound}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, expected, value, TypeError)
    if is_int and not isinstance(value, numbers.Integral):
        if float(value).is_integer():
            value = int(value)
        else:
            raise _fail(name, expected, value, TypeError)
    value = int(value) if is_int else float(value)
    if not math.isfinite(value) or (op == ">=" and value < bound) or (op == ">" and value <= bound):
        raise _fail(name, expected, value, ValueError)
    return value


def validate_option(name: str, value: object, spec: str) -> Any:
    """Check one option against a spec and return it normalised.

    Specs: ``"int"``, ``"int>=1"``, ``"float>0"``, ``"float>=0"`` (numbers, optionally bounded), ``"bool"``
    (also ``"true"``/``"false"``/``"yes"``/``"no"``/``"1"``/``"0"`` strings, as shells pass them), ``"str"``,
    ``"path"`` (a non-empty string or path), ``"ints>=1"`` / ``"floats>0"`` (a non-empty list of bounded
    numbers; a single number is accepted as a one-item list), ``"choice:a|b|c"``. A trailing ``?`` after the
    kind (``"path?"``, ``"int?>=1"``) also accepts ``None`` (and ``""`` for paths).

    Raises:
        TypeError: a value of the wrong type, e.g. ``--epochs abc``, naming the option and what was expected.
        ValueError: a value out of range or not among the choices, e.g. ``--learning_rate -1``; or a bad spec.
    """
    match = _SPEC_RE.match(spec)
    if match is None:
        raise ValueError(f"spec for option {name!r} is not understood: {spec!r}.")
    kind, optional, op, bound, choices = match.groups()
    bound_value = None if bound is None else float(bound)
    if optional and (value is None or (kind == "path" and value == "")):
        return None
    if kind in ("int", "float"):
        return _number(value, name, kind, op, bound_value)
    if kind in ("ints", "floats"):
        values = [value] if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence) or not values:
            expected = f"a non-empty list of {'integers' if kind == 'ints' else 'numbers'}"
            raise _fail(name, expected + (f" {op} {bound}" if op else ""), value, TypeError)
        return [_number(v, f"{name}[{i}]", kind[:-1], op, bound_value) for i, v in enumerate(values)]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _fail(name, "a boolean (true or false)", value, TypeError)
    if kind == "choice":
        options = (choices or "").split("|")
        if value not in options:
            raise _fail(name, f"one of {options}", value, ValueError)
        return value
    if kind == "path":
        if not isinstance(value, (str, os.PathLike)) or str(value) == "":
            raise _fail(name, "a non-empty path", value, TypeError)
        return str(value)
    if not isinstance(value, str):
        raise _fail(name, "a string", value, TypeError)
    return value


def validate_options(options: Mapping[str, Any], specs: Mapping[str, str]) -> dict[str, Any]:
    """Check every entry of ``options`` against ``specs`` (see :func:`validate_option`) and return them normalised.

    Call it first in a bundle's ``run`` (or ``initialize``) chain, so that a bad override fails before any file is
    written or any network built. Every option must have a spec and every spec an option.

    Raises:
        TypeError/ValueError: for the first bad option, naming it (``option 'epochs' (--epochs) must be an
            integer >= 1, got str 'abc'``).
    """
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict of option values, got {type(options).__name__}.")
    unknown = sorted(set(options) - set(specs))
    missing = sorted(set(specs) - set(options))
    if unknown or missing:
        raise ValueError(f"options and specs must name the same keys: no spec for {unknown}, no value for {missing}.")
    checked = {name: validate_option(name, options[name], specs[name]) for name in specs}
    logger.debug("options checked: %s", checked)
    return checked


# ------------------------------------------------------------------------------------------ device, seed, ranks


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/``None``: CUDA when available (this rank's GPU under ``torchrun``), else CPU; otherwise ``device``.

    Raises:
        ValueError: for a string torch does not understand, or a CUDA device when CUDA is not available.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be 'auto', a device string or torch.device, got {type(device).__name__}.")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use 'cpu' or 'auto'.")
    return resolved


def seed_everything(seed: int) -> int:
    """Seed Python, numpy and torch (``monai.utils.set_determinism``); returns the seed."""
    from monai.utils import set_determinism

    seed = validate_option("seed", seed, "int>=0")
    set_determinism(seed=seed)
    return seed


def is_main_process() -> bool:
    """True outside ``torch.distributed`` or on rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """``torch.distributed.barrier()`` when a process group is initialised; nothing otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------------------------------------------- checkpoints


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
) -> Path:
    """Write the full training state to ``path`` atomically.

    The file holds ``{"format": CHECKPOINT_FORMAT, "epoch", "iteration", "state": {name: obj.state_dict()},
    "extra": dict}``. Networks wrapped in ``DistributedDataParallel`` are saved with their own keys.
    Keep ``extra`` to plain values (numbers, strings, lists, dicts, tensors) so it loads with ``weights_only``.

    Args:
        path: destination file.
        objects: e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": sched}``; each has ``state_dict()``.
        epoch: the number of completed epochs.
        iteration: the number of completed iterations.
        extra: anything else to restore (e.g. the pseudo-class table in use and its path).
        rng: the random states of :func:`~monai_cluster.workflows.random_state.capture_random_states`, or ``None``.
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
    for name, obj in (objects or {}).items():
        if name not in payload["state"]:
            raise ValueError(f"checkpoint {path} holds no state for {name!r} (it has {sorted(payload['state'])}).")
        target = obj.module if isinstance(getattr(obj, "module", None), torch.nn.Module) else obj
        try:
            target.load_state_dict(payload["state"][name])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"checkpoint {path}: the state of {name!r} does not fit {type(target).__name__}: {err}")
    return payload


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
    ``--learning_rate`` would do nothing; a clear error is the honest answer.
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
                "same learning rate, or start a new run (another bundle_root or --resume false) to use a new one."
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
        random_objects: transform chains, datasets and batch preparers whose random states (with the global
            Python, numpy and torch ones) are saved and restored, so the resumed run makes the draws of an
            uninterrupted one (:mod:`~monai_cluster.workflows.random_state`). Attach the checkpointer after every
            epoch-end handler that draws random numbers. ``None`` saves no random state.

    Attributes:
        resumed_from: the checkpoint loaded at start, or ``None``.
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
    ) -> None:
        if not isinstance(objects, Mapping) or not objects:
            raise TypeError("objects must be a non-empty dict of objects with state_dict(), e.g. {'network': net}.")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.objects = dict(objects)
        self.resume = validate_option("resume", resume, "bool")
        self.save_interval = validate_option("save_interval", save_interval, "int>=1")
        self.n_saved = validate_option("n_saved", n_saved, "int>=1")
        for name, fn in (("extra_fn", extra_fn), ("on_resume", on_resume)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}.")
        self.extra_fn = extra_fn
        self.on_resume = on_resume
        self.random_objects = None if random_objects is None else list(random_objects)
        self.resumed_from: Path | None = None
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
        _check_resumed_learning_rates(path, load_checkpoint(path), self.objects)
        payload = load_checkpoint(path, self.objects)
        engine.state.epoch = payload["epoch"]
        engine.state.iteration = payload["iteration"]
        self.resumed_from = path
        logger.info("resumed from %s (epoch %d, iteration %d)", path, payload["epoch"], payload["iteration"])
        if self.on_resume is not None:
            self.on_resume(payload["extra"])
        if self.random_objects is not None and payload.get("rng") is not None:
            restore_random_states(payload["rng"], self.random_objects)

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
            self.last_saved = save_checkpoint(path, self.objects, epoch, engine.state.iteration, extra, rng)
            for old in list_checkpoints(self.checkpoint_dir)[: -self.n_saved]:
                old.unlink(missing_ok=True)
            logger.info("checkpoint saved: %s", path)
        barrier()
