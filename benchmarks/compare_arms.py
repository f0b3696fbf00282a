"""Paired comparison of two label-efficiency variants from different result files (different configurations).

``label_efficiency.py --report-only --merge`` summarises runs of one configuration. A pre-registered arm that
changes one setting (item 6 of issue 21: one bundle default against the protocol's setting) or adds one method
(issue 23: semi-supervised fine-tuning against labeled-only) has its own configuration hash, so its runs live in
their own file. This script pairs an arm's runs with a reference's by fine-tuning seed, checks that each pair
fine-tuned on the same labeled patients and was scored on the same test patients (otherwise the pair is not a
pair, and the script refuses naming the seed), lists the configuration keys in which the two differ, and reports
the paired difference ``arm - reference`` of mean Dice (and per structure) with its t-based 95% interval, the
same statistics as ``label_efficiency.py``. It trains nothing.

Example (the first arm of item 6 against the reproduction's ``cluster_guided@3000``)::

    python benchmarks/compare_arms.py \\
        --reference benchmarks/records/le_heart_bundles_n2_cg.json benchmarks/records/le_heart_bundles_n2_cg_s5-9.json \\
        --reference-variant cluster_guided@3000 \\
        --arm benchmarks/records/le_heart_item6_mask_level1.json --arm-variant cluster_guided@3000 \\
        --num-labeled 2 --seeds 0 1 2 3 4 5 6 7 8 9
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stats import mean_ci  # noqa: E402

__all__ = ["compare", "config_differences", "format_comparison", "load_runs", "main"]


def load_runs(paths: list[Path], variant: str, num_labeled: int) -> tuple[dict, dict[int, dict]]:
    """The configuration the files share and their finished runs of ``variant`` at ``num_labeled``, by seed.

    Raises:
        ValueError: when the files' configurations differ (naming the file and the keys), a seed appears twice
            with different scores, or no run of ``variant`` at ``num_labeled`` is found (naming the variants there).
    """
    config, runs, seen = None, {}, set()
    for path in paths:
        record = json.loads(Path(path).read_text())
        if config is None:
            config = record.get("config", {})
        else:
            differ = config_differences(config, record.get("config", {}))
            if differ:
                raise ValueError(f"{path}: its configuration differs from {paths[0]} in {sorted(differ)}.")
        for run in record.get("runs", []):
            seen.add((run.get("num_labeled"), run.get("variant")))
            if run.get("variant") != variant or run.get("num_labeled") != num_labeled:
                continue
            seed = int(run["seed"])
            if seed in runs and runs[seed]["dice"] != run["dice"]:
                raise ValueError(f"{path}: seed {seed} of {variant} appears twice with different Dice.")
            runs[seed] = run
    if not runs:
        found = sorted(f"{v} at {n}" for n, v in seen)
        raise ValueError(f"no run of variant {variant!r} at {num_labeled} labeled in {[str(p) for p in paths]}; "
                         f"found: {found or 'no runs'}.")
    return config or {}, runs


def config_differences(a: dict, b: dict) -> dict:
    """``{key: (a's value, b's value)}`` for every configuration key whose values differ (absent is ``None``)."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def compare(reference: dict[int, dict], arm: dict[int, dict], seeds: list[int] | None = None) -> dict:
    """The paired comparison ``arm - reference`` over the seeds both have (of ``seeds``, when given).

    Returns:
        ``{"pairs": [{"seed", "labeled_patients", "reference", "arm", "diff"}], "dice": mean_ci of the
        differences, "per_class": {structure: mean_ci}, "missing": seeds of ``seeds`` without a pair,
        "decision": "arm higher" | "reference higher" | "not told apart" | "incomplete"}``; the decision reads the
        interval (above 0, below 0, across 0) once every expected seed has a pair.

    Raises:
        ValueError: when a pair was fine-tuned on other labeled patients or scored on other test patients.
    """
    wanted = sorted(set(reference) & set(arm)) if seeds is None else [s for s in seeds if s in reference and s in arm]
    pairs, per_class = [], {}
    for seed in wanted:
        ref, new = reference[seed], arm[seed]
        for key in ("labeled_patients", "test_patients"):
            if ref.get(key) is not None and new.get(key) is not None and ref[key] != new[key]:
                raise ValueError(f"seed {seed}: {key} differ ({ref[key]} in the reference, {new[key]} in the arm), "
                                 "so the two runs are not a pair.")
        pairs.append({"seed": seed, "labeled_patients": new.get("labeled_patients"), "reference": ref["dice"],
                      "arm": new["dice"], "diff": new["dice"] - ref["dice"]})
        for k, v in (new.get("dice_per_class") or {}).items():
            r = (ref.get("dice_per_class") or {}).get(k)
            if v is not None and r is not None:
                per_class.setdefault(k, []).append(v - r)
    stat = mean_ci([p["diff"] for p in pairs])
    missing = [] if seeds is None else [s for s in seeds if s not in wanted]
    if missing or "ci95" not in stat:
        decision = "incomplete"
    elif stat["ci95"][0] > 0:
        decision = "arm higher"
    elif stat["ci95"][1] < 0:
        decision = "reference higher"
    else:
        decision = "not told apart"
    return {"pairs": pairs, "dice": stat, "per_class": {k: mean_ci(v) for k, v in per_class.items()},
            "missing": missing, "decision": decision}


def _ci(stat: dict) -> str:
    if stat.get("n", 0) == 0:
        return "-"
    if "ci95" not in stat:
        return f"{stat['mean']:+.3f} (n=1)"
    return f"{stat['mean']:+.3f} (95% CI {stat['ci95'][0]:+.3f}, {stat['ci95'][1]:+.3f}; n={stat['n']})"


def format_comparison(result: dict, differences: dict, reference_name: str, arm_name: str) -> str:
    """A Markdown report: the configuration differences, the per-seed pairs and the paired difference."""
    lines = ["Configuration differences (reference -> arm): "
             + (", ".join(f"`{k}` {a!r} -> {b!r}" for k, (a, b) in differences.items()) or "none"), "",
             f"| seed | labeled patients | {reference_name} | {arm_name} | difference |", "|---|---|---|---|---|"]
    for p in result["pairs"]:
        patients = ", ".join(p["labeled_patients"] or [])
        lines.append(f"| {p['seed']} | {patients} | {p['reference']:.3f} | {p['arm']:.3f} | {p['diff']:+.3f} |")
    lines += ["", f"Mean Dice, arm - reference: {_ci(result['dice'])}"]
    lines += [f"- {k}: {_ci(v)}" for k, v in result["per_class"].items()]
    missing = f" (no pair yet for seeds {result['missing']})" if result["missing"] else ""
    lines.append(f"Decision: {result['decision']}{missing}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, nargs="+", required=True, help="result files of the reference")
    p.add_argument("--reference-variant", required=True, help="e.g. cluster_guided@3000 or random")
    p.add_argument("--arm", type=Path, nargs="+", required=True, help="result files of the arm")
    p.add_argument("--arm-variant", required=True, help="e.g. cluster_guided@3000 or random+copy_paste")
    p.add_argument("--num-labeled", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="*", default=None,
                   help="the pre-registered seeds: the decision waits until each has a pair")
    p.add_argument("--out", type=Path, default=None, help="write the comparison as JSON here")
    args = p.parse_args(argv)
    ref_config, reference = load_runs(args.reference, args.reference_variant, args.num_labeled)
    arm_config, arm = load_runs(args.arm, args.arm_variant, args.num_labeled)
    result = compare(reference, arm, args.seeds)
    differences = config_differences(ref_config, arm_config)
    print(format_comparison(result, differences, args.reference_variant, args.arm_variant))
    out = {"reference": [str(x) for x in args.reference], "reference_variant": args.reference_variant,
           "arm": [str(x) for x in args.arm], "arm_variant": args.arm_variant, "num_labeled": args.num_labeled,
           "config_differences": {k: list(v) for k, v in differences.items()}, **result}
    if args.out is not None:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(args.out)
    return out


if __name__ == "__main__":
    main()
