"""Local discrimination (Chen et al.) on real retinal fundus images: unsupervised vessel clusters and transfer.

Data (read from ``MONAI_CLUSTER_DATA``/retina, never copied): DRIVE (Staal et al., IEEE TMI 2004) and
CHASE_DB1 (Fraz et al., IEEE TBME 2012), research use.

The benchmark drives the bundles (``benchmarks/_ld_retina_bundles.py``, each run by
:func:`~monai_cluster.workflows.segmentation_bundle.run_bundle` with overrides) and keeps only the protocol: the
pretraining pool and the fine-tuning split, seeds and pairing, the scoring of part (a), statistics, tables and a
resumable JSON. Loops, optimisers, schedules, augmentation, label selection and metrics are the bundles'.

1. **Pretraining** (one run per method, in ``--work-dir``, reused by every seed), on the 20 DRIVE training images and
   all 28 CHASE_DB1 images without their labels (a folder of links), resized to ``--image-size`` (256), random
   ``--crop`` crops (the bundles' ``crop_size``):
   - ``ld``: ``bundles/local_discrimination_pretrain`` (``--ld-steps`` as its epochs over the pool, the first
     ``--ld-warmup`` of them its warm-up);
   - ``cg``: ``bundles/cluster_contrastive_pretrain`` (autoencoder for ``--ae-steps``, pseudo-classes of the images
     at the levels ``--cg-levels``, then ``--cg-steps`` steps of its ``max_steps``).
   Both write ``models/model.pt``, a ``BasicUNet`` state dict with BasicUNet's own keys (no ``final_conv``).
2. **Unsupervised** (part a, pure scoring): the LD bundle's network (its last checkpoint) maps full images,
   preprocessed by the bundle's own ``eval_transform``, to clusters (argmax of the assignment). The vessel cluster is
   chosen on the 20 DRIVE *training* images (best single cluster by pooled Dice, and a greedy union of clusters
   ordered by vessel precision), then scored on the 20 DRIVE *test* images and on CHASE_DB1 (Dice within the field
   of view). References: the untrained network's clusters and k-means (same K) on RGB pixels, chosen the same way.
3. **Transfer** (part b): ``bundles/dermoscopy_segmentation`` (``BasicUNet``, 2 classes, Dice + CE) through a MONAI
   datalist (training pool = the 20 DRIVE training images, held out = the 20 test images), ``num_labeled`` =
   ``--labeled`` images drawn by the bundle's ``seed``, ``max_steps`` = ``--ft-steps`` of ``--ft-crop`` crops, Adam
   with cosine decay to 0; initialisations random / ld / cg (``<method>_encoder``: ``pretrained_exclude`` of the
   decoder). Paired per seed: the bundle's ``seed`` decides the labeled images, the random weights and the batch
   order, identical for every initialisation. Score: the bundle's mean Dice over the 20 test images within DRIVE's
   field-of-view masks (``fov_dir``), averaged over its last three evaluations (``eval_every_steps`` a tenth of the
   steps, ``eval_last`` 3: 80, 90, 100%). Table: mean +- sd over seeds, and the paired difference to random with
   a t-based 95% interval (``benchmarks/_stats.py``).

Each finished piece is written to ``--out`` (JSON) at once; a rerun with the same settings skips what is there, and
a killed pretraining resumes from the bundle's last checkpoint, so the script can be stopped and resumed. Records
measured before 2026-12-07 came from the script's own training loops (BENCHMARKS.md says which).

Run::

    python benchmarks/local_discrimination_retina.py
    python benchmarks/local_discrimination_retina.py --quick        # a smoke run at toy sizes

Pieces can run in parallel processes that share ``--work-dir``, e.g. ``--inits cg --seeds 0 1 2 --no-unsupervised
--out other.json``, and be merged with ``--import-results other.json``.
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _ld_retina_bundles as bundles  # noqa: E402
from _stats import mean_ci  # noqa: E402

from monai_cluster.data import list_fundus_pairs  # noqa: E402
from monai_cluster.utils import atomic_write_json, get_data_root  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHASE_FOV_THRESHOLD = 0.1  # red channel in [0, 1]; the fundus disc of CHASE_DB1 lies well above, its border near 0
logger = logging.getLogger("ld_retina")


# ------------------------------------------------------------------------------------------ unsupervised


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(2 * (pred & gt).sum() / max(pred.sum() + gt.sum(), 1))


def _choose_clusters(maps: np.ndarray, gt: np.ndarray, fov: np.ndarray, k: int) -> dict:
    """On train: best single cluster and a greedy union (clusters by vessel precision) by pooled Dice."""
    m, g = maps[fov], gt[fov]
    single = [_dice(m == c, g) for c in range(k)]
    best = int(np.argmax(single))
    precision = [g[m == c].mean() if (m == c).any() else 0.0 for c in range(k)]
    union, score = [], 0.0
    for c in np.argsort(precision)[::-1]:
        trial = _dice(np.isin(m, union + [int(c)]), g)
        if trial <= score:
            break
        union, score = union + [int(c)], trial
    return {"best": best, "best_train_dice": single[best], "union": union, "union_train_dice": score}


def _score(maps: np.ndarray, gt: np.ndarray, fov: np.ndarray, clusters: list[int]) -> tuple[float, float]:
    per = [_dice(np.isin(m[f], clusters), g[f]) for m, g, f in zip(maps, gt, fov)]
    return float(np.mean(per)), float(np.std(per))


@torch.no_grad()
def _ld_maps(net, images: torch.Tensor) -> np.ndarray:
    net.eval()
    return np.concatenate([net(images[i : i + 4])["assignment"].argmax(1).numpy() for i in range(0, len(images), 4)])


def load_scoring_sets(root: Path, transform) -> dict:
    """DRIVE train/test and CHASE_DB1 as the LD bundle's ``eval_transform`` gives them: images ``(N, 3, S, S)``,
    vessels and field of view ``(N, S, S)`` bool (CHASE_DB1's field of view: the red channel above a dark
    threshold, as it ships no masks)."""
    out = {}
    for name, items in (("train", list_fundus_pairs(root / "drive", "drive", "train")),
                        ("test", list_fundus_pairs(root / "drive", "drive", "test")),
                        ("chase", list_fundus_pairs(root / "chase_db1", "chase_db1"))):  # fmt: skip
        images, labels, fovs = [], [], []
        for item in items:
            sample = transform({"image": item["image"], "label": item["label"]})
            images.append(torch.as_tensor(sample["image"]).float())
            labels.append(np.asarray(sample["label"])[0] > 0)
            if "fov" in item:
                fovs.append(np.asarray(transform({"image": item["image"], "label": item["fov"]})["label"])[0] > 0)
            else:
                fovs.append(images[-1][0].numpy() > CHASE_FOV_THRESHOLD)
        out[name] = {"image": torch.stack(images), "label": np.stack(labels), "fov": np.stack(fovs)}
    return out


def unsupervised(args, trained, untrained, transform, root: Path, folder: Path) -> dict:
    """Part (a): score the clusters of the LD bundle's network, the untrained network and k-means on RGB pixels."""
    from sklearn.cluster import MiniBatchKMeans

    sets = load_scoring_sets(root, transform)
    gt = {s: d["label"] for s, d in sets.items()}
    fov = {s: d["fov"] for s, d in sets.items()}
    pixels = sets["train"]["image"].permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    rng = np.random.default_rng(0)
    sample = pixels[rng.choice(len(pixels), min(100_000, len(pixels)), replace=False)]
    km = MiniBatchKMeans(args.clusters, random_state=0, n_init=3).fit(sample)
    makers = {
        "ld_pretrained": lambda x: _ld_maps(trained, x),
        "ld_untrained": lambda x: _ld_maps(untrained, x),
        "kmeans_rgb": lambda x: km.predict(x.permute(0, 2, 3, 1).reshape(-1, 3).numpy()).reshape(
            x.shape[0], *x.shape[2:]
        ),
    }
    results = {}
    for name, make in makers.items():
        maps = {s: make(d["image"]) for s, d in sets.items()}
        choice = _choose_clusters(maps["train"], gt["train"], fov["train"], args.clusters)
        used = np.bincount(maps["test"][fov["test"]].ravel(), minlength=args.clusters)
        results[name] = {**choice, "clusters_used_test": int((used > 0).sum())}
        # clusters chosen on DRIVE train, scored on DRIVE test and on CHASE_DB1 (another camera and population)
        for split in ("test", "chase"):
            for kind, clusters in (("best", [choice["best"]]), ("union", choice["union"])):
                mean, sd = _score(maps[split], gt[split], fov[split], clusters)
                results[name][f"{split}_dice_{kind}"], results[name][f"{split}_dice_{kind}_sd"] = mean, sd
        logger.info("unsupervised %s: %s", name, results[name])
        if name == "ld_pretrained":
            _save_cluster_maps(sets["test"]["image"][:3], maps["test"][:3], choice["union"], folder, args)
    results["reference_all_fov_dice"] = {  # "every pixel of the field of view is vessel": the floor to beat
        split: float(np.mean([_dice(f[f], g[f]) for g, f in zip(gt[split], fov[split])])) for split in ("test", "chase")
    }
    return results


def _save_cluster_maps(images, maps, union, folder: Path, args) -> None:
    from monai_cluster.data import write_png

    folder.mkdir(parents=True, exist_ok=True)
    palette = (np.random.default_rng(0).uniform(0, 255, (args.clusters, 3))).astype(np.uint8)
    for i, (img, m) in enumerate(zip(images, maps)):
        rgb = (img.permute(1, 2, 0).numpy().clip(0, 1) * 255).astype(np.uint8)
        vessel = np.isin(m, union)[..., None] * np.array([255, 255, 255], np.uint8)
        write_png(np.concatenate([rgb, palette[m], vessel], axis=1), folder / f"drive_test_{i:02d}.png")


# -------------------------------------------------------------------------------------------------- main

_HASHED = ("image_size", "crop", "ft_crop", "features", "clusters", "grid", "ld_steps", "ld_batch", "ae_steps",
           "cg_steps", "cg_batch", "cg_levels", "ft_steps", "ft_batch", "labeled", "lr", "pretrain_seed", "ld_warmup",
           "assignment_activation")  # fmt: skip


def _settings_hash(args) -> str:
    blob = json.dumps({"pipeline": "bundles", **{k: getattr(args, k) for k in _HASHED}}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def summarize(runs: list[dict], inits: list[str]) -> list[dict]:
    """Per initialisation: Dice over seeds and the paired difference to random (same seed) with its interval."""
    by = {(r["init"], r["seed"]): r["dice"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    rows = []
    for init in inits:
        mine = [s for s in seeds if (init, s) in by]
        if not mine:
            continue
        paired = [s for s in mine if ("random", s) in by]
        diffs = [by[(init, s)] - by[("random", s)] for s in paired]
        rows.append({"init": init, "dice": mean_ci([by[(init, s)] for s in mine]), "seeds": mine,
                     "per_seed": [by[(init, s)] for s in mine],
                     "diff_to_random": mean_ci(diffs) if init != "random" else None,
                     "seeds_ahead": int(sum(d > 0 for d in diffs)) if init != "random" else None})  # fmt: skip
    return rows


def _fmt(stat: dict | None, ci: bool = False) -> str:
    if not stat or not stat.get("n"):
        return "-"
    text = f"{stat['mean']:+.4f}" if ci else f"{stat['mean']:.4f}"
    if ci and "ci95" in stat:
        return f"{text} ({stat['ci95'][0]:+.4f}, {stat['ci95'][1]:+.4f})"
    return f"{text} +- {stat['sd']:.4f}" if stat["n"] > 1 else text


def table(rows: list[dict]) -> str:
    lines = ["| init | Dice (mean +- sd) | paired diff. to random (95% CI) | seeds ahead | per seed |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ahead = "-" if r["seeds_ahead"] is None else f"{r['seeds_ahead']} of {r['diff_to_random']['n']}"
        lines.append(f"| {r['init']} | {_fmt(r['dice'])} | {_fmt(r['diff_to_random'], ci=True)} | {ahead} | "
                     f"{', '.join(f'{v:.4f}' for v in r['per_seed'])} |")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, default=None, help="folder with drive/ and chase_db1/")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--crop", type=int, default=64, help="pretraining crop size (both bundles' crop_size)")
    p.add_argument("--ft-crop", type=int, default=96, help="fine-tuning crop size (the bundle's crop_size)")
    p.add_argument("--features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16])
    p.add_argument("--clusters", type=int, default=16)
    p.add_argument("--grid", type=int, default=8, help="patch grid of patch discrimination")
    p.add_argument("--ld-steps", type=int, default=200, help="LD steps, run as the nearest number of epochs")
    p.add_argument("--ld-batch", type=int, default=8)
    p.add_argument("--ld-warmup", type=float, default=0.25,
                   help="fraction of the LD epochs trained on patch discrimination + mixup only (warmup_epochs)")
    p.add_argument("--assignment-activation", default="softmax", choices=["softmax", "sigmoid"])
    p.add_argument("--ae-steps", type=int, default=100, help="cg autoencoder steps, run as epochs over the pool")
    p.add_argument("--cg-steps", type=int, default=150)
    p.add_argument("--cg-batch", type=int, default=16)
    p.add_argument("--cg-levels", type=int, nargs="+", default=[4, 16], help="pseudo-class levels (num_clusters)")
    p.add_argument("--ft-steps", type=int, default=100)
    p.add_argument("--ft-batch", type=int, default=4)
    p.add_argument("--labeled", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--inits", nargs="+", default=["random", "ld", "cg", "ld_encoder"],
                   choices=["random", "ld", "cg", "ld_encoder", "cg_encoder"],
                   help="initialisations; '<method>_encoder' loads only the pretrained encoder")
    p.add_argument("--pretrain-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    p.add_argument("--no-unsupervised", action="store_true", help="skip part (a) (and the LD pretraining it needs)")
    p.add_argument("--import-results", type=Path, nargs="*", default=[],
                   help="JSON files of other runs with the same settings whose fine-tunes are merged in")
    p.add_argument("--out", type=Path, default=RESULTS / "local_discrimination_retina.json")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="the bundles' runs (default: results/ld_retina_<settings hash>)")
    args = p.parse_args(argv)
    if not 0 <= args.ld_warmup < 1:
        p.error(f"--ld-warmup must be a fraction in [0, 1), got {args.ld_warmup}")
    if args.quick:
        args.image_size, args.crop, args.ft_crop = 128, 32, 64
        args.ld_steps, args.ae_steps, args.cg_steps, args.ft_steps = 12, 6, 10, 10
        args.ld_batch, args.cg_batch, args.cg_levels = 4, 8, [2, 4]
        args.seeds = args.seeds[:1]
        if args.out == RESULTS / "local_discrimination_retina.json":
            args.out = RESULTS / "local_discrimination_retina_quick.json"
    return args


def _merge(record: dict, others: list[Path], tag: str) -> None:
    for other in others:
        extra = json.loads(other.read_text())
        if extra.get("settings_hash") != tag:
            raise SystemExit(f"{other} was run with other settings ({extra.get('settings_hash')} != {tag}).")
        have = {(r["init"], r["seed"]) for r in record["finetune"]}
        record["finetune"] += [r for r in extra["finetune"] if (r["init"], r["seed"]) not in have]
        for key in ("pretrain_cg", "pretrain_ld"):
            if key in extra and key not in record:
                record[key] = extra[key]


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    root = args.data_root or get_data_root() / "retina"
    if not (root / "drive").is_dir() or not (root / "chase_db1").is_dir():
        raise SystemExit(f"retina data not found under {root} (expects drive/ and chase_db1/); set --data-root.")
    tag = _settings_hash(args)
    work = args.work_dir or RESULTS / f"ld_retina_{tag}"
    work.mkdir(parents=True, exist_ok=True)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if record.get("settings_hash") != tag:
        record = {"settings_hash": tag, "pipeline": "bundles", "finetune": [],
                  "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}  # fmt: skip
    record["machine"] = f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, " \
                        f"torch {torch.__version__}, {args.threads} thread(s)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    _merge(record, args.import_results, tag)
    pool = bundles.pool_folder(root, work / "pool")
    split = bundles.finetune_datalist(root, work / "finetune_datalist.json")
    record["data"] = {"pool_images": pool["images"], "train_images": split["train"], "test_images": split["test"]}
    weights: dict[str, str | None] = {"random": None}
    skip_unsupervised = args.no_unsupervised or "unsupervised" in record
    if any(i.startswith("ld") for i in args.inits) or not skip_unsupervised:
        record["pretrain_ld"] = bundles.pretrain("ld", args, pool, work / "pretrain_ld")
        weights["ld"] = weights["ld_encoder"] = record["pretrain_ld"]["model"]
        atomic_write_json(record, args.out)
    if not skip_unsupervised:
        trained, untrained, transform = bundles.ld_network(args, pool, work / "pretrain_ld")
        record["unsupervised"] = unsupervised(args, trained, untrained, transform, root, work / "cluster_maps")
        atomic_write_json(record, args.out)
    done = {(r["init"], r["seed"]) for r in record["finetune"]}
    # random and ld first (the comparison), the cluster-guided pretraining and its fine-tunes last
    for group in (["random", "ld", "ld_encoder"], ["cg", "cg_encoder"]):
        inits = [i for i in args.inits if i in group]
        if "cg" in inits or "cg_encoder" in inits:
            record["pretrain_cg"] = bundles.pretrain("cg", args, pool, work / "pretrain_cg")
            weights["cg"] = weights["cg_encoder"] = record["pretrain_cg"]["model"]
            atomic_write_json(record, args.out)
        for seed in args.seeds:
            for init in inits:
                if (init, seed) in done:
                    continue
                result = bundles.finetune(args, split, seed, init, weights[init], work / "finetune" / f"{init}_s{seed}")
                logger.info("finetune seed %d %s: Dice %.4f (evals %s, labeled %s, %.0f s)", seed, init,
                            result["dice"], result["dice_evals"], result["labeled"], result["wall_s"])  # fmt: skip
                record["finetune"].append(result)
                atomic_write_json(record, args.out)
    record["summary"] = summarize(record["finetune"], args.inits)
    record["wall_s_this_run"] = time.time() - t_start
    atomic_write_json(record, args.out)
    _print(record, args, work)
    return record


def _print(record: dict, args, work: Path) -> None:
    unsup = record.get("unsupervised", {})
    if unsup:
        print("\nUnsupervised vessel clusters (Dice within the FOV; clusters chosen on DRIVE train)")
        print("| clusters from | DRIVE test: best single | DRIVE test: greedy union | CHASE_DB1: best single | "
              "CHASE_DB1: greedy union | clusters in union |")
        print("|---|---|---|---|---|---|")
        for name, r in unsup.items():
            if name == "reference_all_fov_dice":
                continue
            cells = [f"{r[f'{p}_dice_{k}']:.4f} +- {r[f'{p}_dice_{k}_sd']:.4f}" for p in ("test", "chase")
                     for k in ("best", "union")]  # fmt: skip
            print(f"| {name} | {' | '.join(cells)} | {len(r['union'])} |")
        ref = unsup["reference_all_fov_dice"]
        print(f"| (every FOV pixel = vessel) | {ref['test']:.4f} | | {ref['chase']:.4f} | | |")
    print(f"\nTransfer: {args.labeled} labeled DRIVE images, {args.ft_steps} steps, DRIVE test Dice (FOV)")
    print(table(record["summary"]))
    print(f"\nresults: {args.out}; bundle runs: {work}")


if __name__ == "__main__":
    main()
    sys.exit(0)
