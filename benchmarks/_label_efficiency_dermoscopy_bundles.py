"""The dermoscopy protocol of ``label_efficiency.py`` run through the bundles (``--dataset dermoscopy``).

Pretraining is ``bundles/cluster_contrastive_pretrain`` with ``configs/train.json`` (2D images), fine-tuning and
scoring ``bundles/dermoscopy_segmentation`` with ``configs/train.json``, each run by
:func:`~monai_cluster.workflows.segmentation_bundle.run_bundle` with overrides. This module keeps the protocol:

- the split: the image/mask pairs of ``--train-dir`` (PH2 and HAM10000), ``--num-test`` of them held out by
  ``--split-seed`` (:func:`split_indices`, the split of the earlier records), written as two
  MONAI datalists: ``finetune.json`` (``"training"``: the other pairs, ``"validation"``: the held-out ones) for the
  fine-tuning bundle, ``pretrain.json`` (``"training"``: the unlabeled images of ``--unlabeled-dir`` and the
  training pairs' images, never a held-out one) for the pretraining bundle;
- the methods as options of the pretraining bundle (:data:`DERMOSCOPY_METHODS`: the 2D bundle's global loss is
  SimCLR's random pairing, G_R, with or without pseudo-class masking; ``global_local`` is G_R + the local loss),
  the measured settings as overrides;
- seeds and pairing: seed ``s`` is the fine-tuning bundle's ``seed`` (its image-level draw of the labeled images,
  the initialisation of what is not loaded, batch order and augmentation), the same for every method;
- ``--learning-curve`` (:func:`curve_dermoscopy`): ``--val-patients`` images of the pool held out as validation
  images (a third datalist, ``curve.json``; the test images never enter), random initialisations fine-tuned for
  every budget of ``--curve-steps``, scored like the protocol and evaluated every ``--curve-every`` steps (the
  bundle's ``eval_curve_every``).

The loop, optimiser, schedule, augmentation, autoencoder, label selection and metric (the bundle's foreground Dice
and HD95 on the held-out images at the training grid) are the bundles'.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from _bundle_runs import SEMI_OPTIONS, curve_runs, epochs_for

from monai_cluster.data import list_image_mask_pairs, list_images
from monai_cluster.utils.io import atomic_write_json
from monai_cluster.workflows.segmentation_bundle import run_bundle

__all__ = [
    "DERMOSCOPY_METHODS",
    "curve_dermoscopy",
    "dermoscopy_split",
    "finetune_dermoscopy",
    "pretrain_dermoscopy",
    "split_indices",
    "validation_datalist",
]

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_BUNDLE = REPO / "bundles" / "cluster_contrastive_pretrain"
DERMOSCOPY_BUNDLE = REPO / "bundles" / "dermoscopy_segmentation"

DERMOSCOPY_METHODS: dict[str, dict] = {
    "simclr": {"use_pseudo_classes": False, "local_weight": 0.0},
    "global_local": {"use_pseudo_classes": False},
    "cluster_guided": {"use_pseudo_classes": True},
    "global_local_staged": {"use_pseudo_classes": False, "schedule": "staged"},
    "cluster_guided_staged": {"use_pseudo_classes": True, "schedule": "staged"},
}
"""Each pretraining method of the dermoscopy protocol as options of the pretraining bundle's ``train.json``."""


def split_indices(n: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of ``range(n)`` cut into ``(train, test)`` index arrays ``(n - num_test,)`` and
    ``(num_test,)``, both sorted (the dermoscopy split of the records, and the curve's validation images).

    Raises:
        ValueError: when ``num_test`` is not in ``[1, n - 1]``.
    """
    if not 0 < num_test < n:
        raise ValueError(f"num_test must lie in [1, {n - 1}] for {n} samples, got {num_test}.")
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def dermoscopy_split(args, out: Path) -> dict:
    """Write the protocol's two datalists into ``out``; returns their paths and the split's image names.

    Raises:
        ValueError: when ``--train-dir`` holds no pairs or ``--num-test`` does not leave pairs to train on.
    """
    pairs = [p for d in args.train_dir for p in list_image_mask_pairs(d)]
    if not pairs:
        raise ValueError(f"--train-dir {args.train_dir} holds no image/mask pairs.")
    if args.test_dir:
        test = [p for d in args.test_dir for p in list_image_mask_pairs(d)]
        train = pairs
    else:
        tr, te = split_indices(len(pairs), args.num_test, args.split_seed)
        train, test = [pairs[i] for i in tr], [pairs[i] for i in te]
    unlabeled = [p for d in args.unlabeled_dir or [] for p in list_images(d)]

    def entry(p: dict, label: bool = True) -> dict:
        item = {"image": str(Path(p["image"]).resolve())}
        if label:
            item["label"] = str(Path(p["label"]).resolve())
        return item

    out.mkdir(parents=True, exist_ok=True)
    finetune = {"training": [entry(p) for p in train], "validation": [entry(p) for p in test]}
    pretrain = {"training": [entry(p, False) for p in unlabeled] + [entry(p, False) for p in train]}
    atomic_write_json(finetune, out / "finetune.json")
    atomic_write_json(pretrain, out / "pretrain.json")
    return {
        "finetune_datalist": str(out / "finetune.json"), "pretrain_datalist": str(out / "pretrain.json"),
        "test": [Path(p["image"]).name for p in test], "pool": [Path(p["image"]).name for p in train],
        "pretrain_images": len(pretrain["training"]),
    }  # fmt: skip


def pretrain_overrides_dermoscopy(args, method: str, steps: int, split: dict) -> dict:
    """The pretraining bundle's overrides of ``method`` on the dermoscopy split (``train.json``, RGB images)."""
    images = split["pretrain_images"]
    return {
        **DERMOSCOPY_METHODS[method],
        "dataset_dir": None, "datalist": split["pretrain_datalist"], "seed": args.pretrain_seed,
        "device": args.device, "amp": args.amp, "image_size": [args.image_size, args.image_size],
        "features": list(args.features), "batch_size": args.pretrain_batch, "learning_rate": args.pretrain_lr,
        "max_steps": steps, "warmup_steps": min(50, steps), "min_lr_ratio": 0.1, "optimizer_name": "AdamW",
        "weight_decay": 1e-4, "temperature": args.temperature, "crop_scale": list(args.crop_scale),
        "local_num_locations": args.local_locations, "local_region_size": args.local_region,
        "decoder_layer": args.decoder_layer, "num_clusters": list(args.num_clusters),
        "pseudo_class_level": args.mask_level,
        "autoencoder_epochs": epochs_for(args.ae_steps, images, args.pretrain_batch),
        "autoencoder_learning_rate": 1e-3,
        "local_epochs": epochs_for(args.local_steps, images, args.pretrain_batch),
        "local_learning_rate": args.local_lr,
        **({"local_weight": args.local_weight} if method != "simclr" else {}),
    }  # fmt: skip


def pretrain_dermoscopy(args, method: str, steps: int, split: dict, root: Path) -> dict:
    """Pretrain ``method`` for ``steps`` through the bundle in ``root`` (skipped when done, resumed after a kill).

    Returns:
        the bundle's ``pretrain_summary.json`` (plus ``model``, ``seconds_this_invocation`` and ``overrides``).
    """
    model, summary_path = root / "models" / "model.pt", root / "models" / "pretrain_summary.json"
    if model.is_file() and summary_path.is_file():
        return {**json.loads(summary_path.read_text()), "model": str(model)}
    overrides = pretrain_overrides_dermoscopy(args, method, steps, split)
    resume = any((root / "models").glob("**/*.pt"))
    start = time.time()
    run_bundle(PRETRAIN_BUNDLE, ("train.json",), bundle_root=root, resume=resume, **overrides)
    return {**json.loads(summary_path.read_text()), "model": str(model),
            "seconds_this_invocation": round(time.time() - start, 1),
            "overrides": {k: v for k, v in overrides.items() if k != "datalist"}}  # fmt: skip


def finetune_overrides_dermoscopy(
    args, num_labeled: int, seed: int, exclude: list[str] | None, steps: int, init: str | None, split: dict,
    semi: str = "none",
) -> dict:
    """The dermoscopy bundle's overrides of one run: the split, seed, labeled images, budget and scoring."""
    if args.augment == "flip":
        raise ValueError("--augment flip has no bundle equivalent; the dermoscopy bundle always augments.")
    semi_options = {}
    if semi != "none":
        semi_options = {"semi_supervised": semi, **{name: getattr(args, name) for name in SEMI_OPTIONS}}
    return {
        "dataset_dir": None, "datalist": split["finetune_datalist"], "num_labeled": num_labeled, "seed": seed,
        "device": args.device, "amp": args.amp, "image_size": args.image_size, "features": list(args.features),
        "batch_size": args.finetune_batch, "learning_rate": args.finetune_lr, "optimizer_name": "Adam",
        "weight_decay": 0.0, "max_steps": steps, "warmup_steps": 0, "min_lr_ratio": 0.0,
        "eval_every_steps": args.eval_every, "eval_last": args.eval_last, "val_interval": 10**6,
        "use_pretrained": init is not None, "pretrained_exclude": exclude,
        **({"pretrained_path": init} if init is not None else {}), **semi_options,
    }  # fmt: skip


def finetune_dermoscopy(
    args, num_labeled: int, seed: int, exclude: list[str] | None, steps: int, init: str | None, split: dict,
    root: Path, semi: str = "none", **extra,
) -> dict:
    """One fine-tuning run through the dermoscopy bundle in ``root`` (started over); its record.

    ``extra`` are further bundle overrides (the learning curve's ``eval_curve_every``).

    Returns:
        ``dice`` (the bundle's foreground Dice on the held-out images, the mean of its scored evaluations),
        ``dice_per_class`` (``{"lesion": dice}``), ``hd95`` (pixels at the training grid), ``labeled_images``,
        ``test_images``, ``steps``, ``evaluated_steps``, ``loaded_tensors``, ``semi_supervised``, ``seconds``;
        with ``eval_curve_every`` also ``evaluations`` (``[{"step", "dice", "dice_per_class"}]``, every evaluated
        step in order).
    """
    if root.exists():
        shutil.rmtree(root)
    overrides = {**finetune_overrides_dermoscopy(args, num_labeled, seed, exclude, steps, init, split, semi), **extra}
    start = time.time()
    workflow = run_bundle(DERMOSCOPY_BUNDLE, ("train.json",), bundle_root=root, **overrides)
    metrics = json.loads((root / "eval_steps" / "metrics.json").read_text())
    data = workflow.parser.get_parsed_content("data")
    report = getattr(workflow.parser.get_parsed_content("network"), "pretrained_report", None) or {}
    for path in root.glob("models/*.pt"):  # the runs' weights are not kept: the records are
        path.unlink()
    record = {
        "dice": metrics["mean_dice"], "dice_per_class": {"lesion": metrics["mean_dice"]},
        "hd95": metrics.get("val_hd95"), "hd95_unit": "px",
        "labeled_images": sorted(Path(item["image"]).name for item in data["train"]),
        "test_images": len(data["val"]), "steps": steps, "evaluated_steps": metrics["steps"],
        "loaded_tensors": int(report.get("matched", 0)), "semi_supervised": semi,
        "seconds": round(time.time() - start, 1),
    }  # fmt: skip
    if "evaluations" in metrics:
        record["evaluations"] = [
            {"step": e["step"], "dice": e["mean_dice"], "dice_per_class": {"lesion": e["mean_dice"]}}
            for e in metrics["evaluations"]
        ]
    return record


def validation_datalist(split: dict, num_val: int, seed: int, out: Path) -> dict:
    """The learning curve's datalist ``out / "curve.json"``: ``num_val`` pool images held out by ``seed`` as
    ``"validation"``, the rest of the pool as ``"training"`` (the test images of ``split`` are in neither).

    Returns:
        ``split`` with ``finetune_datalist`` the curve's, ``validation`` (the validation images' names) and
        ``rest`` (the number of pool images left to label).

    Raises:
        ValueError: naming ``--val-patients`` when it leaves no pool image to label.
    """
    pool = json.loads(Path(split["finetune_datalist"]).read_text())["training"]
    if not 0 < num_val < len(pool):
        raise ValueError(f"--val-patients {num_val} must leave a pool image to label ({len(pool)} in the pool).")
    rest, val = split_indices(len(pool), num_val, seed)
    atomic_write_json({"training": [pool[i] for i in rest], "validation": [pool[i] for i in val]}, out / "curve.json")
    names = [Path(pool[i]["image"]).name for i in val]
    return {**split, "finetune_datalist": str(out / "curve.json"), "validation": names, "rest": len(rest)}


def curve_dermoscopy(args, result: dict, save) -> None:
    """``--learning-curve`` through the dermoscopy bundle: random-initialisation runs that choose the fine-tuning
    length on validation images of the pool, never on the test images.

    ``--val-patients`` pool images (drawn by ``--split-seed``, :func:`validation_datalist`) are the bundle's
    ``"validation"``; for every setting of ``--curve-labeled`` (``0``: the rest of the pool), seed and budget of
    ``--curve-steps``, one run with its own schedule over that budget is scored like the protocol (the mean of the
    last ``--eval-last`` evaluations every ``--eval-every`` steps) and also evaluated every ``--curve-every`` steps
    (the bundle's ``eval_curve_every``). Entries already in ``result["curve"]`` are skipped; ``save()`` is called
    after every run.
    """
    work = Path(args.work_dir)
    split = dermoscopy_split(args, work / "split")
    curve = validation_datalist(split, args.val_patients, args.split_seed, work / "split")
    result["data"] = {"test_images": split["test"], "pool_images": split["pool"]}
    result["validation"] = {"names": curve["validation"]}

    def finetune(n: int, seed: int, budget: int, root: Path) -> dict:
        run = finetune_dermoscopy(args, n, seed, None, budget, None, curve, root, eval_curve_every=args.curve_every)
        return {**run, "labeled_samples": len(run["labeled_images"]), "validation_images": curve["validation"]}

    curve_runs(args, result, save, curve["rest"], finetune)
