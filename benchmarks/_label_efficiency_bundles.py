"""The ACDC protocol of ``label_efficiency.py`` run through the bundles (``--dataset heart``).

(``--dataset dermoscopy`` runs through the same loop, :func:`run_bundles`, with the split, pretraining and fine-tuning
of :mod:`_label_efficiency_dermoscopy_bundles`.)

Pretraining is ``bundles/cluster_contrastive_pretrain`` with ``configs/train.json`` + ``train_slices.json``
(``local_discrimination``: ``bundles/local_discrimination_pretrain`` with the same two configs),
fine-tuning and scoring ``bundles/heart_ct_segmentation`` with ``train.json`` + ``train_slices.json``, each run by
:func:`~monai_cluster.workflows.segmentation_bundle.run_bundle` with overrides. This module keeps only the
protocol:

- the split: the held-out test patients are the bundle's own group-stratified hold-out (``num_val_patients``,
  ``split_seed``); pretraining sees the other patients only, through a folder of links to their volumes
  (:func:`pool_folder`, the same selection function as the bundle);
- the methods as bundle options (:data:`BUNDLE_METHODS`) and the measured settings as overrides
  (:func:`pretrain_overrides`, :func:`finetune_overrides`);
- seeds and pairing: seed ``s`` is the fine-tuning bundle's ``seed`` (the labeled patients, the initialisation of
  what is not loaded, the batch order and the augmentation draws), identical for every method;
- semi-supervised fine-tuning (issue 23) as the bundle's options: ``semi_supervised`` (``mean_teacher``,
  ``copy_paste``) with ``ema_decay``, ``consistency_*`` and ``copy_paste_fraction``; the bundle's default unlabeled
  set is every slice of the pool patients left unlabeled, so the test patients never enter it;
- the records: one pretraining per (method, length), one fine-tuning per (labeled patients, seed, variant), each in
  its own ``bundle_root`` under ``--work-dir``, read back from the bundles' JSON outputs.

The loop, optimiser, schedule, augmentation, autoencoder, label selection and metrics are the bundles'.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import nibabel as nib
from _bundle_runs import SEMI_OPTIONS, curve_runs, epochs_for
from _label_efficiency_finetune import steps_for

from monai_cluster.workflows.segmentation_bundle import run_bundle
from monai_cluster.workflows.segmentation_slices import patient_table, select_patients
from monai_cluster.workflows.semi_supervised import check_semi_supervised_options

__all__ = [
    "BUNDLE_METHODS",
    "bundle_exclude",
    "check_bundle_args",
    "curve_bundles",
    "epochs_note",
    "finetune_bundle",
    "finetune_overrides",
    "ld_pretrain_overrides",
    "pool_folder",
    "pretrain_bundle",
    "pretrain_overrides",
    "run_bundles",
]

logger = logging.getLogger("label_efficiency")

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_BUNDLE = REPO / "bundles" / "cluster_contrastive_pretrain"
LD_BUNDLE = REPO / "bundles" / "local_discrimination_pretrain"
HEART_BUNDLE = REPO / "bundles" / "heart_ct_segmentation"
PRETRAIN_CONFIGS = ("train.json", "train_slices.json")
FINETUNE_CONFIGS = ("train.json", "train_slices.json")
DECODER_BLOCKS = ("upcat_4", "upcat_3", "upcat_2", "upcat_1")

BUNDLE_METHODS: dict[str, dict] = {
    "simclr": {"global_strategy": "G_R", "use_pseudo_classes": False, "local_weight": 0.0},
    "global_local": {"global_strategy": "G_D", "use_pseudo_classes": False},
    "cluster_guided": {"global_strategy": "G_R", "use_pseudo_classes": True},
    "cluster_guided_gd": {"global_strategy": "G_D", "use_pseudo_classes": True},
    "global_local_staged": {"global_strategy": "G_D", "use_pseudo_classes": False, "schedule": "staged"},
    "cluster_guided_staged": {"global_strategy": "G_R", "use_pseudo_classes": True, "schedule": "staged"},
    "local_discrimination": {},
}
"""Each pretraining method of the protocol as options of the pretraining bundle's slice overlay
(``local_discrimination``: the local-discrimination bundle's slice overlay, :data:`METHOD_BUNDLES`)."""
METHOD_BUNDLES = {"local_discrimination": LD_BUNDLE}
"""The methods pretrained by another bundle than ``PRETRAIN_BUNDLE`` (with the same configs)."""


def bundle_exclude(method: str, decoder_layer: str) -> list[str] | None:
    """The fine-tuning bundle's ``pretrained_exclude`` for ``method``: what its pretraining did not train.

    ``random`` loads nothing (``None``); SimCLR trains the encoder only (the decoder and head start from the seed);
    the local losses train the decoder down to ``decoder_layer`` (the blocks after it and the head start fresh);
    local discrimination trains the whole ``BasicUNet`` but its head.

    Raises:
        ValueError: for an unknown ``method`` or ``decoder_layer``.
    """
    if method == "random":
        return None
    if method not in BUNDLE_METHODS:
        raise ValueError(f"method must be 'random' or one of {sorted(BUNDLE_METHODS)}, got {method!r}.")
    if method == "simclr":
        return ["final_conv", *DECODER_BLOCKS]
    if method == "local_discrimination":
        return ["final_conv"]
    if decoder_layer not in DECODER_BLOCKS:
        raise ValueError(f"decoder_layer must be one of {DECODER_BLOCKS}, got {decoder_layer!r}.")
    return ["final_conv", *DECODER_BLOCKS[DECODER_BLOCKS.index(decoder_layer) + 1 :]]


def _volumes(dataset_dir: Path) -> list[dict]:
    images = sorted((dataset_dir / "images").glob("*.nii*"))
    if not images:
        raise ValueError(f"--train-dir {dataset_dir} must hold images/*.nii.gz and labels/ of the same names.")
    return [{"image": str(p), "label": str(dataset_dir / "labels" / p.name), "key": p.name.split(".")[0]} for p in images]


def pool_folder(dataset_dir: str | os.PathLike, num_test: int, split_seed: int, out: Path) -> dict:
    """Link the volumes of the pretraining pool (every patient the fine-tuning bundle does not hold out) into ``out``.

    The held-out patients are :func:`~monai_cluster.workflows.segmentation_slices.select_patients`'s, as the
    fine-tuning bundle draws them with ``num_val_patients=num_test`` and ``split_seed``. A folder that already holds
    exactly these links is kept as it is, and a new one is built aside and renamed into place, so processes that
    run in parallel (the GPU script's) never see a half-built or removed pool.

    Returns:
        ``{"dataset_dir": str(out), "test": [...], "pool": [...], "pool_slices": int}``.
    """
    dataset_dir = Path(dataset_dir)
    table = patient_table(_volumes(dataset_dir))
    chosen = select_patients(table, num_val_patients=num_test, num_labeled=1, split_seed=split_seed)
    items = [item for name in chosen["pool"] for item in table["volumes"][name]]
    links = {f"{sub}s/{Path(item[sub]).name}": Path(item[sub]).resolve() for item in items for sub in ("image", "label")}
    slices = sum(int(nib.load(item["image"]).shape[-1]) for item in items)
    result = {"dataset_dir": str(out), "test": chosen["val"], "pool": chosen["pool"], "pool_slices": slices}

    def current() -> dict:
        found = [p for sub in ("images", "labels") if (out / sub).is_dir() for p in (out / sub).iterdir()]
        return {f"{p.parent.name}/{p.name}": p.resolve() for p in found}

    if out.is_dir() and current() == links:
        return result
    if out.exists():
        shutil.rmtree(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    for rel, src in links.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).symlink_to(src)
    try:
        os.rename(tmp, out)
    except OSError:  # another process put the same pool in place meanwhile
        shutil.rmtree(tmp)
        if current() != links:
            raise
    return result


def pretrain_overrides(args, method: str, steps: int, pool: dict) -> dict:
    """The pretraining bundle's overrides: ``method``'s options plus the protocol's measured settings.

    ``--ae-steps`` and ``--local-steps`` (the staged local stage) are turned into the bundle's epochs over the pool.
    ``--pretrain-schedule bundle`` leaves the optimiser and schedule at the bundle's defaults (only ``max_steps`` is
    passed), to measure those defaults against the protocol's.
    """
    size = [args.image_size, args.image_size]
    overrides = {
        **BUNDLE_METHODS[method],
        "dataset_dir": pool["dataset_dir"], "seed": args.pretrain_seed, "device": args.device, "amp": args.amp,
        "image_size": size, "crop_fraction": args.heart_crop, "features": list(args.features),
        "num_partitions": args.partitions, "batch_size": args.pretrain_batch, "learning_rate": args.pretrain_lr,
        "max_steps": steps, "warmup_steps": min(50, steps), "min_lr_ratio": 0.1,
        "optimizer_name": "AdamW", "weight_decay": 1e-4,
        "temperature": args.temperature, "crop_scale": list(args.crop_scale),
        "local_num_locations": args.local_locations, "local_region_size": args.local_region,
        "decoder_layer": args.decoder_layer, "num_clusters": list(args.num_clusters),
        "pseudo_class_level": args.mask_level,
        "autoencoder_epochs": epochs_for(args.ae_steps, pool["pool_slices"], args.pretrain_batch),
        "autoencoder_learning_rate": 1e-3,
        "local_epochs": epochs_for(args.local_steps, pool["pool_slices"], args.pretrain_batch),
        "local_learning_rate": args.local_lr,
        **({"local_weight": args.local_weight} if method != "simclr" else {}),
    }  # fmt: skip
    if getattr(args, "pretrain_schedule", "protocol") == "bundle":
        for name in ("warmup_steps", "min_lr_ratio", "optimizer_name", "weight_decay"):
            del overrides[name]
    return overrides


def ld_pretrain_overrides(args, steps: int, pool: dict) -> dict:
    """The local-discrimination bundle's overrides: the protocol's pool, seed, geometry and network, and the settings
    that the removed in-memory pipeline gave local discrimination (commit cf400c9): ``--ld-batch`` images per step,
    ``round(steps * --ld-steps-factor)`` steps, Adam at ``--pretrain-lr`` with 50 warm-up steps and a cosine to a
    tenth, every loss term from the first step."""
    ld_steps = max(1, round(steps * args.ld_steps_factor))
    return {
        "dataset_dir": pool["dataset_dir"], "seed": args.pretrain_seed, "device": args.device, "amp": args.amp,
        "spatial_size": [args.image_size, args.image_size], "crop_fraction": args.heart_crop,
        "features": list(args.features), "batch_size": args.ld_batch, "learning_rate": args.pretrain_lr,
        "max_steps": ld_steps, "warmup_steps": min(50, ld_steps), "min_lr_ratio": 0.1, "optimizer_name": "Adam",
        "weight_decay": 0.0, "warmup_epochs": 0,
    }  # fmt: skip


def pretrain_bundle(args, method: str, steps: int, pool: dict, root: Path) -> dict:
    """Pretrain ``method`` for ``steps`` through its bundle in ``root`` (skipped when done, resumed after a kill).

    Returns:
        the bundle's ``pretrain_summary.json`` (local discrimination: ``model_info.json``) plus ``model`` and
        ``seconds_this_invocation``.
    """
    bundle = METHOD_BUNDLES.get(method, PRETRAIN_BUNDLE)
    model = root / "models_slices" / "model.pt"
    summary_path = root / "models_slices" / ("model_info.json" if bundle == LD_BUNDLE else "pretrain_summary.json")
    if model.is_file() and summary_path.is_file():
        return {**json.loads(summary_path.read_text()), "model": str(model)}
    if bundle == LD_BUNDLE:
        overrides = ld_pretrain_overrides(args, steps, pool)
    else:
        overrides = pretrain_overrides(args, method, steps, pool)
    resume = any((root / "models_slices").glob("**/*.pt"))
    logger.info("pretraining %s for %d steps in %s%s", method, steps, root, " (resumed)" if resume else "")
    start = time.time()
    run_bundle(bundle, PRETRAIN_CONFIGS, bundle_root=root, resume=resume, **overrides)
    summary = json.loads(summary_path.read_text())
    return {**summary, "model": str(model), "seconds_this_invocation": round(time.time() - start, 1),
            "overrides": {k: v for k, v in overrides.items() if k != "dataset_dir"}}


def finetune_overrides(
    args, num_labeled: int, seed: int, method: str, steps: int, init: str | None, semi: str = "none"
) -> dict:
    """The fine-tuning bundle's overrides of one run: the protocol's patients, seed, budget and scoring, and the
    semi-supervised method ``semi`` with its settings (``--ema-decay`` ...) unless it is ``"none"``."""
    semi_options = {}
    if semi != "none":
        semi_options = {"semi_supervised": semi, **{name: getattr(args, name) for name in SEMI_OPTIONS}}
    if args.augment == "flip":
        raise ValueError("--augment flip has no bundle equivalent (the bundle's augment is all or none); use full or none.")
    return {
        "dataset_dir": args.train_dir[0], "num_val_patients": args.num_test, "split_seed": args.split_seed,
        "num_labeled": num_labeled, "seed": seed, "device": args.device, "amp": args.amp,
        "image_size": [args.image_size, args.image_size], "crop_fraction": args.heart_crop,
        "features": list(args.features), "in_channels": 1, "num_classes": 4,
        "batch_size": args.finetune_batch, "learning_rate": args.finetune_lr, "optimizer_name": "Adam",
        "weight_decay": 0.0, "max_steps": steps, "warmup_steps": 0, "min_lr_ratio": 0.0,
        "augment": args.augment == "full", "eval_every_steps": args.eval_every, "eval_last": args.eval_last,
        "val_interval": 10**6, "use_pretrained": init is not None,
        "pretrained_exclude": bundle_exclude(method, args.decoder_layer),
        **({"pretrained_path": init} if init is not None else {}), **semi_options,
    }  # fmt: skip


def finetune_bundle(
    args, num_labeled: int, seed: int, method: str, steps: int, init: str | None, root: Path, semi: str = "none",
    **extra,
) -> dict:
    """One fine-tuning run through the heart bundle in ``root`` (a partial run is started over); its record.

    ``extra`` are further bundle overrides (the learning curve's ``dataset_dir``, ``num_val_patients`` and
    ``eval_curve_every``).

    Returns:
        ``dice`` (mean over structures of the per-structure means over held-out volumes), ``dice_per_class``,
        ``dice_training_grid`` (the same on the training grid, as the in-memory pipeline's records scored),
        ``hd95`` (same, in the labels' unit), ``hd95_unit``, ``labeled_patients``, ``labeled_slices``, ``steps``,
        ``evaluated_steps``, ``evaluations`` (with ``eval_curve_every``: ``[{"step", "dice", "dice_per_class"}]``),
        ``seconds``, ``semi_supervised`` and ``unlabeled_slices`` (0 without a method).
    """
    if root.exists():
        shutil.rmtree(root)
    overrides = {**finetune_overrides(args, num_labeled, seed, method, steps, init, semi), **extra}
    start = time.time()
    workflow = run_bundle(HEART_BUNDLE, FINETUNE_CONFIGS, bundle_root=root, **overrides)
    metrics = json.loads((root / "eval_slices_steps" / "metrics.json").read_text())
    data = workflow.parser.get_parsed_content("data")
    unlabeled = workflow.parser.get_parsed_content("unlabeled#data")
    report = getattr(workflow.parser.get_parsed_content("network"), "pretrained_report", None) or {}
    for path in root.glob("models_slices/*.pt"):  # the runs' weights are not kept: the records are
        path.unlink()
    record = {
        "dice": metrics["mean_dice"], "dice_per_class": metrics["dice"], "hd95": metrics["mean_hd95"],
        "hd95_per_class": metrics["hd95"], "hd95_unit": metrics["hd95_unit"], "test_volumes": metrics["num_volumes"],
        "dice_training_grid": metrics.get("mean_dice_training_grid"),
        "dice_training_grid_per_class": metrics.get("dice_training_grid"),
        "labeled_patients": data["selection"]["labeled"], "test_patients": data["selection"]["val"],
        "labeled_slices": len(data["train"]), "steps": steps, "evaluated_steps": metrics["steps"],
        "loaded_tensors": int(report.get("matched", 0)), "semi_supervised": semi, "unlabeled_slices": len(unlabeled),
        "unlabeled_patients": sorted({item["patient"] for item in unlabeled}),
        "seconds": round(time.time() - start, 1),
    }  # fmt: skip
    if "evaluations" in metrics:
        record["evaluations"] = [
            {"step": e["step"], "dice": e["mean_dice"], "dice_per_class": e["dice"]} for e in metrics["evaluations"]
        ]
    return record


def curve_bundles(args, result: dict, save) -> None:
    """``--learning-curve`` through the heart bundle: random-initialisation runs that choose the fine-tuning length.

    The bundle fine-tunes on the folder of pool patients (:func:`pool_folder`: the test patients never enter) and
    holds out ``--val-patients`` of them itself (``num_val_patients``, group-stratified by ``--split-seed``): the
    validation patients. For every setting of ``--curve-labeled`` (``0``: the whole rest of the pool), seed and
    budget of ``--curve-steps``, one run with its own schedule over that budget is scored like the protocol (the
    mean of the last ``--eval-last`` evaluations every ``--eval-every`` steps, on the validation volumes) and also
    evaluated every ``--curve-every`` steps (the bundle's ``eval_curve_every``). Entries already in
    ``result["curve"]`` are skipped; ``save()`` is called after every run.
    """
    check_bundle_args(args)
    work = Path(args.work_dir)
    pool = pool_folder(args.train_dir[0], args.num_test, args.split_seed, work / "pool")
    if args.val_patients >= len(pool["pool"]):
        raise ValueError(f"--val-patients {args.val_patients} leaves no pool patient to label ({len(pool['pool'])} "
                         "in the pool).")  # fmt: skip
    result["data"] = {"test_patients": pool["test"], "pool_patients": pool["pool"], "pool_slices": pool["pool_slices"]}

    def finetune(n: int, seed: int, budget: int, root: Path) -> dict:
        run = finetune_bundle(
            args, n, seed, "random", budget, None, root, dataset_dir=pool["dataset_dir"],
            num_val_patients=args.val_patients, eval_curve_every=args.curve_every,
        )  # fmt: skip
        val = run.pop("test_patients")
        result["validation"] = {"names": val}
        return {**run, "labeled_samples": run["labeled_slices"], "validation_patients": val}

    curve_runs(args, result, save, len(pool["pool"]) - args.val_patients, finetune)


def epochs_note(steps: int, pool_slices: int, batch: int) -> str:
    """How many passes over the pool ``steps`` steps are (for the log)."""
    return f"{steps} steps = {steps / max(1, pool_slices // batch):.1f} epochs of {pool_slices} slices"


def check_bundle_args(args) -> None:
    """Refuse the options the bundle pipeline does not have, naming them."""
    if args.epochs is not None:
        raise ValueError("--epochs: the bundle pipeline budgets fine-tuning in steps (--finetune-steps).")
    if not args.hd95:
        raise ValueError("--no-hd95: the bundles always score HD95 (the option only reads the in-memory pipeline's "
                         "records that set it).")
    if args.dataset == "dermoscopy":
        from _label_efficiency_dermoscopy_bundles import DERMOSCOPY_METHODS

        methods = DERMOSCOPY_METHODS
    else:
        methods = BUNDLE_METHODS
    bad = [m for m in args.methods if m != "random" and m not in methods]
    if bad:
        raise ValueError(f"--methods {bad} have no bundle pretraining for --dataset {args.dataset} (bundle methods: "
                         f"random, {sorted(methods)}).")  # fmt: skip
    if args.dataset == "heart" and (args.test_dir or len(args.train_dir) != 1):
        raise ValueError("the bundle pipeline takes one --train-dir (images/ + labels/) and holds out --num-test "
                         f"patients itself; got --train-dir {args.train_dir} --test-dir {args.test_dir}.")
    bundle_exclude("global_local", args.decoder_layer)
    for semi in getattr(args, "semi_supervised", None) or ["none"]:  # the bundle's own check, before any run
        check_semi_supervised_options(semi, None, **{name: getattr(args, name) for name in SEMI_OPTIONS})
    if math.isnan(args.heart_crop) or not 0 < args.heart_crop <= 1:
        raise ValueError(f"--heart-crop must lie in (0, 1], got {args.heart_crop}.")


def _protocol(args, work: Path, result: dict):
    """The dataset's split written out, and its ``(units, pretrain(method, steps, root), finetune(...))``."""
    if args.dataset == "dermoscopy":
        from _label_efficiency_dermoscopy_bundles import dermoscopy_split, finetune_dermoscopy, pretrain_dermoscopy

        split = dermoscopy_split(args, work / "split")
        result["data"] = {"test_images": split["test"], "pool_images": split["pool"],
                          "pretrain_images": split["pretrain_images"]}  # fmt: skip

        def finetune(n, seed, method, steps, init, root, semi):
            exclude = bundle_exclude(method, args.decoder_layer)
            return finetune_dermoscopy(args, n, seed, exclude, steps, init, split, root, semi)

        return len(split["pool"]), lambda m, s, root: pretrain_dermoscopy(args, m, s, split, root), finetune
    pool = pool_folder(args.train_dir[0], args.num_test, args.split_seed, work / "pool")
    result["data"] = {"test_patients": pool["test"], "pool_patients": pool["pool"], "pool_slices": pool["pool_slices"]}

    def finetune(n, seed, method, steps, init, root, semi):
        return finetune_bundle(args, n, seed, method, steps, init, root, semi)

    logger.info("pool: %s", epochs_note(max(args.pretrain_steps or [1]), pool["pool_slices"], args.pretrain_batch))
    return len(pool["pool"]), lambda m, s, root: pretrain_bundle(args, m, s, pool, root), finetune


def run_bundles(args, result: dict, save, settings, variants: list[tuple[str, str, int | None, str]]) -> None:
    """Every pretraining, then every fine-tuning of ``settings(pool patients)`` x ``args.seeds`` x ``variants``.

    ``variants`` are ``(name, pretraining method, pretraining steps or None, semi_supervised)``; one pretraining
    serves every semi-supervised variant of its initialisation.

    Runs already in ``result["runs"]`` are skipped; ``save()`` is called after each pretraining and each run.
    """
    check_bundle_args(args)
    work = Path(args.work_dir)
    units, pretrain, finetune = _protocol(args, work, result)
    inits: dict[tuple[str, int], str] = {}
    for _, method, steps, _ in variants:
        if steps is None or (method, steps) in inits:
            continue
        logger.info("pretraining %s for %d steps", method, steps)
        log = pretrain(method, steps, work / result["pretrain_dir"] / f"{method}_{steps}")
        result["pretrain"][f"{method}@{steps}"] = {k: v for k, v in log.items() if k != "losses"} | {
            "last_losses": (log.get("losses") or [None])[-1]}
        inits[(method, steps)] = log["model"]
        save()
    if args.pretrain_only:
        return
    done = {(r["num_labeled"], r["seed"], r["variant"]) for r in result["runs"]}
    for n in settings(units):
        steps = steps_for(args.steps_table, n)
        for seed in args.seeds:
            for name, method, pre_steps, semi in variants:
                if (n, seed, name) in done:
                    continue
                if semi != "none" and n >= units:
                    logger.info("n=%d seed=%d %s skipped: every pool unit is labeled, none left unlabeled", n, seed,
                                name)  # fmt: skip
                    continue
                init = None if pre_steps is None else inits[(method, pre_steps)]
                root = work / "finetune" / f"{name.replace('@', '_').replace('+', '_')}_n{n}_s{seed}"
                run = finetune(n, seed, method, steps, init, root, semi)
                run.update({"num_labeled": n, "seed": seed, "variant": name, "method": method, "pretrain_steps": pre_steps})
                result["runs"].append(run)
                logger.info("n=%d seed=%d %s: dice %.4f %s hd95 %s %s (%d steps, %.0f s)", n, seed, name, run["dice"],
                            run["dice_per_class"], run["hd95"], run["hd95_unit"], steps, run["seconds"])
                save()
