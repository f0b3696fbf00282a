"""Local discrimination (Chen et al.) on real retinal fundus images: unsupervised vessel clusters and transfer.

Data (read from ``MONAI_CLUSTER_DATA``/retina, never copied): DRIVE (Staal et al., IEEE TMI 2004) and
CHASE_DB1 (Fraz et al., IEEE TBME 2012), research use. Every image is resized to ``--image-size`` (default
256x256, about 2.2x below DRIVE's 565x584), RGB scaled to [0, 1]; vessel masks are area-resized and
thresholded at 0.5; DRIVE's field-of-view masks restrict every score.

1. **Pretraining** (one run per method, weights cached under ``--cache-dir`` and reused by every seed):
   - ``ld``: :class:`~monai_cluster.networks.LocalDiscriminationNet` on the 20 DRIVE training images and all
     28 CHASE_DB1 images without their labels, random ``--crop`` crops, two views from
     :class:`~monai_cluster.transforms.LocalDiscriminationViewsd` (intensity jitter, then a recorded
     flip/rot90), mixup by :class:`~monai_cluster.engines.LocalDiscriminationPrepareBatch`, the published loss
     weights (:class:`~monai_cluster.losses.LocalDiscriminationLoss`).
   - ``cg``: cluster-guided contrastive pretraining (Zhang et al.) on the same unlabeled crops: a
     :class:`~monai_cluster.networks.FeatureAutoEncoder`, :func:`~monai_cluster.clustering.extract_features`
     on a fixed bank of crops, :func:`~monai_cluster.clustering.hierarchical_pseudo_classes`, then
     :class:`~monai_cluster.networks.ContrastivePretrainNet` with
     :class:`~monai_cluster.losses.ClusterGuidedContrastiveLoss` (global, negatives of the anchor's
     pseudo-class removed) + :class:`~monai_cluster.losses.LocalContrastiveLoss` (decoder map) on two
     intensity-jittered, spatially aligned views.
   Both save a ``BasicUNet`` state dict with BasicUNet's own keys (no ``final_conv``).
2. **Unsupervised** (part a): the LD network's cluster map (argmax of the assignment) on full DRIVE images.
   The vessel cluster is chosen on the 20 DRIVE *training* images (best single cluster by pooled Dice, and a
   greedy union of clusters ordered by vessel precision), then scored on the 20 *test* images (Dice within the
   field of view). References: the untrained network's clusters and k-means (same K) on RGB pixels, chosen
   the same way.
3. **Transfer** (part b): vessel segmentation (``BasicUNet``, 2 classes, Dice + CE) from ``--labeled`` DRIVE
   training images, ``--ft-steps`` steps of ``--ft-crop`` crops, Adam with cosine decay to 0; initialisations
   random / ld / cg. Paired per seed: the same labeled images, the same ``final_conv`` and random weights
   (one ``torch.manual_seed`` before building the network) and the same crop order. Score: mean Dice over
   the 20 DRIVE test images (field of view), averaged over the last three evaluations (80, 90, 100% of the
   steps). Table: mean +- sd over seeds, and the paired difference to random.

Each finished piece is written to ``--out`` (JSON) at once; a rerun skips what is there with the same
settings, so the script can be stopped and resumed. Pretraining checkpoints every 50 steps.

Run (the defaults are the measured settings; about 2 hours in one process on the shared 2-core CPU, where the
pretraining took 28 + 17 minutes and a fine-tune 1-5 minutes)::

    python benchmarks/local_discrimination_retina.py
    python benchmarks/local_discrimination_retina.py --quick        # a 2-minute smoke run

Pieces can run in parallel processes that share the cached pretrained weights, e.g. ``--inits cg --seeds 0 1 2
--no-unsupervised --out other.json``, and be merged with ``--import-results other.json``.
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
import torch.nn.functional as F

from monai_cluster.data import list_fundus_pairs, read_image
from monai_cluster.utils import atomic_torch_save, atomic_write_json, get_data_root

RESULTS = Path(__file__).resolve().parent / "results"
CHASE_FOV_THRESHOLD = 0.1  # red channel in [0, 1]; the fundus disc of CHASE_DB1 lies well above, its border near 0
logger = logging.getLogger("ld_retina")


# ------------------------------------------------------------------------------------------------ data


def _load(path: str, size: int, mask: bool) -> torch.Tensor:
    arr = read_image(path).array.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    t = torch.from_numpy(arr).permute(2, 0, 1)[None]
    t = t / (t.max() if mask and t.max() > 0 else 255.0)
    t = F.interpolate(t, size=(size, size), mode="area")[0]
    return (t[:1] > 0.5).float() if mask else t[:3]


def load_retina(root: Path, size: int) -> dict:
    """Images ``(N, 3, S, S)``, vessels and FOV ``(N, 1, S, S)`` of DRIVE train/test, CHASE_DB1 images."""
    out = {}
    for split in ("train", "test"):
        items = list_fundus_pairs(root / "drive", "drive", split)
        out[f"drive_{split}"] = {
            "image": torch.stack([_load(i["image"], size, False) for i in items]),
            "label": torch.stack([_load(i["label"], size, True) for i in items]),
            "fov": torch.stack([_load(i["fov"], size, True) for i in items]),
            "keys": [i["key"] for i in items],
        }
    chase = list_fundus_pairs(root / "chase_db1", "chase_db1", "all")
    image = torch.stack([_load(i["image"], size, False) for i in chase])
    out["chase"] = {
        "image": image,
        "label": torch.stack([_load(i["label"], size, True) for i in chase]),
        # CHASE_DB1 ships no field-of-view masks: the usual stand-in is the red channel above a dark threshold
        "fov": (image[:, :1] > CHASE_FOV_THRESHOLD).float(),
        "keys": [i["key"] for i in chase],
    }
    return out


def random_crops(images: torch.Tensor, n: int, crop: int, gen: torch.Generator, extra: list | None = None):
    """``n`` random crops (with a random flip each) of random images; ``extra`` tensors cropped alike."""
    idx = torch.randint(0, images.shape[0], (n,), generator=gen)
    top = torch.randint(0, images.shape[2] - crop + 1, (n,), generator=gen)
    left = torch.randint(0, images.shape[3] - crop + 1, (n,), generator=gen)
    flips = torch.rand(n, 2, generator=gen) < 0.5
    outs = []
    for t in [images] + list(extra or []):
        rows = []
        for i, y, x, fl in zip(idx.tolist(), top.tolist(), left.tolist(), flips.tolist()):
            c = t[i, :, y : y + crop, x : x + crop]
            c = c.flip(1) if fl[0] else c
            rows.append(c.flip(2) if fl[1] else c)
        outs.append(torch.stack(rows))
    return outs


def jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-image brightness/contrast/gamma jitter and noise (an intensity-only view, pixels stay aligned)."""
    b = x.shape[0]
    shape = (b, 1, 1, 1)
    scale = 1 + 0.4 * (torch.rand(shape, generator=gen) - 0.5)
    shift = 0.2 * (torch.rand(shape, generator=gen) - 0.5)
    gamma = torch.exp(0.4 * (torch.rand(shape, generator=gen) - 0.5))
    y = x.clamp(0, 1) ** gamma * scale + shift
    return y + 0.02 * torch.randn(x.shape, generator=gen)


# ------------------------------------------------------------------------------------------ pretraining


def _optimise(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimiser step on ``loss``; returns its value."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def _checkpointed_loop(name, path, modules, optimiser, steps, step_fn, log_every=25):
    """Run ``step_fn(step) -> (loss, components)`` for ``steps`` steps, resuming from and saving to ``path``."""
    start, wall = 0, 0.0
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
        for key, module in modules.items():
            module.load_state_dict(state[key])
        optimiser.load_state_dict(state["optimiser"])
        start, wall = state["step"], state["wall_s"]
        logger.info("%s: resuming at step %d", name, start)
    history = []
    t0 = time.time() - wall
    for step in range(start, steps):
        loss, comps = step_fn(step)
        if not np.isfinite(loss):
            raise RuntimeError(f"{name}: non-finite loss at step {step}: {comps}")
        history.append(loss)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            logger.info("%s step %d/%d loss %.4f %s (%.0f s)", name, step + 1, steps, np.mean(history[-log_every:]),
                        {k: round(v, 4) for k, v in comps.items()}, time.time() - t0)
        if (step + 1) % 50 == 0 or step + 1 == steps:
            state = {k: m.state_dict() for k, m in modules.items()}
            state.update(optimiser=optimiser.state_dict(), step=step + 1, wall_s=time.time() - t0)
            atomic_torch_save(state, path)
    return time.time() - t0, float(np.mean(history[-25:])) if history else float("nan")


def pretrain_ld(data: dict, args, cache: Path) -> tuple[Path, dict]:
    """Local-discrimination pretraining; returns the BasicUNet weights path and run info."""
    from monai.data import list_data_collate
    from monai.transforms import RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd

    from monai_cluster.engines.local_discrimination import LocalDiscriminationPrepareBatch
    from monai_cluster.losses import LocalDiscriminationLoss
    from monai_cluster.networks import LocalDiscriminationNet
    from monai_cluster.transforms import LocalDiscriminationViewsd

    out = cache / "ld_basicunet.pt"
    info_path = cache / "ld_info.json"
    if out.is_file() and info_path.is_file():
        return out, json.loads(info_path.read_text())
    torch.manual_seed(args.pretrain_seed)
    net = LocalDiscriminationNet(
        2, 3, embed_dim=32, num_clusters=args.clusters, features=args.features,
        assignment_activation=args.assignment_activation,
    )  # fmt: skip
    loss_fn = LocalDiscriminationLoss(grid_size=args.grid)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    views = LocalDiscriminationViewsd(
        "image",
        transform=[
            RandScaleIntensityd("image", factors=0.2, prob=1.0),
            RandShiftIntensityd("image", offsets=0.1, prob=1.0),
            RandGaussianNoised("image", std=0.02, prob=0.5),
        ],
    ).set_random_state(args.pretrain_seed)
    prepare = LocalDiscriminationPrepareBatch(seed=args.pretrain_seed)
    pool = torch.cat([data["drive_train"]["image"], data["chase"]["image"]])
    gen = torch.Generator().manual_seed(args.pretrain_seed)

    warmup_steps = round(args.ld_warmup * args.ld_steps)  # the bundle's warm-up: patch + mixup only

    def step(i: int):
        loss_fn.set_clustering_active(i >= warmup_steps)
        (crops,) = random_crops(pool, args.ld_batch, args.crop, gen)
        batch = list_data_collate([views({"image": c.numpy()}) for c in crops])
        inputs, targets = prepare(batch)
        return _optimise(opt, loss_fn(net(inputs), targets)), loss_fn.last_components

    net.train()
    wall, final = _checkpointed_loop("ld", cache / "ld_ckpt.pt", {"net": net}, opt, args.ld_steps, step)
    atomic_torch_save(net.backbone_state_dict(), out)
    atomic_torch_save(net.state_dict(), cache / "ld_net.pt")
    info = {"wall_s": wall, "final_loss": final, "steps": args.ld_steps, "warmup_steps": warmup_steps,
            "images": int(pool.shape[0])}
    atomic_write_json(info, info_path)
    return out, info


def pretrain_cg(data: dict, args, cache: Path) -> tuple[Path, dict]:
    """Cluster-guided contrastive pretraining (autoencoder -> pseudo-classes -> guided NT-Xent + local)."""
    from monai_cluster.clustering import extract_features, hierarchical_pseudo_classes
    from monai_cluster.losses import ClusterGuidedContrastiveLoss, ContrastivePretrainLoss, LocalContrastiveLoss
    from monai_cluster.networks import ContrastivePretrainNet, FeatureAutoEncoder

    out = cache / "cg_basicunet.pt"
    info_path = cache / "cg_info.json"
    if out.is_file() and info_path.is_file():
        return out, json.loads(info_path.read_text())
    pool = torch.cat([data["drive_train"]["image"], data["chase"]["image"]])
    gen = torch.Generator().manual_seed(args.pretrain_seed)
    torch.manual_seed(args.pretrain_seed)
    t0 = time.time()
    # 1) autoencoder on crops
    ae = FeatureAutoEncoder(2, 3, channels=(16, 32, 64), strides=(2, 2, 2))
    ae_opt = torch.optim.Adam(ae.parameters(), lr=args.lr)

    def ae_step(i: int):
        (x,) = random_crops(pool, args.cg_batch, args.crop, gen)
        value = _optimise(ae_opt, F.mse_loss(ae(x), x))
        return value, {"mse": value}

    ae_wall, _ = _checkpointed_loop("cg-autoencoder", cache / "cg_ae_ckpt.pt", {"ae": ae}, ae_opt, args.ae_steps,
                                    ae_step)
    # 2) a fixed bank of crops, their features and pseudo-classes
    bank_gen = torch.Generator().manual_seed(args.pretrain_seed + 1)
    (bank,) = random_crops(pool, args.bank_per_image * pool.shape[0], args.crop, bank_gen)
    feats, _ = extract_features(ae, [{"image": b, "key": f"crop{i}"} for i, b in enumerate(bank)], progress=False)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    pseudo = torch.as_tensor(hierarchical_pseudo_classes(feats, tuple(args.cg_levels), seed=args.pretrain_seed))
    # 3) guided contrastive pretraining of the segmentation network
    net = ContrastivePretrainNet(2, 3, features=args.features, global_dim=64, dense_dim=32)
    loss_fn = ContrastivePretrainLoss(
        ClusterGuidedContrastiveLoss(0.1, level=len(args.cg_levels) - 1), LocalContrastiveLoss(0.1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)

    def step(i: int):
        idx = torch.randint(0, bank.shape[0], (args.cg_batch,), generator=gen)
        x = bank[idx]
        v0, v1 = jitter(x, gen), jitter(x, gen)
        loss = loss_fn(net(torch.cat([v0, v1])), {"pseudo_class": pseudo[idx], "partition": None})
        return _optimise(opt, loss), loss_fn.last_components

    net.train()
    _, final = _checkpointed_loop("cg", cache / "cg_ckpt.pt", {"net": net}, opt, args.cg_steps, step)
    atomic_torch_save(net.backbone_state_dict(), out)
    counts = np.bincount(pseudo[:, -1].numpy()).tolist()
    info = {"wall_s": time.time() - t0 + ae_wall, "final_loss": final, "steps": args.cg_steps,
            "ae_steps": args.ae_steps, "bank": int(bank.shape[0]), "fine_cluster_sizes": counts}
    atomic_write_json(info, info_path)
    return out, info


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


def unsupervised(data: dict, args, cache: Path) -> dict:
    from sklearn.cluster import MiniBatchKMeans

    from monai_cluster.networks import LocalDiscriminationNet

    tr, te, ch = data["drive_train"], data["drive_test"], data["chase"]
    splits = (("train", tr), ("test", te), ("chase", ch))
    gt = {s: d["label"][:, 0].numpy() > 0.5 for s, d in splits}
    fov = {s: d["fov"][:, 0].numpy() > 0.5 for s, d in splits}
    results = {}
    torch.manual_seed(args.pretrain_seed)
    untrained = LocalDiscriminationNet(2, 3, embed_dim=32, num_clusters=args.clusters, features=args.features)
    trained = LocalDiscriminationNet(2, 3, embed_dim=32, num_clusters=args.clusters, features=args.features)
    trained.load_state_dict(torch.load(cache / "ld_net.pt", map_location="cpu", weights_only=True))
    pixels = tr["image"].permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    rng = np.random.default_rng(0)
    km = MiniBatchKMeans(args.clusters, random_state=0, n_init=3).fit(pixels[rng.choice(len(pixels), 100_000)])
    makers = {
        "ld_pretrained": lambda x: _ld_maps(trained, x),
        "ld_untrained": lambda x: _ld_maps(untrained, x),
        "kmeans_rgb": lambda x: km.predict(x.permute(0, 2, 3, 1).reshape(-1, 3).numpy()).reshape(
            x.shape[0], *x.shape[2:]
        ),
    }
    for name, make in makers.items():
        maps = {s: make(d["image"]) for s, d in splits}
        choice = _choose_clusters(maps["train"], gt["train"], fov["train"], args.clusters)
        used = np.bincount(maps["test"][fov["test"]].ravel(), minlength=args.clusters)
        results[name] = {**choice, "clusters_used_test": int((used > 0).sum())}
        # clusters chosen on DRIVE train, scored on DRIVE test and on CHASE_DB1 (another camera and population)
        for split, prefix in (("test", "test"), ("chase", "chase")):
            for kind, clusters in (("best", [choice["best"]]), ("union", choice["union"])):
                mean, sd = _score(maps[split], gt[split], fov[split], clusters)
                results[name][f"{prefix}_dice_{kind}"], results[name][f"{prefix}_dice_{kind}_sd"] = mean, sd
        logger.info("unsupervised %s: %s", name, results[name])
        if name == "ld_pretrained":
            _save_cluster_maps(te["image"][:3], maps["test"][:3], choice["union"], cache / "cluster_maps", args)
    return results


def _save_cluster_maps(images, maps, union, folder: Path, args) -> None:
    from monai_cluster.data import write_png

    folder.mkdir(parents=True, exist_ok=True)
    palette = (np.random.default_rng(0).uniform(0, 255, (args.clusters, 3))).astype(np.uint8)
    for i, (img, m) in enumerate(zip(images, maps)):
        rgb = (img.permute(1, 2, 0).numpy().clip(0, 1) * 255).astype(np.uint8)
        vessel = np.isin(m, union)[..., None] * np.array([255, 255, 255], np.uint8)
        write_png(np.concatenate([rgb, palette[m], vessel], axis=1), folder / f"drive_test_{i:02d}.png")


# -------------------------------------------------------------------------------------------- transfer


@torch.no_grad()
def _test_dice(net, data: dict) -> float:
    net.eval()
    scores = []
    for i in range(0, len(data["image"]), 4):
        pred = net(data["image"][i : i + 4]).argmax(1).numpy().astype(bool)
        gt = data["label"][i : i + 4, 0].numpy() > 0.5
        fov = data["fov"][i : i + 4, 0].numpy() > 0.5
        scores += [_dice(p[f], g[f]) for p, g, f in zip(pred, gt, fov)]
    net.train()
    return float(np.mean(scores))


def finetune(data: dict, args, seed: int, init: str, weights: Path | None) -> dict:
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    from monai_cluster.networks import load_pretrained

    tr = data["drive_train"]
    labeled = np.random.default_rng(seed).choice(len(tr["image"]), args.labeled, replace=False).tolist()
    torch.manual_seed(1000 + seed)
    net = BasicUNet(2, 3, 2, args.features)
    # "<method>_encoder": only the encoder (conv_0, down_1..4) comes from the pretraining, the decoder stays random
    exclude = ("final_conv",) + (("upcat_1", "upcat_2", "upcat_3", "upcat_4") if init.endswith("_encoder") else ())
    report = load_pretrained(net, weights, exclude=exclude) if weights is not None else None
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.ft_steps, eta_min=0.0)
    gen = torch.Generator().manual_seed(2000 + seed)
    imgs, labels = tr["image"][labeled], tr["label"][labeled]
    evals, t0 = {}, time.time()
    at = sorted({int(round(args.ft_steps * f)) for f in (0.8, 0.9, 1.0)})
    net.train()
    for step in range(args.ft_steps):
        x, y = random_crops(imgs, args.ft_batch, args.ft_crop, gen, extra=[labels])
        final_loss = _optimise(opt, loss_fn(net(x), y))
        sched.step()
        if step + 1 in at:
            evals[step + 1] = _test_dice(net, data["drive_test"])
    return {
        "seed": seed,
        "init": init,
        "labeled": [tr["keys"][i] for i in labeled],
        "dice_evals": evals,
        "dice": float(np.mean(list(evals.values()))),
        "final_loss": final_loss,
        "loaded_tensors": None if report is None else report.get("matched", report.get("loaded")),
        "wall_s": time.time() - t0,
    }


# -------------------------------------------------------------------------------------------------- main


def _settings_hash(args) -> str:
    keys = ("image_size", "crop", "ft_crop", "features", "clusters", "grid", "ld_steps", "ld_batch", "ae_steps",
            "cg_steps", "cg_batch", "bank_per_image", "cg_levels", "ft_steps", "ft_batch", "labeled", "lr",
            "pretrain_seed", "ld_warmup", "assignment_activation")
    blob = json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _table(runs: list[dict], inits: list[str]) -> str:
    by = {(r["init"], r["seed"]): r["dice"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    lines = ["| init | Dice (mean +- sd) | paired diff. to random (mean +- sd) | per seed |", "|---|---|---|---|"]
    for init in inits:
        vals = [by[(init, s)] for s in seeds if (init, s) in by]
        if not vals:
            continue
        diffs = [by[(init, s)] - by[("random", s)] for s in seeds if (init, s) in by and ("random", s) in by]
        diff = f"{np.mean(diffs):+.4f} +- {np.std(diffs, ddof=1) if len(diffs) > 1 else 0:.4f}" if init != "random" \
            else "-"
        lines.append(f"| {init} | {np.mean(vals):.4f} +- {np.std(vals, ddof=1) if len(vals) > 1 else 0:.4f} | "
                     f"{diff} | {', '.join(f'{v:.4f}' for v in vals)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, default=None, help="folder with drive/ and chase_db1/")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--crop", type=int, default=64, help="pretraining crop size")
    p.add_argument("--ft-crop", type=int, default=96)
    p.add_argument("--features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16])
    p.add_argument("--clusters", type=int, default=16)
    p.add_argument("--grid", type=int, default=8, help="patch grid of patch discrimination")
    p.add_argument("--ld-steps", type=int, default=200)
    p.add_argument("--ld-batch", type=int, default=8)
    p.add_argument("--ld-warmup", type=float, default=0.25,
                   help="fraction of --ld-steps trained on patch discrimination + mixup only (the bundle's warm-up)")
    p.add_argument("--assignment-activation", default="softmax", choices=["softmax", "sigmoid"])
    p.add_argument("--ae-steps", type=int, default=100)
    p.add_argument("--cg-steps", type=int, default=150)
    p.add_argument("--cg-batch", type=int, default=16)
    p.add_argument("--bank-per-image", type=int, default=8)
    p.add_argument("--cg-levels", type=int, nargs="+", default=[4, 16])
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
    p.add_argument("--cache-dir", type=Path, default=None, help="default: results/ld_retina_<settings hash>")
    args = p.parse_args(argv)
    if not 0 <= args.ld_warmup < 1:
        p.error(f"--ld-warmup must be a fraction in [0, 1), got {args.ld_warmup}")
    if args.quick:
        args.image_size, args.crop, args.ft_crop = 128, 32, 64
        args.ld_steps, args.ae_steps, args.cg_steps, args.ft_steps = 10, 5, 10, 10
        args.ld_batch, args.cg_batch, args.bank_per_image, args.cg_levels = 4, 8, 2, [2, 4]
        args.seeds = args.seeds[:1]
        if args.out == RESULTS / "local_discrimination_retina.json":
            args.out = RESULTS / "local_discrimination_retina_quick.json"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    root = args.data_root or get_data_root() / "retina"
    if not (root / "drive").is_dir() or not (root / "chase_db1").is_dir():
        raise SystemExit(f"retina data not found under {root} (expects drive/ and chase_db1/); set --data-root.")
    tag = _settings_hash(args)
    cache = args.cache_dir or RESULTS / f"ld_retina_{tag}"
    cache.mkdir(parents=True, exist_ok=True)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if record.get("settings_hash") != tag:
        record = {"settings_hash": tag, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                       for k, v in vars(args).items()}, "finetune": []}
    record["machine"] = f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, " \
                        f"torch {torch.__version__}, {args.threads} thread(s)"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    data = load_retina(root, args.image_size)
    logger.info("loaded DRIVE train %d, test %d, CHASE_DB1 %d images at %d px", len(data["drive_train"]["image"]),
                len(data["drive_test"]["image"]), len(data["chase"]["image"]), args.image_size)
    for other in args.import_results:
        extra = json.loads(other.read_text())
        if extra.get("settings_hash") != tag:
            raise SystemExit(f"{other} was run with other settings ({extra.get('settings_hash')} != {tag}).")
        have = {(r["init"], r["seed"]) for r in record["finetune"]}
        record["finetune"] += [r for r in extra["finetune"] if (r["init"], r["seed"]) not in have]
        for key in ("pretrain_cg", "pretrain_ld"):
            if key in extra and key not in record:
                record[key] = extra[key]
    te = data["drive_test"]
    for key, split in (("reference_all_fov_dice", te), ("reference_all_fov_dice_chase", data["chase"])):
        record[key] = float(np.mean([
            _dice(f[f], g[f]) for g, f in zip(split["label"][:, 0].numpy() > 0.5, split["fov"][:, 0].numpy() > 0.5)
        ]))  # "every pixel of the field of view is vessel": the floor any vessel cluster must beat
    weights = {"random": None}
    skip_unsupervised = args.no_unsupervised or "unsupervised" in record
    if "ld" in args.inits or "ld_encoder" in args.inits or not skip_unsupervised:
        weights["ld"], record["pretrain_ld"] = pretrain_ld(data, args, cache)
        weights["ld_encoder"] = weights["ld"]
        atomic_write_json(record, args.out)
    if not skip_unsupervised:
        record["unsupervised"] = unsupervised(data, args, cache)
        atomic_write_json(record, args.out)
    done = {(r["init"], r["seed"]) for r in record["finetune"]}
    # random and ld first (the comparison), the cluster-guided pretraining and its fine-tunes last
    for group in (["random", "ld", "ld_encoder"], ["cg", "cg_encoder"]):
        inits = [i for i in args.inits if i in group]
        if "cg" in inits or "cg_encoder" in inits:
            weights["cg"], record["pretrain_cg"] = pretrain_cg(data, args, cache)
            weights["cg_encoder"] = weights["cg"]
            atomic_write_json(record, args.out)
        for seed in args.seeds:
            for init in inits:
                if (init, seed) in done:
                    continue
                result = finetune(data, args, seed, init, weights[init])
                logger.info("finetune seed %d %s: Dice %.4f (evals %s, %.0f s)", seed, init, result["dice"],
                            result["dice_evals"], result["wall_s"])
                record["finetune"].append(result)
                atomic_write_json(record, args.out)
    record["wall_s_this_run"] = time.time() - t_start
    atomic_write_json(record, args.out)
    print("\nUnsupervised vessel clusters (Dice within the FOV; clusters chosen on DRIVE train)")
    print("| clusters from | DRIVE test: best single | DRIVE test: greedy union | CHASE_DB1: best single | "
          "CHASE_DB1: greedy union | clusters in union |")
    print("|---|---|---|---|---|---|")
    for name, r in record.get("unsupervised", {}).items():
        cells = [f"{r[f'{p}_dice_{k}']:.4f} +- {r[f'{p}_dice_{k}_sd']:.4f}" if f"{p}_dice_{k}" in r else "-"
                 for p in ("test", "chase") for k in ("best", "union")]
        print(f"| {name} | {' | '.join(cells)} | {len(r['union'])} |")
    print(f"| (every FOV pixel = vessel) | {record['reference_all_fov_dice']:.4f} | | "
          f"{record['reference_all_fov_dice_chase']:.4f} | | |")
    print(f"\nTransfer: {args.labeled} labeled DRIVE images, {args.ft_steps} steps, DRIVE test Dice (FOV)")
    print(_table(record["finetune"], args.inits))
    print(f"\nresults: {args.out}; cache: {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
