"""The bundles behind ``local_discrimination_retina.py``: pretraining and fine-tuning run by the bundles' configs.

- ``ld``: ``bundles/local_discrimination_pretrain`` (``configs/train.json``) with overrides;
- ``cg``: ``bundles/cluster_contrastive_pretrain`` (``configs/train.json``) with overrides;
- fine-tuning: ``bundles/dermoscopy_segmentation`` (``configs/train.json``), the 2D segmentation bundle, on DRIVE
  through a MONAI datalist (``training`` = the 20 DRIVE training images, ``validation`` = the 20 test images), the
  test images scored within DRIVE's field-of-view masks (``fov_dir``), ``num_labeled`` images drawn by ``seed``.

This module keeps only the protocol: the pretraining pool (a folder of links to the DRIVE training and CHASE_DB1
images, :func:`pool_folder`), the fine-tuning split (:func:`finetune_datalist`), the measured settings as overrides
(:func:`ld_overrides`, :func:`cg_overrides`, :func:`finetune_overrides`) and the records read back from the
bundles' outputs. The loops, optimisers, schedules, augmentation, label selection and metrics are the bundles'.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from _bundle_runs import epochs_for

from monai_cluster.data import list_fundus_pairs
from monai_cluster.handlers import find_last_checkpoint, load_checkpoint
from monai_cluster.utils import atomic_write_json
from monai_cluster.workflows.segmentation_bundle import bundle_workflow, run_bundle

__all__ = [
    "cg_overrides",
    "finetune",
    "finetune_datalist",
    "finetune_overrides",
    "ld_network",
    "ld_overrides",
    "pool_folder",
    "pretrain",
]

logger = logging.getLogger("ld_retina")

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {
    "ld": REPO / "bundles" / "local_discrimination_pretrain",
    "cg": REPO / "bundles" / "cluster_contrastive_pretrain",
    "finetune": REPO / "bundles" / "dermoscopy_segmentation",
}
DECODER_BLOCKS = ["upcat_1", "upcat_2", "upcat_3", "upcat_4"]


def pool_folder(root: Path, out: Path) -> dict:
    """Link the pretraining images (DRIVE training + all CHASE_DB1, no masks) into ``out/images``.

    Returns:
        ``{"dataset_dir": str(out), "images": count, "keys": [link names]}``.
    """
    items = list_fundus_pairs(root / "drive", "drive", "train") + list_fundus_pairs(root / "chase_db1", "chase_db1")
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    for item in items:
        src = Path(item["image"]).resolve()
        (out / "images" / src.name).symlink_to(src)
    return {"dataset_dir": str(out), "images": len(items), "keys": sorted(Path(i["image"]).name for i in items)}


def finetune_datalist(root: Path, out: Path) -> dict:
    """Write the fine-tuning split as a MONAI datalist: DRIVE training images as the labeled pool, the DRIVE test
    images as the held-out set scored within ``drive/testing/mask`` (the bundle's ``fov_dir``).

    Returns:
        ``{"datalist": path, "fov_dir": path, "train": count, "test": count}``.
    """
    split = {
        name: [{"image": i["image"], "label": i["label"]} for i in list_fundus_pairs(root / "drive", "drive", part)]
        for name, part in (("training", "train"), ("validation", "test"))
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(split, out)
    return {"datalist": str(out), "fov_dir": str(root / "drive" / "testing" / "mask"),
            "train": len(split["training"]), "test": len(split["validation"])}  # fmt: skip


def ld_overrides(args, pool: dict) -> dict:
    """The local-discrimination bundle's overrides; ``--ld-steps`` and ``--ld-warmup`` become its epochs."""
    epochs = epochs_for(args.ld_steps, pool["images"], args.ld_batch)
    return {
        "dataset_dir": pool["dataset_dir"], "seed": args.pretrain_seed, "device": "cpu", "num_val": 0,
        "spatial_size": [args.image_size] * 2, "crop_size": [args.crop] * 2, "features": list(args.features),
        "num_clusters": args.clusters, "grid_size": args.grid, "assignment_activation": args.assignment_activation,
        "batch_size": args.ld_batch, "learning_rate": args.lr, "epochs": epochs,
        "warmup_epochs": min(epochs - 1, round(args.ld_warmup * epochs)), "val_interval": epochs,
    }  # fmt: skip


def cg_overrides(args, pool: dict) -> dict:
    """The cluster-guided bundle's overrides; ``--ae-steps`` become the autoencoder's epochs, ``--cg-steps`` its
    ``max_steps``."""
    return {
        "dataset_dir": pool["dataset_dir"], "seed": args.pretrain_seed, "device": "cpu",
        "image_size": [args.image_size] * 2, "crop_size": [args.crop] * 2, "features": list(args.features),
        "num_clusters": list(args.cg_levels), "pseudo_class_level": len(args.cg_levels) - 1,
        "batch_size": args.cg_batch, "learning_rate": args.lr, "max_steps": args.cg_steps,
        "autoencoder_epochs": epochs_for(args.ae_steps, pool["images"], args.cg_batch),
    }  # fmt: skip


def pretrain(method: str, args, pool: dict, root: Path) -> dict:
    """Pretrain ``method`` (``ld`` or ``cg``) through its bundle in ``root``: skipped when done, resumed after a kill.

    Returns:
        ``{"model": models/model.pt, "wall_s", "overrides", ...}`` (cg: the bundle's ``pretrain_summary.json``).
    """
    info_path = root / "benchmark_info.json"
    model = root / "models" / "model.pt"
    if model.is_file() and info_path.is_file():
        return json.loads(info_path.read_text())
    overrides = (ld_overrides if method == "ld" else cg_overrides)(args, pool)
    resume = any((root / "models").glob("**/*.pt"))
    logger.info("pretraining %s in %s%s", method, root, " (resumed)" if resume else "")
    start = time.time()
    workflow = run_bundle(BUNDLES[method], ("train.json",), bundle_root=root, resume=resume, **overrides)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    info = {"model": str(model), "wall_s_this_invocation": round(time.time() - start, 1), "resumed": resume,
            "iterations": int(trainer.state.iteration), "images": pool["images"],
            "overrides": {k: v for k, v in overrides.items() if k != "dataset_dir"}}  # fmt: skip
    summary = root / "models" / "pretrain_summary.json"
    if summary.is_file():
        info["summary"] = {k: v for k, v in json.loads(summary.read_text()).items() if k != "losses"}
    atomic_write_json(info, info_path)
    return info


def ld_network(args, pool: dict, root: Path):
    """The local-discrimination network of the bundle run in ``root`` (its last checkpoint), the same network
    untrained (seeded by ``--pretrain-seed``) and the bundle's deterministic preprocessing (``eval_transform``: load,
    scale, resize), for scoring cluster maps."""
    overrides = {**ld_overrides(args, pool), "check_data": False}
    workflow = bundle_workflow(BUNDLES["ld"], ("train.json",), bundle_root=root, **overrides)
    network = workflow.parser.get_parsed_content("network").cpu()
    load_checkpoint(find_last_checkpoint(root / "models"), {"network": network})
    torch.manual_seed(args.pretrain_seed)
    untrained = workflow.parser.get_parsed_content("network_def", lazy=False).cpu()  # a fresh instance
    return network, untrained, workflow.parser.get_parsed_content("eval_transform")


def finetune_overrides(args, split: dict, seed: int, init: str, weights: str | None) -> dict:
    """The fine-tuning bundle's overrides of one run: the split, seed, budget and scoring of the protocol.

    ``<method>_encoder`` loads the encoder only (the decoder blocks start from the seed, as the head does).
    """
    every = max(1, args.ft_steps // 10)  # the last three evaluations: 80, 90 and 100% of the steps
    return {
        "datalist": split["datalist"], "fov_dir": split["fov_dir"], "num_labeled": args.labeled, "seed": seed,
        "device": "cpu", "image_size": args.image_size, "crop_size": args.ft_crop, "features": list(args.features),
        "batch_size": args.ft_batch, "learning_rate": args.lr, "optimizer_name": "Adam", "weight_decay": 0.0,
        "max_steps": args.ft_steps, "warmup_steps": 0, "min_lr_ratio": 0.0, "eval_every_steps": every,
        "eval_last": min(3, args.ft_steps // every), "val_interval": 10**6, "use_pretrained": weights is not None,
        "pretrained_exclude": ["final_conv", *DECODER_BLOCKS] if init.endswith("_encoder") else None,
        **({"pretrained_path": weights} if weights is not None else {}),
    }  # fmt: skip


def finetune(args, split: dict, seed: int, init: str, weights: str | None, root: Path) -> dict:
    """One fine-tuning run through the segmentation bundle in ``root`` (a partial run is started over); its record.

    Returns:
        ``seed``, ``init``, ``labeled`` (image keys), ``dice`` (mean of the evaluations), ``dice_evals``
        (``{step: mean Dice over the test images}``), ``test_images``, ``loaded_tensors``, ``wall_s``.
    """
    if root.exists():
        shutil.rmtree(root)
    overrides = finetune_overrides(args, split, seed, init, weights)
    start = time.time()
    workflow = run_bundle(BUNDLES["finetune"], ("train.json",), bundle_root=root, **overrides)
    folder = root / "eval_steps"
    metrics = json.loads((folder / "metrics.json").read_text())
    evals = {str(s): json.loads((folder / f"step_{s}.json").read_text())["mean_dice"] for s in metrics["steps"]}
    data = workflow.parser.get_parsed_content("data")
    report = getattr(workflow.parser.get_parsed_content("network"), "pretrained_report", None) or {}
    for path in root.glob("models/*.pt"):  # the runs' weights are not kept: the records are
        path.unlink()
    return {
        "seed": seed, "init": init, "labeled": [Path(i["image"]).name for i in data["train"]],
        "dice": metrics["mean_dice"], "dice_evals": evals, "test_images": int(metrics["num_images"]),
        "loaded_tensors": int(report.get("matched", 0)), "wall_s": round(time.time() - start, 1),
    }  # fmt: skip
