"""Label efficiency: does cluster-guided pretraining give better segmentation from few labels?

Compares, in one run and with paired seeds, initialisations of the same MONAI ``BasicUNet`` (``--methods``):
``random`` (no pretraining) and pretrainings (SimCLR on the encoder, Chaitanya et al.'s global + local baseline,
Zhang et al.'s cluster-guided contrastive learning, ...).

Every pretraining and fine-tuning runs through the bundles' configs with overrides (issue 21, "One pipeline"): for
``heart`` (``_label_efficiency_bundles``) the pretraining bundle's ``train_slices.json`` (``local_discrimination``:
the local-discrimination bundle's) and the heart bundle's ``train_slices.json``, scored per volume at the labels'
grid, HD95 in the labels' unit; for ``dermoscopy`` (``_label_efficiency_dermoscopy_bundles``) the pretraining
bundle's ``train.json`` and the dermoscopy bundle's ``train.json`` on datalists of the split. This module keeps only
the protocol: split, seeds, pairing, statistics, tables, plots and the resumable JSON; the loop, optimiser,
schedule, augmentation, autoencoder, label selection and metrics are the bundles'. ``benchmarks/gpu/
label_efficiency.sh`` runs it on a GPU.

Each pretraining runs once (``--pretrain-seed``) for every length in ``--pretrain-steps``, each length a bundle run
of its own (its schedule spans that length), and every fine-tuning seed reuses its weights. Seed ``s`` is the
fine-tuning bundle's ``seed``: it fixes the labeled subset, the initialisation of the layers that are not
pretrained, the batch order and every augmentation draw, identically for every method, so differences between
methods are paired. The score of a run is the mean of its last ``--eval-last`` evaluations, every ``--eval-every``
steps, on the held-out split (the bundles' ``eval_every_steps`` and ``eval_last``): Dice per structure and its mean,
and HD95.

The ACDC and dermoscopy records of ``BENCHMARKS.md`` dated up to 2026-12-04 were measured by an older in-memory
pipeline (``--pipeline tensors``: its own loop, Adam and cosine, batched augmentation and metrics at the training
grid, and snapshots of one pretraining at several lengths), since removed: it lives in git history at commit
cf400c9 (``git show cf400c9:benchmarks/_label_efficiency_train.py``, with ``_label_efficiency_finetune.py``,
``_label_efficiency_data.py`` and this script of that commit), which the commands in those records refer to. Its
result files (a configuration without ``"pipeline"``) are still read under their configuration hash by
``--report-only`` and ``--merge``, and reported; a run (or ``--pipeline tensors``) that would rerun or extend one is
refused, naming that commit.

``--semi-supervised`` crosses every initialisation with semi-supervised fine-tuning (issue 23): the heart bundle's
``semi_supervised`` option (``mean_teacher``, ``copy_paste``; ``none`` is labeled-only), whose unlabeled set is
every slice of the pool patients left unlabeled, never a test patient's; the variants are named
``<initialisation>+<method>`` and paired by seed with the rest (same labeled patients, same seed).

Heart (ACDC), modelled on Chaitanya et al. (NeurIPS 2020): 20 test patients stratified by pathology group (4 per
group, ``--split-seed``), the other 50 are the unlabeled pretraining pool and the pool the labeled patients
(1, 2, 8 and all 50, drawn round the groups by the seed) come from. ``--learning-curve`` instead holds out
``--val-patients`` units of the pool and fine-tunes random initialisations for each budget of ``--curve-steps``,
to choose ``--finetune-steps`` on validation units, never on the test units (``--choose-steps`` applies the
pre-registered rule to its JSON): for heart the heart bundle on the pool's folder with ``num_val_patients`` and
``eval_curve_every`` (:func:`_label_efficiency_bundles.curve_bundles`); for dermoscopy the dermoscopy bundle on a
datalist whose validation images are ``--val-patients`` pool images, with ``eval_curve_every``
(:func:`_label_efficiency_dermoscopy_bundles.curve_dermoscopy`).

Examples::

    python benchmarks/label_efficiency.py --dataset heart --learning-curve --methods random
    python benchmarks/label_efficiency.py --dataset heart --methods random --num-labeled 50 --seeds 0 1 2
    python benchmarks/label_efficiency.py --dataset heart --methods random cluster_guided --num-labeled 1 2 \\
        --semi-supervised none mean_teacher copy_paste --seeds 0 1 2 3 4 5 6 7 8 9
    python benchmarks/label_efficiency.py --dataset dermoscopy --learning-curve --methods random --val-patients 20
    python benchmarks/label_efficiency.py --dataset dermoscopy --image-size 64 --seeds 0 1 2 \\
        --label-fraction 0.1 1.0 --pretrain-steps 300 --finetune-steps 200

Results (JSON, resumable: finished runs are skipped when the configuration matches) go to ``--out``; the bundles'
run folders (pretrained weights, split datalists, pool links) go to ``--work-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bundle_runs import SEMI_DEFAULTS  # noqa: E402
from _label_efficiency_bundles import BUNDLE_METHODS, check_bundle_args, curve_bundles, run_bundles  # noqa: E402
from _label_efficiency_dermoscopy_bundles import DERMOSCOPY_METHODS, curve_dermoscopy  # noqa: E402
from _label_efficiency_finetune import eval_schedule, format_curve_table, parse_steps, plot_curve  # noqa: E402
from _label_efficiency_plots import plot_paired  # noqa: E402
from _label_efficiency_report import (  # noqa: E402
    choose_finetune_steps,
    format_pairwise,
    format_table,
    reference_line,
    summarize,
)

from monai_cluster.utils import get_data_root  # noqa: E402
from monai_cluster.utils.io import atomic_write, atomic_write_json  # noqa: E402
from monai_cluster.workflows.semi_supervised import SEMI_SUPERVISED_CHOICES  # noqa: E402

__all__ = [
    "METHODS",
    "format_curve_table",
    "format_pairwise",
    "format_table",
    "main",
    "parse_args",
    "reference_line",
    "summarize",
]

logger = logging.getLogger("label_efficiency")

#: every initialisation the protocol names: ``random`` and the pretraining methods of the bundles (heart; the
#: dermoscopy bundles run ``random`` and :data:`DERMOSCOPY_METHODS`)
METHODS = ("random", *BUNDLE_METHODS)
#: ``--augment`` choices as the records name them; the bundles run ``full`` and ``none`` (``flip`` is refused)
AUGMENTATIONS = ("full", "flip", "none")
#: pretraining settings that enter the configuration hash beside :data:`_PRETRAIN_KEYS`' first ones
PRETRAIN_ARG_KEYS = ("local_steps", "local_lr", "crop_scale", "ld_batch", "ld_steps_factor")
#: the commit whose ``benchmarks/`` holds the removed in-memory pipeline (``--pipeline tensors``)
TENSORS_COMMIT = "cf400c9"
REMOVED = (
    "the in-memory pipeline ('--pipeline tensors', which measured the records dated up to 2026-12-04) was removed: "
    "its result files are still reported (--report-only, --merge) but not rerun or extended; to rerun one, use "
    f"benchmarks/ at commit {TENSORS_COMMIT} (git show {TENSORS_COMMIT}:benchmarks/_label_efficiency_train.py)."
)

_PRETRAIN_KEYS = (
    "dataset", "train_dir", "test_dir", "unlabeled_dir", "num_test", "split_seed", "heart_crop", "image_size",
    "features", "pretrain_batch", "pretrain_lr", "pretrain_seed", "temperature", "local_weight", "local_locations",
    "local_region", "decoder_layer", "mask_level", "num_clusters", "partitions", "ae_steps", *PRETRAIN_ARG_KEYS,
)
_FINETUNE_KEYS = ("finetune_batch", "finetune_lr", "augment", "eval_every", "eval_last", "hd95")
_CONFIG_KEYS = (*_PRETRAIN_KEYS, *_FINETUNE_KEYS, "finetune_steps", "epochs")
_CURVE_KEYS = (*_PRETRAIN_KEYS[:8], "features", *_FINETUNE_KEYS, "val_patients", "curve_every")
#: heart default: steps per labeled setting (the fallback for 8 and all 50 patients), chosen from the validation
#: learning curve at 64 px, crop 0.66 (BENCHMARKS.md): 1-2 patients flat after 2000 steps, 8 and 40 still gaining
#: up to 4000, where 40 patients pass the 0.85 Dice bar
HEART_STEPS = ["1:2000", "2:2000", "4000"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; fills dataset-dependent defaults (folders, test size, settings).

    Raises:
        ValueError: naming the option, for values the protocol or the bundles cannot run (``--pipeline tensors``
            among them: see :data:`REMOVED`).
    """
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=("dermoscopy", "heart"), default="dermoscopy")
    p.add_argument("--pipeline", choices=("bundles", "tensors"), help=argparse.SUPPRESS)  # refused: REMOVED
    p.add_argument("--train-dir", nargs="+", help="labeled folder(s); default: the shared PH2 + HAM10000 or ACDC data")
    p.add_argument("--test-dir", nargs="*", help="held-out labeled folder(s); default: a seeded split of --train-dir")
    p.add_argument("--unlabeled-dir", nargs="*", help="unlabeled image folder(s) added to pretraining (2D only)")
    p.add_argument("--num-test", type=int, help="held-out images (dermoscopy, default 20) or patients (heart, 20)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--heart-crop", type=float, default=0.66,
                   help="centred square crop, fraction of the short side (ACDC: 0.66 keeps 99.93%% of label voxels)")
    p.add_argument("--label-fraction", type=float, nargs="*", default=[], help="fractions of the labeled units")
    p.add_argument("--num-labeled", type=int, nargs="*", default=[], help="numbers of labeled images/patients")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=METHODS, help="default: random and every method of the bundles")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16], help="BasicUNet features")
    p.add_argument("--pretrain-steps", type=int, nargs="+", default=[300],
                   help="pretraining lengths to fine-tune from (each its own pretraining run)")
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--pretrain-seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--local-weight", type=float, default=1.0)
    p.add_argument("--local-locations", type=int, default=64)
    p.add_argument("--local-region", type=int, default=1)
    p.add_argument("--decoder-layer", default="upcat_3", help="BasicUNet block under the dense head (local loss)")
    p.add_argument("--mask-level", type=int, default=0, help="pseudo-class level that masks negatives (0 coarsest)")
    p.add_argument("--pretrain-schedule", choices=("protocol", "bundle"), default="protocol",
                   help="protocol = AdamW, weight decay 1e-4, 50 warm-up steps, cosine to 0.1; "
                        "bundle = the pretraining bundle's defaults (Adam, 1e-5, no warm-up, cosine to 0)")
    p.add_argument("--num-clusters", type=int, nargs="+", default=[8, 32])
    p.add_argument("--partitions", type=int, default=4, help="slice partitions per volume (heart global loss)")
    p.add_argument("--ae-steps", type=int, default=300, help="autoencoder steps (the bundle's epochs over the pool)")
    p.add_argument("--local-steps", type=int, default=1000, help="staged schedule: steps of the local stage")
    p.add_argument("--local-lr", type=float, default=1e-3, help="staged schedule: learning rate of stage 2")
    p.add_argument("--crop-scale", type=float, nargs=2, default=[0.35, 1.0],
                   help="area fraction range of each geometric view's random resized crop")
    p.add_argument("--ld-batch", type=int, default=16, help="local discrimination: images per step")
    p.add_argument("--ld-steps-factor", type=float, default=1.0,
                   help="local discrimination: its steps per pretraining step of the other methods")
    p.add_argument("--device", default="cpu", help="torch device of pretraining and fine-tuning, e.g. cuda")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for the networks on CUDA")
    p.add_argument("--epochs", type=float, help="read from the in-memory pipeline's records only (refused for a run)")
    p.add_argument("--finetune-steps", nargs="+",
                   help="steps: one number for every setting, or LABELED:STEPS entries plus an optional plain "
                        f"fallback (heart default {' '.join(HEART_STEPS)}; dermoscopy 200)")
    p.add_argument("--finetune-batch", type=int, default=8)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--augment", choices=AUGMENTATIONS, default="full", help="fine-tuning augmentation (the bundle's)")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-last", type=int, default=4, help="report the mean of this many final evaluations")
    p.add_argument("--no-hd95", dest="hd95", action="store_false",
                   help="read from the in-memory pipeline's records only (the bundles always score HD95)")
    p.add_argument("--semi-supervised", nargs="+", choices=SEMI_SUPERVISED_CHOICES, default=["none"],
                   help="fine-tuning variants crossed with every initialisation: none = labeled only; mean_teacher "
                        "/ copy_paste also learn from the pool's unlabeled patients (issue 23)")
    for name, default in SEMI_DEFAULTS.items():
        if isinstance(default, bool):  # a switch: --consistency-cutmix
            p.add_argument(f"--{name.replace('_', '-')}", action="store_true",
                           help=f"the heart bundle's {name} true (semi-supervised variants)")
            continue
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                       help=f"the heart bundle's {name} (semi-supervised variants)")
    p.add_argument("--learning-curve", action="store_true",
                   help="random init only: fine-tune for each --curve-steps budget, scored on --val-patients")
    p.add_argument("--val-patients", type=int, default=10,
                   help="learning curve: pool units (patients, or dermoscopy images) held out for validation")
    p.add_argument("--curve-labeled", type=int, nargs="+", default=[2, 8, 0],
                   help="learning curve: labeled units per setting (0: the whole rest of the pool)")
    p.add_argument("--curve-steps", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
    p.add_argument("--curve-every", type=int, default=250, help="learning curve: evaluate every this many steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pretrain-only", action="store_true", help="stop after the pretraining stages (to run them apart)")
    p.add_argument("--report-only", action="store_true", help="train nothing: summarise the (merged) finished runs")
    p.add_argument("--choose-steps", type=Path, metavar="CURVE_JSON",
                   help="train nothing: print the --finetune-steps that the pre-registered rule takes from a "
                        "--learning-curve result (shortest budget within 0.005 of the best, at 2 and at 8 labeled)")
    p.add_argument("--plot", type=Path, help="also write a PNG of every seed's Dice per initialisation (paired)")
    p.add_argument("--merge", type=Path, nargs="*", default=[],
                   help="result JSONs of the same configuration (e.g. one process per seed) whose runs are taken over")
    p.add_argument("--out", type=Path)
    p.add_argument("--work-dir", type=Path)
    args = p.parse_args(argv)
    if vars(args).pop("pipeline") == "tensors":
        raise ValueError(f"--pipeline tensors: {REMOVED}")
    root = Path(get_data_root())
    args.semi_supervised = list(dict.fromkeys(args.semi_supervised))
    if args.dataset == "dermoscopy":
        derm = root / "dermoscopy"
        args.train_dir = args.train_dir or [str(derm / "ph2"), str(derm / "ham10000")]
        if args.unlabeled_dir is None:
            args.unlabeled_dir = [str(derm / "ph2" / "unlabeled")]
        args.num_test = 20 if args.num_test is None else args.num_test
        if not (args.label_fraction or args.num_labeled):
            args.label_fraction = [0.1, 1.0]
        args.finetune_steps = args.finetune_steps or ["200"]
    else:
        args.train_dir = args.train_dir or [str(root / "heart" / "acdc")]
        args.unlabeled_dir = []
        args.num_test = 20 if args.num_test is None else args.num_test
        if not (args.label_fraction or args.num_labeled):
            args.num_labeled, args.label_fraction = [1, 2, 8], [1.0]
        args.finetune_steps = args.finetune_steps or list(HEART_STEPS)
    for f in args.label_fraction:
        if not 0 < f <= 1:
            raise ValueError(f"--label-fraction values must lie in (0, 1], got {f}.")
    args.steps_table = parse_steps(args.finetune_steps)
    budgets = args.curve_steps if args.learning_curve else [v for v in args.steps_table.values()]
    for steps in budgets:
        eval_schedule(steps, args.eval_every, args.eval_last)  # raises naming the three options
    if args.val_patients < 1 or args.curve_every < 1 or any(n < 0 for n in args.curve_labeled):
        raise ValueError(
            f"--val-patients and --curve-every must be >= 1 and --curve-labeled >= 0, got {args.val_patients}, "
            f"{args.curve_every}, {args.curve_labeled}."
        )
    stem = f"label_efficiency{'_curve' if args.learning_curve else ''}_{args.dataset}_{args.image_size}_bundles"
    args.out = args.out or Path(__file__).resolve().parent / "results" / f"{stem}.json"
    args.work_dir = args.work_dir or Path.home() / ".cache" / "monai_cluster_runs" / "acdc_bundles"
    methods = DERMOSCOPY_METHODS if args.dataset == "dermoscopy" else BUNDLE_METHODS
    args.methods = args.methods or ["random", *methods]
    if not (args.report_only or args.choose_steps):  # what only reads results may name the records' settings
        check_bundle_args(args)
    return args


def _settings(args, num_units: int) -> list[int]:
    out = [int(n) for n in args.num_labeled]
    out += [max(1, int(round(f * num_units))) for f in args.label_fraction]
    return list(dict.fromkeys(out))


def _variants(args) -> list[tuple[str, str, int | None, str]]:
    """``(name, method, pretrain steps, semi_supervised)`` for every fine-tuned variant.

    Every initialisation (``random``, ``<method>@<steps>``) crossed with every ``--semi-supervised`` fine-tuning;
    ``none`` keeps the initialisation's name, a method appends it (``random+copy_paste``,
    ``cluster_guided@3000+mean_teacher``).
    """
    inits = []
    for m in args.methods:
        if m == "random":
            inits.append(("random", m, None))
        else:
            inits += [(f"{m}@{s}", m, s) for s in sorted(args.pretrain_steps)]
    semis = getattr(args, "semi_supervised", None) or ["none"]
    return [(name if semi == "none" else f"{name}+{semi}", m, s, semi) for semi in semis for name, m, s in inits]


def _config(args, keys: tuple[str, ...] = _CONFIG_KEYS, legacy: bool = False) -> dict:
    """The configuration whose hash names a result file: the values of ``keys`` and ``"pipeline": "bundles"``, with
    the semi-supervised settings and ``pretrain_schedule`` once they leave their defaults (so earlier hashes stay).

    ``legacy``: the configuration as the removed in-memory pipeline recorded it (``keys`` alone), to read its files.
    """
    cfg = {k: getattr(args, k) for k in keys}
    if not legacy:
        cfg["pipeline"] = "bundles"
        semi = {name: getattr(args, name, default) for name, default in SEMI_DEFAULTS.items()}
        if semi != SEMI_DEFAULTS:  # the semi-supervised settings, once they leave the bundle's defaults
            cfg["semi_supervised_options"] = semi
        if getattr(args, "pretrain_schedule", "protocol") != "protocol":  # likewise: earlier hashes stay
            cfg["pretrain_schedule"] = args.pretrain_schedule
    return json.loads(json.dumps(cfg, default=str))


def _digest(cfg: dict) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def _is_tensors_record(record: dict | None) -> bool:
    """Whether a result file was written by the removed in-memory pipeline (a configuration without ``pipeline``)."""
    return record is not None and "config_hash" in record and "pipeline" not in record.get("config", {})


def _start(args, argv: list[str] | None, keys: tuple[str, ...]) -> dict:
    """The result dict: this configuration, resumed from ``--out`` and ``--merge`` files of the same hash.

    A file of the removed in-memory pipeline is read under its own hash (:func:`_config` with ``legacy``) by
    ``--report-only`` alone.

    Raises:
        ValueError: when ``--out`` or a ``--merge`` file is the in-memory pipeline's and this is not
            ``--report-only`` (it would be rerun or extended), or its configuration is not these arguments', or a
            ``--merge`` file's configuration differs from this run's.
    """
    old = json.loads(args.out.read_text()) if args.out.is_file() else None
    merged = [(Path(path), json.loads(Path(path).read_text())) for path in args.merge]
    tensors = [str(path) for path, record in [(args.out, old), *merged] if _is_tensors_record(record)]
    if tensors and not args.report_only:
        raise ValueError(f"{', '.join(tensors)}: {REMOVED}")
    config = _config(args, keys, legacy=bool(tensors))
    digest = _digest(config)
    result = {"config": config, "config_hash": digest, "runs": [], "pretrain": {}, "wall_seconds": {}}
    if old is not None and old.get("config_hash") == digest:
        result.update({k: old[k] for k in ("runs", "pretrain", "wall_seconds", "curve", "validation") if k in old})
        logger.info("resuming %s: %d runs done", args.out, len(result["runs"]) + len(result.get("curve", [])))
    elif _is_tensors_record(old):
        raise ValueError(f"--out {args.out}: a record of the in-memory pipeline whose configuration (hash "
                         f"{old['config_hash']}) is not these arguments' ({digest}); pass the arguments of its "
                         "'command' to report it.")  # fmt: skip
    for path, other in merged:
        if other.get("config_hash") != digest:
            raise ValueError(f"--merge {path}: its configuration differs from this run's (hash {digest}).")
        have = {(r["num_labeled"], r["seed"], r["variant"]) for r in result["runs"]}
        result["runs"] += [r for r in other["runs"] if (r["num_labeled"], r["seed"], r["variant"]) not in have]
        for k, v in other.get("pretrain", {}).items():
            result["pretrain"].setdefault(k, v)
        for k, v in other.get("wall_seconds", {}).items():
            result["wall_seconds"][f"{path.name}:{k}"] = v
    result["command"] = "python " + " ".join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    result["machine"] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }
    return result


def _run_curve(args, argv: list[str] | None, t_start: float) -> dict:
    """``--learning-curve``: the validation runs through the dataset's bundle, then JSON, Markdown table and PNG
    beside ``--out``."""
    if args.methods != ["random"]:
        raise ValueError(f"--learning-curve fine-tunes random initialisations only; pass --methods random, "
                         f"got {args.methods}.")
    result = _start(args, argv, _CURVE_KEYS)

    def save() -> None:
        result["wall_seconds"]["total_this_invocation"] = round(time.time() - t_start, 1)
        atomic_write_json(result, args.out)

    (curve_dermoscopy if args.dataset == "dermoscopy" else curve_bundles)(args, result, save)
    table = format_curve_table(result["curve"])
    save()
    with atomic_write(args.out.with_suffix(".md")) as handle:
        handle.write(f"Validation {'images' if args.dataset == 'dermoscopy' else 'patients'}: "
                     f"{result['validation']['names']}\n\n{table}\n\n`{result['command']}`\n")  # fmt: skip
    plot_curve(result["curve"], args.out.with_suffix(".png"))
    print(table)
    print(f"results: {args.out} (+ .md, .png)")
    return result


def _print_report(result: dict, unit: str) -> None:
    hd95_units = {r.get("hd95_unit", "px") for r in result["runs"]}
    print(format_table(result["summary"], unit, hd95_units.pop() if len(hd95_units) == 1 else "mixed units" if hd95_units else "px"))
    if result.get("pairwise"):
        print()
        print(format_pairwise(result["pairwise"], unit))
    line = reference_line(result["summary"], unit)
    if line:
        print()
        print(line)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (or ``--learning-curve``) the command line describes; returns the result dict."""
    args = parse_args(argv)
    if args.choose_steps is not None:
        steps = choose_finetune_steps(json.loads(args.choose_steps.read_text())["curve"])
        print(" ".join(steps))
        return {"finetune_steps": steps}
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    t_start = time.time()
    if args.learning_curve:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        return _run_curve(args, argv, t_start)
    result = _start(args, argv, _CONFIG_KEYS)
    unit = "images" if args.dataset == "dermoscopy" else "patients"

    def save() -> None:
        result["summary"], result["pairwise"] = summarize(result["runs"])
        result["wall_seconds"]["total_this_invocation"] = round(time.time() - t_start, 1)
        atomic_write_json(result, args.out)

    if args.report_only:
        save()
        _print_report(result, unit)
        if args.plot:
            print(f"plot: {plot_paired(result['runs'], args.plot)}")
        return result
    args.work_dir.mkdir(parents=True, exist_ok=True)
    result["pretrain_dir"] = f"pretrain_{_digest(_config(args, _PRETRAIN_KEYS))}"
    run_bundles(args, result, save, lambda units: _settings(args, units), _variants(args))
    save()
    if not args.pretrain_only:
        _print_report(result, unit)
    print(f"wall time this invocation: {result['wall_seconds']['total_this_invocation']:.0f} s; results: {args.out}")
    return result


if __name__ == "__main__":
    main()
