"""What the benchmarks that drive the bundles share: budgets in epochs and the semi-supervised option names.

Kept apart so that the protocol modules (``_label_efficiency_bundles``, ``_label_efficiency_dermoscopy_bundles``,
``_ld_retina_bundles``) import it without importing each other.
"""

from __future__ import annotations

__all__ = ["SEMI_OPTIONS", "epochs_for"]

#: the segmentation bundles' semi-supervised settings that the benchmarks pass through (``--ema-decay`` ...)
SEMI_OPTIONS = ("ema_decay", "consistency_threshold", "consistency_weight", "consistency_rampup", "copy_paste_fraction")


def epochs_for(steps: int, samples: int, batch: int) -> int:
    """Epochs of ``samples // batch`` full batches that come closest to ``steps`` steps (at least 1).

    For a bundle stage budgeted in epochs (the autoencoder stage, the staged local stage, local discrimination)
    that a protocol states in steps.
    """
    return max(1, round(int(steps) / max(1, int(samples) // int(batch))))
