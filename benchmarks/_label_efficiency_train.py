"""Pretraining half of the label-efficiency benchmark: the bundle's views, losses and schedules on in-memory data.

The benchmark measures what users run, so every piece of pretraining comes from the package, as the
``cluster_contrastive_pretrain`` and ``local_discrimination_pretrain`` bundles wire it:

- views: :func:`monai_cluster.workflows.pretrain_augmentation` (``"geometric"``: each view its own recorded random
  resized crop, flips and intensity augmentation; ``"intensity"``: shared flips/rotation/zoom, intensity per view),
  batched by MONAI's collate and :class:`~monai_cluster.engines.MultiViewPrepareBatch`;
- pseudo-classes: a ``FeatureAutoEncoder`` trained with :func:`~monai_cluster.workflows.autoencoder_augmentation`,
  :func:`~monai_cluster.clustering.extract_features`, :func:`~monai_cluster.clustering.hierarchical_pseudo_classes`,
  the table written and read back by :func:`~monai_cluster.workflows.make_pseudo_class_transform`;
- losses: :class:`~monai_cluster.losses.ContrastivePretrainLoss` over ``ClusterGuidedContrastiveLoss`` /
  ``GlobalContrastiveLoss`` (slice partitions of :class:`~monai_cluster.transforms.SlicePartition`) and
  ``LocalContrastiveLoss`` (matched through the views' geometry in the joint schedule);
- ``cluster_guided_gd``: the cluster guidance on Chaitanya's G_D global loss (``GlobalContrastiveLoss`` with the
  pseudo-classes: same-class slices leave the negatives, same-partition slices of other volumes stay positives),
  plus the local loss, joint schedule;
- schedules: ``global_local`` / ``cluster_guided`` run the bundle's ``schedule: joint`` (both losses from step 0
  on geometric views), ``global_local_staged`` / ``cluster_guided_staged`` its ``schedule: staged`` (Chaitanya
  et al.: the global loss on the encoder, then ``--local-steps`` of the local loss on intensity-only views with the
  encoder frozen), as :func:`~monai_cluster.workflows.run_pretrain` runs them;
- local discrimination: :class:`~monai_cluster.networks.LocalDiscriminationNet`, its loss and views with the
  bundle's settings, transferred into the same ``BasicUNet``.

Only the loop is the benchmark's own (steps instead of epochs, a per-step warm-up + cosine learning rate, in-memory
tensors instead of files), so that pretraining lengths can be snapshotted and every fine-tuning seed reuses them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import list_data_collate
from monai.networks.nets import BasicUNet
from monai.transforms import RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd

from monai_cluster.clustering import (
    PseudoClassTable,
    extract_features,
    hierarchical_pseudo_classes,
    write_pseudo_class_table,
)
from monai_cluster.engines import MultiViewPrepareBatch
from monai_cluster.engines.local_discrimination import LocalDiscriminationPrepareBatch
from monai_cluster.losses import (
    ClusterGuidedContrastiveLoss,
    ContrastivePretrainLoss,
    GlobalContrastiveLoss,
    LocalContrastiveLoss,
    LocalDiscriminationLoss,
)
from monai_cluster.networks import ContrastivePretrainNet, FeatureAutoEncoder, LocalDiscriminationNet
from monai_cluster.transforms import LocalDiscriminationViewsd, SlicePartition
from monai_cluster.utils.io import atomic_torch_save, atomic_write_json
from monai_cluster.workflows import autoencoder_augmentation, make_pseudo_class_transform, pretrain_augmentation

__all__ = [
    "DECODER_BLOCKS",
    "METHODS",
    "PRETRAINED_METHODS",
    "add_pretrain_args",
    "PRETRAIN_ARG_KEYS",
    "autocast",
    "run_device",
    "base_method",
    "needs_pseudo_classes",
    "pretrain",
    "pretrain_net",
    "pretrained_exclude",
    "pseudo_classes",
]

logger = logging.getLogger("label_efficiency")

METHODS = (
    "random",
    "simclr",
    "global_local",
    "cluster_guided",
    "global_local_staged",
    "cluster_guided_staged",
    "local_discrimination",
    "cluster_guided_gd",
)
PRETRAINED_METHODS = METHODS[1:]
DECODER_BLOCKS = ("upcat_4", "upcat_3", "upcat_2", "upcat_1")
PRETRAIN_ARG_KEYS = ("local_steps", "local_lr", "crop_scale", "ld_batch", "ld_steps_factor")
"""Arguments of :func:`add_pretrain_args` that change pretrained weights (part of the checkpoint hash); ``--device``,
``--amp`` and ``--workers`` change only how fast they are computed (and the exact random draws with workers)."""


def base_method(method: str) -> str:
    """``cluster_guided_staged`` -> ``cluster_guided``: the losses of a method, whatever its schedule."""
    return method.removesuffix("_staged")


GUIDED = ("cluster_guided", "cluster_guided_gd")
"""Losses that read the pseudo-class table: SimCLR with same-class negatives removed, and the same masking on
Chaitanya's G_D global loss (slices of one partition from other volumes are positives)."""
PARTITIONED = ("global_local", "cluster_guided_gd")
"""Losses that read slice partitions and volumes (Chaitanya's G_D)."""


def needs_pseudo_classes(methods) -> bool:
    """Whether any of ``methods`` reads the pseudo-class table (the cluster-guided ones)."""
    return any(base_method(m) in GUIDED for m in methods)


def add_pretrain_args(parser) -> None:
    """Add the pretraining options of this module (local stage of the staged methods, crops, local discrimination)."""
    parser.add_argument("--local-steps", type=int, default=1000, help="staged schedule: steps of the local stage")
    parser.add_argument("--local-lr", type=float, default=1e-3, help="staged schedule: learning rate of stage 2")
    parser.add_argument("--crop-scale", type=float, nargs=2, default=[0.35, 1.0],
                        help="area fraction range of each geometric view's random resized crop")
    parser.add_argument("--ld-batch", type=int, default=16, help="local discrimination: images per step")
    parser.add_argument("--ld-steps-factor", type=float, default=1.0,
                        help="local discrimination: its steps per pretraining step of the other methods")
    parser.add_argument("--device", default="cpu", help="torch device of pretraining and fine-tuning, e.g. cuda")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast for the networks on CUDA")
    parser.add_argument("--workers", type=int, default=0,
                        help="data-loader processes for the view augmentation (0: in the training process, the only "
                             "setting whose resume is exact)")


def run_device(args) -> torch.device:
    """The ``--device`` of ``args`` as a ``torch.device`` (``cpu`` when absent); a clear error without CUDA."""
    device = torch.device(getattr(args, "device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was asked for, but torch.cuda.is_available() is False.")
    return device


def autocast(args, device: torch.device):
    """``torch.autocast`` in bfloat16 when ``--amp`` is set and the device is CUDA, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(getattr(args, "amp", False))
                          and device.type == "cuda")


def _float(preds: dict) -> dict:
    """Network outputs in float32, so the contrastive losses never run in reduced precision."""
    return {k: v.float() if torch.is_tensor(v) else v for k, v in preds.items()}


def _cpu_state(module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------------------- pseudo-classes
def pseudo_classes(
    pool: np.ndarray, keys: list[str], num_clusters: tuple[int, ...], steps: int, batch: int, seed: int, out: Path
) -> tuple[np.ndarray, dict]:
    """Train a ``FeatureAutoEncoder`` on ``pool`` ``(N, C, S, S)``, cluster its features, write the table.

    The autoencoder sees the bundle's augmentation (random flips and 90-degree rotations, per sample).

    Returns:
        ``((N, L) int64 pseudo-classes, info)``; the table goes to ``out`` (a CSV written atomically).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ae = FeatureAutoEncoder(2, pool.shape[1], channels=(16, 32, 64, 128), strides=(2, 2, 2, 2), feature_pool="avgmax")
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    augment = autoencoder_augmentation(2)
    augment.set_random_state(seed)
    x_all = torch.from_numpy(pool)
    t0, losses = time.time(), []
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        x = torch.stack([torch.as_tensor(augment({"image": x_all[i]})["image"]) for i in idx.tolist()])
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


# ----------------------------------------------------------------------------------------------- networks
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
    contrastive methods load the decoder blocks up to ``decoder_layer``, local discrimination the whole decoder.
    """
    method = base_method(method)
    if method == "simclr":
        return ("final_conv", *DECODER_BLOCKS)
    if method == "local_discrimination":
        return ("final_conv",)
    if decoder_layer not in DECODER_BLOCKS:
        raise ValueError(f"decoder_layer must be one of {DECODER_BLOCKS}, got {decoder_layer!r}.")
    return ("final_conv", *DECODER_BLOCKS[DECODER_BLOCKS.index(decoder_layer) + 1 :])


def _global_loss(method: str, args):
    if method == "simclr":
        return ClusterGuidedContrastiveLoss(args.temperature)
    if method == "global_local":
        return GlobalContrastiveLoss(args.temperature)
    if method == "cluster_guided":
        return ClusterGuidedContrastiveLoss(args.temperature, level=args.mask_level)
    if method == "cluster_guided_gd":
        return GlobalContrastiveLoss(args.temperature, level=args.mask_level)
    raise ValueError(f"method must be one of {PRETRAINED_METHODS}, got {method!r}.")


def _local_loss(args) -> LocalContrastiveLoss:
    return LocalContrastiveLoss(args.temperature, num_locations=args.local_locations, region_size=args.local_region)


def _positive_accuracy(z: torch.Tensor) -> float:
    """Fraction of the ``2B`` views whose nearest other view (cosine) is their own positive."""
    z = F.normalize(z.detach(), dim=1)
    n = z.shape[0] // 2
    sim = z @ z.t()
    sim.fill_diagonal_(-2.0)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return float((sim.argmax(dim=1) == target).float().mean())


def _lr_lambda(total: int, warmup: int = 50) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to 0.1 of the learning rate at ``total``."""
    return lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(s, total) / total))


# ----------------------------------------------------------------------------------------------- batches
class _ViewBatches:
    """Batches of two views of in-memory samples through the bundle's augmentation and batch preparation."""

    def __init__(self, data, method: str | None, views: str, args, table: Path | None, seed: int) -> None:
        x = torch.from_numpy(data.pretrain)
        self.items = [{"image": x[i], "key": k} for i, k in enumerate(data.pretrain_keys)]
        if data.pretrain_slice is not None and method in PARTITIONED:
            partition = SlicePartition(args.partitions)
            for i, item in enumerate(self.items):
                item["partition"] = int(partition(int(data.pretrain_slice[i]), int(data.pretrain_num_slices[i])))
                item["volume_id"] = int(data.pretrain_volume[i])
        pc = make_pseudo_class_transform(table, True, self.items) if method in GUIDED else None
        size = list(data.pretrain.shape[2:])
        self.augment = pretrain_augmentation(2, size, views=views, pseudo_class_transform=pc,
                                             crop_scale=tuple(args.crop_scale))
        self.augment.set_random_state(seed)
        self.prepare = MultiViewPrepareBatch(num_views=2)
        self.workers = int(getattr(args, "workers", 0))
        self._loader = None

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        batch = list_data_collate([self.augment(dict(self.items[i])) for i in idx.tolist()])
        return self.prepare(batch)

    def next(self, gen: torch.Generator, batch_size: int, device: torch.device) -> tuple[torch.Tensor, dict]:
        """The next training batch on ``device``: drawn from ``gen`` in this process, or by ``--workers`` loaders."""
        if self.workers == 0:
            inputs, targets = self(torch.randperm(len(self.items), generator=gen)[:batch_size])
        else:
            if self._loader is None:
                from monai.data import DataLoader, Dataset

                sampler = torch.utils.data.RandomSampler(self.items, generator=gen)
                loader = DataLoader(Dataset(self.items, transform=self.augment), batch_size=batch_size,
                                    sampler=sampler, num_workers=self.workers, drop_last=True,
                                    persistent_workers=True, pin_memory=device.type == "cuda")

                def forever():
                    while True:
                        yield from loader

                self._loader = forever()
            inputs, targets = self.prepare(next(self._loader))
        targets = {k: None if v is None else v.to(device, non_blocking=True) for k, v in targets.items()}
        return inputs.to(device, non_blocking=True), targets

    def get_state(self) -> tuple:
        return self.augment.transforms[0].R.get_state()

    def set_state(self, state: tuple) -> None:
        self.augment.transforms[0].R.set_state(state)


# ----------------------------------------------------------------------------------------------- loop
def _train_loop(name: str, state_path: Path, modules: dict, opt, sched, gen: torch.Generator, total: int,
                step_fn: Callable[[int], dict], snapshot: Callable[[int], None], snapshots: list[int], args,
                rng_holder=None) -> dict:
    """Run ``step_fn`` for ``total`` steps with a resumable state every ``args.save_every`` steps.

    The state holds the modules, optimiser, scheduler, the batch generator, torch's global RNG (location draws)
    and the views' RNG, so a killed run resumes where it stopped.
    """
    log = {"name": name, "windows": [], "seconds": 0.0, "step": 0}
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        for key, module in modules.items():
            module.load_state_dict(state[key])
        opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        if rng_holder is not None:
            rng_holder.set_state(state["views_rng"])
        log = state["log"]
        logger.info("%s: resumed at step %d", name, log["step"])
    window: dict[str, list[float]] = {}
    t0 = time.time() - log["seconds"]
    for step in range(log["step"], total):
        values = step_fn(step)
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"{name}: non-finite loss at step {step} ({values}); last good state {state_path}")
        for k, v in values.items():
            window.setdefault(k, []).append(v)
        done = step + 1
        if done % args.log_every == 0 or done == total:
            entry = {"step": done, "seconds": round(time.time() - t0, 1), "lr": round(sched.get_last_lr()[0], 6)}
            entry.update({k: round(float(np.mean(v)), 4) for k, v in window.items()})
            log["windows"].append(entry)
            logger.info("%s %s", name, entry)
            window = {}
        if done in snapshots:
            snapshot(done)
        if done % args.save_every == 0 or done == total:
            log["step"], log["seconds"] = done, round(time.time() - t0, 1)
            state = {k: m.state_dict() for k, m in modules.items()}
            state.update(opt=opt.state_dict(), sched=sched.state_dict(), gen=gen.get_state(),
                         torch_rng=torch.get_rng_state(), log=log)
            if rng_holder is not None:
                state["views_rng"] = rng_holder.get_state()
            atomic_torch_save(state, state_path)
    log["step"], log["seconds"] = total, round(time.time() - t0, 1)
    return log


def _contrastive_stage(name: str, net: ContrastivePretrainNet, loss_fn: ContrastivePretrainLoss, batches: _ViewBatches,
                       params, lr: float, total: int, n: int, args, ckpt_dir: Path, snapshot, snapshots: list[int],
                       seed: int) -> dict:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total))
    gen = torch.Generator().manual_seed(seed)
    encoder_only = not loss_fn.use_local
    device = run_device(args)

    def step_fn(step: int) -> dict:
        inputs, targets = batches.next(gen, args.pretrain_batch, device)
        with autocast(args, device):
            preds = net(inputs, encoder_only=encoder_only)
        loss = loss_fn(_float(preds), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        values = dict(loss_fn.last_components)
        if loss_fn.use_global:
            values["acc"] = _positive_accuracy(preds["global"])
        return values

    net.train()
    return _train_loop(name, ckpt_dir / f"{name}_state.pt", {"net": net}, opt, sched, gen, total, step_fn, snapshot,
                       snapshots, args, rng_holder=batches)


def pretrain(method: str, data, labels: np.ndarray | None, args, ckpt_dir: Path, snapshots: list[int]) -> dict:
    """Pretrain ``method`` once; save the backbone's ``state_dict`` as ``ckpt_dir/<method>_<steps>.pt`` per snapshot.

    ``labels`` are unused (the pseudo-classes are read from the table at ``ckpt_dir/pseudo_classes.csv``, as the
    bundle reads them) and kept for the caller's signature. Resumable: every stage saves its state every
    ``args.save_every`` steps to ``ckpt_dir/<stage>_state.pt``.

    Returns:
        the log: per stage, steps, seconds, loss components and in-batch positive accuracy per logged window.
    """
    if method == "local_discrimination":
        return _pretrain_local_discrimination(data, args, ckpt_dir, snapshots)
    total = max(snapshots)
    n = len(data.pretrain)
    staged = method.endswith("_staged")
    losses = base_method(method)
    if losses not in ("simclr", "global_local", *GUIDED):
        raise ValueError(f"method must be one of {PRETRAINED_METHODS}, got {method!r}.")
    torch.manual_seed(args.pretrain_seed)
    net = pretrain_net(data.pretrain.shape[1], data.num_classes, tuple(args.features), args.decoder_layer)
    net.to(run_device(args))
    table = ckpt_dir / "pseudo_classes.csv" if losses in GUIDED else None
    local = None if losses == "simclr" or staged else _local_loss(args)
    loss_fn = ContrastivePretrainLoss(_global_loss(losses, args), local, 1.0, args.local_weight)
    batches = _ViewBatches(data, losses, "geometric", args, table, args.pretrain_seed)
    stage1 = f"{method}_stage1" if staged else method

    def save(step: int) -> None:
        atomic_torch_save({"model": _cpu_state(net.backbone), "step": step}, ckpt_dir / f"{stage1}_{step}.pt")

    log = {"method": method, "schedule": "staged" if staged else ("joint" if local else "global"), "views": "geometric"}
    log["stage1"] = _contrastive_stage(stage1, net, loss_fn, batches, net.parameters(), args.pretrain_lr, total, n,
                                       args, ckpt_dir, save, snapshots, args.pretrain_seed)
    if staged:
        log["stage2"] = {}
        for steps in sorted(snapshots):
            out = ckpt_dir / f"{method}_{steps}.pt"
            if out.is_file():
                continue
            log["stage2"][str(steps)] = _local_stage(method, steps, data, args, ckpt_dir)
    log["seconds"] = round(log["stage1"]["seconds"] + sum(s["seconds"] for s in log.get("stage2", {}).values()), 1)
    return log


def _local_stage(method: str, steps: int, data, args, ckpt_dir: Path) -> dict:
    """Stage 2 of the staged schedule from the stage-1 snapshot at ``steps``: local loss, encoder frozen."""
    torch.manual_seed(args.pretrain_seed + 1)
    net = pretrain_net(data.pretrain.shape[1], data.num_classes, tuple(args.features), args.decoder_layer)
    stage1 = torch.load(ckpt_dir / f"{method}_stage1_{steps}.pt", map_location="cpu", weights_only=True)
    net.backbone.load_state_dict(stage1["model"])
    net.to(run_device(args))
    for p in net.encoder_parameters():
        p.requires_grad_(False)
    loss_fn = ContrastivePretrainLoss(None, _local_loss(args), 0.0, 1.0)
    batches = _ViewBatches(data, None, "intensity", args, None, args.pretrain_seed + 1)  # local loss only
    name = f"{method}_stage2_from{steps}"
    out = ckpt_dir / f"{method}_{steps}.pt"

    def save(step: int) -> None:
        atomic_torch_save({"model": _cpu_state(net.backbone), "step": steps, "local_steps": step}, out)

    return _contrastive_stage(name, net, loss_fn, batches, net.decoder_parameters(), args.local_lr, args.local_steps,
                              len(data.pretrain), args, ckpt_dir, save, [args.local_steps], args.pretrain_seed + 1)


def _pretrain_local_discrimination(data, args, ckpt_dir: Path, snapshots: list[int]) -> dict:
    """Chen et al.'s local discrimination with the ``local_discrimination_pretrain`` bundle's settings.

    Runs ``round(steps * args.ld_steps_factor)`` steps for each snapshot length and saves the ``BasicUNet`` keys
    (no ``final_conv``) as ``<ckpt_dir>/local_discrimination_<steps>.pt``.
    """
    torch.manual_seed(args.pretrain_seed)
    factor = getattr(args, "ld_steps_factor", 1.0)
    lengths = {max(1, round(s * factor)): s for s in snapshots}
    total = max(lengths)
    device = run_device(args)
    net = LocalDiscriminationNet(2, data.pretrain.shape[1], embed_dim=32, num_clusters=16,
                                 features=tuple(args.features)).to(device)
    loss_fn = LocalDiscriminationLoss(patch_weight=1.0, mixup_weight=1.0, region_weight=10.0, entropy_weight=0.1,
                                      patch_temperature=0.1, region_temperature=0.2, grid_size=8)
    views = LocalDiscriminationViewsd("image", num_views=2, transform=[
        RandScaleIntensityd("image", factors=0.2, prob=1.0),
        RandShiftIntensityd("image", offsets=0.1, prob=1.0),
        RandGaussianNoised("image", std=0.02, prob=0.5),
    ])
    views.set_random_state(args.pretrain_seed)
    prepare = LocalDiscriminationPrepareBatch(num_views=2, mixup=True, seed=args.pretrain_seed)
    opt = torch.optim.Adam(net.parameters(), lr=args.pretrain_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total))
    gen = torch.Generator().manual_seed(args.pretrain_seed)
    x_all = torch.from_numpy(data.pretrain)
    batch_size = getattr(args, "ld_batch", 16)

    class _Rng:
        def get_state(self):
            return views.R.get_state()

        def set_state(self, state):
            views.R.set_state(state)

    def step_fn(step: int) -> dict:
        idx = torch.randperm(len(x_all), generator=gen)[:batch_size]
        inputs, targets = prepare(list_data_collate([views({"image": x_all[i]}) for i in idx.tolist()]),
                                  device=device)
        with autocast(args, device):
            preds = net(inputs)
        loss = loss_fn(_float(preds), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {k: float(v) for k, v in loss_fn.last_components.items()}

    def save(step: int) -> None:
        steps = lengths[step]
        state = {k: v.detach().cpu() for k, v in net.backbone_state_dict().items()}
        atomic_torch_save({"model": state, "step": step}, ckpt_dir / f"local_discrimination_{steps}.pt")

    net.train()
    log = _train_loop("local_discrimination", ckpt_dir / "local_discrimination_state.pt", {"net": net}, opt, sched,
                      gen, total, step_fn, save, list(lengths), args, rng_holder=_Rng())
    return {"method": "local_discrimination", "steps": {str(s): k for k, s in lengths.items()}, "stage1": log,
            "seconds": log["seconds"]}
