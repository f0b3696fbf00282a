"""The fine-tuning budgets of the label-efficiency protocol, and the validation learning curve that chooses them.

- :func:`parse_steps` / :func:`steps_for`: ``--finetune-steps`` (one budget, or one per number of labeled units);
- :func:`eval_schedule`: the steps whose evaluations are averaged into a run's score (the bundles'
  ``eval_every_steps``/``eval_last``), checked before any run;
- :func:`format_curve_table` / :func:`plot_curve`: the ``--learning-curve`` result (one entry per run: its budget,
  validation Dice and the evaluations of the bundle's ``eval_curve_every``) as a Markdown table and a PNG.

The runs themselves are the bundles' (``_label_efficiency_bundles``, ``_label_efficiency_dermoscopy_bundles``).
"""

from __future__ import annotations

import numpy as np

from monai_cluster.utils.io import atomic_write

__all__ = ["eval_schedule", "format_curve_table", "parse_steps", "plot_curve", "steps_for"]


def eval_schedule(steps: int, every: int, last: int) -> list[int]:
    """The steps ``steps - (last - 1) * every, ..., steps - every, steps`` at which the score is measured.

    Raises:
        ValueError: when they do not all lie in ``[1, steps]``.
    """
    if every < 1 or last < 1 or (last - 1) * every >= steps:
        raise ValueError(
            f"the last {last} evaluations every {every} steps must fit in {steps} fine-tuning steps "
            "(--eval-last, --eval-every, --finetune-steps)."
        )
    return [steps - i * every for i in reversed(range(last))]


def parse_steps(entries: list[str]) -> dict[int | None, int]:
    """``--finetune-steps`` entries ``["1:1000", "3000"]`` -> ``{1: 1000, None: 3000}`` (``None``: the rest).

    Raises:
        ValueError: for an entry that is not ``STEPS`` or ``LABELED:STEPS`` with positive integers.
    """
    table: dict[int | None, int] = {}
    for entry in entries:
        key, _, value = str(entry).rpartition(":")
        try:
            n, steps = (int(key) if key else None), int(value)
        except ValueError:
            raise ValueError(f"--finetune-steps entries must be STEPS or LABELED:STEPS integers, got {entry!r}.")
        if steps < 1 or (n is not None and n < 1):
            raise ValueError(f"--finetune-steps entries must be positive, got {entry!r}.")
        table[n] = steps
    return table


def steps_for(table: dict[int | None, int], num_labeled: int) -> int:
    """The fine-tuning steps of a labeled setting: its own entry, else the fallback.

    Raises:
        ValueError: when ``table`` has neither.
    """
    if num_labeled in table:
        return table[num_labeled]
    if None in table:
        return table[None]
    raise ValueError(f"--finetune-steps has no entry for {num_labeled} labeled units and no plain fallback.")


def format_curve_table(curve: list[dict]) -> str:
    """Markdown: validation Dice (mean, and per structure) at the end of each budget, per labeled setting.

    Args:
        curve: one entry per run: ``num_labeled``, ``budget``, ``seed``, ``dice`` (its score), ``dice_per_class``
            (``{structure: Dice}``), ``epochs`` and ``seconds_per_step`` (``train_seconds_per_step`` in the
            in-memory pipeline's records).

    Returns:
        one row per budget, one column per labeled setting (epochs, mean Dice over seeds, per structure), seconds
        per step.
    """
    settings = sorted({e["num_labeled"] for e in curve})
    budgets = sorted({e["budget"] for e in curve})
    head = "| fine-tuning steps | " + " | ".join(f"{n} labeled: epochs, Dice (per structure)" for n in settings)
    lines = [head + " | s/step |", "|---" * (len(settings) + 2) + "|"]
    for b in budgets:
        cells, rates = [], []
        for n in settings:
            sel = [e for e in curve if e["num_labeled"] == n and e["budget"] == b]
            if not sel:
                cells.append("")
                continue
            dice = np.mean([e["dice"] for e in sel])
            per = " / ".join(f"{np.mean([e['dice_per_class'][k] for e in sel]):.3f}" for k in sel[0]["dice_per_class"])
            seeds = f", {len(sel)} seeds" if len(sel) > 1 else ""
            cells.append(f"{sel[0]['epochs']:g} ep, **{dice:.3f}** ({per}){seeds}")
            rates += [e.get("train_seconds_per_step", e.get("seconds_per_step")) for e in sel]
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {np.mean(rates):.3f} |")
    return "\n".join(lines)


def plot_curve(curve: list[dict], path) -> None:
    """PNG of validation Dice against steps: each budget's within-run curve (thin) and its score (markers).

    Args:
        curve: :func:`format_curve_table`'s entries, each with ``evals`` (``[{"step", "dice"}, ...]``: the run's
            evaluations, curve steps included).
        path: the PNG to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, n in enumerate(sorted({e["num_labeled"] for e in curve})):
        colour = f"C{i}"
        sel = sorted((e for e in curve if e["num_labeled"] == n), key=lambda e: (e["seed"], e["budget"]))
        for e in sel:
            ax.plot([v["step"] for v in e["evals"]], [v["dice"] for v in e["evals"]], color=colour, lw=0.6, alpha=0.5)
        budgets = sorted({e["budget"] for e in sel})
        means = [np.mean([e["dice"] for e in sel if e["budget"] == b]) for b in budgets]
        ax.plot(budgets, means, "o-", color=colour, lw=2, label=f"{n} labeled: score at the end of a budget")
    ax.set_xscale("log")
    ax.set_xlabel("fine-tuning steps (each budget its own cosine schedule)")
    ax.set_ylabel("validation Dice (mean of structures)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
