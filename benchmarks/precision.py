"""Training near the CPU's limit: the bundles' pretraining and fine-tuning steps in float32 and bfloat16 (issue 20).

Each subject is a bundle's own trainer (its config parsed by ``monai.bundle``, its data, transforms, prepare-batch and
handlers), run one epoch at a time, and beside it the bare step on the same network, loss, optimiser settings and
inferer with one batch in memory (``benchmarks/pretrain_step.py``'s machinery). Subjects of one setting are
interleaved round by round, so load and drift hit them alike.

- ``--tasks pretrain`` is ``cluster_contrastive_pretrain`` (cluster-guided, the default; 2D ``train.json``, 3D with
  ``train_3d.json``); ``finetune`` is ``dermoscopy_segmentation`` (2D) or ``heart_ct_segmentation`` (3D).
- ``--precisions fp32 bf16``: bf16 is the bundles' ``amp: true`` on the CPU (``AutocastInferer`` in bfloat16).
  On a CPU without native bfloat16 the bundles fall back to float32; ``--force-bf16`` measures the emulated
  bfloat16 anyway (it is 10-15x slower: see BENCHMARKS.md).
- The machine's practical peak: a large ``torch.matmul`` in each precision on the same threads. Each bare step's
  FLOPs are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward; the optimiser is
  not counted), and the report gives the fraction of the peak that the bare and the bundle steps reach.
- ``--compile``: the bare step with ``torch.compile(network)`` beside the eager one (float32), with its compile time.

Run (2-core CPU)::

    python benchmarks/precision.py --dims 2 --sizes 64 128 --tasks pretrain finetune --rounds 2 --compile
    python benchmarks/precision.py --dims 3 --sizes 64 --tasks pretrain finetune --rounds 2

Goals (issue 20): the 128 px 2D pretraining step at most 0.55x its float32 time in bfloat16, 3D at most 0.7x;
``torch.compile`` adopted only where it gains at least 1.2x.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain_step import StepClock, run_epoch  # noqa: E402

from monai_cluster.utils import atomic_write_json, cpu_supports_bf16, keep_freed_memory  # noqa: E402
from monai_cluster.utils import precision as _precision  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "precision.json"
FEATURES = [16, 16, 32, 64, 128, 16]  # the ACDC protocol's BasicUNet
BUNDLES = {
    ("pretrain", 2): ("cluster_contrastive_pretrain", ("train.json",)),
    ("pretrain", 3): ("cluster_contrastive_pretrain", ("train.json", "train_3d.json")),
    ("finetune", 2): ("dermoscopy_segmentation", ("train.json",)),
    ("finetune", 3): ("heart_ct_segmentation", ("train.json",)),
}
# per (task, dims): overrides that give an epoch of several steps (batch 32 x 2 views in 2D pretraining, as ACDC)
SETTINGS = {
    ("pretrain", 2): {"batch_size": 32, "synthetic_n": 96, "autoencoder_epochs": 1, "epochs": 1000},
    ("pretrain", 3): {"batch_size": 4, "synthetic_n": 12, "autoencoder_epochs": 1, "epochs": 1000},
    ("finetune", 2): {"batch_size": 8, "synthetic_n": 40, "epochs": 1000, "val_interval": 1000, "use_pretrained": False},
    ("finetune", 3): {"batch_size": 2, "num_samples": 2, "synthetic_n": 8, "epochs": 1000, "val_interval": 1000,
                      "use_pretrained": False},
}  # fmt: skip
TOY = {"features": [4, 4, 8, 8, 16, 4], "autoencoder_channels": [4, 8, 8, 8], "num_clusters": [2, 3],
       "local_num_locations": 8}  # fmt: skip


def size_overrides(task: str, dims: int, size: int, toy: bool) -> dict:
    """The image-size options of each bundle (the synthetic images are made at that size too)."""
    if task == "pretrain":
        out = {"image_size": [size] * dims, "synthetic_size": size}
    elif dims == 2:
        out = {"image_size": size, "synthetic_size": size}
    else:
        out = {"roi_size": [size] * 3, "synthetic_size": size}
    if toy:
        out.update({k: v for k, v in TOY.items() if task == "pretrain" or k == "features"})
        out.update({"batch_size": 2, "synthetic_n": 4 if dims == 2 else 3})
        if task == "finetune" and dims == 3:
            out.update({"batch_size": 1, "num_samples": 1})
    return out


def matmul_peak(dtype: torch.dtype, n: int, repeats: int = 3) -> float:
    """FLOP/s of an ``n x n`` matrix product in ``dtype`` (median of ``repeats``), on torch's threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def unet_table(sizes: list[int], repeats: int = 4, batch: int = 32) -> list[dict]:
    """The issue's table: MONAI ``BasicUNet`` 2D (the ACDC features), batch 32, forward + backward + Adam, in float32,
    bfloat16 autocast, and both with channels_last; the median of ``repeats`` steps, precisions interleaved."""
    from monai.networks.nets import BasicUNet

    rows = []
    variants = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
    for size in sizes:
        times = {v: [] for v in variants}
        nets = {}
        for v in variants:
            torch.manual_seed(0)
            net = BasicUNet(2, 1, 4, features=tuple(FEATURES))
            x = torch.randn(batch, 1, size, size)
            if v[1]:
                net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            nets[v] = (net, torch.optim.Adam(net.parameters()), x)
        for _ in range(repeats + 1):  # the first round warms up
            for v, (net, opt, x) in nets.items():
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v[0] == "bf16"):
                    out = net(x)
                opt.zero_grad(set_to_none=True)
                out.float().square().mean().backward()
                opt.step()
                times[v].append(time.perf_counter() - start)
        row = {"size": size}
        for (precision, cl), values in times.items():
            row[precision + ("_channels_last" if cl else "")] = statistics.median(values[1:])
        rows.append(row)
        print(row, flush=True)
    return rows


def count_flops(step_fn) -> int:
    """FLOPs of one call of ``step_fn`` (forward and backward) by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step_fn(count_only=True)
    return int(counter.get_total_flops())


class Subject:
    """A bundle's trainer for one (task, dims, size, precision) and its bare step."""

    def __init__(self, task: str, dims: int, size: int, precision: str, args, root: Path) -> None:
        from monai_cluster.workflows.segmentation_bundle import bundle_workflow

        self.task, self.dims, self.size, self.precision = task, dims, size, precision
        bundle, configs = BUNDLES[(task, dims)]
        overrides = {**SETTINGS[(task, dims)], "device": "cpu", "seed": 0, "amp": precision == "bf16",
                     **size_overrides(task, dims, size, args.toy)}  # fmt: skip
        if args.backbone == "basic_unet":
            overrides.setdefault("features", FEATURES)
        else:
            overrides.pop("features", None)
            overrides["backbone"] = args.backbone
        self.overrides = overrides
        name = f"{task}_{dims}d_{size}_{precision}"
        start = time.perf_counter()
        workflow = bundle_workflow(REPO / "bundles" / bundle, configs, bundle_root=root / name, **overrides)
        if task == "pretrain":
            workflow.parser.get_parsed_content("autoencoder#train")
            workflow.parser.get_parsed_content("autoencoder#cluster")
        self.trainer = workflow.parser.get_parsed_content("train#trainer")
        self.setup_s = time.perf_counter() - start
        self.clock = StepClock(self.trainer)
        batch = next(iter(self.trainer.data_loader))
        self.inputs, self.targets = self.trainer.prepare_batch(batch, torch.device("cpu"), False)[:2]
        self.bare = self._bare_step(compiled=False)
        self.compiled, self.compile_s, self.compile_error = None, None, None
        if args.compile and precision == "fp32":
            try:
                self.compiled = self._bare_step(compiled=True)
                start = time.perf_counter()
                self.compiled()  # compiles forward and backward
                self.compile_s = time.perf_counter() - start
            except Exception as err:  # a missing compiler is a result here, not a crash
                self.compile_error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                self.compiled = None
        self.flops = count_flops(self.bare)
        self.epochs: list[tuple[float, int]] = []
        self.bare_times: list[float] = []
        self.compiled_times: list[float] = []

    def _bare_step(self, compiled: bool):
        network = copy.deepcopy(self.trainer.network).train()
        settings = self.trainer.optimizer.defaults
        optimizer = torch.optim.Adam(network.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
        run = torch.compile(network) if compiled else network
        inferer, loss_fn, inputs, targets = self.trainer.inferer, self.trainer.loss_function, self.inputs, self.targets

        def step(count_only: bool = False) -> float:
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(inferer(inputs, run), targets).mean()
            loss.backward()
            if not count_only:
                optimizer.step()
            return time.perf_counter() - start

        return step

    def round(self, counted: bool) -> None:
        wall, steps = run_epoch(self.trainer, self.clock)
        bare = [self.bare() for _ in range(steps)]
        compiled = [self.compiled() for _ in range(steps)] if self.compiled else []
        if counted:
            self.epochs.append((wall, steps))
            self.bare_times += bare
            self.compiled_times += compiled

    def summary(self, peak: dict[str, float]) -> dict:
        steps = sum(s for _, s in self.epochs)
        bundle = sum(w for w, _ in self.epochs) / steps
        bare = statistics.median(self.bare_times)
        row = {
            "task": self.task, "dims": self.dims, "size": self.size, "precision": self.precision,
            "backbone": self.overrides.get("backbone", "basic_unet"),
            "inputs_shape": list(self.inputs.shape), "steps_counted": steps, "setup_s": round(self.setup_s, 2),
            "bundle_step_s": bundle, "bundle_fetch_s": statistics.mean(self.clock.fetch[-steps:]),
            "bare_step_s": bare, "gflop_per_step": self.flops / 1e9,
            "bare_fraction_of_peak": self.flops / bare / peak[self.precision],
            "bundle_fraction_of_peak": self.flops / bundle / peak[self.precision],
        }  # fmt: skip
        if self.compiled_times:
            row.update(compiled_step_s=statistics.median(self.compiled_times), compile_s=self.compile_s,
                       compile_speedup=bare / statistics.median(self.compiled_times))  # fmt: skip
        if self.compile_error:
            row["compile_error"] = self.compile_error
        return row


def markdown(report: dict) -> str:
    lines = [
        "| task | dims | size | precision | input | bundle s/step | bare s/step | GFLOP/step | bare % of peak | "
        "bundle % of peak | compiled bare s/step (x) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        comp = f"{r['compiled_step_s']:.3f} ({r['compile_speedup']:.2f}x)" if "compiled_step_s" in r else "-"
        lines.append(
            f"| {r['task']} | {r['dims']}D | {r['size']} | {r['precision']} | {tuple(r['inputs_shape'])} | "
            f"{r['bundle_step_s']:.3f} | {r['bare_step_s']:.3f} | {r['gflop_per_step']:.1f} | "
            f"{100 * r['bare_fraction_of_peak']:.1f} | {100 * r['bundle_fraction_of_peak']:.1f} | {comp} |"
        )
    if report["ratios"]:
        lines += ["", "| task | dims | size | bf16 / fp32, bundle | bf16 / fp32, bare |", "|---|---|---|---|---|"]
        lines += [f"| {q['task']} | {q['dims']}D | {q['size']} | {q['bundle']:.2f} | {q['bare']:.2f} |"
                  for q in report["ratios"]]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2], choices=[2, 3])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64], help="image side (2D) or cube side (3D)")
    parser.add_argument("--tasks", nargs="+", default=["pretrain", "finetune"], choices=["pretrain", "finetune"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=2, help="counted rounds (one bundle epoch + bare steps each)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--force-bf16", action="store_true",
                        help="measure bfloat16 even where the CPU has no native bfloat16 (emulated)")
    parser.add_argument("--compile", action="store_true", help="also time the bare step under torch.compile (fp32)")
    parser.add_argument("--backbone", default="basic_unet", choices=["basic_unet", "segresnet", "swin_unetr"],
                        help="the bundles' backbone (basic_unet with the ACDC protocol's features)")
    parser.add_argument("--peak-size", type=int, default=2048, help="matrix side of the peak measurement")
    parser.add_argument("--unet-table", type=int, nargs="*", default=None,
                        help="also time a bare BasicUNet step (batch 32) at these sizes in fp32/bf16 and channels_last")
    parser.add_argument("--no-bundles", action="store_true", help="skip the bundles' steps (peak and table only)")
    parser.add_argument("--toy", action="store_true", help="tiny sizes: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory("cpu")
    native = cpu_supports_bf16()
    if "bf16" in args.precisions and not native:
        if not args.force_bf16:
            parser.error("this CPU has no native bfloat16 (the bundles would train in float32): pass --force-bf16 to "
                         "measure the emulated bfloat16, or --precisions fp32")  # fmt: skip
        _precision.cpu_supports_bf16 = lambda: True  # the bundles' amp then means bfloat16 here too
    peak = {"fp32": matmul_peak(torch.float32, args.peak_size)}
    if "bf16" in args.precisions:  # emulated bfloat16 runs at < 1 GFLOP/s: a smaller matrix says as much
        peak["bf16"] = matmul_peak(torch.bfloat16, args.peak_size if native else min(args.peak_size, 512))
    print({k: f"{v / 1e9:.1f} GFLOP/s" for k, v in peak.items()}, flush=True)
    table = unet_table(args.unet_table) if args.unet_table else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="precision_") as tmp:
        for dims in [] if args.no_bundles else args.dims:
            for size in args.sizes:
                for task in args.tasks:
                    subjects = [Subject(task, dims, size, p, args, Path(tmp)) for p in args.precisions]
                    for round_ in range(args.rounds + 1):  # round 0 warms up
                        for subject in subjects:
                            subject.round(counted=round_ > 0)
                    for subject in subjects:
                        rows.append(subject.summary(peak))
                        print(rows[-1], flush=True)
                    del subjects
    by = {(r["task"], r["dims"], r["size"], r["precision"]): r for r in rows}
    ratios = [
        {"task": t, "dims": d, "size": s, "bundle": by[(t, d, s, "bf16")]["bundle_step_s"] / r["bundle_step_s"],
         "bare": by[(t, d, s, "bf16")]["bare_step_s"] / r["bare_step_s"]}
        for (t, d, s, p), r in by.items() if p == "fp32" and (t, d, s, "bf16") in by
    ]  # fmt: skip
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + list(argv if argv is not None else sys.argv[1:])),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), native bfloat16: {native}, cpu capability "
        f"{torch.backends.cpu.get_cpu_capability()}",
        "load_average_at_end": os.getloadavg(),
        "peak_flops": peak,
        "unet_table": table,
        "rows": rows,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report, args.out)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
