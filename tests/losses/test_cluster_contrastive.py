import math

import pytest
import torch

from monai_cluster.losses import ClusterGuidedContrastiveLoss, cluster_guided_nt_xent


def loop_reference(z1, z2, labels=None, temperature=0.1):
    """Per-anchor NT-Xent with same-label negatives dropped, written with python loops in float64."""
    views = torch.cat([z1, z2]).double()
    views = views / views.norm(dim=1, keepdim=True)
    n, b = views.shape[0], z1.shape[0]
    losses = []
    for a in range(n):
        p = (a + b) % n
        num = torch.exp(views[a] @ views[p] / temperature)
        den = num.clone()
        for k in range(n):
            if k in (a, p):
                continue
            if labels is not None and labels[k % b] == labels[a % b]:
                continue
            den = den + torch.exp(views[a] @ views[k] / temperature)
        losses.append(-torch.log(num / den))
    return torch.stack(losses)


PSEUDO = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 2], [0, 0], [2, 3]])


@pytest.mark.parametrize("level", [0, 1, -1, -2])
def test_matches_loop_reference_per_level(level):
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    ours = cluster_guided_nt_xent(z1, z2, PSEUDO, temperature=0.2, level=level, reduction="none")
    ref = loop_reference(z1, z2, PSEUDO[:, level], temperature=0.2)
    assert ours.shape == (12,)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)


def test_level_all_averages_levels():
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    ours = ClusterGuidedContrastiveLoss(temperature=0.3, level="all")(z1, z2, PSEUDO)
    ref = (loop_reference(z1, z2, PSEUDO[:, 0], 0.3) + loop_reference(z1, z2, PSEUDO[:, 1], 0.3)) / 2
    assert math.isclose(ours.item(), ref.mean().item(), rel_tol=1e-5)


def test_one_dimensional_pseudo_classes_and_masking_changes_loss():
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    labels = PSEUDO[:, 1]
    masked = cluster_guided_nt_xent(z1, z2, labels, temperature=0.5)
    assert math.isclose(masked.item(), loop_reference(z1, z2, labels, 0.5).mean().item(), rel_tol=1e-5)
    # removing negatives can only lower each anchor's loss
    assert masked.item() < cluster_guided_nt_xent(z1, z2, None, temperature=0.5).item()


def test_simclr_when_pseudo_classes_none():
    z1, z2 = torch.randn(7, 4), torch.randn(7, 4)
    ours = cluster_guided_nt_xent(z1, z2, None, temperature=0.5)
    assert math.isclose(ours.item(), loop_reference(z1, z2, None, 0.5).mean().item(), rel_tol=1e-5)
    # unique pseudo-classes remove nothing either
    unique = cluster_guided_nt_xent(z1, z2, torch.arange(7), temperature=0.5)
    assert math.isclose(ours.item(), unique.item(), rel_tol=1e-6)


def test_agrees_with_pytorch_metric_learning_ntxent():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    z1, z2 = torch.randn(8, 6), torch.randn(8, 6)
    # PML: one positive per anchor when the labels are the sample indices; mean over the 2B positive pairs
    ref = pml.NTXentLoss(temperature=0.1)(torch.cat([z1, z2]), torch.arange(8).repeat(2))
    ours = cluster_guided_nt_xent(z1, z2, temperature=0.1)
    assert math.isclose(ours.item(), ref.item(), rel_tol=1e-5)


def test_reductions():
    z1, z2 = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 0, 1, 1, 2])
    none = cluster_guided_nt_xent(z1, z2, labels, reduction="none")
    assert none.shape == (10,)
    torch.testing.assert_close(cluster_guided_nt_xent(z1, z2, labels, reduction="sum"), none.sum())
    torch.testing.assert_close(cluster_guided_nt_xent(z1, z2, labels, reduction="mean"), none.mean())


def test_anchor_without_negatives_has_zero_loss_and_finite_gradient():
    z1 = torch.randn(4, 3, requires_grad=True)
    z2 = torch.randn(4, 3)
    labels = torch.tensor([0, 0, 0, 1])
    per_view = cluster_guided_nt_xent(z1, z2, labels, temperature=0.005, reduction="none")
    ref = loop_reference(z1.detach(), z2, labels, 0.005)
    torch.testing.assert_close(per_view.detach().double(), ref, rtol=1e-4, atol=1e-6)
    single = cluster_guided_nt_xent(z1, z2, torch.zeros(4, dtype=torch.long), temperature=0.005)
    single.backward()
    assert single.item() == 0.0
    assert torch.equal(z1.grad, torch.zeros_like(z1))


def test_finite_with_correct_gradient_at_temperature_0005():
    z1 = torch.randn(6, 4)
    z2 = z1 + 0.01 * torch.randn(6, 4)  # near-identical views: e^{1/0.005} overflows float32
    labels = torch.tensor([0, 1, 1, 2, 0, 3])
    a = z1.clone().requires_grad_(True)
    loss = cluster_guided_nt_xent(a, z2, labels, temperature=0.005)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
    b = z1.double().requires_grad_(True)
    loop_reference(b, z2.double(), labels, 0.005).mean().backward()
    assert math.isclose(loss.item(), loop_reference(z1, z2, labels, 0.005).mean().item(), rel_tol=1e-4, abs_tol=1e-5)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-3, atol=1e-4)


def test_gradcheck_float64():
    z1 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda a, b: cluster_guided_nt_xent(a, b, labels, temperature=0.05), (z1, z2))


def test_loss_falls_when_optimising_free_embeddings():
    z1 = torch.randn(16, 8, requires_grad=True)
    z2 = torch.randn(16, 8, requires_grad=True)
    labels = torch.randint(0, 4, (16, 2))
    loss_fn = ClusterGuidedContrastiveLoss(temperature=0.2, level="all")
    optim = torch.optim.SGD([z1, z2], lr=0.5)
    first = None
    for _ in range(20):
        optim.zero_grad()
        loss = loss_fn(z1, z2, labels)
        loss.backward()
        optim.step()
        first = loss.item() if first is None else first
    assert loss_fn(z1, z2, labels).item() < 0.8 * first


def test_never_saves_a_b_b_f_intermediate():
    b, f = 12, 7
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    z1 = torch.randn(b, f, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cluster_guided_nt_xent(z1, torch.randn(b, f), torch.randint(0, 3, (b, 2)), level="all")
    assert shapes and all(math.prod(s) <= (2 * b) ** 2 for s in shapes)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"temperature": "0.1"}, TypeError, "temperature"),
        ({"reduction": "max"}, ValueError, "reduction"),
        ({"level": 1.5}, TypeError, "level"),
        ({"level": "fine"}, TypeError, "level"),
        ({"gather_distributed": "yes"}, TypeError, "gather_distributed"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ClusterGuidedContrastiveLoss(**kwargs)


@pytest.mark.parametrize(
    "z1, z2, labels, level, error, match",
    [
        (torch.randn(4, 3), torch.randn(4, 5), None, 0, ValueError, "same"),
        (torch.randn(4, 3), torch.randn(5, 3), None, 0, ValueError, "same"),
        (torch.randn(1, 3), torch.randn(1, 3), None, 0, ValueError, "at least 2"),
        (torch.randn(4, 3, 2), torch.randn(4, 3, 2), None, 0, ValueError, "z1"),
        (torch.randint(0, 3, (4, 3)), torch.randn(4, 3), None, 0, TypeError, "floating"),
        ([[1.0, 2.0]] * 4, torch.randn(4, 2), None, 0, TypeError, "z1"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2]), 0, ValueError, "pseudo_classes"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4), 0, TypeError, "pseudo_classes"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, 2, 1, dtype=torch.long), 0, ValueError, "pseudo_classes"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.long), 2, ValueError, "level"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.long), -3, ValueError, "level"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), 1, ValueError, "level"),
        (torch.tensor([[float("nan")] * 3] * 4), torch.randn(4, 3), None, 0, ValueError, "z1 must be finite"),
        (torch.randn(4, 3), torch.full((4, 3), float("inf")), None, 0, ValueError, "z2 must be finite"),
    ],
)
def test_forward_errors(z1, z2, labels, level, error, match):
    with pytest.raises(error, match=match):
        ClusterGuidedContrastiveLoss(level=level)(z1, z2, labels)


def test_gather_without_process_group_is_a_clear_error():
    loss = ClusterGuidedContrastiveLoss(gather_distributed=True)
    with pytest.raises(RuntimeError, match="init_process_group"):
        loss(torch.randn(4, 3), torch.randn(4, 3))


def test_gather_flag_checks_distributed_availability(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch.distributed"):
        ClusterGuidedContrastiveLoss(gather_distributed=True)
