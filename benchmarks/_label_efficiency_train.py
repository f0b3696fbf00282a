"""Training pieces of the label-efficiency benchmark: batched views, pretraining stages and paired fine-tuning.

All loops run on in-memory tensors (see ``_label_efficiency_data``) with augmentations applied to whole batches,
because the benchmark is sized for a couple of shared CPU cores. The methods come from the library:

- autoencoder features -> hierarchical pseudo-classes: ``FeatureAutoEncoder``, ``extract_features``,
  ``hierarchical_pseudo_classes``, ``write_pseudo_class_table``;
- pretraining: ``ContrastivePretrainNet`` (wrapping MONAI ``BasicUNet``), ``MultiViewPrepareBatch``,
  ``ContrastivePretrainLoss`` over ``ClusterGuidedContrastiveLoss`` / ``GlobalContrastiveLoss`` /
  ``LocalContrastiveLoss``, partitions from ``SlicePartition``, dense maps aligned with ``undo_flip_rot90``;
- fine-tuning: a fresh ``BasicUNet`` initialised from the pretraining checkpoint with ``load_pretrained``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.metrics import compute_hausdorff_distance
from monai.networks.nets import BasicUNet

from monai_cluster.clustering import (
    PseudoClassTable,
    extract_features,
    hierarchical_pseudo_classes,
    write_pseudo_class_table,
)
from monai_cluster.engines import MultiViewPrepareBatch
from monai_cluster.losses import (
    ClusterGuidedContrastiveLoss,
    ContrastivePretrainLoss,
    GlobalContrastiveLoss,
    LocalContrastiveLoss,
)
from monai_cluster.networks import ContrastivePretrainNet, FeatureAutoEncoder, load_pretrained
from monai_cluster.transforms import SlicePartition
from monai_cluster.transforms.flip_rotate.array import undo_flip_rot90
from monai_cluster.utils.io import atomic_torch_save

__all__ = [
    "METHODS",
    "PRETRAINED_METHODS",
    "augment_views",
    "dice_hd95",
    "finetune",
    "pretrain",
    "pretrain_net",
    "pretrained_exclude",
    "pseudo_classes",
]

logger = logging.getLogger("label_efficiency")

METHODS = ("random", "simclr", "global_local", "cluster_guided")
PRETRAINED_METHODS = METHODS[1:]
DECODER_BLOCKS = ("upcat_4", "upcat_3", "upcat_2", "upcat_1")


# ----------------------------------------------------------------------------------------------- augmentation
def flip_rot90(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips of both axes then 0-3 quarter turns per sample; returns the views and ``(B, 5)`` records.

    A record is ``[flip_0, flip_1, k, 0, 1]`` as :func:`undo_flip_rot90` reads it (flips first, then rotation).
    """
    b = x.shape[0]
    draws = torch.randint(0, 2, (b, 2), generator=gen)
    ks = torch.randint(0, 4, (b,), generator=gen)
    out = torch.empty_like(x)
    for i in range(b):
        dims = [d + 1 for d in range(2) if draws[i, d]]
        xi = torch.flip(x[i], dims) if dims else x[i]
        out[i] = torch.rot90(xi, int(ks[i]), dims=(1, 2))
    plane = torch.tensor([0, 1]).expand(b, 2)
    return out, torch.cat([draws, ks[:, None], plane], dim=1).long()


def random_resized_crop(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float]) -> torch.Tensor:
    """One random axis-aligned crop per sample (area fraction in ``scale``, aspect 3/4..4/3), resized back."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=gen)
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = log_ratio.exp()
    sw = (area * ratio).sqrt().clamp(max=1.0)
    sh = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sw)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sh)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, cx, sh, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def jitter_intensity(x: torch.Tensor, gen: torch.Generator, strength: float = 0.4) -> torch.Tensor:
    """Per-sample brightness, contrast, (RGB) saturation, gamma and Gaussian noise; values stay in [0, 1]."""
    b, c = x.shape[:2]
    shape = (b, 1, 1, 1)

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(shape).uniform_(lo, hi, generator=gen)

    out = x * u(1 - strength, 1 + strength)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * u(1 - strength, 1 + strength) + mean
    if c == 3:
        grey = out.mean(dim=1, keepdim=True)
        out = (out - grey) * u(1 - strength, 1 + strength) + grey
    out = out.clamp(0, 1) ** u(0.7, 1.4)
    out = out + torch.randn(out.shape, generator=gen) * u(0.0, 0.04)
    return out.clamp(0, 1)


def augment_views(
    x: torch.Tensor, gen: torch.Generator, crop_scale: tuple[float, float] = (0.35, 1.0)
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Two views of each sample: one shared random crop, then per view an intensity jitter and a flip/rot90.

    The shared crop keeps voxel correspondence between the views up to the recorded flip/rot90, which
    :func:`undo_flip_rot90` removes from the dense maps before the local loss.

    Returns:
        ``({"image": (B, C, S, S), "image_1": ...}, [record_0 (B, 5), record_1 (B, 5)])``.
    """
    base = random_resized_crop(x, gen, crop_scale)
    v0, r0 = flip_rot90(jitter_intensity(base, gen), gen)
    v1, r1 = flip_rot90(jitter_intensity(base, gen), gen)
    return {"image": v0, "image_1": v1}, [r0, r1]


# ----------------------------------------------------------------------------------------------- pseudo-classes
def pseudo_classes(
    pool: np.ndarray, keys: list[str], num_clusters: tuple[int, ...], steps: int, batch: int, seed: int, out: Path
) -> tuple[np.ndarray, dict]:
    """Train a ``FeatureAutoEncoder`` on ``pool`` ``(N, C, S, S)``, cluster its features, write the table.

    Returns:
        ``((N, L) int64 pseudo-classes, info)``; the table goes to ``out`` (a CSV written atomically).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ae = FeatureAutoEncoder(2, pool.shape[1], channels=(16, 32, 64, 128), strides=(2, 2, 2, 2), feature_pool="avgmax")
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    x_all = torch.from_numpy(pool)
    t0, losses = time.time(), []
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        x, _ = flip_rot90(x_all[idx], gen)
        loss = F.mse_loss(ae(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    feats, _ = extract_features(ae, [{"image": x_all[i], "key": k} for i, k in enumerate(keys)], progress=False)
    labels = hierarchical_pseudo_classes(feats, tuple(num_clusters), seed=seed)
    model = f"FeatureAutoEncoder(16,32,64,128) avgmax, {steps} steps"
    table = PseudoClassTable(keys, labels, tuple(num_clusters), model)
    write_pseudo_class_table(table, out)
    sizes = [np.bincount(labels[:, lv]).tolist() for lv in range(labels.shape[1])]
    info = {
        "ae_steps": steps,
        "ae_mse_first_last": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
        "num_clusters": list(num_clusters),
        "cluster_sizes": sizes,
        "seconds": round(time.time() - t0, 1),
        "table": str(out),
    }
    return labels, info


# ----------------------------------------------------------------------------------------------- pretraining
def _pretrain_loss(method: str, args) -> ContrastivePretrainLoss:
    local = LocalContrastiveLoss(args.temperature, num_locations=args.local_locations, region_size=args.local_region)
    if method == "simclr":
        return ContrastivePretrainLoss(ClusterGuidedContrastiveLoss(args.temperature), None)
    if method == "global_local":
        return ContrastivePretrainLoss(GlobalContrastiveLoss(args.temperature), local, 1.0, args.local_weight)
    if method == "cluster_guided":
        return ContrastivePretrainLoss(
            ClusterGuidedContrastiveLoss(args.temperature, level=args.mask_level), local, 1.0, args.local_weight
        )
    raise ValueError(f"method must be one of {PRETRAINED_METHODS} for pretraining, got {method!r}.")


def pretrain_net(
    in_channels: int, num_classes: int, features: tuple[int, ...], decoder_layer: str = "upcat_3"
) -> ContrastivePretrainNet:
    """The pretraining wrapper around the same ``BasicUNet`` the fine-tuning trains.

    The dense head sits on ``decoder_layer`` (default ``upcat_3``, a quarter of the input resolution: like
    Chaitanya et al., the local loss trains a partial decoder, and the forward pass stops there).
    """
    backbone = BasicUNet(2, in_channels, num_classes, features=features)
    return ContrastivePretrainNet(
        2, in_channels, backbone=backbone, global_dim=128, dense_dim=64, decoder_layer=decoder_layer
    )


def pretrained_exclude(method: str, decoder_layer: str) -> tuple[str, ...]:
    """``BasicUNet`` blocks that fine-tuning does not take from ``method``'s checkpoint (they were not trained).

    The head is never loaded; encoder-only methods leave the whole decoder to the seed's initialisation, local
    methods load the decoder blocks up to ``decoder_layer``.
    """
    if method == "simclr":
        return ("final_conv", *DECODER_BLOCKS)
    if decoder_layer not in DECODER_BLOCKS:
        raise ValueError(f"decoder_layer must be one of {DECODER_BLOCKS}, got {decoder_layer!r}.")
    return ("final_conv", *DECODER_BLOCKS[DECODER_BLOCKS.index(decoder_layer) + 1 :])


def _positive_accuracy(z: torch.Tensor) -> float:
    """Fraction of the ``2B`` views whose nearest other view (cosine) is their own positive."""
    z = F.normalize(z.detach(), dim=1)
    n = z.shape[0] // 2
    sim = z @ z.t()
    sim.fill_diagonal_(-2.0)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return float((sim.argmax(dim=1) == target).float().mean())


def pretrain(method: str, data, labels: np.ndarray | None, args, ckpt_dir: Path, snapshots: list[int]) -> dict:
    """Contrastive pretraining of ``method``; saves the backbone's ``state_dict`` at each step in ``snapshots``.

    A resumable state (network, optimiser, log) is saved every ``args.save_every`` steps to
    ``ckpt_dir/<method>_state.pt``; the snapshots are ``ckpt_dir/<method>_<steps>.pt`` with the ``BasicUNet`` keys.

    Returns:
        the log: steps, seconds, loss components and in-batch positive accuracy per logged window.
    """
    total = max(snapshots)
    state_path = ckpt_dir / f"{method}_state.pt"
    torch.manual_seed(args.pretrain_seed)
    net = pretrain_net(data.pretrain.shape[1], data.num_classes, tuple(args.features), args.decoder_layer)
    loss_fn = _pretrain_loss(method, args)
    opt = torch.optim.AdamW(net.parameters(), lr=args.pretrain_lr, weight_decay=1e-4)
    # 50 warm-up steps, then a cosine from 1 to 0.1 of the learning rate
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.55 + 0.45 * math.cos(math.pi * s / total))
    )
    gen = torch.Generator().manual_seed(args.pretrain_seed)
    log = {"method": method, "windows": [], "seconds": 0.0, "step": 0}
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        log = state["log"]
        logger.info("%s: resumed pretraining at step %d", method, log["step"])
    prepare = MultiViewPrepareBatch(num_views=2)
    partition = SlicePartition(args.partitions)
    x_all = torch.from_numpy(data.pretrain)
    use_local = loss_fn.use_local
    window: dict[str, list[float]] = {"total": [], "global": [], "local": [], "acc": []}
    t0 = time.time() - log["seconds"]
    net.train()
    for step in range(log["step"], total):
        idx = torch.randperm(len(x_all), generator=gen)[: args.pretrain_batch]
        batch, records = augment_views(x_all[idx], gen)
        if labels is not None and method == "cluster_guided":
            batch["pseudo_class"] = torch.from_numpy(labels[idx.numpy()])
        if data.pretrain_slice is not None and method == "global_local":
            sl, ns = data.pretrain_slice[idx.numpy()], data.pretrain_num_slices[idx.numpy()]
            batch["partition"] = torch.tensor([partition(int(a), int(b)) for a, b in zip(sl, ns)])
            batch["volume_id"] = torch.from_numpy(data.pretrain_volume[idx.numpy()])
        inputs, targets = prepare(batch)
        preds = net(inputs, encoder_only=not use_local)
        if use_local:
            dense = preds["dense"].split(len(idx))
            preds = dict(preds, dense=torch.cat([undo_flip_rot90(d, r) for d, r in zip(dense, records)]))
        loss = loss_fn(preds, targets)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{method}: non-finite pretraining loss at step {step}; last good state in {state_path}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        for k, v in loss_fn.last_components.items():
            window[k].append(v)
        window["acc"].append(_positive_accuracy(preds["global"]))
        done = step + 1
        if done % args.log_every == 0 or done == total:
            entry = {"step": done, "seconds": round(time.time() - t0, 1)}
            entry.update({k: round(float(np.mean(v)), 4) for k, v in window.items() if v})
            log["windows"].append(entry)
            logger.info("%s pretrain %s", method, entry)
            window = {k: [] for k in window}
        if done in snapshots:
            atomic_torch_save({"model": net.backbone_state_dict(), "step": done}, ckpt_dir / f"{method}_{done}.pt")
        if done % args.save_every == 0 or done == total:
            log["step"], log["seconds"] = done, round(time.time() - t0, 1)
            atomic_torch_save(
                {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(),
                 "log": log},
                state_path,
            )
    log["step"], log["seconds"] = total, round(time.time() - t0, 1)
    return log


# ----------------------------------------------------------------------------------------------- fine-tuning
def dice_hd95(
    pred: np.ndarray, truth: np.ndarray, volume: np.ndarray, num_classes: int, hd: bool
) -> tuple[float, float]:
    """Mean over volumes of the mean foreground-class Dice (and HD95 in pixels) of ``(N, S, S)`` label maps.

    Slices of one volume (same ``volume`` id) are stacked into a 3D map. A class absent from both prediction and
    truth is skipped; HD95 of an empty prediction of a present class is the map's diagonal.
    """
    dices, hds = [], []
    for v in np.unique(volume):
        p, t = pred[volume == v], truth[volume == v]
        per, per_hd = [], []
        for c in range(1, num_classes):
            pc, tc = p == c, t == c
            denom = pc.sum() + tc.sum()
            if denom == 0:
                continue
            per.append(2.0 * (pc & tc).sum() / denom)
            if hd and tc.any():
                if not pc.any():
                    per_hd.append(float(np.sqrt(sum(s * s for s in p.shape))))
                    continue
                a = torch.from_numpy(np.moveaxis(pc, 0, -1)[None, None].astype(np.float32))
                b = torch.from_numpy(np.moveaxis(tc, 0, -1)[None, None].astype(np.float32))
                if p.shape[0] == 1:
                    a, b = a[..., 0], b[..., 0]
                per_hd.append(float(compute_hausdorff_distance(a, b, include_background=True, percentile=95)))
        if per:
            dices.append(np.mean(per))
        if per_hd:
            hds.append(np.mean(per_hd))
    return float(np.mean(dices)), float(np.mean(hds)) if hds else float("nan")


def _predict(net: torch.nn.Module, x: torch.Tensor, chunk: int = 32) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        out = torch.cat([net(x[i : i + chunk]).argmax(1) for i in range(0, len(x), chunk)])
    net.train()
    return out.numpy()


def finetune(data, init: str | None, exclude: tuple[str, ...], labeled: np.ndarray, seed: int, args) -> dict:
    """Train a ``BasicUNet`` on the labeled samples ``labeled`` and evaluate on the held-out split.

    The seed fixes the network's initialisation (before any pretrained tensors are copied in), the batch order
    and the augmentation, so every method sees the same decoder/head initialisation and the same batches.

    Returns:
        ``{"dice": mean of the last evaluations, "hd95": ..., "dice_evals": [...], "loaded": n, "seconds": t}``.
    """
    torch.manual_seed(10_000 + seed)
    net = BasicUNet(2, data.train_x.shape[1], data.num_classes, features=tuple(args.features))
    loaded = 0
    if init is not None:
        report = load_pretrained(net, init, exclude=exclude, min_matched=0.9)
        loaded = report["matched"]
    gen = torch.Generator().manual_seed(20_000 + seed)
    x_all, y_all = torch.from_numpy(data.train_x[labeled]), torch.from_numpy(data.train_y[labeled])
    test_x = torch.from_numpy(data.test_x)
    steps, last = args.finetune_steps, args.eval_last
    eval_at = {steps - i * args.eval_every for i in range(last)}
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=args.finetune_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    epochs = steps * args.finetune_batch // len(x_all) + 2
    order = torch.cat([torch.randperm(len(x_all), generator=gen) for _ in range(epochs)])
    t0, evals, hds = time.time(), [], []
    net.train()
    for step in range(steps):
        idx = order[step * args.finetune_batch : (step + 1) * args.finetune_batch]
        xy = torch.cat([x_all[idx], y_all[idx, None].float()], dim=1)
        xy, _ = flip_rot90(xy, gen)
        x, y = xy[:, :-1], xy[:, -1:].round().long()
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step + 1 in eval_at:
            dice, hd = dice_hd95(_predict(net, test_x), data.test_y, data.test_volume, data.num_classes, args.hd95)
            evals.append(round(dice, 4))
            hds.append(hd)
    return {
        "dice": float(np.mean(evals)),
        "hd95": float(np.mean(hds)) if args.hd95 else None,
        "dice_evals": evals,
        "final_loss": round(float(loss.detach()), 4),
        "loaded_tensors": loaded,
        "seconds": round(time.time() - t0, 1),
    }
