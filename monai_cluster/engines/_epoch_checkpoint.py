"""Exact per-epoch resume of the image-clustering training stages (CAE, autoencoder, DVC pretraining/clustering).

:class:`EpochCheckpoint` names a folder and whether to resume; each stage of a procedure gets its own
:class:`~monai_cluster.handlers.TrainingCheckpointer` on its engine (:meth:`EpochCheckpoint.handler`), writing the
package's one checkpoint format into ``<directory>/<stage>/checkpoint_epochNNNN.pt`` after every epoch: the network
and optimiser states, the history so far and whatever the stage adds (DVC's target distribution and last labels),
every random state (global, the loader's order, the view augmentation's) and the settings that shape the stage. A
stage resumed from it continues with the same random draws, so a run killed in epoch ``e`` and resumed ends with
the weights of an uninterrupted run. Resuming with other settings, or from more epochs than asked for now, is
refused with a message naming them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_cluster.handlers.checkpoint import TrainingCheckpointer
from monai_cluster.utils.distributed import barrier, is_main_process

__all__ = ["EpochCheckpoint"]


class EpochCheckpoint:
    """The checkpoints of a procedure's stages: one :class:`~monai_cluster.handlers.TrainingCheckpointer` folder per
    stage, saved after every epoch and loaded back when ``resume`` is True.

    Args:
        directory: parent folder of the stages' checkpoint folders (created when needed).
        resume: load a stage's newest checkpoint; False starts every stage afresh (its old checkpoints are replaced).

    Example:
        >>> ckpt = EpochCheckpoint("models/clustering_checkpoints", resume=True)
        >>> train_cae(model, images, epochs=40, checkpoint=ckpt)   # rerun after a kill: continues where it stopped
    """

    def __init__(self, directory: str | os.PathLike, resume: bool = True) -> None:
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be a bool, got {type(resume).__name__} {resume!r}.")
        self.directory = Path(directory)
        self.resume = resume
        #: completed epochs restored per stage in this run (absent: the stage started afresh)
        self.resumed_epochs: dict[str, int] = {}

    def path(self, stage: str) -> Path:
        """The checkpoint folder of ``stage`` (its ``/`` become ``_``)."""
        return self.directory / stage.replace("/", "_")

    def discard(self, stage: str) -> None:
        """Delete the checkpoints of ``stage`` (e.g. a later stage trained on weights that an earlier one has
        changed); rank 0 deletes, every rank waits for it."""
        if is_main_process():
            shutil.rmtree(self.path(stage), ignore_errors=True)
        barrier()

    def handler(
        self,
        stage: str,
        objects: Mapping[str, Any],
        settings: Mapping[str, Any] | None = None,
        extra_fn: Callable[[], Mapping[str, Any]] | None = None,
        on_resume: Callable[[dict], None] | None = None,
        random_objects: Sequence[Any] | None = None,
    ) -> TrainingCheckpointer:
        """The checkpoint handler of ``stage`` (attach it to the stage's engine last); a resume records the epochs
        it restored in :attr:`resumed_epochs`. Without ``resume`` the stage's old checkpoints are deleted first."""
        if not self.resume:
            self.discard(stage)

        def restored(extra: dict) -> None:
            self.resumed_epochs[stage] = checkpointer.resumed_epoch
            if on_resume is not None:
                on_resume(extra)

        checkpointer = TrainingCheckpointer(
            self.path(stage), objects, resume=self.resume, n_saved=1, extra_fn=extra_fn, on_resume=restored,
            random_objects=list(random_objects or ()), settings=settings, strict_epochs=True,
        )  # fmt: skip
        return checkpointer
