"""What the benchmarks that drive the bundles share: budgets in epochs, the semi-supervised option names and the
runs of a validation learning curve.

Kept apart so that the protocol modules (``_label_efficiency_bundles``, ``_label_efficiency_dermoscopy_bundles``,
``_ld_retina_bundles``) import it without importing each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

__all__ = ["SEMI_DEFAULTS", "SEMI_OPTIONS", "curve_runs", "epochs_for"]

logger = logging.getLogger("label_efficiency")

#: the segmentation bundles' semi-supervised settings and their defaults, which the benchmarks pass through as the
#: bundles' options (``--ema-decay`` ...)
SEMI_DEFAULTS = {"ema_decay": 0.99, "consistency_threshold": 0.95, "consistency_weight": 1.0, "consistency_rampup": 0,
                 "copy_paste_fraction": 0.6667, "consistency_cutmix": False}  # fmt: skip
#: their names
SEMI_OPTIONS = tuple(SEMI_DEFAULTS)


def epochs_for(steps: int, samples: int, batch: int) -> int:
    """Epochs of ``samples // batch`` full batches that come closest to ``steps`` steps (at least 1).

    For a bundle stage budgeted in epochs (the autoencoder stage, the staged local stage, local discrimination)
    that a protocol states in steps.
    """
    return max(1, round(int(steps) / max(1, int(samples) // int(batch))))


def curve_runs(args, result: dict, save: Callable[[], None], rest: int, finetune: Callable[..., dict]) -> None:
    """The runs of a ``--learning-curve``: every setting x seed x budget, each entry appended to ``result["curve"]``.

    For every ``args.curve_labeled`` setting (``0``: ``rest``, the units left to label), seed of ``args.seeds`` and
    budget of ``args.curve_steps``, ``finetune(n, seed, budget, root)`` runs one random initialisation in
    ``<args.work_dir>/curve/random_n<n>_s<seed>_b<budget>`` and returns its record, with ``labeled_samples`` (the
    slices or images trained on), ``seconds`` and ``evaluations`` (the bundle's ``eval_curve_every`` steps). Entries
    already in ``result["curve"]`` are skipped; ``save()`` is called after every run.

    Raises:
        ValueError: naming ``--curve-labeled`` when a setting asks for more units than ``rest``.
    """
    done = {(e["num_labeled"], e["seed"], e["budget"]) for e in result.setdefault("curve", [])}
    for n in args.curve_labeled:
        n = rest if n == 0 else n
        if n > rest:
            raise ValueError(f"--curve-labeled {n} asks for more units than the {rest} left to label.")
        for seed in args.seeds:
            for budget in sorted(args.curve_steps):
                if (n, seed, budget) in done:
                    continue
                run = finetune(n, seed, budget, Path(args.work_dir) / "curve" / f"random_n{n}_s{seed}_b{budget}")
                entry = {"num_labeled": n, "seed": seed, "budget": budget,
                         "epochs": round(budget * args.finetune_batch / max(1, run["labeled_samples"]), 1),
                         "seconds_per_step": round(run["seconds"] / budget, 3), "evals": run.pop("evaluations", []),
                         **run}  # fmt: skip
                result["curve"].append(entry)
                logger.info("curve n=%d seed=%d steps=%d: validation dice %.4f %s (%.0f s)", n, seed, budget,
                            entry["dice"], entry["dice_per_class"], entry["seconds"])  # fmt: skip
                save()
