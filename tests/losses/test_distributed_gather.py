"""Two CPU processes (gloo): the gathered losses reproduce the single-process loss and its gradients."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_cluster.losses import cluster_guided_nt_xent, global_contrastive_loss

WORLD = 2
B = 8
# name: (loss function, label arguments, reduction, rows of rank 0 / rank 1)
CASES = {
    "simclr_mean": (cluster_guided_nt_xent, {}, "mean", 4),
    "cluster_level_mean": (cluster_guided_nt_xent, {"pseudo_classes": "pseudo", "level": 1}, "mean", 4),
    "cluster_all_mean": (cluster_guided_nt_xent, {"pseudo_classes": "pseudo", "level": "all"}, "mean", 4),
    "cluster_uneven_sum": (cluster_guided_nt_xent, {"pseudo_classes": "pseudo", "level": 0}, "sum", 3),
    "global_mean": (global_contrastive_loss, {"partitions": "parts", "volume_ids": "vols"}, "mean", 4),
    "global_uneven_sum": (global_contrastive_loss, {"partitions": "parts"}, "sum", 5),
}


def _data():
    g = torch.Generator().manual_seed(7)
    return {
        "z1": torch.randn(B, 6, generator=g),
        "z2": torch.randn(B, 6, generator=g),
        "pseudo": torch.tensor([[0, 0], [0, 1], [1, 2], [1, 2], [0, 0], [1, 3], [0, 1], [1, 3]]),
        "parts": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
        "vols": torch.tensor([0, 0, 0, 1, 1, 1, 2, 2]),
    }


def _run(name, lo, hi, gather):
    fn, labels, reduction, _ = CASES[name]
    data = _data()
    z1 = data["z1"][lo:hi].clone().requires_grad_(True)
    z2 = data["z2"][lo:hi].clone().requires_grad_(True)
    kwargs = {k: (data[v][lo:hi] if k != "level" else v) for k, v in labels.items()}
    loss = fn(z1, z2, temperature=0.2, reduction=reduction, gather_distributed=gather, **kwargs)
    loss.backward()
    return loss.detach(), z1.grad, z2.grad


def _worker(rank, port, out_dir):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, (_, _, _, split) in CASES.items():
            lo, hi = (0, split) if rank == 0 else (split, B)
            results[name] = _run(name, lo, hi, gather=True)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    out_dir = str(tmp_path_factory.mktemp("dist"))
    mp.spawn(_worker, args=(_free_port(), out_dir), nprocs=WORLD, join=True)
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_gathered_loss_and_gradients_match_single_process(rank_results, name):
    reduction, split = CASES[name][2], CASES[name][3]
    full, g1, g2 = _run(name, 0, B, gather=False)
    losses = torch.stack([rank_results[r][name][0] for r in range(WORLD)])
    grads1 = torch.cat([rank_results[r][name][1] for r in range(WORLD)])
    grads2 = torch.cat([rank_results[r][name][2] for r in range(WORLD)])
    assert [rank_results[r][name][1].shape[0] for r in range(WORLD)] == [split, B - split]
    if reduction == "mean":
        # equal shards: mean over ranks of the local means is the global mean; each rank's gradient is
        # WORLD times the global gradient of its rows (DDP divides by WORLD when it averages)
        torch.testing.assert_close(losses.mean(), full)
        torch.testing.assert_close(grads1 / WORLD, g1)
        torch.testing.assert_close(grads2 / WORLD, g2)
    else:
        torch.testing.assert_close(losses.sum(), full)
        torch.testing.assert_close(grads1, g1)
        torch.testing.assert_close(grads2, g2)
