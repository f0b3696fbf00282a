"""Image clustering benchmark: contrastive autoencoder and DVC against k-means baselines on real images, every trained
method run through the ``bundles/image_clustering`` bundle.

Each trained run is the bundle's ``configs/train.json`` with overrides (:func:`bundle_overrides`), run in this process
by :func:`monai_cluster.workflows.segmentation_bundle.run_bundle` in a ``bundle_root`` of its own under
``--work-dir``; the scores are recomputed here from the bundle's ``eval/clusters.csv`` and checked against its
``eval/metrics.json``. This module keeps only the protocol: the datasets and the chest subset (a small ``.npz``
written under the work folder, the split), the seeds and their pairing, the methods as bundle options, the
statistics (``_stats.py``), the tables and the resumable JSON. The training loops, optimisers, views, schedules and
the clustering of the latent codes are the bundle's.

Datasets (labels are used only for scoring):

- ``ph2``: the 200 PH2 dermoscopy images (``images/`` 45 + ``unlabeled/`` 155), the PH2 folder as the bundle's
  ``dataset_dir``, RGB resized to ``--ph2-size`` (default 64x64, the bundle's ``spatial_size``), three diagnoses from
  ``diagnosis.csv`` (Common Nevus 80, Atypical Nevus 80, Melanoma 40), K=3.
- ``chest``: a class-balanced random subset (``--chest-n``, drawn once with seed 0) of the balanced PneumoniaMNIST
  file (all splits), written as the ``train`` split of ``<work-dir>/data/pneumoniamnist_balanced_n<N>.npz``
  (the original 8-bit pixels), 28x28 grey, normal / pneumonia, K=2.

Methods, all on the images as the bundle loads them (:func:`~monai_cluster.workflows.image_clustering.load_clustering_data`,
scaled to [0, 1]), K = number of classes:

- ``kmeans_raw``: faiss k-means (:func:`monai_cluster.clustering.kmeans`) on the flattened pixels; no training, so
  no bundle.
- ``ae_kmeans``: the bundle with ``contrastive false``: the contrastive autoencoder's network trained on
  reconstruction alone, k-means on its latent codes.
- ``cae``: the bundle's ``contrastive_ae`` (NT-Xent between two views + reconstruction; ``--cae-prototype-epochs``
  of the authors' prototype phase, ``--cae-head``, ``--cae-recon-weight``, ``--cae-augment`` as the bundle's
  ``view_augment``), k-means on its latent codes (Ferrante et al.).
- ``cae_prototypes``: the same with ``cluster_method prototypes`` (soft assignments at ``--prototype-temperature``):
  a bundle run of its own with the same seed, so the same trained network (the bundle trains and clusters in one
  run: the training is paid twice), its codes clustered by Ferrante et al.'s prototypes.
- ``dvc``: ``method dvc`` (Soleymani et al.): VAE pretraining, k-means init, Student's-t clustering with
  reconstruction + gamma * KL(P || Q); labels are the argmax of Q. Reconstruction by ``--dvc-recon``: ``mse``
  (default, as the bundle) or ``bce`` (the authors').
- ``dvc_prior``: the same with ``cluster_beta 1`` (the KL prior also trained in the clustering stage).

Every run trains plain epochs (``budget_images null``): ``--epochs`` is what each trains. Scores: Hungarian accuracy,
NMI and ARI against the labels, mean ± sd over ``--seeds``; the seed is the bundle's ``seed`` (network
initialisation, batch order, views and k-means seeding), the same for every method, so differences pair by seed. One
CPU thread (``--threads``). Results go to ``benchmarks/results/image_clustering.json`` (``--out``) after every run,
each with the bundle's overrides and the command that reruns it. Run again with the same settings (all but
``--seeds``, ``--datasets``, ``--methods`` and the bookkeeping options) and the finished runs are skipped; other
settings are refused naming them (``--fresh`` starts the file over).

Run (25 minutes on a shared 2-core CPU with the direct calls; ``cae_prototypes`` now trains its own network)::

    python benchmarks/image_clustering.py --datasets ph2 chest --seeds 0 1 2

Records made before 2026-12-07 (``benchmarks/records/ic_*_20261204.json`` and earlier) trained with direct engine
calls (``train_cae``, ``train_dvc``, ``train_autoencoder``, ``cluster_cae``), not the bundle; on the same code both
give the same scores (BENCHMARKS.md, "Image clustering").

Data: PH2 (Mendonca et al., EMBC 2013), research use; PneumoniaMNIST (MedMNIST v2, Yang et al., 2023), CC BY 4.0;
read from ``MONAI_CLUSTER_DATA``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import mean_ci  # noqa: E402

from monai_cluster.clustering import clustering_scores, kmeans
from monai_cluster.data.medmnist import MEDMNIST_SPLITS, load_medmnist_npz
from monai_cluster.utils import atomic_write_json, get_data_root
from monai_cluster.workflows.image_clustering import CAE_HEADS, VIEW_AUGMENTS, load_clustering_data
from monai_cluster.workflows.run_outputs import data_fingerprint
from monai_cluster.workflows.segmentation_bundle import bundle_cli_args, run_bundle

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "image_clustering"
CONFIGS = ("train.json",)
RESULTS = Path(__file__).resolve().parent / "results" / "image_clustering.json"
METHODS = ("kmeans_raw", "ae_kmeans", "cae", "cae_prototypes", "dvc", "dvc_prior")
TRAINED = METHODS[1:]
METRICS = ("accuracy", "nmi", "ari")
CHEST_CLASSES = ["normal", "pneumonia"]
#: options that choose which runs to make or where files go, not what a run is: a resumed file may differ in them
BOOKKEEPING = ("seeds", "datasets", "methods", "threads", "out", "work_dir", "fresh", "report", "paired")


def bundle_version() -> str:
    """The image-clustering bundle's version (``configs/metadata.json``)."""
    return json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"]


def write_chest_subset(source: Path, n: int, out: Path) -> Path:
    """Write a class-balanced random subset of ``n`` images of the PneumoniaMNIST file ``source`` (all splits, drawn
    with seed 0) as the ``train`` split of the MedMNIST-format ``out``, with the original 8-bit pixels; returns
    ``out``."""
    _, labels = load_medmnist_npz(source, "all")
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 2, replace=False) for c in (0, 1)])
    pick = rng.permutation(pick)
    with np.load(source) as archive:
        images = np.concatenate([archive[f"{split}_images"] for split in MEDMNIST_SPLITS])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "wb") as handle:
        np.savez(handle, train_images=images[pick], train_labels=labels[pick].astype(np.uint8).reshape(-1, 1))
    os.replace(partial, out)
    return out


def dataset_inputs(dataset: str, root: Path, args: argparse.Namespace, work: Path) -> dict:
    """The bundle's data overrides of ``dataset``: ``dataset_dir`` (and ``npz_split`` or ``spatial_size``)."""
    if dataset == "ph2":
        return {"dataset_dir": str(root / "dermoscopy" / "ph2"), "spatial_size": [args.ph2_size, args.ph2_size]}
    if dataset == "chest":
        source = root / "chest_xray" / "pneumoniamnist_balanced.npz"
        subset = write_chest_subset(source, args.chest_n, work / "data" / f"pneumoniamnist_balanced_n{args.chest_n}.npz")
        return {"dataset_dir": str(subset), "npz_split": "train"}
    raise ValueError(f"dataset must be 'ph2' or 'chest', got {dataset!r}.")


def bundle_overrides(method: str, num_clusters: int, seed: int, args: argparse.Namespace, inputs: dict) -> dict:
    """The bundle's overrides of one run of a trained ``method``: the benchmark's settings as its options.

    Raises:
        ValueError: for a method that is not one of :data:`TRAINED` (named).
    """
    if method not in TRAINED:
        raise ValueError(f"method {method!r} has no bundle run; trained methods: {list(TRAINED)} (kmeans_raw "
                         "needs no training).")  # fmt: skip
    common = {
        **inputs, "num_clusters": num_clusters, "seed": seed, "epochs": args.epochs, "budget_images": None,
        "batch_size": args.batch_size, "learning_rate": args.lr, "latent_dim": args.latent_dim,
        "channels": list(args.channels), "strides": list(args.strides), "device": args.device, "amp": False,
        "progress": False,
    }  # fmt: skip
    if method in ("dvc", "dvc_prior"):
        return {**common, "method": "dvc", "cluster_epochs": args.dvc_cluster_epochs, "recon": args.dvc_recon,
                "cluster_beta": 1.0 if method == "dvc_prior" else 0.0}  # fmt: skip
    cae = {**common, "method": "contrastive_ae", "recon": "mse"}
    if method == "ae_kmeans":  # the network as the CAE's (SimCLR head, unused), trained on reconstruction alone
        return {**cae, "contrastive": False, "projection_head": "simclr", "prototype_epochs": 0,
                "cluster_method": "kmeans"}  # fmt: skip
    return {
        **cae, "temperature": args.temperature, "recon_weight": args.cae_recon_weight, "projection_head": args.cae_head,
        "prototype_epochs": args.cae_prototype_epochs, "prototype_assignment": args.cae_prototype_assignment,
        "prototype_temperature": args.prototype_temperature, "view_augment": args.cae_augment,
        "cluster_method": "prototypes" if method == "cae_prototypes" else "kmeans",
    }  # fmt: skip


def bundle_command(root: Path, overrides: dict) -> str:
    """The shell command that reruns one bundle run (from the repository root). ``None`` is written ``'$None'`` (a
    config expression): on the command line ``None`` is dropped as "not given" and ``null`` stays a string."""
    config = (BUNDLE / "configs" / CONFIGS[0]).relative_to(REPO)
    words = ["python", "-m", "monai.bundle", "run", "--config_file", str(config), "--bundle_root", str(root)]
    return shlex.join(words + bundle_cli_args(overrides))


def read_assignments(path: Path, keys: list[str]) -> np.ndarray:
    """The cluster of every image of ``keys`` (in that order) from the bundle's ``clusters.csv``.

    Raises:
        ValueError: when the file's images are not exactly ``keys`` (the bundle clustered other images).
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = {row["key"]: int(row["cluster"]) for row in csv.DictReader(handle)}
    if sorted(rows) != sorted(keys):
        raise ValueError(f"{path} holds {len(rows)} images, not the benchmark's {len(keys)} (other keys).")
    return np.asarray([rows[key] for key in keys], dtype=np.int64)


def run_trained(method: str, dataset: str, seed: int, data, inputs: dict, k: int, args, work: Path) -> dict:
    """One bundle run of ``method`` in ``<work>/<dataset>/<method>_s<seed>`` (a partial earlier one is started over):
    the cluster of each image and the bundle's record of the run."""
    root = work / dataset / f"{method}_s{seed}"
    if root.exists():
        shutil.rmtree(root)
    overrides = bundle_overrides(method, k, seed, args, inputs)
    run_bundle(BUNDLE, CONFIGS, bundle_root=root, **overrides)
    labels = read_assignments(root / "eval" / "clusters.csv", data.keys)
    summary = json.loads((root / "eval" / "summary.json").read_text(encoding="utf-8"))
    shutil.rmtree(root / "models" / "checkpoints", ignore_errors=True)  # resume states of a finished run
    kept = ("epochs", "seconds", "final_loss", "stop_reason", "cluster_epochs_run", "gamma", "contrastive")
    return {"labels": labels, "bundle": {
        "root": str(root), "version": bundle_version(), "overrides": overrides, "command": bundle_command(root, overrides),
        "metrics": json.loads((root / "eval" / "metrics.json").read_text(encoding="utf-8")),
        "summary": {key: summary[key] for key in kept if key in summary},
    }}  # fmt: skip


def score_run(method: str, dataset: str, seed: int, data, inputs: dict, args, work: Path) -> dict:
    """One run's record: scores recomputed from the cluster of each image (checked against the bundle's own)."""
    k = len(data.class_names)
    if k > 10:
        raise ValueError(f"assignments are recorded one digit per image: {dataset} has {k} classes (at most 10).")
    start = time.perf_counter()
    if method == "kmeans_raw":
        x = data.images.numpy()
        out = {"labels": kmeans(x.reshape(len(x), -1), k, seed=seed)[0],
               "library": f"monai_cluster.clustering.kmeans(pixels, {k}, seed={seed})"}  # fmt: skip
    else:
        out = run_trained(method, dataset, seed, data, inputs, k, args, work)
    seconds = time.perf_counter() - start
    labels = np.asarray(out.pop("labels"))
    scores = clustering_scores(data.labels, labels)
    bundle_metrics = out.get("bundle", {}).get("metrics", scores)
    if any(abs(scores[m] - bundle_metrics[m]) > 1e-9 for m in METRICS):
        raise RuntimeError(f"{dataset} {method} seed {seed}: the bundle's metrics.json {bundle_metrics} differ from "
                           f"the scores of its clusters.csv {scores}.")  # fmt: skip
    return {"dataset": dataset, "method": method, "seed": seed, "seconds": seconds,
            "cluster_sizes": np.bincount(labels, minlength=k).tolist(), **scores,
            "assignments": "".join(str(int(c)) for c in labels), **out}  # fmt: skip


def summarise(runs: list[dict]) -> dict:
    """Mean and sd (ddof=1) of every metric and of the wall time per (dataset, method)."""
    out: dict[str, dict] = {}
    for run in runs:
        out.setdefault(run["dataset"], {}).setdefault(run["method"], []).append(run)
    summary = {}
    for dataset, methods in out.items():
        summary[dataset] = {}
        for method, rs in methods.items():
            entry = {"seeds": [r["seed"] for r in rs]}
            for key in (*METRICS, "seconds"):
                values = np.array([r[key] for r in rs], dtype=float)
                entry[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
            summary[dataset][method] = entry
    return summary


def print_table(summary: dict) -> None:
    """Markdown table of ``summary`` on stdout."""
    print("| dataset | method | accuracy | NMI | ARI | seeds | seconds per run |")
    print("|---|---|---|---|---|---|---|")
    for dataset, methods in summary.items():
        for method in sorted(methods, key=lambda m: (METHODS.index(m.split("+")[0]), m)):
            e = methods[method]
            cells = [f"{e[m]['mean']:.3f} ± {e[m]['sd']:.3f}" for m in METRICS]
            print(f"| {dataset} | {method} | {' | '.join(cells)} | {len(e['seeds'])} | {e['seconds']['mean']:.0f} |")


def variant_name(method: str, args: dict) -> str:
    """``method`` tagged with the settings of a run that differ from the defaults and concern it, e.g.
    ``cae+flip_rot90``, ``cae+recon_weight=0.2`` or ``dvc+bce``, so variants get their own rows (records made
    before 2026-12-05 used BCE as the benchmark's DVC default: their runs without ``dvc_recon`` read as BCE)."""
    tags = []
    if method in ("cae", "cae_prototypes"):
        if args.get("cae_augment", "default") != "default":
            tags.append(args["cae_augment"])
        if args.get("cae_recon_weight", 1.0) != 1.0:
            tags.append(f"recon_weight={args['cae_recon_weight']:g}")
        if args.get("cae_head", "simclr") != "simclr":
            tags.append(f"head={args['cae_head']}")
        if args.get("cae_prototype_epochs", 0):
            tags.append(f"prototype_epochs={args['cae_prototype_epochs']}")
            if args.get("cae_prototype_assignment", "soft") != "soft":
                tags.append(f"{args['cae_prototype_assignment']}_update")
    if method in ("dvc", "dvc_prior") and args.get("dvc_recon", "bce") != "mse":
        tags.append(args.get("dvc_recon", "bce"))
    if args.get("tag"):
        tags.append(args["tag"])
    return "+".join([method, *tags])


def paired(runs: list[dict], pairs: list[str], metric: str = "nmi") -> list[dict]:
    """Paired differences ``a - b`` of ``metric`` over the (dataset, seed) both methods ran, for pairs ``"a:b"``
    (method names as in the report, e.g. ``"dvc+mse:dvc"``): mean, sd, t 95% interval, seeds where a is ahead."""
    by = {(r["dataset"], r["method"], r["seed"]): r[metric] for r in runs}
    rows = []
    for pair in pairs:
        a, sep, b = pair.partition(":")
        if not sep or not a or not b:
            raise ValueError(f"a pair must read 'method_a:method_b', got {pair!r}.")
        for dataset in sorted({r["dataset"] for r in runs}):
            seeds = sorted(s for (d, m, s) in by if d == dataset and m == a and (d, b, s) in by)
            if not seeds:
                continue
            diffs = [by[(dataset, a, s)] - by[(dataset, b, s)] for s in seeds]
            rows.append({"dataset": dataset, "a": a, "b": b, "metric": metric, **mean_ci(diffs),
                         "a_ahead": int(sum(d > 0 for d in diffs))})  # fmt: skip
    return rows


def print_paired(rows: list[dict]) -> None:
    """Markdown table of :func:`paired` rows on stdout."""
    print("| dataset | a | b | paired a - b (mean ± sd) | 95% CI | seeds a ahead |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ci = f"{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}" if "ci95" in r else "-"
        print(f"| {r['dataset']} | {r['a']} | {r['b']} | {r['mean']:+.3f} ± {r['sd']:.3f} | {ci} | "
              f"{r['a_ahead']} of {r['n']} |")


def report(paths: list[Path], pairs: list[str] | None = None) -> dict:
    """Print one table over the runs of several result files (e.g. extra seeds, or variants such as
    ``--cae-augment flip_rot90``, listed as ``cae+flip_rot90``); returns the merged summary."""
    runs = []
    for path in paths:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        for run in record["runs"]:
            runs.append({**run, "method": variant_name(run["method"], record["args"])})
    summary = summarise(runs)
    print_table(summary)
    if pairs:
        print(f"\nPaired NMI differences over seeds (t-based 95% interval of the mean)")
        summary["paired"] = paired(runs, pairs)
        print_paired(summary["paired"])
    return summary


def jsonable_args(args: argparse.Namespace) -> dict:
    """The command-line options as JSON values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def open_record(args: argparse.Namespace, command: str) -> dict:
    """The result record to extend: ``--out``'s when it holds runs of the same settings, else a new one.

    Raises:
        ValueError: when ``--out`` holds runs of other settings (each named with both values) or was written by the
            benchmark's direct engine calls (before it ran the bundle); ``--fresh`` starts it over.
    """
    config = {k: v for k, v in jsonable_args(args).items() if k not in BOOKKEEPING}
    config["bundle_version"] = bundle_version()
    invocation = {"command": command, "load_average_at_start": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M")}
    out = Path(args.out)
    if args.fresh or not out.is_file():
        return {"driver": "bundle", "command": command, "invocations": [invocation], "config": config,
                "args": jsonable_args(args), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                "torch": torch.__version__}, "datasets": {}, "runs": []}  # fmt: skip
    record = json.loads(out.read_text(encoding="utf-8"))
    if record.get("driver") != "bundle":
        raise ValueError(f"--out {out} was written by the benchmark's direct engine calls, before it ran the bundle: "
                         "its runs are not extended; use another --out, or --fresh to start it over.")  # fmt: skip
    recorded = record["config"]
    differ = [f"{k}: recorded {recorded.get(k)!r}, now {config.get(k)!r}" for k in sorted(set(recorded) | set(config))
              if recorded.get(k) != config.get(k)]  # fmt: skip
    if differ:
        raise ValueError(f"--out {out} holds runs of other settings ({'; '.join(differ)}); use another --out, the "
                         "same settings to resume, or --fresh to start it over.")  # fmt: skip
    record["invocations"].append(invocation)
    record["args"] = jsonable_args(args)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ph2", "chest"], choices=["ph2", "chest"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ph2-size", type=int, default=64, help="PH2 images are resized to this square size")
    parser.add_argument("--chest-n", type=int, default=1000, help="balanced PneumoniaMNIST subset size")
    parser.add_argument("--epochs", type=int, default=60, help="AE / CAE epochs and DVC pretraining epochs")
    parser.add_argument("--dvc-cluster-epochs", type=int, default=30)
    parser.add_argument("--dvc-recon", default="mse", choices=["mse", "bce"],
                        help="DVC reconstruction error (the library's and the bundle's default: mse)")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--strides", type=int, nargs="+", default=[2, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--prototype-temperature", type=float, default=1.0, help="cae_prototypes soft assignments")
    parser.add_argument("--cae-recon-weight", type=float, default=1.0,
                        help="weight of the CAE's reconstruction term (Ferrante et al.'s code: 0.2)")
    parser.add_argument("--cae-head", default="simclr", choices=sorted(CAE_HEADS),
                        help="CAE projection head: simclr (2 layers, batch norm, 64 outputs) or reference "
                             "(Ferrante et al.'s code: 3 layers, no norm, latent_dim outputs)")
    parser.add_argument("--cae-prototype-epochs", type=int, default=0,
                        help="epochs of the CAE's prototype phase (conditioned decoder, prototypes moved every "
                             "batch); cae_prototypes then reads the trained prototypes")
    parser.add_argument("--cae-prototype-assignment", default="soft", choices=["soft", "hard"],
                        help="prototype phase: update each prototype by the soft assignments or the argmax (authors)")
    parser.add_argument("--cae-augment", default="default", choices=list(VIEW_AUGMENTS),
                        help="CAE views (the bundle's view_augment): intensity/noise/shift only, or also random "
                             "flips and 90-degree rotations")
    parser.add_argument("--tag", default="", help="a label appended to every method's row name in the report "
                        "(for settings without a tag of their own, e.g. --epochs 60 as 'epochs=60')")
    parser.add_argument("--device", default="cpu", help="the bundle's device (cpu, cuda, auto)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where each run's bundle_root and the chest subset go (default "
                             "~/.cache/monai_cluster_runs/image_clustering/<--out's name>)")
    parser.add_argument("--fresh", action="store_true", help="start --out over instead of resuming it")
    parser.add_argument("--report", type=Path, nargs="+", help="only print one table over these result files")
    parser.add_argument("--paired", nargs="+", default=None, metavar="A:B",
                        help="with --report: paired NMI differences A - B per seed, e.g. dvc+mse:dvc cae:ae_kmeans")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report, args.paired)
        return 0
    torch.set_num_threads(args.threads)
    root = get_data_root()
    work = args.work_dir or Path.home() / ".cache" / "monai_cluster_runs" / "image_clustering" / Path(args.out).stem
    command = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    record = open_record(args, command)
    done = {(r["dataset"], r["method"], r["seed"]) for r in record["runs"]}
    start, before = time.perf_counter(), record.get("wall_seconds", 0.0)
    for dataset in args.datasets:
        inputs = dataset_inputs(dataset, root, args, work)
        data = load_clustering_data(inputs["dataset_dir"], work, spatial_size=inputs.get("spatial_size"),
                                    npz_split=inputs.get("npz_split", "all"))  # fmt: skip
        classes = CHEST_CLASSES if dataset == "chest" else data.class_names
        record["datasets"][dataset] = {
            "n": len(data.keys), "shape": list(data.image_shape), "classes": classes, "k": len(classes),
            "counts": np.bincount(data.labels).tolist(), "bundle_inputs": inputs, **data_fingerprint(data.keys),
        }  # fmt: skip
        for seed in args.seeds:
            for method in args.methods:
                if (dataset, method, seed) in done:
                    print(f"{dataset} seed {seed} {method}: in {args.out} already, skipped", flush=True)
                    continue
                run = score_run(method, dataset, seed, data, inputs, args, work)
                record["runs"].append(run)
                print(f"{dataset} seed {seed} {method}: acc {run['accuracy']:.3f} nmi {run['nmi']:.3f} "
                      f"ari {run['ari']:.3f} ({run['seconds']:.0f} s)", flush=True)  # fmt: skip
                record["summary"] = summarise(record["runs"])
                record["wall_seconds"] = before + time.perf_counter() - start
                atomic_write_json(record, args.out)
    record["invocations"][-1]["load_average_at_end"] = os.getloadavg()
    record["summary"] = summarise(record["runs"])
    atomic_write_json(record, args.out)
    print_table(record["summary"])
    print(f"wall time {time.perf_counter() - start:.0f} s; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
