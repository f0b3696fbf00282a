import math

import pytest
import torch

from monai_cluster.losses import GlobalContrastiveLoss, cluster_guided_nt_xent, global_contrastive_loss


def loop_reference(z1, z2, partitions=None, volumes=None, temperature=0.1):
    """Chaitanya's G_D^- global loss, per anchor, python loops in float64.

    Positives of an anchor: the other view of its sample and every view of a same-partition sample from
    another volume; negatives: views of other partitions; each positive against the same negative set,
    averaged over the anchor's positives.
    """
    views = torch.cat([z1, z2]).double()
    views = views / views.norm(dim=1, keepdim=True)
    n, b = views.shape[0], z1.shape[0]
    part = list(range(b)) if partitions is None else partitions.tolist()
    vol = list(range(b)) if volumes is None else volumes.tolist()
    losses = []
    for a in range(n):
        i = a % b
        pos, neg = [], []
        for k in range(n):
            j = k % b
            if k == a:
                continue
            if part[j] != part[i]:
                neg.append(k)
            elif j == i or vol[j] != vol[i]:
                pos.append(k)
        neg_sum = sum((torch.exp(views[a] @ views[k] / temperature) for k in neg), torch.zeros((), dtype=torch.float64))
        terms = []
        for p in pos:
            num = torch.exp(views[a] @ views[p] / temperature)
            terms.append(-torch.log(num / (num + neg_sum)))
        losses.append(torch.stack(terms).mean())
    return torch.stack(losses)


PARTS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
VOLS = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("partitions, volumes", [(PARTS, VOLS), (PARTS, None), (None, None)])
def test_matches_loop_reference(partitions, volumes):
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    ours = global_contrastive_loss(z1, z2, partitions, volumes, temperature=0.2, reduction="none")
    assert ours.shape == (16,)
    torch.testing.assert_close(ours.double(), loop_reference(z1, z2, partitions, volumes, 0.2), rtol=1e-5, atol=1e-6)


def test_same_volume_same_partition_is_neither_positive_nor_negative():
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    parts = torch.tensor([0, 0, 1, 1])
    same_volume = global_contrastive_loss(z1, z2, parts, torch.tensor([0, 0, 1, 1]), reduction="none")
    other_volume = global_contrastive_loss(z1, z2, parts, torch.tensor([0, 1, 2, 3]), reduction="none")
    ref = loop_reference(z1, z2, parts, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(same_volume.double(), ref, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(same_volume, other_volume)


def test_simclr_without_partitions():
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    torch.testing.assert_close(
        GlobalContrastiveLoss(temperature=0.3)(z1, z2), cluster_guided_nt_xent(z1, z2, temperature=0.3)
    )


def test_agrees_with_pytorch_metric_learning_on_balanced_partitions():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    z1, z2 = torch.randn(9, 6), torch.randn(9, 6)
    parts = torch.tensor([0, 1, 2] * 3)
    # PML treats every same-label pair as positive (against all other-label negatives) and averages over
    # pairs; with equally many positives per anchor that equals our per-anchor average.
    ref = pml.NTXentLoss(temperature=0.1)(torch.cat([z1, z2]), parts.repeat(2))
    assert math.isclose(global_contrastive_loss(z1, z2, parts, temperature=0.1).item(), ref.item(), rel_tol=1e-5)


def test_reductions_and_single_partition_batch():
    z1, z2 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3)
    none = global_contrastive_loss(z1, z2, PARTS[:5], reduction="none")
    torch.testing.assert_close(global_contrastive_loss(z1, z2, PARTS[:5], reduction="sum"), none.sum())
    torch.testing.assert_close(global_contrastive_loss(z1, z2, PARTS[:5]), none.mean())
    zero = global_contrastive_loss(z1, z2, torch.zeros(5, dtype=torch.long), temperature=0.005)
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(z1.grad, torch.zeros_like(z1))


def test_finite_and_correct_gradient_at_temperature_0005():
    z1 = torch.randn(8, 4)
    z2 = z1 + 0.01 * torch.randn(8, 4)
    a = z1.clone().requires_grad_(True)
    loss = global_contrastive_loss(a, z2, PARTS, VOLS, temperature=0.005)
    loss.backward()
    b = z1.double().requires_grad_(True)
    ref = loop_reference(b, z2.double(), PARTS, VOLS, 0.005).mean()
    ref.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-4, abs_tol=1e-5)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-3, atol=1e-4)


def test_loss_falls_when_optimising_free_embeddings():
    z1 = torch.randn(12, 8, requires_grad=True)
    z2 = torch.randn(12, 8, requires_grad=True)
    parts = torch.arange(12) % 4
    vols = torch.arange(12) // 4
    loss_fn = GlobalContrastiveLoss(temperature=0.2)
    optim = torch.optim.SGD([z1, z2], lr=0.5)
    first = loss_fn(z1, z2, parts, vols).item()
    for _ in range(20):
        optim.zero_grad()
        loss_fn(z1, z2, parts, vols).backward()
        optim.step()
    assert loss_fn(z1, z2, parts, vols).item() < 0.8 * first


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": 0}, ValueError, "temperature"),
        ({"temperature": None}, TypeError, "temperature"),
        ({"reduction": "avg"}, ValueError, "reduction"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        GlobalContrastiveLoss(**kwargs)


@pytest.mark.parametrize(
    "z1, z2, parts, vols, error, match",
    [
        (torch.randn(4, 3), torch.randn(4, 2), None, None, ValueError, "same"),
        (torch.randn(1, 3), torch.randn(1, 3), None, None, ValueError, "at least 2"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1]), None, ValueError, "partitions"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4), None, TypeError, "partitions"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.long), None, ValueError, "partitions"),
        (torch.randn(4, 3), torch.randn(4, 3), PARTS[:4], torch.zeros(3, dtype=torch.long), ValueError, "volume_ids"),
        (torch.randn(4, 3), torch.randn(4, 3), None, torch.zeros(4, dtype=torch.long), ValueError, "volume_ids"),
        (torch.full((4, 3), float("nan")), torch.randn(4, 3), None, None, ValueError, "z1 must be finite"),
    ],
)
def test_forward_errors(z1, z2, parts, vols, error, match):
    with pytest.raises(error, match=match):
        GlobalContrastiveLoss()(z1, z2, parts, vols)


def test_gather_without_process_group_is_a_clear_error():
    with pytest.raises(RuntimeError, match="init_process_group"):
        GlobalContrastiveLoss(gather_distributed=True)(torch.randn(4, 3), torch.randn(4, 3), PARTS[:4])
