"""Left atrium, 3D: contrastive pretraining through the bundles, then fine-tuning, against a random start.

The pre-registered protocol of BENCHMARKS.md ("Left atrium (3D): pretraining through the bundles,
pre-registered", issue 22). Every run is a bundle run built from the bundle's own configs with overrides
(:func:`monai_cluster.workflows.segmentation_bundle.run_bundle`), as a user runs it:

- pretraining: ``bundles/cluster_contrastive_pretrain`` with ``train.json`` + ``train_3d.json``
  (``simclr``: ``use_pseudo_classes false, local_weight 0``; ``cluster_guided``: the bundle's defaults);
- fine-tuning: ``bundles/heart_ct_segmentation`` ``train.json`` (``num_classes 2``, ``intensity mri``) from
  those weights or from scratch (``random``), the labeled volumes drawn by the bundle (``num_labeled``,
  ``seed``) from the pool of the split's datalist;
- scoring: the same bundle's ``evaluate.json`` on the datalist's ``"validation"`` (test) volumes: Dice,
  Jaccard, HD95 and ASD, the distances in mm (``metric_spacing``);
- semi-supervised fine-tuning (issue 23; ``--semi-supervised mean_teacher copy_paste``): the same fine-tuning with
  the bundle's ``semi_supervised`` option at its default settings, the unlabelled volumes the bundle's default (the
  pool volumes the seed left without a label, never a test volume); a run is keyed ``method+semi/n8/s0`` beside
  the labeled-only ``method/n8/s0`` and paired with it by seed.

This script keeps only the protocol: the fixed split (written once as a datalist), the seeds and their pairing,
the statistics (:func:`_stats.mean_ci`), the tables and a per-seed plot. Results (JSON) are resumable: a finished
run is skipped, a pretraining that was stopped resumes with the bundle's ``resume`` option, a fine-tuning that was
stopped is redone. Each result is copied to ``--records`` as it arrives. Weights and bundle outputs go to
``--work-dir`` (default ``~/.cache/monai_cluster_runs/la3d``), outside the tree.

Run (2 CPU cores, one thread; the hours it takes are in BENCHMARKS.md, and long runs are best started from a
snapshot of a commit, as there, so that edits to the tree meanwhile do not reach them)::

    OMP_NUM_THREADS=1 python benchmarks/la_3d.py --threads 1
    python benchmarks/la_3d.py --report-only          # tables and plot of what has finished

``--toy`` shrinks every size (network, crops, epochs) so that the test of this script runs in seconds; it
measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(Path(__file__).resolve().parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _label_efficiency_plots import plot_paired  # noqa: E402
from _stats import mean_ci  # noqa: E402

from monai_cluster.workflows.semi_supervised import SEMI_SUPERVISED_CHOICES  # noqa: E402

__all__ = ["PROTOCOL", "PROTOCOL_GPU", "SEMI_METHODS", "fine_tune", "format_report", "main", "pretrain", "summarize",
           "variant_name", "write_split"]

PRETRAIN_BUNDLE = REPO / "bundles" / "cluster_contrastive_pretrain"
HEART_BUNDLE = REPO / "bundles" / "heart_ct_segmentation"
METHODS = ("random", "simclr", "cluster_guided")
#: the per-method overrides of the pretraining bundle (``random`` is not pretrained)
PRETRAIN_METHODS = {"simclr": {"use_pseudo_classes": False, "local_weight": 0.0}, "cluster_guided": {}}
FEATURES = [16, 16, 32, 64, 128, 16]
#: the pre-registered settings (BENCHMARKS.md); ``--toy`` replaces them by TOY
PROTOCOL = {
    "split_seed": 0,
    "num_test": 20,
    "spacing_mm": [1.25, 1.25, 1.25],
    "pretrain_seed": 0,
    "pretrain": {
        "features": FEATURES,
        "image_size": [64, 48, 32],
        "intensity_range": [0, 255],
        "batch_size": 4,
        "epochs": 100,
    },
    "finetune": {
        "features": FEATURES,
        "num_classes": 2,
        "intensity": "mri",
        "roi_size": [64, 64, 32],
        "num_samples": 2,
        "batch_size": 1,
    },
    "finetune_epochs": {"8": 50, "all": 20},
}
#: the GPU variant (``--protocol gpu``, ``benchmarks/gpu/label_efficiency.sh``): the same split, seeds, methods,
#: epochs and scores with the full-width network of the bundles' defaults on (nearly) whole volumes, 96 x 80 x 48
#: voxels at 1.25 mm (the volumes are about 91 x 70 x 44); reported apart from the CPU protocol's results
PROTOCOL_GPU = {
    **PROTOCOL,
    "pretrain": {**PROTOCOL["pretrain"], "features": [32, 32, 64, 128, 256, 32], "image_size": [96, 80, 48],
                 "batch_size": 8},
    "finetune": {**PROTOCOL["finetune"], "features": [32, 32, 64, 128, 256, 32], "roi_size": [96, 80, 48],
                 "batch_size": 2},
}  # fmt: skip
TOY = {
    "split_seed": 0,
    "num_test": 2,
    "spacing_mm": [1.25, 1.25, 1.25],
    "pretrain_seed": 0,
    "pretrain": {
        "features": [4, 4, 8, 8, 16, 4],
        "image_size": [32, 16, 16],
        "intensity_range": [0, 255],
        "batch_size": 2,
        "epochs": 1,
        "autoencoder_epochs": 1,
        "autoencoder_channels": [4, 8, 8, 8],
        "num_clusters": [2, 3],
        "local_num_locations": 8,
    },
    "finetune": {
        "features": [4, 4, 8, 8, 16, 4],
        "num_classes": 2,
        "intensity": "mri",
        "roi_size": [32, 16, 16],
        "num_samples": 1,
        "batch_size": 1,
        "sw_batch_size": 1,
    },
    "finetune_epochs": {"2": 1, "all": 1},
}
#: the bundle's semi-supervised methods (``none``: labeled-only fine-tuning), as the bundle's option check knows them
SEMI_METHODS = SEMI_SUPERVISED_CHOICES


def variant_name(method: str, semi: str = "none") -> str:
    """``method`` for labeled-only fine-tuning, ``method+semi`` with a semi-supervised method."""
    return method if semi == "none" else f"{method}+{semi}"


def _data_root() -> Path:
    from monai_cluster.utils import get_data_root

    return Path(get_data_root()) / "heart" / "la"


def write_split(data_dir: Path, num_test: int, seed: int, path: Path) -> dict:
    """The fixed split as a MONAI datalist: the sorted keys permuted by ``default_rng(seed)``, the first
    ``num_test`` the test (``"validation"``) list, the rest the pool (``"training"``); paths relative to
    ``data_dir``. Written to ``path`` unless an identical one is there (a different one is refused)."""
    from monai_cluster.data import list_image_mask_pairs
    from monai_cluster.utils.io import atomic_write_json

    items = list_image_mask_pairs(data_dir)
    if not 0 < num_test < len(items):
        raise ValueError(f"num_test must lie in [1, {len(items) - 1}] for {len(items)} volumes, got {num_test}.")
    order = np.random.default_rng(seed).permutation(len(items))
    root = Path(os.path.abspath(data_dir))

    def entry(i: int) -> dict:
        return {"image": items[i]["key"], "label": Path(items[i]["label"]).relative_to(root).as_posix()}

    split = {
        "description": f"left atrium split: {num_test} test volumes ('validation'), the rest the pool ('training'); "
        f"sorted keys permuted by numpy default_rng({seed})",
        "training": sorted((entry(i) for i in order[num_test:]), key=lambda e: e["image"]),
        "validation": sorted((entry(i) for i in order[:num_test]), key=lambda e: e["image"]),
    }
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("training") != split["training"] or old.get("validation") != split["validation"]:
            raise ValueError(f"{path} holds another split; move it away to make a new one.")
        return old
    atomic_write_json(split, path)
    return split


def _timed_bundle(bundle: Path, configs: tuple, root: Path, **overrides) -> tuple:
    from monai_cluster.workflows.segmentation_bundle import run_bundle

    start = time.perf_counter()
    workflow = run_bundle(bundle, configs, bundle_root=root, **overrides)
    return workflow, time.perf_counter() - start


def pretrain(method: str, args: argparse.Namespace, protocol: dict, split_path: Path) -> dict:
    """Run (or resume) the pretraining bundle for ``method``; returns its record (weights path, wall time,
    the bundle's ``pretrain_summary.json``)."""
    root = args.work_dir / f"pretrain_{method}"
    out = root / "models_3d"
    resume = (out / "run_settings.json").is_file()
    overrides = {
        **protocol["pretrain"],
        **PRETRAIN_METHODS[method],
        "dataset_dir": str(args.data_dir),
        "datalist": str(split_path),
        "seed": protocol["pretrain_seed"],
        "device": args.device,
        "resume": resume,
    }
    _, wall = _timed_bundle(PRETRAIN_BUNDLE, ("train.json", "train_3d.json"), root, **overrides)
    summary_path = out / "pretrain_summary.json"
    return {
        "method": method,
        "overrides": {k: v for k, v in overrides.items() if k not in ("device", "resume")},
        "weights": str(out / "model.pt"),
        "wall_s": wall,
        "resumed": resume,
        "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
    }


def fine_tune(method: str, seed: int, labeled: str, args: argparse.Namespace, protocol: dict, split_path: Path,
              weights: str | None, semi: str = "none") -> dict:  # fmt: skip
    """Fine-tune ``heart_ct_segmentation`` (``labeled``: a count or ``"all"``) from ``weights`` (``None``: random),
    with the bundle's ``semi_supervised`` method ``semi`` unless it is ``"none"``, and score its final weights with
    ``evaluate.json`` on the test volumes; returns the run's record."""
    root = args.work_dir / f"ft_{variant_name(method, semi)}_n{labeled}_s{seed}"
    if root.exists():  # a stopped fine-tuning is redone from the start (it is short); only ours live here
        shutil.rmtree(root)
    epochs = protocol["finetune_epochs"][labeled]
    overrides = {
        **protocol["finetune"],
        "dataset_dir": str(args.data_dir),
        "datalist": str(split_path),
        "num_labeled": None if labeled == "all" else int(labeled),
        "seed": seed,
        "epochs": epochs,
        "val_interval": epochs,  # nothing on the test volumes is looked at during training
        "use_pretrained": weights is not None,
        "device": args.device,
    }
    if weights is not None:
        overrides["pretrained_path"] = weights
    if semi != "none":
        overrides["semi_supervised"] = semi
    train_wf, train_wall = _timed_bundle(HEART_BUNDLE, ("train.json",), root, **overrides)
    labeled_keys = [item["key"] for item in train_wf.parser.get_parsed_content("data")["train"]]
    num_unlabeled = len(train_wf.parser.get_parsed_content("unlabeled#data"))
    transfer = root / "models" / "pretrained_transfer.json"
    del train_wf
    eval_overrides = {k: v for k, v in overrides.items() if k != "pretrained_path"}
    eval_overrides.update(use_pretrained=False, metric_spacing=protocol["spacing_mm"], eval_split="val")
    _, eval_wall = _timed_bundle(HEART_BUNDLE, ("train.json", "evaluate.json"), root, **eval_overrides)
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    return {
        "method": method,
        "semi_supervised": semi,
        "variant": variant_name(method, semi),
        "seed": seed,
        "labeled": labeled,
        "num_labeled": len(labeled_keys),
        "labeled_keys": labeled_keys,
        "num_unlabeled": num_unlabeled,
        "epochs": epochs,
        "dice": metrics["mean_dice"],
        "jaccard": metrics["mean_jaccard"],
        "hd95_mm": metrics["mean_hd95"],
        "asd_mm": metrics["mean_asd"],
        "hd95_undefined": metrics["hd95_undefined_images"],
        "distance_unit": metrics["distance_unit"],
        "per_image": metrics["per_image"],
        "transfer": json.loads(transfer.read_text()) if transfer.is_file() else None,
        "train_wall_s": train_wall,
        "eval_wall_s": eval_wall,
    }


def _fmt(summary: dict, digits: int = 3) -> str:
    if not summary.get("n"):
        return ""
    sd = "" if summary["n"] < 2 else f" ± {summary['sd']:.{digits}f}"
    return f"{summary['mean']:.{digits}f}{sd}"


def _variant(run: dict) -> str:
    return run.get("variant") or run["method"]  # records from before --semi-supervised hold no variant


def _variant_order(variant: str) -> tuple[int, int]:
    method, _, semi = variant.partition("+")
    return METHODS.index(method), SEMI_METHODS.index(semi or "none")


def summarize(runs: list[dict], reference: str = "random") -> dict:
    """Per (labeled, variant): mean, sd and interval of each score over seeds; the paired differences (same seed)
    of every score: each pretrained method minus ``reference`` and cluster-guided minus SimCLR (labeled-only, with
    the goal of the protocol: at least +0.03 Dice, interval above 0), each semi-supervised variant minus the
    labeled-only ``reference``, and each pretrained semi-supervised variant minus the same method from
    ``reference``."""
    out: dict = {"methods": {}, "paired": {}}
    for labeled in sorted({r["labeled"] for r in runs}):
        at = [r for r in runs if r["labeled"] == labeled]
        variants = sorted({_variant(r) for r in at}, key=_variant_order)
        for variant in variants:
            rows = [r for r in at if _variant(r) == variant]
            out["methods"][f"{variant}/n{labeled}"] = {
                "labeled": labeled, "method": variant, "seeds": sorted(r["seed"] for r in rows),
                **{k: mean_ci([r[k] for r in rows]) for k in ("dice", "jaccard", "hd95_mm", "asd_mm")},
            }  # fmt: skip
        by = {(_variant(r), r["seed"]): r for r in at}
        pairs = [(m, reference) for m in ("simclr", "cluster_guided")] + [("cluster_guided", "simclr")]
        for semi in SEMI_METHODS[1:]:
            pairs += [(variant_name(reference, semi), reference)]
            pairs += [(variant_name(m, semi), variant_name(reference, semi)) for m in ("simclr", "cluster_guided")]
        for method, base in pairs:
            seeds = sorted(s for (m, s) in by if m == method and (base, s) in by)
            if not seeds:
                continue
            out["paired"][f"{method}-{base}/n{labeled}"] = {
                "labeled": labeled, "method": method, "reference": base, "seeds": seeds,
                **{k: mean_ci([by[(method, s)][k] - by[(base, s)][k] for s in seeds])
                   for k in ("dice", "jaccard", "hd95_mm", "asd_mm")},
                "goal_met": None,
            }  # fmt: skip
            if base == reference and "+" not in method:
                d = out["paired"][f"{method}-{base}/n{labeled}"]["dice"]
                out["paired"][f"{method}-{base}/n{labeled}"]["goal_met"] = bool(
                    d.get("n", 0) > 1 and d["mean"] >= 0.03 and d["ci95"][0] > 0
                )
    return out


def format_report(summary: dict) -> str:
    """Markdown tables: every method and setting, then the paired differences."""
    lines = [
        "| labeled volumes | init | seeds | Dice | Jaccard | HD95 (mm) | ASD (mm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary["methods"].values():
        lines.append(
            f"| {row['labeled']} | {row['method']} | {len(row['seeds'])} | {_fmt(row['dice'])} | "
            f"{_fmt(row['jaccard'])} | {_fmt(row['hd95_mm'], 2)} | {_fmt(row['asd_mm'], 2)} |"
        )
    lines += ["", "| labeled volumes | difference (paired by seed) | seeds | Dice (95% CI) | Jaccard | HD95 (mm) | "
              "ASD (mm) | goal (>= +0.03, CI above 0) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in summary["paired"].values():
        d = row["dice"]
        ci = f" ({d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f})" if "ci95" in d else ""
        goal = "" if row["goal_met"] is None else ("met" if row["goal_met"] else "not met")
        lines.append(
            f"| {row['labeled']} | {row['method']} - {row['reference']} | {len(row['seeds'])} | {d['mean']:+.3f}{ci} | "
            f"{row['jaccard']['mean']:+.3f} | {row['hd95_mm']['mean']:+.2f} | {row['asd_mm']['mean']:+.2f} | {goal} |"
        )
    return "\n".join(lines)


def _save(results: dict, args: argparse.Namespace) -> None:
    from monai_cluster.utils.io import atomic_write_json

    atomic_write_json(results, args.out)
    if args.records is not None:
        args.records.mkdir(parents=True, exist_ok=True)
        atomic_write_json(results, args.records / args.out.name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=None, help="default: $MONAI_CLUSTER_DATA/heart/la")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--semi-supervised", nargs="+", default=["none"], choices=SEMI_METHODS,
                   help="fine-tuning variants: none (labeled only), mean_teacher, copy_paste (the bundle's option)")
    p.add_argument("--labeled", default=None, help="labeled volumes per run (default: the protocol's, 8)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the run with every pool volume labeled")
    p.add_argument("--pretrain-only", action="store_true")
    p.add_argument("--report-only", action="store_true", help="tables and plot of the runs in --out, nothing run")
    p.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "monai_cluster_runs" / "la3d")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "la3d.json")
    p.add_argument("--records", type=Path, default=Path(__file__).resolve().parent / "records",
                   help="folder that gets a copy of --out after every run ('' for none)")  # fmt: skip
    p.add_argument("--plot", type=Path, default=None, help="per-seed PNG (default: --records/la3d_paired.png)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--toy", action="store_true", help="tiny sizes: checks the script, measures nothing")
    p.add_argument("--protocol", choices=("cpu", "gpu", "toy"), default=None,
                   help="cpu: the pre-registered one (default); gpu: full width on whole volumes; toy: as --toy")
    args = p.parse_args(argv)
    if args.toy and args.protocol not in (None, "toy"):
        raise ValueError(f"--toy and --protocol {args.protocol} ask for two protocols; pass one.")
    args.protocol = "toy" if args.toy else (args.protocol or "cpu")
    args.records = None if args.records is None or str(args.records) == "" else args.records
    args.data_dir = Path(os.path.abspath(args.data_dir or _data_root()))
    args.work_dir = Path(os.path.abspath(args.work_dir))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    protocol = json.loads(json.dumps({"cpu": PROTOCOL, "gpu": PROTOCOL_GPU, "toy": TOY}[args.protocol]))
    labeled = args.labeled or next(k for k in protocol["finetune_epochs"] if k != "all")
    if labeled not in protocol["finetune_epochs"]:
        raise ValueError(f"--labeled must be one of the protocol's {list(protocol['finetune_epochs'])}, got {labeled}.")
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if results and results.get("protocol") != protocol:
        raise ValueError(f"{args.out} holds runs of another protocol; pass another --out to start a new one.")
    results.setdefault("protocol", protocol)
    results.setdefault("pretrain", {})
    results.setdefault("runs", {})
    results["machine"] = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), device {args.device}"
    )
    if not args.report_only:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        split_path = args.work_dir / "split.json"
        results["split"] = write_split(args.data_dir, protocol["num_test"], protocol["split_seed"], split_path)
        if args.records is not None:  # the split itself, for the record (the bundles read split_path)
            from monai_cluster.utils.io import atomic_write_json

            args.records.mkdir(parents=True, exist_ok=True)
            atomic_write_json(results["split"], args.records / f"{args.out.stem}_split.json")
        results["data_dir"] = str(args.data_dir)
        _save(results, args)
        for method in [m for m in args.methods if m in PRETRAIN_METHODS]:
            if method not in results["pretrain"]:
                print(f"pretraining {method}", flush=True)
                results["pretrain"][method] = pretrain(method, args, protocol, split_path)
                _save(results, args)
        todo = [] if args.pretrain_only else [
            (m, s, labeled, semi) for s in args.seeds for m in args.methods for semi in args.semi_supervised
        ]
        if not args.pretrain_only and not args.no_ceiling and "none" in args.semi_supervised:
            todo.append(("random", min(args.seeds), "all", "none"))
        for method, seed, n, semi in todo:
            key = f"{variant_name(method, semi)}/n{n}/s{seed}"
            if key in results["runs"]:
                continue
            print(f"fine-tuning {key}", flush=True)
            weights = results["pretrain"][method]["weights"] if method in PRETRAIN_METHODS else None
            results["runs"][key] = fine_tune(method, seed, n, args, protocol, split_path, weights, semi)
            _save(results, args)
            r = results["runs"][key]
            print(f"{key}: Dice {r['dice']:.4f} Jaccard {r['jaccard']:.4f} HD95 {r['hd95_mm']} ASD {r['asd_mm']} mm "
                  f"({r['train_wall_s']:.0f} s + {r['eval_wall_s']:.0f} s)", flush=True)  # fmt: skip
    runs = list(results["runs"].values())
    results["summary"] = summarize(runs) if runs else {"methods": {}, "paired": {}}
    _save(results, args)
    if runs:
        print(format_report(results["summary"]))
        plot = args.plot or ((args.records or args.out.parent) / "la3d_paired.png")
        paired = [{**r, "variant": _variant(r), "num_labeled": r["labeled"]} for r in runs]
        title = "labeled volumes: test Dice per seed (lines join a seed)"
        plot_paired(paired, plot, ylabel="Dice (left atrium)", title=title)
    return results


if __name__ == "__main__":
    main()
