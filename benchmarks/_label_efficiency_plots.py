"""Pictures of the label-efficiency results: per-seed Dice of every initialisation, paired by seed.

A seed fixes the labeled patients, so the spread between seeds (which images are labeled) is far larger than the
differences between initialisations; a plot that joins each seed's values across methods shows the paired
differences that the tables summarise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai_cluster.utils.io import atomic_write

__all__ = ["plot_paired"]


def _order(variant: str, reference: str) -> tuple:
    """The reference first, then by semi-supervised fine-tuning (``+<method>``; none first), method name and
    pretraining length as a number (1000 before 10000)."""
    init, _, semi = variant.partition("+")
    method, _, steps = init.partition("@")
    return (variant != reference, semi, method, int(steps) if steps.isdigit() else -1)


def plot_paired(
    runs: list[dict],
    path: str | Path,
    reference: str = "random",
    ylabel: str = "mean Dice (RV, Myo, LV)",
    title: str = "labeled: test Dice per seed (lines join a seed)",
) -> Path:
    """PNG with one panel per labeled setting: Dice of each variant (x) per seed, a grey line per seed.

    Args:
        runs: the ``runs`` of a label-efficiency result (``num_labeled``, ``seed``, ``variant``, ``dice``).
        path: the PNG to write (atomically).
        reference: the variant drawn first (its mean is the dashed line).
        ylabel: the y axis label (what the Dice averages).
        title: each panel's title, after its number of labeled units.

    Raises:
        ValueError: when ``runs`` is empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("runs is empty: nothing to plot.")
    settings = sorted({r["num_labeled"] for r in runs})
    widest = max(len({r["variant"] for r in runs if r["num_labeled"] == n}) for n in settings)
    fig, axes = plt.subplots(
        1, len(settings), figsize=(max(4.2, 0.75 * widest) * len(settings), 4.8), squeeze=False
    )
    for ax, n in zip(axes[0], settings):
        at_n = [r for r in runs if r["num_labeled"] == n]
        variants = sorted({r["variant"] for r in at_n}, key=lambda v: _order(v, reference))
        table = {(r["variant"], r["seed"]): r["dice"] for r in at_n}
        for seed in sorted({r["seed"] for r in at_n}):
            xs = [i for i, v in enumerate(variants) if (v, seed) in table]
            ax.plot(xs, [table[(variants[i], seed)] for i in xs], color="0.6", lw=0.8, marker="o", ms=3)
        means = [np.mean([table[k] for k in table if k[0] == v]) for v in variants]
        ax.plot(range(len(variants)), means, "D", color="C3", ms=8, label="mean over seeds", zorder=3)
        if reference in variants:
            ax.axhline(means[variants.index(reference)], color="C3", ls="--", lw=0.8)
        ax.set_xticks(range(len(variants)), [v.replace("@", "\n@") for v in variants], fontsize=7, rotation=30,
                      ha="right")  # fmt: skip
        ax.set_title(f"{n} {title}", fontsize=9)
        ax.set_ylabel(ylabel if ax is axes[0][0] else "")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return path
