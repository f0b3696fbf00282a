"""Label efficiency: does cluster-guided pretraining give better segmentation from few labels?

Compares, in one run and with paired seeds, four initialisations of the same MONAI ``BasicUNet``:

- ``random``: no pretraining;
- ``simclr``: NT-Xent on the encoder (``ClusterGuidedContrastiveLoss`` without pseudo-classes, guidance off);
- ``global_local``: Chaitanya et al.'s baseline, ``GlobalContrastiveLoss`` (partition-aware positives for slices of
  volumes; plain NT-Xent for 2D images, which have no partitions) + ``LocalContrastiveLoss`` on a decoder map;
- ``cluster_guided``: Zhang et al.: autoencoder features -> hierarchical pseudo-classes ->
  ``ClusterGuidedContrastiveLoss`` (same-pseudo-class negatives removed) + the same local loss.

Each pretraining runs once (``--pretrain-seed``) and is saved at every length in ``--pretrain-steps``; every
fine-tuning seed reuses those weights. Seed ``s`` fixes the labeled subset, the initialisation of the layers that
are not pretrained (decoder for encoder-only methods, and the head) and the batch order, identically for every
method, so the differences to ``random`` are paired. Fine-tuning uses a cosine learning rate decayed to zero and
reports the mean of the last ``--eval-last`` evaluations on the held-out split.

Example (the numbers in the "Label efficiency" section of ``BENCHMARKS.md``)::

    python benchmarks/label_efficiency.py --dataset dermoscopy --image-size 64 --seeds 0 1 2 \\
        --label-fraction 0.1 1.0 --pretrain-steps 300 --out benchmarks/results/label_efficiency_dermoscopy.json

Results (JSON, resumable: finished runs are skipped when the configuration matches) go to ``--out``;
checkpoints, the pseudo-class table and the data cache go to ``--work-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _label_efficiency_data import load_dataset  # noqa: E402
from _label_efficiency_train import (  # noqa: E402
    METHODS,
    PRETRAINED_METHODS,
    finetune,
    pretrain,
    pretrained_exclude,
    pseudo_classes,
)

from monai_cluster.utils import get_data_root  # noqa: E402
from monai_cluster.utils.io import atomic_write_json  # noqa: E402

__all__ = ["main", "parse_args", "summarize", "format_table", "labeled_subset"]

logger = logging.getLogger("label_efficiency")

_PRETRAIN_KEYS = (
    "dataset", "train_dir", "test_dir", "unlabeled_dir", "num_test", "split_seed", "heart_crop", "image_size",
    "features", "pretrain_batch", "pretrain_lr", "pretrain_seed", "temperature", "local_weight", "local_locations",
    "local_region", "decoder_layer", "mask_level", "num_clusters", "partitions", "ae_steps",
)
_CONFIG_KEYS = (*_PRETRAIN_KEYS, "finetune_steps", "finetune_batch", "finetune_lr", "eval_every", "eval_last", "hd95")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=("dermoscopy", "heart"), default="dermoscopy")
    p.add_argument("--train-dir", nargs="+", help="labeled folder(s); default: the shared PH2 + HAM10000 or ACDC data")
    p.add_argument("--test-dir", nargs="*", help="held-out labeled folder(s); default: a seeded split of --train-dir")
    p.add_argument("--unlabeled-dir", nargs="*", help="unlabeled image folder(s) added to pretraining (2D only)")
    p.add_argument("--num-test", type=int, help="held-out images (dermoscopy, default 20) or patients (heart, 8)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--heart-crop", type=float, default=0.75, help="centred square crop (fraction of the short side)")
    p.add_argument("--label-fraction", type=float, nargs="*", default=[], help="fractions of the labeled units")
    p.add_argument("--num-labeled", type=int, nargs="*", default=[], help="numbers of labeled images/patients")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16], help="BasicUNet features")
    p.add_argument("--pretrain-steps", type=int, nargs="+", default=[300], help="pretraining lengths to fine-tune from")
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--pretrain-seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--local-weight", type=float, default=1.0)
    p.add_argument("--local-locations", type=int, default=64)
    p.add_argument("--local-region", type=int, default=1)
    p.add_argument("--decoder-layer", default="upcat_3", help="BasicUNet block under the dense head (local loss)")
    p.add_argument("--mask-level", type=int, default=0, help="pseudo-class level that masks negatives (0 coarsest)")
    p.add_argument("--num-clusters", type=int, nargs="+", default=[8, 32])
    p.add_argument("--partitions", type=int, default=4, help="slice partitions per volume (heart global loss)")
    p.add_argument("--ae-steps", type=int, default=300)
    p.add_argument("--epochs", type=float, help="fine-tuning passes over the labeled set (overrides --finetune-steps)")
    p.add_argument("--finetune-steps", type=int, default=200)
    p.add_argument("--finetune-batch", type=int, default=8)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-last", type=int, default=4, help="report the mean of this many final evaluations")
    p.add_argument("--no-hd95", dest="hd95", action="store_false")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pretrain-only", action="store_true", help="stop after the pretraining stages (to run them apart)")
    p.add_argument("--report-only", action="store_true", help="train nothing: summarise the (merged) finished runs")
    p.add_argument("--merge", type=Path, nargs="*", default=[],
                   help="result JSONs of the same configuration (e.g. one process per seed) whose runs are taken over")
    p.add_argument("--out", type=Path)
    p.add_argument("--work-dir", type=Path)
    args = p.parse_args(argv)
    root = Path(get_data_root())
    if args.dataset == "dermoscopy":
        derm = root / "dermoscopy"
        args.train_dir = args.train_dir or [str(derm / "ph2"), str(derm / "ham10000")]
        if args.unlabeled_dir is None:
            args.unlabeled_dir = [str(derm / "ph2" / "unlabeled")]
        args.num_test = 20 if args.num_test is None else args.num_test
        if not (args.label_fraction or args.num_labeled):
            args.label_fraction = [0.1, 1.0]
    else:
        args.train_dir = args.train_dir or [str(root / "heart" / "acdc")]
        args.unlabeled_dir = []
        args.num_test = 8 if args.num_test is None else args.num_test
        if not (args.label_fraction or args.num_labeled):
            args.num_labeled, args.label_fraction = [2], [1.0]
    if args.eval_last < 1 or args.eval_every < 1 or args.eval_last * args.eval_every > args.finetune_steps:
        raise ValueError(
            f"--eval-last * --eval-every must lie in [1, --finetune-steps={args.finetune_steps}], "
            f"got {args.eval_last} * {args.eval_every}."
        )
    for f in args.label_fraction:
        if not 0 < f <= 1:
            raise ValueError(f"--label-fraction values must lie in (0, 1], got {f}.")
    results = Path(__file__).resolve().parent / "results"
    args.out = args.out or results / f"label_efficiency_{args.dataset}_{args.image_size}.json"
    args.work_dir = args.work_dir or results / f"label_efficiency_{args.dataset}_{args.image_size}"
    return args


def labeled_subset(groups: np.ndarray, num_units: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Sample indices of ``num_units`` labeled units (images or patients) drawn by ``seed``, and the units."""
    units = np.unique(groups)
    if not 1 <= num_units <= len(units):
        raise ValueError(f"number of labeled units must lie in [1, {len(units)}], got {num_units}.")
    chosen = np.sort(np.random.RandomState(seed).permutation(units)[:num_units]) if num_units < len(units) else units
    return np.flatnonzero(np.isin(groups, chosen)), [int(u) for u in chosen]


def _settings(args, num_units: int) -> list[int]:
    out = [int(n) for n in args.num_labeled]
    out += [max(1, int(round(f * num_units))) for f in args.label_fraction]
    return list(dict.fromkeys(out))


def _variants(args) -> list[tuple[str, str, int | None]]:
    """``(name, method, pretrain steps)`` for every fine-tuned initialisation."""
    out = []
    for m in args.methods:
        if m == "random":
            out.append(("random", m, None))
        else:
            out += [(f"{m}@{s}", m, s) for s in sorted(args.pretrain_steps)]
    return out


def _stats(values: list[float]) -> dict:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(arr)
    if n == 0:
        return {"n": 0}
    sd = float(arr.std(ddof=1)) if n > 1 else float("nan")
    out = {"n": n, "mean": float(arr.mean()), "sd": sd}
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1) * sd / math.sqrt(n))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out


def summarize(runs: list[dict]) -> list[dict]:
    """Per (labeled units, variant): Dice/HD95 mean, sd, and the paired difference to ``random`` (same seeds)."""
    rows = []
    for n in sorted({r["num_labeled"] for r in runs}):
        base = {r["seed"]: r for r in runs if r["num_labeled"] == n and r["variant"] == "random"}
        for variant in dict.fromkeys(r["variant"] for r in runs):
            sel = [r for r in runs if r["num_labeled"] == n and r["variant"] == variant]
            if not sel:
                continue
            row = {"num_labeled": n, "variant": variant, "dice": _stats([r["dice"] for r in sel])}
            row["hd95"] = _stats([r["hd95"] for r in sel])
            paired = [r for r in sel if r["seed"] in base]
            if variant != "random" and paired:
                row["dice_diff_to_random"] = _stats([r["dice"] - base[r["seed"]]["dice"] for r in paired])
            rows.append(row)
    return rows


def _fmt(stat: dict, digits: int = 3) -> str:
    if not stat or stat.get("n", 0) == 0:
        return "-"
    sd = "" if not np.isfinite(stat["sd"]) else f" ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{sd}"


def format_table(rows: list[dict], unit: str) -> str:
    """A Markdown table of :func:`summarize` rows."""
    lines = [
        f"| labeled {unit} | init | seeds | Dice | paired diff to random (95% CI) | HD95 (px) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r.get("dice_diff_to_random")
        if d and d.get("n", 0) > 1:
            diff = f"{d['mean']:+.3f} ± {d['sd']:.3f} ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f})"
        elif d:
            diff = f"{d['mean']:+.3f}"
        else:
            diff = ""
        lines.append(
            f"| {r['num_labeled']} | {r['variant']} | {r['dice']['n']} | {_fmt(r['dice'])} | {diff} | "
            f"{_fmt(r['hd95'], 2)} |"
        )
    return "\n".join(lines)


def _config(args, keys: tuple[str, ...] = _CONFIG_KEYS) -> dict:
    cfg = {k: getattr(args, k) for k in keys}
    return json.loads(json.dumps(cfg, default=str))


def _digest(cfg: dict) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    t_start = time.time()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    config = _config(args)
    digest = _digest(config)
    result = {"config": config, "config_hash": digest, "runs": [], "pretrain": {}, "wall_seconds": {}}
    if args.out.is_file():
        old = json.loads(args.out.read_text())
        if old.get("config_hash") == digest:
            result.update({k: old[k] for k in ("runs", "pretrain", "wall_seconds") if k in old})
            logger.info("resuming %s: %d runs done", args.out, len(result["runs"]))
    for path in args.merge:
        other = json.loads(Path(path).read_text())
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
    }

    def save() -> None:
        result["summary"] = summarize(result["runs"])
        result["wall_seconds"]["total_this_invocation"] = round(time.time() - t_start, 1)
        atomic_write_json(result, args.out)

    if args.report_only:
        save()
        print(format_table(result["summary"], "images" if args.dataset == "dermoscopy" else "patients"))
        return result
    t0 = time.time()
    data = load_dataset(args, args.work_dir)
    result["data"] = {
        "pretrain_samples": int(len(data.pretrain)), "train_samples": int(len(data.train_x)),
        "labeled_units": data.num_groups, "test_samples": int(len(data.test_x)),
        "test_volumes": int(len(np.unique(data.test_volume))), **data.info,
    }
    result["wall_seconds"].setdefault("data", round(time.time() - t0, 1))
    logger.info("data: %s", {k: v for k, v in result["data"].items() if not isinstance(v, list)})

    ckpt_dir = args.work_dir / f"pretrain_{_digest(_config(args, _PRETRAIN_KEYS))}"
    result["checkpoint_dir"] = str(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    labels = None
    if "cluster_guided" in args.methods:
        table = ckpt_dir / "pseudo_classes.csv"
        npy, info_path = ckpt_dir / "pseudo_classes.npy", ckpt_dir / "pseudo_classes.json"
        if npy.is_file() and info_path.is_file():
            labels = np.load(npy)
            result["pretrain"]["pseudo_classes"] = json.loads(info_path.read_text())
        else:
            labels, info = pseudo_classes(
                data.pretrain, data.pretrain_keys, tuple(args.num_clusters), args.ae_steps, args.pretrain_batch,
                args.pretrain_seed, table,
            )
            np.save(npy, labels)
            atomic_write_json(info, info_path)
            result["pretrain"]["pseudo_classes"] = info
            save()
        logger.info("pseudo-classes: %s", result["pretrain"]["pseudo_classes"])
    for method in [m for m in args.methods if m in PRETRAINED_METHODS]:
        paths = [ckpt_dir / f"{method}_{s}.pt" for s in args.pretrain_steps]
        log_path = ckpt_dir / f"{method}_log_{max(args.pretrain_steps)}.json"
        if all(p.is_file() for p in paths):  # done here or by another process (see --pretrain-only)
            if log_path.is_file():
                result["pretrain"][method] = json.loads(log_path.read_text())
            elif (ckpt_dir / f"{method}_state.pt").is_file():
                state = torch.load(ckpt_dir / f"{method}_state.pt", map_location="cpu", weights_only=False)
                result["pretrain"][method] = state["log"]
            continue
        result["pretrain"][method] = pretrain(method, data, labels, args, ckpt_dir, list(args.pretrain_steps))
        atomic_write_json(result["pretrain"][method], log_path)
        save()
    if args.pretrain_only:
        save()
        logger.info("--pretrain-only: checkpoints in %s", ckpt_dir)
        return result

    units = _settings(args, data.num_groups)
    if args.epochs is not None:
        logger.info("--epochs given: fine-tuning steps follow the labeled set size")
    done = {(r["num_labeled"], r["seed"], r["variant"]) for r in result["runs"]}
    for n in units:
        for seed in args.seeds:
            idx, chosen = labeled_subset(data.train_group, n, seed)
            if args.epochs is not None:
                epoch_steps = math.ceil(args.epochs * len(idx) / args.finetune_batch)
                args.finetune_steps = max(args.eval_last * args.eval_every, epoch_steps)
            for name, method, steps in _variants(args):
                if (n, seed, name) in done:
                    continue
                init = None if steps is None else str(ckpt_dir / f"{method}_{steps}.pt")
                exclude = pretrained_exclude(method, args.decoder_layer)
                run = finetune(data, init, exclude, idx, seed, args)
                run.update({"num_labeled": n, "seed": seed, "variant": name, "method": method,
                            "pretrain_steps": steps, "labeled_units": chosen, "labeled_samples": int(len(idx))})
                result["runs"].append(run)
                logger.info("n=%d seed=%d %s: dice %.4f hd95 %s (%.0f s)", n, seed, name, run["dice"], run["hd95"],
                            run["seconds"])
                save()
    save()
    unit = "images" if args.dataset == "dermoscopy" else "patients"
    print(format_table(result["summary"], unit))
    print(f"wall time this invocation: {result['wall_seconds']['total_this_invocation']:.0f} s; results: {args.out}")
    return result


if __name__ == "__main__":
    main()
