"""Image clustering benchmark: contrastive autoencoder and DVC against k-means baselines on real images.

Datasets (labels are used only for scoring):

- ``ph2``: the 200 PH2 dermoscopy images (``images/`` 45 + ``unlabeled/`` 155), RGB resized to ``--ph2-size``
  (default 64x64), three diagnoses from ``diagnosis.csv`` (Common Nevus 80, Atypical Nevus 80, Melanoma 40), K=3.
- ``chest``: a class-balanced random subset (``--chest-n``, drawn once with seed 0) of the balanced PneumoniaMNIST
  file (all splits), 28x28 grey, normal / pneumonia, K=2.

Methods, all on the same image tensor per dataset (scaled to [0, 1]), K = number of classes:

- ``kmeans_raw``: faiss k-means on the flattened pixels.
- ``ae_kmeans``: the contrastive autoencoder's network trained on reconstruction alone
  (:func:`monai_cluster.engines.train_autoencoder`), k-means on its latent codes.
- ``cae``: the contrastive autoencoder (NT-Xent between two augmented views + reconstruction,
  :func:`monai_cluster.engines.train_cae`), k-means on its latent codes (Ferrante et al.).
- ``cae_prototypes``: the same trained contrastive autoencoder (one training serves both when both are asked for),
  its latent codes clustered by Ferrante et al.'s prototypes (``cluster_method="prototypes"``, soft assignments at
  ``--prototype-temperature``): with ``--cae-prototype-epochs N`` the prototypes trained in the authors' second
  phase (decoder conditioned on the soft assignments, prototypes moved every batch), else k-means centres refined
  over the whole dataset. ``--cae-head reference`` uses the authors' projection head.
- ``dvc``: deep variational clustering (:func:`monai_cluster.engines.train_dvc`): VAE pretraining, k-means init,
  Student's-t clustering with reconstruction + gamma * KL(P || Q), the authors' loss (Soleymani et al.); labels are
  the argmax of Q. Reconstruction by ``--dvc-recon``: ``mse`` (default, as the bundle) or ``bce`` (the authors').
- ``dvc_prior``: the same with the KL prior also trained in the clustering stage (``cluster_beta=1``, the
  package's default before 0.2 of the image-clustering bundle).

Scores: Hungarian accuracy, NMI and ARI against the labels, mean ± sd over ``--seeds`` (the seed sets the
network initialisation, batch order, augmentation and k-means seeding). One CPU thread. Results go to
``benchmarks/results/image_clustering.json`` after every run (so an interrupted run keeps what it measured).

Run (about 25 minutes on a shared 2-core CPU)::

    python benchmarks/image_clustering.py --datasets ph2 chest --seeds 0 1 2

Data: PH2 (Mendonca et al., EMBC 2013), research use; PneumoniaMNIST (MedMNIST v2, Yang et al., 2023), CC BY 4.0;
read from ``MONAI_CLUSTER_DATA``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import mean_ci  # noqa: E402

from monai_cluster.clustering import clustering_scores, kmeans
from monai_cluster.data import load_medmnist_npz
from monai_cluster.engines import RandomViewAugment, cluster_cae, train_autoencoder, train_cae, train_dvc
from monai_cluster.networks import ContrastiveAutoEncoder, DeepVariationalClustering
from monai_cluster.utils import atomic_write_json, get_data_root
from monai_cluster.workflows.image_clustering import CAE_HEADS, build_clustering_network, load_clustering_data

RESULTS = Path(__file__).resolve().parent / "results" / "image_clustering.json"
METHODS = ("kmeans_raw", "ae_kmeans", "cae", "cae_prototypes", "dvc", "dvc_prior")
#: the last trained CAE, keyed by (id of its images, seed); the images are held too, so their id is not reused
_CAE_CACHE: dict[tuple, tuple[np.ndarray, torch.nn.Module]] = {}
METRICS = ("accuracy", "nmi", "ari")


def load_ph2(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """PH2's 200 images as ``(N, 3, size, size)`` float32 in [0, 1], diagnosis ids ``(N,)`` and class names, loaded
    exactly as the bundle loads a folder (:func:`monai_cluster.workflows.image_clustering.load_clustering_data`)."""
    data = load_clustering_data(root / "dermoscopy" / "ph2", RESULTS.parent / "unused_bundle_root", spatial_size=size)
    return data.images.numpy(), data.labels, data.class_names


def load_chest(root: Path, n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A class-balanced random subset of ``n`` PneumoniaMNIST images ``(n, 1, 28, 28)`` (drawn with seed 0)."""
    images, labels = load_medmnist_npz(root / "chest_xray" / "pneumoniamnist_balanced.npz", "all")
    rng = np.random.default_rng(0)
    per_class = n // 2
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in (0, 1)])
    pick = rng.permutation(pick)
    return images[pick].astype(np.float32), labels[pick].astype(np.int64), ["normal", "pneumonia"]


class FlipRot90Augment:
    """The CAE's default views (:class:`RandomViewAugment`) plus a random flip and 90-degree rotation per image,
    for orientation-free images such as dermoscopy (``--cae-augment flip_rot90``)."""

    def __init__(self, seed: int) -> None:
        self.base = RandomViewAugment(seed=seed)
        self.generator = torch.Generator().manual_seed(seed + 10_000)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        draws = torch.randint(0, 4, (x.shape[0], 2), generator=self.generator).tolist()
        views = [torch.rot90(img.flip(-1) if flip % 2 else img, k, dims=(-2, -1)) for img, (flip, k) in zip(out, draws)]
        return torch.stack(views)


def run_method(method: str, x: np.ndarray, k: int, seed: int, args: argparse.Namespace) -> np.ndarray:
    """Cluster labels ``(N,)`` of one method on images ``x`` ``(N, C, H, W)``."""
    if method == "kmeans_raw":
        return kmeans(x.reshape(len(x), -1), k, seed=seed)[0]
    spatial, channels = x.shape[2:], x.shape[1]
    torch.manual_seed(seed)
    common = {"batch_size": args.batch_size, "lr": args.lr, "seed": seed, "progress": False}
    if method in ("dvc", "dvc_prior"):
        model = DeepVariationalClustering(
            2, (channels, *spatial), latent_dim=args.latent_dim, num_clusters=k, channels=args.channels,
            strides=args.strides,
        )  # fmt: skip
        return train_dvc(
            model, x, pretrain_epochs=args.epochs, cluster_epochs=args.dvc_cluster_epochs, recon=args.dvc_recon,
            cluster_beta=1.0 if method == "dvc_prior" else 0.0, **common,
        ).labels  # fmt: skip
    if method == "ae_kmeans":
        model = ContrastiveAutoEncoder(
            2, channels, spatial, latent_dim=args.latent_dim, channels=args.channels, strides=args.strides, proj_dim=64
        )
        return train_autoencoder(model, x, epochs=args.epochs, num_clusters=k, **common).clustering.labels
    key = (id(x), seed)
    if key not in _CAE_CACHE:
        model = build_clustering_network(
            "contrastive_ae", (channels, *spatial), k, latent_dim=args.latent_dim, channels=args.channels,
            strides=args.strides, prototype_epochs=args.cae_prototype_epochs,
            prototype_temperature=args.prototype_temperature, **CAE_HEADS[args.cae_head],
        )  # fmt: skip
        augment = FlipRot90Augment(seed) if args.cae_augment == "flip_rot90" else None
        train_cae(
            model, x, epochs=args.epochs, temperature=args.temperature, augment=augment,
            recon_weight=args.cae_recon_weight, prototype_epochs=args.cae_prototype_epochs,
            prototype_assignment=args.cae_prototype_assignment, **common,
        )  # fmt: skip
        _CAE_CACHE.clear()
        _CAE_CACHE[key] = (x, model)
    cluster = "prototypes" if method == "cae_prototypes" else "kmeans"
    return cluster_cae(
        _CAE_CACHE[key][1], x, k, method=cluster, temperature=args.prototype_temperature, seed=seed
    ).labels


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
    parser.add_argument("--cae-augment", default="default", choices=["default", "flip_rot90"],
                        help="CAE views: intensity/noise/shift only, or also random flips and 90-degree rotations")
    parser.add_argument("--tag", default="", help="a label appended to every method's row name in the report "
                        "(for settings without a tag of their own, e.g. --epochs 60 as 'epochs=60')")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, nargs="+", help="only print one table over these result files")
    parser.add_argument("--paired", nargs="+", default=None, metavar="A:B",
                        help="with --report: paired NMI differences A - B per seed, e.g. dvc+mse:dvc cae:ae_kmeans")
    args = parser.parse_args(argv)
    if args.report:
        report(args.report, args.paired)
        return 0
    torch.set_num_threads(args.threads)
    root = get_data_root()
    record = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "load_average_at_start": os.getloadavg(),
        "datasets": {},
        "runs": [],
    }
    start = time.perf_counter()
    for dataset in args.datasets:
        if dataset == "ph2":
            x, y, classes = load_ph2(root, args.ph2_size)
        else:
            x, y, classes = load_chest(root, args.chest_n)
        k = len(classes)
        record["datasets"][dataset] = {
            "n": len(x), "shape": list(x.shape[1:]), "classes": classes, "counts": np.bincount(y).tolist(), "k": k
        }  # fmt: skip
        for seed in args.seeds:
            for method in args.methods:
                t0 = time.perf_counter()
                labels = run_method(method, x, k, seed, args)
                seconds = time.perf_counter() - t0
                scores = clustering_scores(y, labels)
                run = {"dataset": dataset, "method": method, "seed": seed, "seconds": seconds,
                       "cluster_sizes": np.bincount(labels, minlength=k).tolist(), **scores}  # fmt: skip
                record["runs"].append(run)
                print(
                    f"{dataset} seed {seed} {method}: acc {scores['accuracy']:.3f} nmi {scores['nmi']:.3f} "
                    f"ari {scores['ari']:.3f} ({seconds:.0f} s)",
                    flush=True,
                )
                record["summary"] = summarise(record["runs"])
                record["wall_seconds"] = time.perf_counter() - start
                atomic_write_json(record, args.out)
    record["load_average_at_end"] = os.getloadavg()
    atomic_write_json(record, args.out)
    print_table(record["summary"])
    print(f"wall time {record['wall_seconds']:.0f} s; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
