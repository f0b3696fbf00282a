"""Exact per-epoch resume of the image-clustering training stages (CAE, autoencoder, DVC pretraining/clustering).

:class:`EpochCheckpoint` writes one file per stage, ``<directory>/<stage>_state.pt``, atomically after every epoch:
the network and optimiser states, the history so far, the global torch RNG state (CPU, and CUDA when used) and the
state of every named ``torch.Generator`` of the stage (the batch-order generator, the view augmentation's), plus
whatever the stage adds (DVC's target distribution and last labels). A stage resumed from it continues with the
same random draws, so a run killed after epoch ``e`` and resumed ends with the weights of an uninterrupted run.

A checkpoint records the settings that shape the stage (learning rate, batch size, seed, ...); resuming with other
settings is refused with a message naming them, since the old optimiser state and draws would not fit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_cluster.utils.io import atomic_torch_save

__all__ = ["EpochCheckpoint"]

_FORMAT = "monai_cluster.epoch_checkpoint.v1"


class EpochCheckpoint:
    """Per-stage training state saved after every epoch, and loaded back when ``resume`` is True.

    Args:
        directory: folder of the ``<stage>_state.pt`` files (created when needed).
        resume: load an existing stage file; False starts every stage afresh (and overwrites its file).

    Example:
        >>> ckpt = EpochCheckpoint("models/clustering_checkpoints", resume=True)
        >>> train_cae(model, images, epochs=40, checkpoint=ckpt)   # rerun after a kill: continues where it stopped
    """

    def __init__(self, directory: str | os.PathLike, resume: bool = True) -> None:
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be a bool, got {type(resume).__name__} {resume!r}.")
        self.directory = Path(directory)
        self.resume = resume
        #: completed epochs restored per stage by :meth:`load` in this run (absent: the stage started afresh)
        self.resumed_epochs: dict[str, int] = {}

    def path(self, stage: str) -> Path:
        """The state file of ``stage`` (its ``/`` become ``_``)."""
        return self.directory / f"{stage.replace('/', '_')}_state.pt"

    def discard(self, stage: str) -> None:
        """Delete the state of ``stage`` (e.g. a later stage trained on weights that an earlier one has changed)."""
        self.path(stage).unlink(missing_ok=True)

    def save(
        self,
        stage: str,
        epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        history: Mapping[str, list],
        generators: Mapping[str, torch.Generator],
        settings: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the state after ``epoch`` completed epochs of ``stage`` atomically (rank 0 only under
        ``torch.distributed``: the ranks' models are identical); return the file."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return self.path(stage)
        payload = {
            "format": _FORMAT,
            "stage": stage,
            "epoch": int(epoch),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": {k: list(v) for k, v in history.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": {name: g.get_state() for name, g in generators.items()},
            "settings": dict(settings),
            "extra": dict(extra or {}),
        }
        path = self.path(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(payload, path)
        return path

    def load(
        self,
        stage: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generators: Mapping[str, torch.Generator],
        settings: Mapping[str, Any],
        epochs: int | None = None,
    ) -> dict | None:
        """Restore ``stage`` into the objects and RNGs; return the payload (``epoch``, ``history``, ``extra``), or
        ``None`` when not resuming or when the stage has no file yet.

        Raises:
            ValueError: for an unreadable file, a file of another stage, ``settings`` that differ from the
                checkpoint's (the differing names and both values are given), or a checkpoint of more completed
                epochs than the ``epochs`` asked for now.
        """
        path = self.path(stage)
        if not self.resume or not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or foreign file
            raise ValueError(f"checkpoint {path} could not be read ({type(err).__name__}: {err}).") from err
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT or payload.get("stage") != stage:
            raise ValueError(f"checkpoint {path} is not a {_FORMAT!r} state of stage {stage!r}.")
        changed = {
            k: (payload["settings"].get(k), v) for k, v in settings.items() if payload["settings"].get(k) != v
        }
        if changed:
            detail = ", ".join(f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"resume: checkpoint {path} of stage {stage!r} was trained with other settings ({detail}); resume "
                "with the same settings, or start afresh (resume false, or another output folder)."
            )
        if epochs is not None and payload["epoch"] > epochs:
            raise ValueError(
                f"resume: checkpoint {path} of stage {stage!r} has {payload['epoch']} epochs done, more than the "
                f"{epochs} asked for now; ask for at least {payload['epoch']} or start afresh."
            )
        try:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"checkpoint {path} does not fit this network/optimiser: {err}") from err
        torch.set_rng_state(payload["torch_rng"])
        if payload["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        missing = sorted(set(generators) - set(payload["generators"]))
        if missing:
            raise ValueError(f"checkpoint {path} holds no state for the generator(s) {missing}.")
        for name, generator in generators.items():
            generator.set_state(payload["generators"][name])
        self.resumed_epochs[stage] = int(payload["epoch"])
        return payload
