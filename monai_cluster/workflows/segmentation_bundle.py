"""Run a bundle's configs from Python, as ``python -m monai.bundle run`` does, and build its torchrun command.

Used by the tutorial notebook and the bundle tests, and handy in scripts that chain bundles (pretraining, then
fine-tuning) without a shell:

>>> wf = run_bundle("bundles/dermoscopy_segmentation", bundle_root="/tmp/derm", epochs=2)  # doctest: +SKIP
>>> wf.parser.get_parsed_content("network").pretrained_report["matched"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

__all__ = ["bundle_cli_args", "bundle_workflow", "run_bundle", "torchrun_command"]


def _configs_dir(bundle_dir: str | os.PathLike) -> Path:
    folder = Path(bundle_dir) / "configs"
    if not (folder / "metadata.json").is_file():
        raise ValueError(f"bundle_dir {str(bundle_dir)!r} is not a bundle: {folder / 'metadata.json'} does not exist.")
    return folder


def bundle_workflow(
    bundle_dir: str | os.PathLike,
    configs: Sequence[str] = ("train.json",),
    bundle_root: str | os.PathLike | None = None,
    logging: bool = False,
    **overrides: Any,
) -> ConfigWorkflow:
    """An initialised :class:`monai.bundle.ConfigWorkflow` of ``configs`` (later files override earlier ones).

    Args:
        bundle_dir: the bundle folder (holding ``configs/``).
        configs: config file names in ``configs/``, e.g. ``("train.json", "evaluate.json")``.
        bundle_root: where outputs go (the ``bundle_root`` override); ``None`` keeps the config's value.
        logging: apply the bundle's ``configs/logging.conf`` (console progress) instead of leaving logging alone.
        overrides: config ids and values, as ``--key value`` on the command line.
    """
    folder = _configs_dir(bundle_dir)
    missing = [c for c in configs if not (folder / c).is_file()]
    if isinstance(configs, str) or missing:
        raise ValueError(f"configs must name files in {folder}, got {configs!r} (missing: {missing}).")
    if bundle_root is not None:
        overrides["bundle_root"] = str(bundle_root)
    workflow = ConfigWorkflow(
        config_file=[str(folder / c) for c in configs],
        meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf") if logging else False,
        **overrides,
    )
    workflow.initialize()
    return workflow


def run_bundle(
    bundle_dir: str | os.PathLike,
    configs: Sequence[str] = ("train.json",),
    bundle_root: str | os.PathLike | None = None,
    logging: bool = False,
    **overrides: Any,
) -> ConfigWorkflow:
    """Initialise, run and finalise a bundle (see :func:`bundle_workflow`); returns the workflow for inspection.

    A run that raises puts the previous outputs back (:func:`~monai_cluster.workflows.rollback_open_runs`), as
    ``python -m monai.bundle run`` does.
    """
    from monai_cluster.workflows.run_outputs import rollback_open_runs

    workflow = bundle_workflow(bundle_dir, configs, bundle_root, logging, **overrides)
    try:
        workflow.run()
    except Exception:
        rollback_open_runs()
        raise
    workflow.finalize()
    return workflow


def bundle_cli_args(overrides: dict[str, Any]) -> list[str]:
    """``--key value`` arguments for ``python -m monai.bundle run`` (lists as JSON, ``None`` as ``$None``, the rest
    as ``str``).

    ``None`` is written as the expression ``$None``: the command line gives ``null`` or ``None`` to the config as
    a string, or drops it, so only an expression sets an option to ``None``.
    """
    args: list[str] = []
    for key, value in overrides.items():
        if value is None:
            text = "$None"
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value)
        else:
            text = str(value)
        args += [f"--{key}", text]
    return args


def torchrun_command(
    bundle_dir: str | os.PathLike,
    configs: Sequence[str] = ("train.json", "multi_gpu_train.json"),
    nproc_per_node: int = 2,
    master_port: int = 29500,
    **overrides: Any,
) -> list[str]:
    """The ``torchrun ... -m monai.bundle run`` command of a multi-process run (for ``subprocess.run``)."""
    folder = _configs_dir(bundle_dir)
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={int(nproc_per_node)}", f"--master_port={int(master_port)}",
        "-m", "monai.bundle", "run",
        "--config_file", json.dumps([str(folder / c) for c in configs]),
        "--meta_file", str(folder / "metadata.json"),
        *bundle_cli_args(overrides),
    ]  # fmt: skip
