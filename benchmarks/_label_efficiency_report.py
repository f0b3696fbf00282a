"""Summaries of the label-efficiency runs: statistics over seeds, paired differences, Markdown tables.

Shared by the runs through the bundles and the records of the removed in-memory pipeline (the same fields): per
(labeled units, variant) the mean Dice, Dice per structure and HD95 over seeds, the paired difference to ``random``
and between pretrained variants of the same length, with t-based 95% intervals (``_stats.mean_ci``).
"""

from __future__ import annotations

import itertools

import numpy as np

from _stats import mean_ci

__all__ = ["choose_finetune_steps", "format_pairwise", "format_table", "reference_line", "summarize"]

#: the methods in the order of their introduction (the first term of a pairwise difference: later ones first)
METHOD_ORDER = (
    "random", "simclr", "global_local", "cluster_guided", "global_local_staged", "cluster_guided_staged",
    "local_discrimination", "cluster_guided_gd",
)


def _stats(values: list) -> dict:
    """``{"n", "mean", "sd"}`` of the finite values, with a t-based 95% interval of the mean when ``n > 1``."""
    return mean_ci(values)


def _per_class(runs: list[dict], key: str = "dice_per_class") -> dict:
    names = dict.fromkeys(k for r in runs for k in (r.get(key) or {}))
    return {k: _stats([(r.get(key) or {}).get(k) for r in runs]) for k in names}


def _paired(a: list[dict], b: list[dict]) -> dict:
    """Paired statistics of ``a - b`` over the seeds both have: mean Dice and per-structure Dice."""
    base = {r["seed"]: r for r in b}
    pairs = [(r, base[r["seed"]]) for r in a if r["seed"] in base]
    out = {"dice": _stats([x["dice"] - y["dice"] for x, y in pairs]), "per_class": {}}
    for k in dict.fromkeys(k for x, _ in pairs for k in (x.get("dice_per_class") or {})):
        diffs = [x["dice_per_class"][k] - y["dice_per_class"][k] for x, y in pairs
                 if (y.get("dice_per_class") or {}).get(k) is not None and x["dice_per_class"][k] is not None]
        out["per_class"][k] = _stats(diffs)
    return out


def _rank(variant: str) -> tuple[int, str]:
    """Order of the first term of a pairwise difference: cluster-guided first, then later methods first."""
    method = variant.split("+")[0].split("@")[0]
    order = ["cluster_guided", *[m for m in reversed(METHOD_ORDER) if m != "cluster_guided"]]
    return (order.index(method) if method in order else len(order), variant)


def summarize(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Summaries of finished runs, per number of labeled units.

    Returns:
        ``(rows, pairwise)``: one row per (labeled units, variant) with Dice (mean and per structure) and HD95
        statistics over seeds and the paired difference to ``random`` (labeled-only, same seeds); and one row per
        pair of other variants with the same pretraining length (e.g. ``cluster_guided@3000+copy_paste`` against
        ``cluster_guided@3000``) or the same semi-supervised method (``cluster_guided@3000+copy_paste`` against
        ``random+copy_paste``), ``a - b`` paired by seed, ``cluster_guided`` first.
    """
    rows, pairwise = [], []
    for n in sorted({r["num_labeled"] for r in runs}):
        at_n = [r for r in runs if r["num_labeled"] == n]
        by_variant = {v: [r for r in at_n if r["variant"] == v] for v in dict.fromkeys(r["variant"] for r in at_n)}
        for variant, sel in by_variant.items():
            row = {"num_labeled": n, "variant": variant, "dice": _stats([r["dice"] for r in sel]),
                   "dice_per_class": _per_class(sel), "hd95": _stats([r.get("hd95") for r in sel])}
            if variant != "random" and by_variant.get("random"):
                paired = _paired(sel, by_variant["random"])
                row["dice_diff_to_random"], row["dice_diff_to_random_per_class"] = paired["dice"], paired["per_class"]
            rows.append(row)
        pretrained = sorted((v for v in by_variant if v != "random"), key=_rank)
        for a, b in itertools.combinations(pretrained, 2):
            ra, rb = by_variant[a][0], by_variant[b][0]
            semi = ra.get("semi_supervised", "none")
            same_length = ra.get("pretrain_steps") == rb.get("pretrain_steps")
            if same_length or semi == rb.get("semi_supervised", "none") != "none":
                pairwise.append({"num_labeled": n, "a": a, "b": b, **_paired(by_variant[a], by_variant[b])})
    return rows, pairwise


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("n", 0) == 0:
        return "-"
    sd = "" if not np.isfinite(stat["sd"]) else f" ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{sd}"


def _fmt_diff(d: dict | None) -> str:
    if not d or d.get("n", 0) == 0:
        return ""
    if d["n"] == 1:
        return f"{d['mean']:+.3f}"
    return f"{d['mean']:+.3f} ± {d['sd']:.3f} ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f})"


def format_table(rows: list[dict], unit: str, hd95_unit: str = "px") -> str:
    """A Markdown table of :func:`summarize` rows: mean Dice, Dice per structure, paired difference, HD95 (``hd95_unit``)."""
    names = list(dict.fromkeys(k for r in rows for k in r.get("dice_per_class", {})))
    per = "".join(f" {k} |" for k in names) if len(names) > 1 else ""
    lines = [
        f"| labeled {unit} | init | seeds | Dice |{per} paired diff to random (95% CI) | HD95 ({hd95_unit}) |",
        "|---" * (6 + (len(names) if len(names) > 1 else 0)) + "|",
    ]
    for r in rows:
        cells = "".join(f" {_fmt(r['dice_per_class'].get(k))} |" for k in names) if per else ""
        lines.append(f"| {r['num_labeled']} | {r['variant']} | {r['dice']['n']} | {_fmt(r['dice'])} |{cells} "
                     f"{_fmt_diff(r.get('dice_diff_to_random'))} | {_fmt(r['hd95'], 2)} |")
    return "\n".join(lines)


def format_pairwise(pairwise: list[dict], unit: str) -> str:
    """A Markdown table of the paired differences between pretrained variants (``a - b``, 95% t-interval)."""
    lines = [f"| labeled {unit} | comparison | seeds | Dice difference (95% CI) |", "|---|---|---|---|"]
    for r in pairwise:
        lines.append(f"| {r['num_labeled']} | {r['a']} − {r['b']} | {r['dice']['n']} | {_fmt_diff(r['dice'])} |")
    return "\n".join(lines)


def reference_line(rows: list[dict], unit: str) -> str:
    """Few-label Dice as a fraction of the all-labels Dice, beside Chaitanya et al.'s published figure.

    Returns ``""`` when the summary lacks a 2-unit setting or a larger one.
    """
    most = max((r["num_labeled"] for r in rows), default=0)
    two = {r["variant"]: r["dice"] for r in rows if r["num_labeled"] == 2 and r["dice"].get("n")}
    full = {r["variant"]: r["dice"] for r in rows if r["num_labeled"] == most and r["dice"].get("n")}
    ratios = [f"{v} {two[v]['mean'] / full[v]['mean']:.1%}" for v in two if v in full and most > 2]
    if not ratios:
        return ""
    return (f"Reference: Chaitanya et al. (NeurIPS 2020) report that two labeled volumes come within 8% of the "
            f"all-labels benchmark. Here 2 labeled {unit} reach, as a fraction of the Dice with {most}: "
            + ", ".join(ratios) + ".")


def choose_finetune_steps(
    curve: list[dict], few: int | None = None, many: int | None = None, tolerance: float = 0.005
) -> list[str]:
    """The pre-registered rule that turns a validation learning curve into ``--finetune-steps``.

    For ``few`` labeled units: the shortest budget whose mean validation Dice (over the curve's seeds) is within
    ``tolerance`` of the best budget's, used for every setting up to ``few``; the same rule at ``many`` gives the
    budget of ``many`` and the fallback (every larger setting). ``few`` and ``many`` default to the curve's
    smallest and largest settings. BENCHMARKS.md, "ACDC (2D slices) through the bundles at 128 px": 2 and 8
    patients, 0.005.

    Returns:
        ``["1:<steps>", ..., "<few>:<steps>", "<many>:<steps>", "<steps>"]`` for ``parse_steps``.

    Raises:
        ValueError: when the curve has no entry at ``few`` or at ``many``.
    """
    settings = sorted({e["num_labeled"] for e in curve})
    few = settings[0] if few is None and settings else few
    many = settings[-1] if many is None and settings else many
    if few is None or many is None:
        raise ValueError("the learning curve is empty: no run to choose a budget from.")
    chosen = {}
    for n in (few, many):
        budgets = sorted({e["budget"] for e in curve if e["num_labeled"] == n})
        if not budgets:
            raise ValueError(f"the learning curve has no run with {n} labeled units (has "
                             f"{sorted({e['num_labeled'] for e in curve})}).")  # fmt: skip
        means = {b: float(np.mean([e["dice"] for e in curve if e["num_labeled"] == n and e["budget"] == b]))
                 for b in budgets}  # fmt: skip
        best = max(means.values())
        chosen[n] = min(b for b in budgets if means[b] >= best - tolerance)
    return [*(f"{n}:{chosen[few]}" for n in range(1, few + 1)), f"{many}:{chosen[many]}", str(chosen[many])]
