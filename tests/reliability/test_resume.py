"""Crash safety of the pretraining bundle and of the atomic writers, with real processes and real SIGKILLs.

- The pretraining bundle (``bundles/cluster_contrastive_pretrain``) is started at toy size with
  ``python -m monai.bundle run`` in a subprocess, killed with SIGKILL in the middle of epoch 2 (checkpoint 1 on
  disk), restarted with ``--resume true``, and must continue from checkpoint 1 (network, optimizer, scheduler,
  epoch, iteration, pseudo-classes) to the same epoch count, with no temporary file left behind.
- A NaN loss in the middle of a bundle run stops it with a clear message and leaves the last good checkpoint
  exactly as it was written.
- ``atomic_torch_save`` killed in the middle of writing leaves the previous file complete and loadable.

The probe handler that reports progress and records the state a run starts from is ``resume_probe.py``, put into
the bundle's handler list through a command-line override (in place of the epoch-level ``StatsHandler``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_cluster.utils import atomic_torch_save, remove_stale_temp_files
from monai_cluster.workflows import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CONFIG = REPO / "bundles" / "cluster_contrastive_pretrain" / "configs" / "train.json"
FEATURES = [4, 4, 8, 8, 16, 4]
ITERATIONS_PER_EPOCH = 4  # synthetic_n 8, batch_size 2
TOY = {
    "device": "cpu",
    "synthetic_n": 8,
    "synthetic_size": 32,
    "image_size": [32, 32],
    "features": FEATURES,
    "autoencoder_channels": [4, 8, 8, 8],
    "autoencoder_epochs": 1,
    "batch_size": 2,
    "num_clusters": [2, 3],
    "local_num_locations": 8,
    "recluster_interval": 1,  # pseudo-classes change every epoch, so restoring them matters
    "epochs": 3,
}
TIMEOUT_S = 300


def _stats_index() -> int:
    """Position of the epoch-level ``StatsHandler`` in ``train#handlers``; the probe takes its place (it must come
    after the checkpointer, which the bundle lists before its loggers)."""
    handlers = json.loads(CONFIG.read_text())["train"]["handlers"]
    targets = [h.get("_target_") if isinstance(h, dict) else h for h in handlers]
    assert "StatsHandler" in targets and "@train#checkpointer" in targets, targets
    index = targets.index("StatsHandler")
    assert index > targets.index("@train#checkpointer"), targets
    return index


def _probe(probe_dir: Path, delay: float = 0.0, nan_from: int = 0) -> str:
    spec = {
        "_target_": "resume_probe.ResumeProbe",
        "out_dir": str(probe_dir),
        "network": "@network",
        "optimizer": "@optimizer",
        "lr_scheduler": "@lr_scheduler",
        "loss": "@loss",
        "pseudo_class_transform": "@pseudo_class_transform",
        "delay": delay,
        "nan_from": nan_from,
    }
    return repr(spec)


def _start(root: Path, probe_dir: Path, resume: bool = False, **probe) -> subprocess.Popen:
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIG), "--bundle_root", str(root)]
    for key, value in TOY.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    args += ["--resume", "true" if resume else "false"]
    args += [f"--train#handlers#{_stats_index()}", _probe(probe_dir, **probe)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    env.pop("LOCAL_RANK", None)
    stderr = open(root.parent / f"{root.name}_{time.monotonic_ns()}.stderr", "w")  # noqa: SIM115 - closed by _finish
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    proc.stderr_file = stderr  # type: ignore[attr-defined]
    proc.watchdog = _watchdog(proc)  # type: ignore[attr-defined]
    return proc


def _watchdog(proc: subprocess.Popen) -> threading.Timer:
    """Kill ``proc`` if it is still running after ``TIMEOUT_S`` (a hung run must not hang the test suite)."""
    timer = threading.Timer(TIMEOUT_S, lambda: proc.poll() is None and proc.kill())
    timer.daemon = True
    timer.start()
    return timer


def _finish(proc: subprocess.Popen, lines: list[str]) -> tuple[int, list[str], str]:
    """Read the remaining output, wait, and return ``(returncode, PROBE lines, stderr text)``."""
    lines.extend(proc.stdout.read().splitlines())
    proc.wait()
    proc.watchdog.cancel()
    proc.stderr_file.close()
    stderr = Path(proc.stderr_file.name).read_text()
    return proc.returncode, [line for line in lines if line.startswith("PROBE")], stderr


def _run_until_killed(proc: subprocess.Popen, kill_at: str) -> tuple[int, list[str], str]:
    """Read the probe's lines; SIGKILL the process as soon as ``kill_at`` is printed."""
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip() == kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            break
    return _finish(proc, lines)


def _temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def _assert_same(a, b, where: str = "") -> None:
    """Deep equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _adam_steps(optimizer_state: dict) -> set[int]:
    return {int(s["step"]) for s in optimizer_state["state"].values()}


@pytest.mark.bundle
def test_sigkill_in_the_middle_of_an_epoch_then_resume(tmp_path):
    root, probe = tmp_path / "bundle", tmp_path / "probe"
    models = root / "models"

    # 1) run, SIGKILL in the middle of epoch 2 (its first iteration done, checkpoint 1 written)
    first = _start(root, probe, delay=0.3)
    code, lines, stderr = _run_until_killed(first, "PROBE iteration epoch=2 iteration=5")
    assert code == -signal.SIGKILL, stderr[-2000:]
    assert lines[-1] == "PROBE iteration epoch=2 iteration=5"
    assert [p.name for p in list_checkpoints(models / "checkpoints")] == ["checkpoint_epoch0001.pt"]
    assert not (models / "model.pt").exists() and not (models / "pretrain_summary.json").exists()
    saved = load_checkpoint(models / "checkpoints" / "checkpoint_epoch0001.pt")
    assert saved["epoch"] == 1 and saved["iteration"] == ITERATIONS_PER_EPOCH
    autoencoder_stamp = (models / "autoencoder.pt").stat().st_mtime_ns

    # 2) restart with --resume true: it continues from checkpoint 1 and ends at the same epoch count
    second = _start(root, probe, resume=True)
    code, lines, stderr = _finish(second, [])
    assert code == 0, stderr[-3000:]
    assert lines[0] == "PROBE started epoch=1 iteration=4"
    iterations = [int(line.rsplit("=", 1)[1]) for line in lines if line.startswith("PROBE iteration")]
    assert iterations == list(range(ITERATIONS_PER_EPOCH + 1, 3 * ITERATIONS_PER_EPOCH + 1))  # epochs 2 and 3 only
    assert [line for line in lines if "epoch_completed" in line] == [
        "PROBE epoch_completed epoch=2",
        "PROBE epoch_completed epoch=3",
    ]

    # what the resumed run started from is exactly checkpoint 1
    started = torch.load(probe / f"started_{second.pid}.pt", weights_only=False)
    assert (started["epoch"], started["iteration"]) == (1, ITERATIONS_PER_EPOCH)
    _assert_same(started["network"], saved["state"]["network"], "network")
    _assert_same(started["optimizer"], saved["state"]["optimizer"], "optimizer")
    _assert_same(started["lr_scheduler"], saved["state"]["lr_scheduler"], "lr_scheduler")
    table = saved["extra"]["pseudo_class_table"]
    assert started["pseudo_class_table"] == [table["keys"], table["labels"]]
    assert _adam_steps(started["optimizer"]) == {ITERATIONS_PER_EPOCH}

    # it ended where an uninterrupted run ends, with every piece of state advanced from the checkpoint
    assert [p.name for p in list_checkpoints(models / "checkpoints")][-1] == "checkpoint_epoch0003.pt"
    final = load_checkpoint(models / "checkpoints" / "checkpoint_epoch0003.pt")
    assert final["epoch"] == 3 and final["iteration"] == 3 * ITERATIONS_PER_EPOCH
    assert final["state"]["lr_scheduler"]["last_epoch"] == 3
    assert _adam_steps(final["state"]["optimizer"]) == {3 * ITERATIONS_PER_EPOCH}
    _assert_same(final["state"]["network"], torch.load(probe / "network_epoch3.pt", weights_only=True), "final")
    summary = json.loads((models / "pretrain_summary.json").read_text())
    assert summary["epochs"] == 3 and summary["iterations"] == 3 * ITERATIONS_PER_EPOCH
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    BasicUNet(2, 3, 2, features=FEATURES).load_state_dict(state, strict=True)
    assert (models / "autoencoder.pt").stat().st_mtime_ns == autoencoder_stamp  # stage 1 was not redone
    assert _temp_files(root) == []


@pytest.mark.bundle
def test_non_finite_loss_stops_the_bundle_and_keeps_the_last_good_checkpoint(tmp_path):
    root, probe = tmp_path / "bundle", tmp_path / "probe"
    models = root / "models"
    nan_iteration = ITERATIONS_PER_EPOCH + 2  # the second iteration of epoch 2
    proc = _start(root, probe, nan_from=nan_iteration)
    code, lines, stderr = _finish(proc, [])
    assert code != 0
    assert f"FloatingPointError: non-finite loss nan at epoch 2, iteration {nan_iteration}" in stderr
    assert "the last good checkpoint is intact" in stderr
    assert lines[-1] == f"PROBE iteration epoch=2 iteration={nan_iteration - 1}"  # the NaN step never completed
    assert [p.name for p in list_checkpoints(models / "checkpoints")] == ["checkpoint_epoch0001.pt"]
    kept = load_checkpoint(models / "checkpoints" / "checkpoint_epoch0001.pt")
    assert kept["epoch"] == 1
    _assert_same(kept["state"]["network"], torch.load(probe / "network_epoch1.pt", weights_only=True), "network")
    assert all(torch.isfinite(v).all() for v in kept["state"]["network"].values() if v.is_floating_point())
    assert not (models / "model.pt").exists()  # no export of broken weights
    assert _temp_files(root) == []


_WRITER = r"""
import sys, torch
from monai_cluster.utils import atomic_torch_save
torch.set_num_threads(1)
path, n = sys.argv[1], 0
while True:
    n += 1
    atomic_torch_save({"n": n, "w": torch.full((2_000_000,), float(n))}, path)  # 8 MB per write
    print(n, flush=True)
"""


def test_sigkill_during_atomic_torch_save_leaves_a_complete_file(tmp_path):
    """Kill a process that rewrites an 8 MB checkpoint in a loop: the file on disk is always a complete version."""
    path = tmp_path / "model.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    watchdog = _watchdog(proc)
    written = 0
    for line in proc.stdout:
        written = int(line)
        if written >= 3:
            time.sleep(0.013)  # land somewhere inside the next write
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(path, weights_only=True)
    assert saved["n"] >= written and torch.equal(saved["w"], torch.full((2_000_000,), float(saved["n"])))
    # a write cut off by SIGKILL can leave only its hidden temporary file, never a partial model.pt
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.pt"]
    assert all(name.startswith(".model.pt.") and name.endswith(".tmp") for name in leftovers), leftovers
    remove_stale_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


_HALF_WRITER = r"""
import sys, time
from monai_cluster.utils import atomic_write
with atomic_write(sys.argv[1], "wb") as handle:
    handle.write(b"the first half of a new checkpoint")
    handle.flush()
    print("half written", flush=True)
    time.sleep(120)
"""


def test_sigkill_mid_write_keeps_the_old_file_and_its_temp_file_can_be_cleaned(tmp_path):
    """Deterministic: the writer is killed while its temporary file is open and half full."""
    path = tmp_path / "checkpoint_epoch0001.pt"
    atomic_torch_save({"epoch": 1}, path)
    before = path.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _HALF_WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    watchdog = _watchdog(proc)
    assert proc.stdout.readline().strip() == "half written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    watchdog.cancel()
    assert path.read_bytes() == before  # the destination was never touched
    (stale,) = [p for p in tmp_path.iterdir() if p != path]
    assert stale.name.startswith(".checkpoint_epoch0001.pt.") and stale.name.endswith(".tmp")
    (tmp_path / "notes.tmp").write_text("a user's file")  # not written by atomic_write: kept
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch0001.pt", "notes.tmp"]
    assert torch.load(path, weights_only=True) == {"epoch": 1}
