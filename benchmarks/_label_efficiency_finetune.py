"""Fine-tuning half of the label-efficiency benchmark: augmentation, paired fine-tuning, per-structure metrics.

Everything runs on in-memory tensors (see ``_label_efficiency_data``) and is sized for a couple of shared CPU
cores, so the augmentation is applied to a whole batch at once with one ``affine_grid`` / ``grid_sample`` pair
instead of per-sample MONAI transforms (the same operations as ``RandFlipd`` + ``RandAffined`` (rotation,
scale, translation; nearest for labels) + ``RandAdjustContrastd`` (gamma) + ``RandScaleIntensityd`` +
``RandShiftIntensityd`` + ``RandGaussianNoised``). Every draw comes from one ``torch.Generator`` seeded by the
fine-tuning seed, so for a given seed every initialisation sees the same batches and the same augmentations.

- :func:`augment_pair`: the batched image + label augmentation;
- :func:`predict`: argmax label maps of a network over an array of slices;
- :func:`segmentation_metrics`: Dice and HD95 per structure, per volume, then averaged over volumes;
- :func:`finetune`: one fine-tuning run of a ``BasicUNet`` (optionally from a pretraining checkpoint) with a
  cosine learning rate decayed to zero, evaluated at chosen steps; the score is the mean of the last few;
- :func:`learning_curve`: random-initialisation runs of several lengths scored on validation patients held out
  of the pool (never the test patients), to choose the protocol's number of steps; with
  :func:`format_curve_table` and :func:`plot_curve`.

This module imports ``_label_efficiency_data`` as a sibling: ``benchmarks/`` must be on ``sys.path`` (as
``label_efficiency.py`` arranges).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.metrics import compute_hausdorff_distance
from monai.networks.nets import BasicUNet

from _label_efficiency_data import labeled_subset, stratified_split
from monai_cluster.networks import load_pretrained
from monai_cluster.utils.io import atomic_write

__all__ = [
    "AUGMENTATIONS",
    "EvalSet",
    "augment_pair",
    "eval_schedule",
    "finetune",
    "format_curve_table",
    "learning_curve",
    "parse_steps",
    "plot_curve",
    "predict",
    "segmentation_metrics",
    "steps_for",
    "validation_split",
]

logger = logging.getLogger("label_efficiency")

#: ``--augment`` choices: ``full`` (flips, rotation +-15 deg, scale 0.85-1.15, shift 5%, gamma 0.7-1.5,
#: intensity scale +-15% and shift +-0.1, Gaussian noise sd up to 0.03), ``flip`` (flips only), ``none``.
AUGMENTATIONS = ("full", "flip", "none")


@dataclass
class EvalSet:
    """Held-out slices: ``x`` ``(N, C, S, S)`` float32, ``y`` ``(N, S, S)`` int64, ``volume`` ``(N,)`` ids."""

    x: np.ndarray
    y: np.ndarray
    volume: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.volume)) or len(self.x) == 0:
            raise ValueError(
                f"EvalSet x, y and volume must have the same non-zero length, got {len(self.x)}, {len(self.y)}, "
                f"{len(self.volume)}."
            )


def augment_pair(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, mode: str = "full"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random geometric (image and label alike) and intensity (image only) augmentation of a batch.

    Args:
        x: ``(B, C, S, S)`` images with values about ``[0, 1]``.
        y: ``(B, S, S)`` integer label maps.
        gen: the source of every random draw.
        mode: one of :data:`AUGMENTATIONS`.

    Returns:
        ``(x, y)`` of the same shapes; labels are resampled with nearest neighbours, pixels brought in from
        outside the image are 0 (background).

    Raises:
        ValueError: for an unknown ``mode`` or mismatched shapes.
    """
    if mode not in AUGMENTATIONS:
        raise ValueError(f"augmentation mode must be one of {AUGMENTATIONS}, got {mode!r}.")
    if x.ndim != 4 or y.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"expected x (B, C, S, S) and y (B, S, S), got {tuple(x.shape)} and {tuple(y.shape)}.")
    if mode == "none":
        return x, y
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(b).uniform_(lo, hi, generator=gen)

    flips = torch.randint(0, 2, (b, 2), generator=gen).float() * -2 + 1  # -1 flips that axis
    if mode == "flip":
        angle, scale, shift = torch.zeros(b), torch.ones(b), torch.zeros(b, 2)
    else:
        angle, scale = u(-15.0, 15.0) * math.pi / 180, u(0.85, 1.15)
        shift = torch.empty(b, 2).uniform_(-0.1, 0.1, generator=gen)  # 5% of the side (grid spans [-1, 1])
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, :2] *= flips[:, None, :]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    y = y[:, 0].round().long()
    if mode == "full":
        shape = (b, 1, 1, 1)
        x = x.clamp(0, 1) ** u(0.7, 1.5).view(shape)
        x = x * u(0.85, 1.15).view(shape) + u(-0.1, 0.1).view(shape)
        x = x + torch.randn(x.shape, generator=gen) * u(0.0, 0.03).view(shape)
    return x, y


def predict(net: torch.nn.Module, x: np.ndarray | torch.Tensor, chunk: int = 64) -> np.ndarray:
    """``(N, S, S)`` argmax label maps of ``net`` on ``(N, C, S, S)`` images, ``chunk`` slices at a time."""
    x = torch.as_tensor(x)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    with torch.no_grad():
        out = torch.cat([net(x[i : i + chunk].to(device)).argmax(1).cpu() for i in range(0, len(x), chunk)])
    net.train(was_training)
    return out.numpy()


def _hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """HD95 in grid units between two boolean ``(D, S, S)`` masks (slice step counted as 1)."""
    if not pred.any():
        return float(np.sqrt(sum(s * s for s in pred.shape)))  # an empty prediction: the map's diagonal
    a = torch.from_numpy(np.moveaxis(pred, 0, -1)[None, None].astype(np.float32))
    b = torch.from_numpy(np.moveaxis(truth, 0, -1)[None, None].astype(np.float32))
    if pred.shape[0] == 1:
        a, b = a[..., 0], b[..., 0]
    return float(compute_hausdorff_distance(a, b, include_background=True, percentile=95))


def segmentation_metrics(
    pred: np.ndarray, truth: np.ndarray, volume: np.ndarray, class_names: list[str], hd95: bool = True
) -> dict:
    """Dice and HD95 per structure and their means, computed per volume and averaged over volumes.

    The slices of one volume (same ``volume`` id) are stacked into a 3D map. In a volume, a structure absent
    from both prediction and truth is skipped for Dice; HD95 needs the structure in the truth, and an empty
    prediction of a present structure scores the map's diagonal.

    Args:
        pred: ``(N, S, S)`` predicted labels.
        truth: ``(N, S, S)`` reference labels, ``0`` background, ``c`` the structure ``class_names[c - 1]``.
        volume: ``(N,)`` volume id of each slice.
        class_names: names of the foreground classes ``1 .. C-1``.
        hd95: also compute HD95 (slow-ish: a distance transform per structure and volume).

    Returns:
        ``{"dice": mean over volumes of the per-volume mean over structures, "dice_per_class": {name: mean over
        volumes}, "hd95": ..., "hd95_per_class": {...}}``; the HD95 entries are ``None`` without ``hd95``.

    Raises:
        ValueError: when the shapes disagree or no volume has any structure.
    """
    pred, truth, volume = np.asarray(pred), np.asarray(truth), np.asarray(volume)
    if pred.shape != truth.shape or pred.ndim != 3 or len(volume) != len(pred):
        raise ValueError(
            f"pred and truth must be (N, S, S) of one shape with N volume ids, got {pred.shape}, {truth.shape}, "
            f"{volume.shape}."
        )
    dice = {name: [] for name in class_names}
    hd = {name: [] for name in class_names}
    per_volume, per_volume_hd = [], []
    for v in np.unique(volume):
        p, t = pred[volume == v], truth[volume == v]
        vd, vh = [], []
        for c, name in enumerate(class_names, start=1):
            pc, tc = p == c, t == c
            denom = int(pc.sum() + tc.sum())
            if denom:
                vd.append(2.0 * (pc & tc).sum() / denom)
                dice[name].append(vd[-1])
            if hd95 and tc.any():
                vh.append(_hd95(pc, tc))
                hd[name].append(vh[-1])
        if vd:
            per_volume.append(np.mean(vd))
        if vh:
            per_volume_hd.append(np.mean(vh))
    if not per_volume:
        raise ValueError("segmentation_metrics: no volume contains any foreground structure.")

    def mean(values: list) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "dice": float(np.mean(per_volume)),
        "dice_per_class": {k: mean(v) for k, v in dice.items()},
        "hd95": mean(per_volume_hd) if hd95 else None,
        "hd95_per_class": {k: mean(v) for k, v in hd.items()} if hd95 else None,
    }


def eval_schedule(steps: int, every: int, last: int) -> list[int]:
    """The steps ``steps - (last - 1) * every, ..., steps - every, steps`` at which the score is measured.

    Raises:
        ValueError: when they do not all lie in ``[1, steps]``.
    """
    if every < 1 or last < 1 or (last - 1) * every >= steps:
        raise ValueError(
            f"the last {last} evaluations every {every} steps must fit in {steps} fine-tuning steps "
            "(--eval-last, --eval-every, --finetune-steps)."
        )
    return [steps - i * every for i in reversed(range(last))]


def parse_steps(entries: list[str]) -> dict[int | None, int]:
    """``--finetune-steps`` entries ``["1:1000", "3000"]`` -> ``{1: 1000, None: 3000}`` (``None``: the rest).

    Raises:
        ValueError: for an entry that is not ``STEPS`` or ``LABELED:STEPS`` with positive integers.
    """
    table: dict[int | None, int] = {}
    for entry in entries:
        key, _, value = str(entry).rpartition(":")
        try:
            n, steps = (int(key) if key else None), int(value)
        except ValueError:
            raise ValueError(f"--finetune-steps entries must be STEPS or LABELED:STEPS integers, got {entry!r}.")
        if steps < 1 or (n is not None and n < 1):
            raise ValueError(f"--finetune-steps entries must be positive, got {entry!r}.")
        table[n] = steps
    return table


def steps_for(table: dict[int | None, int], num_labeled: int) -> int:
    """The fine-tuning steps of a labeled setting: its own entry, else the fallback.

    Raises:
        ValueError: when ``table`` has neither.
    """
    if num_labeled in table:
        return table[num_labeled]
    if None in table:
        return table[None]
    raise ValueError(f"--finetune-steps has no entry for {num_labeled} labeled units and no plain fallback.")


def finetune(
    x: np.ndarray,
    y: np.ndarray,
    eval_set: EvalSet,
    init: str | None,
    exclude: tuple[str, ...],
    seed: int,
    steps: int,
    args,
    curve_every: int | None = None,
) -> dict:
    """Fine-tune a ``BasicUNet`` on labeled slices ``x``/``y`` and evaluate it on ``eval_set``.

    The seed fixes the network's initialisation (before any pretrained tensors are copied in), the batch order
    and every augmentation draw, so every initialisation of one seed sees the same head (and decoder, where it
    is not pretrained) and the same batches. The learning rate follows a cosine from ``args.finetune_lr`` to 0
    over ``steps``.

    Args:
        x: ``(M, C, S, S)`` labeled images.
        y: ``(M, S, S)`` their labels.
        eval_set: the slices the run is scored on (test patients, or validation patients for a learning curve).
        init: a checkpoint with ``BasicUNet`` keys, or ``None`` for random initialisation.
        exclude: blocks of the network not taken from ``init``.
        seed: the paired seed.
        steps: optimiser steps.
        args: ``features``, ``finetune_batch``, ``finetune_lr``, ``augment``, ``hd95``, ``eval_every``,
            ``eval_last`` (and ``log_every``; ``device`` and ``amp`` when given: the augmentation draws stay on
            the CPU generator, so a seed's batches are the same on every device).
        curve_every: also evaluate every this many steps (a learning curve within the run); the score still
            comes from the :func:`eval_schedule` steps alone.

    Returns:
        ``{"dice", "dice_per_class", "hd95", "hd95_per_class"}`` (means over the evaluations at the
        :func:`eval_schedule` steps of ``args``), ``"dice_evals"`` (those evaluations' Dice), ``"evals"`` (one
        metrics dict per evaluation, with its ``step``; with ``curve_every`` the whole curve),
        ``"final_loss"``, ``"loaded_tensors"``, ``"steps"``, ``"seconds"`` (wall time of the run),
        ``"train_seconds_per_step"`` and ``"augment_seconds_per_step"`` (training alone, evaluations excluded).
    """
    if steps < 1 or len(x) == 0 or len(x) != len(y):
        raise ValueError(f"finetune needs steps >= 1 and as many labels as images, got {steps}, {len(x)}, {len(y)}.")
    score_steps = set(eval_schedule(steps, args.eval_every, args.eval_last))
    eval_steps = score_steps | (set(range(curve_every, steps + 1, curve_every)) if curve_every else set())
    torch.manual_seed(10_000 + seed)
    num_classes = len(eval_set.class_names) + 1
    net = BasicUNet(2, x.shape[1], num_classes, features=tuple(args.features))
    loaded = 0
    if init is not None:
        loaded = load_pretrained(net, init, exclude=exclude, min_matched=0.9)["matched"]
    device = torch.device(getattr(args, "device", "cpu"))
    amp = bool(getattr(args, "amp", False)) and device.type == "cuda"
    net.to(device)
    gen = torch.Generator().manual_seed(20_000 + seed)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    batch = args.finetune_batch
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=args.finetune_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    order = torch.cat([torch.randperm(len(x_all), generator=gen) for _ in range(steps * batch // len(x_all) + 2)])
    t_start, t_train, t_aug, evals = time.time(), 0.0, 0.0, []
    net.train()
    for step in range(1, steps + 1):
        t0 = time.time()
        idx = order[(step - 1) * batch : step * batch]
        xb, yb = augment_pair(x_all[idx], y_all[idx], gen, args.augment)
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        t_aug += time.time() - t0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(xb)
        loss = loss_fn(logits.float(), yb[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        t_train += time.time() - t0
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite fine-tuning loss at step {step} (seed {seed}, init {init}).")
        if step in eval_steps:
            metrics = segmentation_metrics(
                predict(net, eval_set.x), eval_set.y, eval_set.volume, eval_set.class_names, args.hd95
            )
            evals.append({"step": step, "loss": round(float(loss.detach()), 4), **metrics})
            logger.debug("step %d: dice %.4f", step, metrics["dice"])
    scored = [e for e in evals if e["step"] in score_steps]

    def average(key: str) -> float | None:
        values = [e[key] for e in scored if e[key] is not None]
        return float(np.mean(values)) if values else None

    def average_per_class(key: str) -> dict | None:
        if scored[0][key] is None:
            return None
        out = {}
        for name in eval_set.class_names:
            values = [e[key][name] for e in scored if e[key][name] is not None]
            out[name] = float(np.mean(values)) if values else None
        return out

    return {
        "dice": average("dice"),
        "dice_per_class": average_per_class("dice_per_class"),
        "hd95": average("hd95"),
        "hd95_per_class": average_per_class("hd95_per_class"),
        "dice_evals": [round(e["dice"], 4) for e in scored],
        "evals": evals,
        "final_loss": round(float(loss.detach()), 4),
        "loaded_tensors": loaded,
        "steps": steps,
        "seconds": round(time.time() - t_start, 1),
        "train_seconds_per_step": round(t_train / steps, 4),
        "augment_seconds_per_step": round(t_aug / steps, 5),
    }


# ----------------------------------------------------------------------------------------------- learning curve
def validation_split(data, num_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pool units, validation units)`` of ``data``'s labeled units, stratified like the test split.

    The validation units come from the training pool only, so a learning curve never looks at the test split.
    """
    strata = data.train_strata if data.train_strata is not None else np.zeros(data.num_groups, dtype=int)
    return stratified_split(strata, num_val, seed)


def _sample_volumes(data) -> np.ndarray:
    """Volume id of every training sample (a slice's volume; an image is its own volume)."""
    if data.pretrain_volume is not None and len(data.pretrain_volume) == len(data.train_x):
        return data.pretrain_volume
    return data.train_group


def learning_curve(data, args, result: dict, save) -> dict:
    """Random-initialisation fine-tuning runs that choose the protocol's number of steps on validation patients.

    ``args.val_patients`` units of the pool are held out (stratified, seeded by ``args.split_seed``). For every
    setting in ``args.curve_labeled`` (``0``: the whole rest of the pool), seed in ``args.seeds`` and budget in
    ``args.curve_steps``, one run with its own cosine schedule over that budget is scored like the protocol
    (mean of the last ``args.eval_last`` evaluations) and also evaluated every ``args.curve_every`` steps.
    Finished entries of ``result["curve"]`` are skipped; ``save()`` is called after every run.

    Returns:
        ``result`` with ``"validation"`` (units and names) and ``"curve"`` (one entry per run) filled in.
    """
    pool, val = validation_split(data, args.val_patients, args.split_seed)
    names = data.info.get("train")
    result["validation"] = {"units": val.tolist(), "names": [names[u] for u in val] if names else None}
    in_val = np.isin(data.train_group, val)
    eval_set = EvalSet(data.train_x[in_val], data.train_y[in_val], _sample_volumes(data)[in_val], data.class_names)
    groups = data.train_group[~in_val]
    done = {(e["num_labeled"], e["seed"], e["budget"]) for e in result.setdefault("curve", [])}
    for n in args.curve_labeled:
        n = len(pool) if n == 0 else n
        for seed in args.seeds:
            idx, chosen = labeled_subset(groups, n, seed, data.train_strata)
            idx = np.flatnonzero(~in_val)[idx]
            for budget in sorted(args.curve_steps):
                if (n, seed, budget) in done:
                    continue
                run = finetune(data.train_x[idx], data.train_y[idx], eval_set, None, (), seed, budget, args,
                               curve_every=args.curve_every)
                result["curve"].append({
                    "num_labeled": n, "seed": seed, "budget": budget, "labeled_units": chosen,
                    "labeled_samples": int(len(idx)), "epochs": round(budget * args.finetune_batch / len(idx), 1),
                    **run,
                })
                logger.info("curve n=%d seed=%d steps=%d: val dice %.4f %s (%.3f s/step, %.0f s)", n, seed, budget,
                            run["dice"], run["dice_per_class"], run["train_seconds_per_step"], run["seconds"])
                save()
    return result


def format_curve_table(curve: list[dict]) -> str:
    """Markdown: validation Dice (mean, and per structure) at the end of each budget, per labeled setting."""
    settings = sorted({e["num_labeled"] for e in curve})
    budgets = sorted({e["budget"] for e in curve})
    head = "| fine-tuning steps | " + " | ".join(f"{n} labeled: epochs, Dice (per structure)" for n in settings)
    lines = [head + " | s/step |", "|---" * (len(settings) + 2) + "|"]
    for b in budgets:
        cells, rates = [], []
        for n in settings:
            sel = [e for e in curve if e["num_labeled"] == n and e["budget"] == b]
            if not sel:
                cells.append("")
                continue
            dice = np.mean([e["dice"] for e in sel])
            per = " / ".join(f"{np.mean([e['dice_per_class'][k] for e in sel]):.3f}" for k in sel[0]["dice_per_class"])
            seeds = f", {len(sel)} seeds" if len(sel) > 1 else ""
            cells.append(f"{sel[0]['epochs']:g} ep, **{dice:.3f}** ({per}){seeds}")
            rates += [e.get("train_seconds_per_step", e.get("seconds_per_step")) for e in sel]
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {np.mean(rates):.3f} |")
    return "\n".join(lines)


def plot_curve(curve: list[dict], path) -> None:
    """PNG of validation Dice against steps: each budget's within-run curve (thin) and its score (markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, n in enumerate(sorted({e["num_labeled"] for e in curve})):
        colour = f"C{i}"
        sel = sorted((e for e in curve if e["num_labeled"] == n), key=lambda e: (e["seed"], e["budget"]))
        for e in sel:
            ax.plot([v["step"] for v in e["evals"]], [v["dice"] for v in e["evals"]], color=colour, lw=0.6, alpha=0.5)
        budgets = sorted({e["budget"] for e in sel})
        means = [np.mean([e["dice"] for e in sel if e["budget"] == b]) for b in budgets]
        ax.plot(budgets, means, "o-", color=colour, lw=2, label=f"{n} labeled: score at the end of a budget")
    ax.set_xscale("log")
    ax.set_xlabel("fine-tuning steps (each budget its own cosine schedule)")
    ax.set_ylabel("validation Dice (mean of structures)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
