"""A bundle run's outputs as one transaction, and the record of the settings that made them.

:class:`RunOutputs` wraps a bundle's ``run`` list (``begin()`` first, ``commit()`` last):

- **the previous outputs survive a failed run.** ``begin()`` keeps a hard-linked snapshot of every file in the
  output folders (free: this package writes every output atomically, by rename, so a new file never changes the
  snapshot's). When the run raises, :meth:`RunOutputs.rollback` deletes what the run wrote and puts the snapshot
  back, byte for byte (a first run, in empty folders, keeps its partial outputs for ``--resume true``);
  ``commit()`` drops the snapshot. The rollback happens in :func:`run_bundle`
  (:mod:`~monai_cluster.workflows.segmentation_bundle`) and, under ``python -m monai.bundle run``, in the
  interpreter's exception hook. A killed run (SIGKILL) rolls nothing back: its outputs are what ``--resume true``
  continues from.
- **a resume continues only the same run.** Each stage's defining settings (seed, data, network and loss
  settings; not e.g. ``num_workers`` or the number of epochs) are recorded in ``run_settings.json`` in the first
  output folder when the run begins. A run that continues or reuses earlier outputs (``--resume true``, or a stage
  run alone on an earlier stage's outputs) is refused when the record differs, naming each setting and both
  values, or when the folder holds outputs but no record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_cluster.utils.io import atomic_write_json
from monai_cluster.workflows.common import barrier, is_main_process, validate_option

__all__ = ["RECORD_NAME", "RunOutputs", "as_recorded", "data_fingerprint", "read_record", "rollback_open_runs"]

logger = logging.getLogger(__name__)

RECORD_NAME = "run_settings.json"
"""File name of the settings record, in the first output folder."""

_SNAPSHOT_NAME = ".previous_run"
_FORMAT = "monai_cluster run settings v1"
_OPEN: list[RunOutputs] = []
_HOOK_INSTALLED = False


def data_fingerprint(items: Iterable[Any], key: str = "key") -> dict[str, Any]:
    """``{"count", "keys_sha1"}`` of a listing: which samples a run was trained on, cheap to compare.

    Args:
        items: dicts holding ``key`` (e.g. ``{"image", "key"}`` listings), or the keys themselves (strings).
        key: the entry naming each sample.
    """
    keys = sorted(str(it[key]) if isinstance(it, Mapping) else str(it) for it in items)
    digest = hashlib.sha1("\n".join(keys).encode("utf-8")).hexdigest()
    return {"count": len(keys), "keys_sha1": digest}


def as_recorded(value: Any) -> Any:
    """``value`` as the record gives it back (tuples as lists, paths as strings), so that it compares equal."""
    return json.loads(json.dumps(value, default=str))


def read_record(path: str | os.PathLike) -> dict[str, dict] | None:
    """The ``{stage: settings}`` of a settings record file, or ``None`` when there is none.

    Args:
        path: a ``run_settings.json`` (:data:`RECORD_NAME`), e.g. beside a checkpoint that another run will use.

    Raises:
        ValueError: for a record that cannot be read (named).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"run settings record {path} could not be read: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT or not isinstance(payload.get("stages"), dict):
        raise ValueError(f"run settings record {path} is not a {_FORMAT!r} file.")
    return payload["stages"]


def _exception_hook(exc_type, exc, tb) -> None:  # pragma: no cover - runs as the interpreter exits
    if issubclass(exc_type, Exception):
        rollback_open_runs()
    _PREVIOUS_HOOK(exc_type, exc, tb)


_PREVIOUS_HOOK = sys.excepthook


def rollback_open_runs() -> list[Path]:
    """Roll back every :class:`RunOutputs` begun and not committed (newest first); return their first folders."""
    rolled = []
    while _OPEN:
        run = _OPEN.pop()
        run.rollback()
        rolled.append(run.folders[0])
    return rolled


class RunOutputs:
    """The output folders of one bundle run: snapshot at ``begin``, rollback on failure, settings record.

    Args:
        folders: the folders the run writes its outputs to (the record goes to the first); missing ones are
            created by the stages as before.
        settings: ``{stage: {setting: value}}``, the settings that define each stage's outputs (plain JSON
            values). A stage's settings should include those of the stages whose outputs it consumes, so that a
            rerun of an earlier stage with other settings makes the later stage's record differ too.
        resume: the run continues from the outputs in ``folders`` (every recorded stage is checked).

    Example:
        >>> outputs = RunOutputs(["models"], {"train": {"seed": 0}}, resume=True)  # doctest: +SKIP
        >>> outputs.begin()  # refuses a folder of another run; snapshots the previous outputs
        >>> ...              # the stages
        >>> outputs.commit()
    """

    def __init__(
        self,
        folders: str | os.PathLike | Sequence[str | os.PathLike],
        settings: Mapping[str, Mapping[str, Any]],
        resume: bool = False,
    ) -> None:
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        if not isinstance(folders, Sequence) or not folders:
            raise TypeError(f"folders must be a path or a non-empty list of paths, got {folders!r}.")
        if not isinstance(settings, Mapping) or not settings:
            raise TypeError(f"settings must be a non-empty dict {{stage: {{setting: value}}}}, got {settings!r}.")
        for stage, values in settings.items():
            if not isinstance(stage, str) or not isinstance(values, Mapping):
                raise TypeError(f"settings[{stage!r}] must be a dict of setting values, got {type(values).__name__}.")
        self.folders = [Path(f) for f in folders]
        self.settings = {stage: as_recorded(dict(values)) for stage, values in settings.items()}
        self.resume = validate_option("resume", resume, "bool")
        self.record_path = self.folders[0] / RECORD_NAME
        self._snapshots: dict[Path, Path] = {}
        self._had_files: dict[Path, bool] = {}
        self._active = False

    # ------------------------------------------------------------------------------------------------- record

    def read_record(self) -> dict[str, dict] | None:
        """The recorded ``{stage: settings}``, or ``None`` when there is no record (see :func:`read_record`).

        Raises:
            ValueError: for a record that cannot be read (named).
        """
        return read_record(self.record_path)

    def _has_outputs(self) -> bool:
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in folder.rglob("*"):
                if path.is_file() and path != self.record_path and _SNAPSHOT_NAME not in path.parts:
                    return True
        return False

    def check(self, stages: Sequence[str] | None = None) -> None:
        """Refuse outputs of another run: ``stages`` (default: every stage of ``settings``) must match the record.

        Raises:
            ValueError: naming each differing setting with the recorded and the requested value, or saying that
                the folder holds outputs without a record.
        """
        stages = list(self.settings) if stages is None else list(stages)
        unknown = sorted(set(stages) - set(self.settings))
        if unknown:
            raise ValueError(f"stages {unknown} have no settings; known stages: {sorted(self.settings)}.")
        if not stages:
            return
        record = self.read_record()
        if record is None:
            if self._has_outputs():
                raise ValueError(
                    f"resume: {self.folders[0]} holds outputs but no record of the settings that made them "
                    f"({RECORD_NAME}; written by an older version or by hand), so they cannot be told apart from "
                    "another run's. Start afresh (resume false, or another bundle_root)."
                )
            return
        problems = []
        for stage in stages:
            if stage not in record:
                continue  # that stage has not run in this folder: nothing of it to adopt
            recorded, wanted = record[stage], self.settings[stage]
            for name in sorted(set(recorded) | set(wanted)):
                if recorded.get(name) != wanted.get(name):
                    problems.append(f"{name!r}: outputs made with {recorded.get(name)!r}, this run asks for "
                                    f"{wanted.get(name)!r}")  # fmt: skip
        if problems:
            raise ValueError(
                f"resume: the outputs in {self.folders[0]} belong to another run ({'; '.join(problems)}). Resume "
                "with the same settings, or start afresh (resume false, or another bundle_root) to use new ones."
            )

    # ------------------------------------------------------------------------------------------- transaction

    def begin(self, check: Sequence[str] | None = None, record: Sequence[str] | None = None) -> RunOutputs:
        """Check the outputs to be reused, snapshot the previous outputs, and record this run's settings.

        Args:
            check: the stages whose existing outputs this run continues or consumes (:meth:`check`); ``None``:
                every stage when ``resume``, none otherwise.
            record: the stages this run (re)makes, whose settings are written to the record (the other stages'
                entries are kept); ``None``: every stage.

        Raises:
            ValueError: as :meth:`check`.
        """
        self.check((list(self.settings) if self.resume else []) if check is None else check)
        record = list(self.settings) if record is None else list(record)
        if is_main_process():
            for other in [run for run in _OPEN if set(run.folders) & set(self.folders)]:
                other._active = False  # an earlier run here that failed without a rollback: superseded
                _OPEN.remove(other)
            for folder in self.folders:
                self._snapshots[folder] = self._snapshot(folder)
            previous = self.read_record() if self.record_path.is_file() else None
            stages = dict(previous or {})
            stages.update({stage: self.settings[stage] for stage in record})
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json({"format": _FORMAT, "stages": stages}, self.record_path)
            self._active = True
            _OPEN.append(self)
            _install_hook()
        barrier()
        return self

    def _snapshot(self, folder: Path) -> Path:
        snapshot = folder / _SNAPSHOT_NAME
        if snapshot.exists():  # left by a killed run: its outputs are now the previous ones
            shutil.rmtree(snapshot)
        self._had_files[folder] = False
        if not folder.is_dir():
            return snapshot
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or _SNAPSHOT_NAME in path.relative_to(folder).parts:
                continue
            self._had_files[folder] = True
            target = snapshot / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # a file system without hard links
                shutil.copy2(path, target)
        return snapshot

    def commit(self) -> None:
        """The run succeeded: drop the snapshot of the previous outputs."""
        if self._active:
            for snapshot in self._snapshots.values():
                shutil.rmtree(snapshot, ignore_errors=True)
            self._active = False
            if self in _OPEN:
                _OPEN.remove(self)
        barrier()

    def rollback(self) -> None:
        """The run failed: delete what it wrote in the folders and put the previous outputs back.

        When the folders held no outputs before the run, there is nothing to protect and the failed run's own
        outputs (e.g. the checkpoints before a non-finite loss) are kept for ``--resume true``.
        """
        if not self._active:
            return
        if not any(self._had_files.values()):  # nothing to protect: a first run's partial outputs stay for resume
            self._active = False
            if self in _OPEN:
                _OPEN.remove(self)
            logger.warning("the run failed; %s held no previous outputs, so its own are kept", self.folders[0])
            return
        for folder, snapshot in self._snapshots.items():
            if self._had_files.get(folder) and not snapshot.is_dir():
                logger.warning("snapshot %s of the previous outputs is gone; %s left as it is", snapshot, folder)
                continue
            if folder.is_dir():
                for path in sorted(folder.rglob("*"), reverse=True):
                    if _SNAPSHOT_NAME in path.relative_to(folder).parts:
                        continue
                    if path.is_file() or path.is_symlink():
                        path.unlink()
                    elif path.is_dir() and not (snapshot / path.relative_to(folder)).is_dir():
                        shutil.rmtree(path, ignore_errors=True)
            if snapshot.is_dir():
                for path in sorted(snapshot.rglob("*")):
                    if path.is_file():
                        target = folder / path.relative_to(snapshot)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(path, target)
                shutil.rmtree(snapshot, ignore_errors=True)
        self._active = False
        if self in _OPEN:
            _OPEN.remove(self)
        logger.warning("the run failed: the previous outputs in %s were put back", [str(f) for f in self.folders])


def _install_hook() -> None:
    global _HOOK_INSTALLED
    if not _HOOK_INSTALLED:
        sys.excepthook = _exception_hook
        _HOOK_INSTALLED = True
