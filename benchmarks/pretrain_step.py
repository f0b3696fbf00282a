"""One pretraining step of the ``cluster_contrastive_pretrain`` bundle against a bare PyTorch loop doing the same work.

The bundle side is the bundle itself: its config parsed by ``monai.bundle`` (``train.json``, plus ``train_3d.json``
for 3D), with its dataset, cached base transforms, per-view augmentation, ``MultiViewPrepareBatch``,
``SupervisedTrainer`` and every handler (non-finite check, LR schedule, checkpointer, TensorBoard progress,
stats). The data is the bundle's own synthetic set (``synthetic_n`` images), the pseudo-class table comes from
its autoencoder and clustering stages (one autoencoder epoch: the table's content does not change the cost).

The bare side is what a person would write by hand for the same step: a copy of the same network, the same loss
object, Adam with the same settings, and ONE prepared batch (two views, pseudo-classes, geometry) already in
memory, so it pays nothing for data: ``zero_grad, forward, loss, backward, step``.

Both run interleaved in one process (one bundle epoch of ``K`` steps, then ``K`` bare steps, repeated, and the
variants of a dimension round by round), so load on the machine and drift hit all of them alike. Reported per variant and dimension: the bundle's mean step all-in (epoch wall
time over its steps: data, prepare, compute, iteration and epoch handlers), its parts (data fetch, the
iteration itself, epoch handlers), the bare step, and their ratio; and the cluster-guided step over the
unguided one (``use_pseudo_classes: false``, same losses otherwise).

Variants: ``cluster_guided`` (the bundle's defaults), ``unguided`` (``use_pseudo_classes=false``) and ``simclr``
(no pseudo-classes, ``local_weight=0``: the global loss alone).

Run (2-core CPU, about 10 minutes)::

    python benchmarks/pretrain_step.py --dims 2 3 --rounds 4

Goals (issue 12): the bundle's step at most 1.15x the bare loop; a cluster-guided step at most 1.05x an
unguided one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the bundle's progress bars would interleave with the report

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = Path(__file__).resolve().parent / "results" / "pretrain_step.json"
BUNDLE = REPO / "bundles" / "cluster_contrastive_pretrain"
VARIANTS = {
    "cluster_guided": {},
    "unguided": {"use_pseudo_classes": False},
    "simclr": {"use_pseudo_classes": False, "local_weight": 0.0},
}
# the bundle's defaults, with more synthetic images so that an epoch holds several steps
DEFAULTS = {2: {"synthetic_n": 128, "batch_size": 16}, 3: {"synthetic_n": 16, "batch_size": 4}}
# --toy: tiny sizes for the test of this script (seconds, not a measurement)
TOY = {
    "synthetic_n": 8,
    "synthetic_size": 32,
    "batch_size": 4,
    "features": [4, 4, 8, 8, 16, 4],
    "autoencoder_channels": [4, 8, 8, 8],
    "num_clusters": [2, 3],
    "local_num_locations": 8,
}
TOY_SIZE = {2: [32, 32], 3: [32, 32, 32]}


class StepClock:
    """Ignite handlers that time a trainer's batch fetches, iterations and whole epochs."""

    def __init__(self, trainer) -> None:
        from ignite.engine import Events

        self.fetch, self.iteration, self.epochs, self.steps = [], [], [], []
        self._t = {}
        trainer.add_event_handler(Events.GET_BATCH_STARTED, self._mark, "fetch")
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, self._lap, "fetch", self.fetch)
        trainer.add_event_handler(Events.ITERATION_STARTED, self._mark, "iteration")
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._lap, "iteration", self.iteration)

    def _mark(self, engine, name: str) -> None:
        self._t[name] = time.perf_counter()

    def _lap(self, engine, name: str, into: list) -> None:
        into.append(time.perf_counter() - self._t[name])


def run_epoch(trainer, clock: StepClock) -> tuple[float, int]:
    """One more epoch of the bundle's trainer (ignite continues from its state); returns (wall seconds, steps)."""
    trainer.state.max_epochs = trainer.state.epoch + 1
    before = len(clock.iteration)
    start = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    return wall, len(clock.iteration) - before


def bare_loop(trainer, device: torch.device):
    """The hand-written step on the bundle's network (a copy), loss and optimiser settings, one batch in memory."""
    network = copy.deepcopy(trainer.network).to(device).train()
    settings = trainer.optimizer.defaults
    optimizer = torch.optim.Adam(network.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    loss_fn = trainer.loss_function
    batch = next(iter(trainer.data_loader))
    inputs, targets = trainer.prepare_batch(batch, device, False)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(inputs), targets)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step, tuple(inputs.shape)


class Subject:
    """One variant of one dimension, set up: the bundle's trainer with its clock, and the bare step."""

    def __init__(self, dims: int, variant: str, args: argparse.Namespace, root: Path) -> None:
        from monai_cluster.workflows.segmentation_bundle import bundle_workflow

        self.dims, self.variant = dims, variant
        configs = ("train.json",) if dims == 2 else ("train.json", "train_3d.json")
        self.overrides = {
            **DEFAULTS[dims],
            **VARIANTS[variant],
            "device": args.device,
            "autoencoder_epochs": 1,
            "epochs": 1000,  # the cosine schedule's length: the learning rate stays near its start in both loops
            "seed": 0,
        }
        if args.toy:
            self.overrides.update(TOY, image_size=TOY_SIZE[dims])
        if args.batch_size:
            self.overrides["batch_size"] = args.batch_size
        workflow = bundle_workflow(BUNDLE, configs, bundle_root=root / f"{dims}d_{variant}", **self.overrides)
        setup = time.perf_counter()
        if VARIANTS[variant].get("use_pseudo_classes", True):
            workflow.parser.get_parsed_content("autoencoder#train")
            workflow.parser.get_parsed_content("autoencoder#cluster")
        self.trainer = workflow.parser.get_parsed_content("train#trainer")
        self.setup = time.perf_counter() - setup
        self.clock = StepClock(self.trainer)
        self.bare, self.shape = bare_loop(self.trainer, torch.device(args.device))
        self.bundle_epochs: list[tuple[float, int]] = []
        self.bare_steps: list[float] = []

    def round(self, counted: bool) -> None:
        """One bundle epoch of ``K`` steps, then ``K`` bare steps."""
        wall, steps = run_epoch(self.trainer, self.clock)
        bare_times = [self.bare() for _ in range(steps)]
        if counted:
            self.bundle_epochs.append((wall, steps))
            self.bare_steps += bare_times


def measure(subject: Subject) -> dict:
    """The summary of a subject's counted rounds."""
    dims, variant, overrides, shape, setup = (
        subject.dims, subject.variant, subject.overrides, subject.shape, subject.setup
    )  # fmt: skip
    bundle_epochs, bare_steps, clock = subject.bundle_epochs, subject.bare_steps, subject.clock
    counted = sum(steps for _, steps in bundle_epochs)
    fetch, iteration = clock.fetch[-counted:], clock.iteration[-counted:]
    bundle_step = sum(wall for wall, _ in bundle_epochs) / counted
    bare_step = statistics.mean(bare_steps)
    epoch_handlers = bundle_step - statistics.mean(fetch) - statistics.mean(iteration)
    result = {
        "dims": dims,
        "variant": variant,
        "overrides": {k: v for k, v in overrides.items() if k != "device"},
        "inputs_shape": list(shape),
        "setup_s": setup,
        "steps_counted": counted,
        "bundle_step_s": bundle_step,
        "bundle_fetch_s": statistics.mean(fetch),
        "bundle_iteration_s": statistics.mean(iteration),
        "bundle_epoch_overhead_s": epoch_handlers,
        "bare_step_s": bare_step,
        "bare_step_median_s": statistics.median(bare_steps),
        "ratio": bundle_step / bare_step,
    }
    print(
        f"{dims}D {variant:15s} bundle {bundle_step:.3f} s/step (fetch {result['bundle_fetch_s']:.3f}, iteration "
        f"{result['bundle_iteration_s']:.3f}, epoch handlers {epoch_handlers:.3f}) | bare {bare_step:.3f} s/step | "
        f"x{result['ratio']:.3f}",
        flush=True,
    )
    return result


def markdown(report: dict) -> str:
    lines = [
        "| dims | variant | input (V*B, C, *spatial) | bundle s/step | data fetch | iteration | epoch handlers | "
        "bare s/step | bundle / bare |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['dims']}D | {r['variant']} | {tuple(r['inputs_shape'])} | {r['bundle_step_s']:.3f} | "
            f"{r['bundle_fetch_s']:.3f} | {r['bundle_iteration_s']:.3f} | {r['bundle_epoch_overhead_s']:.3f} | "
            f"{r['bare_step_s']:.3f} | {r['ratio']:.3f} |"
        )
    if report["guidance"]:
        lines += ["", "| dims | cluster-guided / unguided, bundle | cluster-guided / unguided, bare |", "|---|---|---|"]
        lines += [f"| {g['dims']}D | {g['bundle_ratio']:.3f} | {g['bare_ratio']:.3f} |" for g in report["guidance"]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=4, help="counted (bundle epoch, bare steps) rounds")
    parser.add_argument("--batch-size", type=int, default=None, help="override the bundle's batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--allocator", choices=["bundle", "glibc"], default="bundle",
                        help="bundle: as the bundles run (keep_freed_memory on CPU); glibc: malloc's defaults")
    parser.add_argument("--toy", action="store_true", help="tiny sizes: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.allocator == "bundle":  # as the bundles' initialize runs it; also for the bare loop (same process)
        from monai_cluster.utils import keep_freed_memory

        keep_freed_memory(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pretrain_step_") as tmp:
        for dims in args.dims:
            # the variants of one dimension are interleaved too (round by round), so that drift in the machine's
            # speed and the order of the runs do not decide their ratio
            subjects = [Subject(dims, variant, args, Path(tmp)) for variant in args.variants]
            for round_ in range(args.rounds + 1):  # round 0 warms everything up and is not counted
                for subject in subjects:
                    subject.round(counted=round_ > 0)
            rows += [measure(subject) for subject in subjects]
            del subjects
    by = {(r["dims"], r["variant"]): r for r in rows}
    guidance = [
        {
            "dims": d,
            "bundle_ratio": by[(d, "cluster_guided")]["bundle_step_s"] / by[(d, "unguided")]["bundle_step_s"],
            "bare_ratio": by[(d, "cluster_guided")]["bare_step_s"] / by[(d, "unguided")]["bare_step_s"],
        }
        for d in args.dims
        if (d, "cluster_guided") in by and (d, "unguided") in by
    ]
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + (argv if argv is not None else sys.argv[1:])),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), device {args.device}, allocator {args.allocator}",
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
        "guidance": guidance,
        "goals": {
            "bundle_within_1.15x_of_bare": all(r["ratio"] <= 1.15 for r in rows),
            "cluster_guided_within_1.05x_of_unguided": all(g["bundle_ratio"] <= 1.05 for g in guidance) if guidance
            else None,
        },
    }
    from monai_cluster.utils import atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report, args.out)
    print(markdown(report))
    print(json.dumps(report["goals"]))
    return report


if __name__ == "__main__":
    main()
