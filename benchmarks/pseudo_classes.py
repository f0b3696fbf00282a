"""Pseudo-class benchmark: how hierarchical clustering scales, and what it finds in real dermoscopy features.

Part 1 (``--part scaling``): a mixture of 64 Gaussians in 128 dimensions (8 far-apart groups of 8), N in
(5k, 10k, 20k, 100k, 1M) float32, levels (8, 64). Each configuration runs in a fresh subprocess that reports its wall
time (clustering only, data generated before the clock starts) and its peak RSS (whole process: Python,
imports and the 512 MB of features at 1M included). Ours (``method="scalable"``) beside exact Ward with
fastcluster (``linkage``, condensed distances; ``linkage_vector``, O(N F) memory) and scipy, which run only
where the condensed distance matrix fits (up to 20k); above that the table says what they would need.

Part 1b (``--part quality``): on 20,000 points whose components overlap (``spread=0.3``), the Ward objective
(within-cluster sum of squares) of ours at several ``M`` relative to exact Ward, which sets the default ``M``.

Part 1c (``--part disk``, not in ``all``): 10,000,000 x 128 features in a memory-mapped ``.npy`` file (4.8 GiB
under ``--work-dir``), clustered to (8, 64) in a fresh process: time, peak memory, ARI against the planted
components (``benchmarks/_pseudo_classes_disk.py``). Goal: <= 90 s, <= 8 GB on 2 cores, ARI >= 0.9.

Part 2 (``--part real``): a MONAI autoencoder (:class:`monai_cluster.networks.FeatureAutoEncoder`) trained for
a fixed time on the 200 PH2 dermoscopy images (64x64), its pooled features standardised and clustered by ours
(exact and scalable) and by plain k-means at the same k, scored against the three PH2 diagnoses (Common
Nevus 80, Atypical Nevus 80, Melanoma 40) over several seeds. Features of the untrained autoencoder and
raw 16x16 pixels are the references.

Run (2-core CPU, about 10 minutes)::

    python benchmarks/pseudo_classes.py --part all
    python benchmarks/pseudo_classes.py --part disk --disk-n 10000000 --work-dir /tmp/pc   # 5 GB of disk

Data: PH2 (Mendonca et al., EMBC 2013), research and benchmarking use, read from ``MONAI_CLUSTER_DATA``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _pseudo_classes_disk, _mixture

from _mixture import mixture  # noqa: E402  (the planted mixture, shared with _pseudo_classes_disk)

RESULTS = Path(__file__).resolve().parent / "results" / "pseudo_classes.json"
LEVELS = (8, 64)
EXACT_METHODS = ("fastcluster", "fastcluster_vector", "scipy")
GIB = 1024**3


# ---------------------------------------------------------------------------------------------- part 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(method: str, n: int, dim: int, seed: int) -> dict:
    """One configuration, in its own process: returns time, memory and agreement with the true mixture."""
    if method == "ours":
        from monai_cluster.clustering import hierarchical_pseudo_classes
    else:
        from monai_cluster.clustering import cut_linkage, relabel_nested

        if method == "scipy":
            from scipy.cluster.hierarchy import linkage
        else:
            import fastcluster

            linkage = fastcluster.linkage if method == "fastcluster" else fastcluster.linkage_vector
    x, truth = mixture(n, dim, seed)
    rss_before = _rss_bytes()
    start = time.perf_counter()
    if method == "ours":
        labels = hierarchical_pseudo_classes(x, LEVELS, method="scalable", seed=seed)
    else:
        tree = linkage(x, method="ward")
        labels = relabel_nested(np.stack([cut_linkage(tree, k) for k in LEVELS], axis=1))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    from sklearn.metrics import normalized_mutual_info_score as nmi

    return {
        "method": method,
        "n": n,
        "seconds": seconds,
        "peak_rss_gb": peak / 1e9,
        "rss_before_gb": rss_before / 1e9,
        "nmi_coarse": float(nmi(truth // 8, labels[:, 0])),
        "nmi_fine": float(nmi(truth, labels[:, 1])),
    }


def run_worker(method: str, n: int, dim: int, seed: int, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--n", str(n), "--dim", str(dim), "--seed", str(seed)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"method": method, "n": n, "note": f"did not finish in {timeout} s"}
    if proc.returncode != 0:
        return {"method": method, "n": n, "note": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scaling(args: argparse.Namespace) -> list[dict]:
    rows = []
    vector_seconds = None
    for n in args.sizes:
        for rep in range(args.repeats):
            row = run_worker("ours", n, args.dim, rep, args.timeout)
            row["repeat"] = rep
            rows.append(row)
            print(_fmt_scaling(row), flush=True)
        for method in EXACT_METHODS:
            if n <= args.exact_max:
                row = run_worker(method, n, args.dim, 0, args.timeout)
                if method == "fastcluster_vector" and "seconds" in row:
                    vector_seconds = (n, row["seconds"])
            else:
                need = n * (n - 1) / 2 * 8
                if method == "fastcluster_vector":
                    est = "" if vector_seconds is None else (
                        f", about {vector_seconds[1] * (n / vector_seconds[0]) ** 2 / 60:.0f} min extrapolated "
                        f"as N^2 from {vector_seconds[0]:,}"
                    )
                    note = f"not run: O(N^2) time{est}"
                else:
                    note = f"cannot run: needs {need / 1e9:,.0f} GB for the condensed distance matrix"
                row = {"method": method, "n": n, "note": note}
            rows.append(row)
            print(_fmt_scaling(row), flush=True)
    return rows


def _fmt_scaling(row: dict) -> str:
    if "seconds" not in row:
        return f"{row['n']:>9,} {row['method']:<19} {row['note']}"
    return (
        f"{row['n']:>9,} {row['method']:<19} {row['seconds']:8.2f} s  peak {row['peak_rss_gb']:5.2f} GB "
        f"(before {row['rss_before_gb']:4.2f})  NMI {row['nmi_coarse']:.3f} / {row['nmi_fine']:.3f}"
    )


def requirement(rows: list[dict], n: int = 1_000_000) -> dict:
    ours = [r for r in rows if r["method"] == "ours" and r["n"] == n and "seconds" in r]
    if not ours:
        return {"n": n, "met": None, "note": "not measured"}
    worst_s = max(r["seconds"] for r in ours)
    worst_gb = max(r["peak_rss_gb"] for r in ours)
    return {
        "n": n,
        "max_seconds": worst_s,
        "median_seconds": float(np.median([r["seconds"] for r in ours])),
        "max_peak_rss_gb": worst_gb,
        "met": bool(worst_s <= 30 and worst_gb <= 3),
    }


def quality(args: argparse.Namespace) -> list[dict]:
    """Ours (scalable, several M) against exact Ward on overlapping components, where the answer is not obvious.

    The score that both methods optimise is Ward's: the within-cluster sum of squares at each level (lower is
    better); the table gives ours relative to exact Ward, and the ARI between the two labelings.
    """
    from sklearn.metrics import adjusted_rand_score

    from monai_cluster.clustering import hierarchical_pseudo_classes

    def sse(x: np.ndarray, labels: np.ndarray) -> float:
        x = x.astype(np.float64)
        counts = np.bincount(labels)
        sums = np.zeros((counts.size, x.shape[1]))
        np.add.at(sums, labels, x)
        return float((x**2).sum() - ((sums**2).sum(1) / counts).sum())

    x, truth = mixture(args.quality_n, args.dim, seed=0, spread=args.quality_spread)
    start = time.perf_counter()
    exact = hierarchical_pseudo_classes(x, LEVELS, method="exact")
    rows = [{"method": "exact Ward", "num_centroids": None, "seed": None, "seconds": time.perf_counter() - start,
             **{f"sse_ratio_{k}": 1.0 for k in LEVELS}, **{f"ari_vs_exact_{k}": 1.0 for k in LEVELS},
             "ari_fine_vs_truth": float(adjusted_rand_score(truth, exact[:, -1]))}]
    exact_sse = [sse(x, exact[:, i]) for i in range(len(LEVELS))]
    for m in args.quality_centroids:
        for seed in args.seeds[:3]:
            start = time.perf_counter()
            ours = hierarchical_pseudo_classes(x, LEVELS, method="scalable", num_centroids=m, seed=seed)
            row = {"method": "ours scalable", "num_centroids": m, "seed": seed, "seconds": time.perf_counter() - start}
            for i, k in enumerate(LEVELS):
                row[f"sse_ratio_{k}"] = sse(x, ours[:, i]) / exact_sse[i]
                row[f"ari_vs_exact_{k}"] = float(adjusted_rand_score(exact[:, i], ours[:, i]))
            row["ari_fine_vs_truth"] = float(adjusted_rand_score(truth, ours[:, -1]))
            rows.append(row)
    print(f"\nN={args.quality_n:,}, overlapping components (spread {args.quality_spread}): Ward objective of ours / "
          "exact (lower is better), ARI with exact and (fine level) with the 64 true components, mean over seeds")
    header = "".join(f"{'SSE k=' + str(k):>12}{'ARI k=' + str(k):>12}" for k in LEVELS)
    print(f"{'method':<16}{'M':>6}{'s':>8}{header}{'ARI truth':>12}")
    for m in [None, *args.quality_centroids]:
        sel = [r for r in rows if r["num_centroids"] == m]
        line = f"{sel[0]['method']:<16}{m or '-':>6}{np.mean([r['seconds'] for r in sel]):>8.2f}"
        for k in LEVELS:
            line += f"{np.mean([r[f'sse_ratio_{k}'] for r in sel]):>12.4f}"
            line += f"{np.mean([r[f'ari_vs_exact_{k}'] for r in sel]):>12.3f}"
        print(line + f"{np.mean([r['ari_fine_vs_truth'] for r in sel]):>12.3f}")
    return rows


# ---------------------------------------------------------------------------------------------- part 2


def load_ph2(size: int):
    """The 200 PH2 images resized to ``size`` (float tensor in [0, 1]), their keys and diagnoses."""
    import torch
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityRanged

    from monai_cluster.data import list_images, read_diagnosis_csv
    from monai_cluster.utils import find_real_data

    root = find_real_data("dermoscopy", "ph2")
    if root is None:
        raise SystemExit("PH2 not found: set MONAI_CLUSTER_DATA to the shared data folder.")
    data = [d for d in list_images(root) if d["key"].split("/")[0] in ("images", "unlabeled")]
    diagnosis = read_diagnosis_csv(root / "diagnosis.csv")
    load = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            Resized("image", (size, size), mode="area"),
            ScaleIntensityRanged("image", 0, 255, 0, 1),
        ]
    )
    images = torch.stack([torch.as_tensor(load(d)["image"]).float() for d in data])
    keys = [d["key"] for d in data]
    classes = [diagnosis[Path(k).stem] for k in keys]
    return images, keys, classes


def _autoencoder_for_seconds(images, seconds: float, seed: int, batch_size: int = 32):
    """The PH2 features' autoencoder, trained for a wall-clock budget (the recorded measurement's protocol).

    Not :func:`monai_cluster.engines.train_autoencoder`: this benchmark asks how good the pseudo-classes of features
    from a fixed time budget are, so it counts seconds rather than epochs; the networks are the same.
    """
    import torch

    from monai_cluster.networks import FeatureAutoEncoder

    torch.manual_seed(seed)
    model = FeatureAutoEncoder(2, 3, channels=(16, 32, 64, 128), strides=(2, 2, 2, 2), feature_pool="avgmax")
    untrained = FeatureAutoEncoder(2, 3, channels=(16, 32, 64, 128), strides=(2, 2, 2, 2), feature_pool="avgmax")
    untrained.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    losses, steps, start = [], 0, time.perf_counter()
    model.train()
    while time.perf_counter() - start < seconds:
        idx = torch.randperm(images.shape[0], generator=gen)[:batch_size]
        x = images[idx]
        if torch.rand(1, generator=gen) < 0.5:  # dermoscopy has no preferred orientation
            x = x.flip(-1)
        x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=gen)), dims=(-2, -1))
        loss = torch.nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        steps += 1
    return model, untrained, {"steps": steps, "seconds": time.perf_counter() - start,
                              "loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:]))}


def real_features(args: argparse.Namespace) -> dict:
    import torch

    from monai_cluster.clustering import (
        clustering_scores,
        extract_features,
        hierarchical_pseudo_classes,
        kmeans,
    )

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    images, keys, classes = load_ph2(args.image_size)
    print(f"loaded {len(keys)} PH2 images at {args.image_size}px in {time.perf_counter() - t0:.0f} s", flush=True)
    model, untrained, training = _autoencoder_for_seconds(images, args.train_seconds, seed=0)
    print(f"autoencoder: {training}", flush=True)
    data = [{"image": img, "key": key} for img, key in zip(images, keys)]
    feature_sets = {}
    for name, net in (("autoencoder", model), ("untrained autoencoder", untrained)):
        feats, got_keys = extract_features(net, data, batch_size=50, progress=False)
        assert got_keys == keys
        feature_sets[name] = feats
    small = torch.nn.functional.interpolate(images, size=(16, 16), mode="area")
    feature_sets["raw pixels 16x16"] = small.flatten(1).numpy().astype(np.float32)
    levels = (3, args.fine_clusters)
    rows = []
    for fname, feats in feature_sets.items():
        z = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
        exact = hierarchical_pseudo_classes(z, levels, method="exact")
        rows.append({"features": fname, "method": "ours exact Ward", "seed": None,
                     **clustering_scores(classes, exact[:, 0])})
        for seed in args.seeds:
            scalable = hierarchical_pseudo_classes(z, levels, method="scalable", num_centroids=args.num_centroids,
                                                   seed=seed)
            rows.append({"features": fname, "method": f"ours scalable (M={args.num_centroids})", "seed": seed,
                         **clustering_scores(classes, scalable[:, 0])})
            labels, _ = kmeans(z, 3, seed=seed)
            rows.append({"features": fname, "method": "k-means k=3", "seed": seed,
                         **clustering_scores(classes, labels)})
    summary = []
    for fname in feature_sets:
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["features"] == fname and r["method"] == method]
            entry = {"features": fname, "method": method, "seeds": len(sel)}
            for metric in ("nmi", "ari", "accuracy"):
                values = np.array([r[metric] for r in sel])
                entry[metric] = float(values.mean())
                entry[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary.append(entry)
    print(f"\ncoarse level (k=3) against the PH2 diagnoses; mean ± sd over seeds {list(args.seeds)}; "
          "accuracy of one class for all: 0.40")
    print(f"{'features':<24}{'method':<26}{'NMI':>14}{'ARI':>16}{'accuracy':>16}")
    for e in summary:
        print(f"{e['features']:<24}{e['method']:<26}"
              + "".join(f"{e[m]:>9.3f} ± {e[m + '_sd']:.3f}" for m in ("nmi", "ari", "accuracy")))
    counts = {c: classes.count(c) for c in sorted(set(classes))}
    return {"training": training, "levels": levels, "class_counts": counts, "rows": rows, "summary": summary,
            "image_size": args.image_size, "num_centroids": args.num_centroids}


# ---------------------------------------------------------------------------------------------- main


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("scaling", "quality", "real", "disk", "all"), default="all")
    parser.add_argument("--disk-n", type=int, default=10_000_000, help="rows of the on-disk features (--part disk)")
    parser.add_argument("--work-dir", type=Path, default=RESULTS.parent / "pseudo_classes_disk",
                        help="where --part disk writes its features (kept for reruns)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 10_000, 20_000, 100_000, 1_000_000])
    parser.add_argument("--quality-n", type=int, default=20_000)
    parser.add_argument("--quality-spread", type=float, default=0.3)
    parser.add_argument("--quality-centroids", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per size for ours")
    parser.add_argument("--exact-max", type=int, default=20_000, help="largest N for the exact baselines")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-seconds", type=float, default=300.0)
    parser.add_argument("--fine-clusters", type=int, default=12)
    parser.add_argument("--num-centroids", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=("ours",) + EXACT_METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim, args.seed)))
        return

    from monai_cluster.utils import atomic_write_json

    machine = (
        f"{_cpu_name()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.1f} GiB, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    run = {"machine": machine, "command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M")}
    result = json.loads(args.out.read_text()) if args.out.exists() else {}  # keep the other part's results
    if args.part in ("scaling", "all"):
        print(f"N x {args.dim} float32, levels {LEVELS}: wall time, peak RSS, NMI coarse / fine vs the mixture")
        rows = scaling(args)
        req = requirement(rows)
        print(f"\nrequirement (1M x 128 to (8, 64) in <= 30 s and <= 3 GB): {req}")
        result["scaling"] = {**run, "levels": LEVELS, "dim": args.dim, "rows": rows, "requirement": req}
        atomic_write_json(result, args.out)
    if args.part in ("quality", "all"):
        result["quality"] = {**run, "n": args.quality_n, "levels": LEVELS, "rows": quality(args)}
        atomic_write_json(result, args.out)
    if args.part == "disk":
        from _pseudo_classes_disk import run as run_disk

        report = run_disk(args.disk_n, args.dim, args.work_dir, args.seeds[:1] if args.repeats == 1 else
                          list(range(args.repeats)), args.timeout)  # fmt: skip
        print(f"goal {report['goal']}: {'met' if report['met'] else 'NOT met'}")
        result["disk"] = {**run, **report}
        atomic_write_json(result, args.out)
    if args.part in ("real", "all"):
        result["real"] = {**run, **real_features(args)}
        atomic_write_json(result, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
