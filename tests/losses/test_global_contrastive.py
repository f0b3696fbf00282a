"""Chaitanya et al.'s global loss: G_D, G_D- and G_R against hand-computed values and a brute-force loop."""

import math

import pytest
import torch

from monai_cluster.losses import GlobalContrastiveLoss, cluster_guided_nt_xent, global_contrastive_loss
from monai_cluster.losses.global_contrastive import GLOBAL_STRATEGIES, check_global_strategy


def loop_reference(z1, z2, partitions=None, volumes=None, temperature=0.1, strategy="G_D", pseudo=None):
    """The global loss per anchor view, python loops in float64, straight from the pair rules.

    Pair rules for anchor view ``a`` of sample ``i`` and view ``k`` of sample ``j``: ``k == a`` excluded;
    ``j == i`` positive; another partition: negative; same partition, other volume: positive (G_D), excluded
    (G_D-); same partition, same volume, another sample: excluded. G_R (or no partitions): every view of
    another sample is a negative. With ``pseudo`` (B,), a would-be negative of the anchor's pseudo-class is
    excluded. Each positive is scored against the anchor's negatives, then averaged.
    """
    views = torch.cat([z1, z2]).double()
    views = views / views.norm(dim=1, keepdim=True)
    n, b = views.shape[0], z1.shape[0]
    simclr = partitions is None or strategy == "G_R"
    part = list(range(b)) if simclr else partitions.tolist()
    vol = list(range(b)) if simclr or volumes is None else volumes.tolist()
    losses = []
    for a in range(n):
        i = a % b
        pos, neg = [], []
        for k in range(n):
            j = k % b
            if k == a:
                continue
            if j == i:
                pos.append(k)
            elif part[j] != part[i]:
                if pseudo is None or pseudo[j] != pseudo[i]:
                    neg.append(k)
            elif vol[j] != vol[i] and strategy == "G_D":
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


def test_hand_computed_values_for_each_strategy():
    # z1 = z2 (identical views); samples 0 and 2 share partition 0 and lie in different volumes, sample 1 is
    # alone in partition 1. Cosines: s(0, 1) = 0, s(0, 2) = c = cos 45 deg, s(1, 2) = c; temperature t.
    t, c = 0.5, math.sqrt(0.5)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    parts, vols = torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1])
    e = lambda s: math.exp(s / t)  # noqa: E731
    # anchor 0: its other view has s = 1; negatives = both views of sample 1 (s = 0)
    own_d = math.log(1 + 2 * e(0) / e(1))
    expected_0 = {
        "G_D": (own_d + 2 * math.log(1 + 2 * e(0) / e(c))) / 3,  # sample 2's two views are positives too
        "G_D-": own_d,  # sample 2 leaves the negatives, nothing else changes
        "G_R": math.log(1 + (2 * e(0) + 2 * e(c)) / e(1)),  # sample 2 is a negative
    }
    # anchor 1 (alone in its partition): every view of samples 0 and 2 is a negative in every strategy
    expected_1 = math.log(1 + (2 * e(0) + 2 * e(c)) / e(1))
    for strategy, value in expected_0.items():
        got = global_contrastive_loss(z, z, parts, vols, temperature=t, reduction="none", strategy=strategy)
        assert got.shape == (6,)
        assert math.isclose(got[0].item(), value, rel_tol=1e-5), strategy
        assert math.isclose(got[3].item(), value, rel_tol=1e-5), strategy  # the z2 view of sample 0
        assert math.isclose(got[1].item(), expected_1, rel_tol=1e-5), strategy
    assert expected_0["G_D"] != pytest.approx(expected_0["G_D-"])


@pytest.mark.parametrize("strategy", GLOBAL_STRATEGIES)
@pytest.mark.parametrize("partitions, volumes", [(PARTS, VOLS), (PARTS, None), (None, None)])
def test_matches_loop_reference(partitions, volumes, strategy):
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    ours = global_contrastive_loss(z1, z2, partitions, volumes, temperature=0.2, reduction="none", strategy=strategy)
    assert ours.shape == (16,)
    ref = loop_reference(z1, z2, partitions, volumes, 0.2, strategy)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        GlobalContrastiveLoss(0.2, strategy=strategy)(z1, z2, partitions, volumes).double(), ref.mean()
    )


@pytest.mark.parametrize("strategy", GLOBAL_STRATEGIES)
def test_pseudo_classes_remove_negatives_on_top_of_each_strategy(strategy):
    torch.manual_seed(1)
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    pseudo = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3], [0, 0], [1, 2], [0, 1], [1, 3]])
    for level in (0, -1):
        ours = global_contrastive_loss(z1, z2, PARTS, VOLS, 0.2, "none", strategy=strategy, pseudo_classes=pseudo,
                                       level=level)  # fmt: skip
        ref = loop_reference(z1, z2, PARTS, VOLS, 0.2, strategy, pseudo=pseudo[:, level].tolist())
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
        module = GlobalContrastiveLoss(0.2, strategy=strategy, level=level)
        torch.testing.assert_close(module(z1, z2, PARTS, VOLS, pseudo).double(), ref.mean())
    plain = global_contrastive_loss(z1, z2, PARTS, VOLS, 0.2, "none", strategy=strategy)
    assert not torch.allclose(plain, ours)
    # with every sample its own pseudo-class, nothing changes
    torch.testing.assert_close(
        global_contrastive_loss(z1, z2, PARTS, VOLS, 0.2, "none", strategy=strategy, pseudo_classes=torch.arange(8)),
        plain,
    )
    # G_R with pseudo-classes is the cluster-guided NT-Xent
    if strategy == "G_R":
        torch.testing.assert_close(ours, cluster_guided_nt_xent(z1, z2, pseudo, 0.2, level=-1, reduction="none"))


def test_pseudo_class_errors_name_the_input():
    z = torch.randn(4, 3)
    with pytest.raises(TypeError, match="level must be an integer"):
        GlobalContrastiveLoss(level="all")
    with pytest.raises(ValueError, match="level must lie in"):
        global_contrastive_loss(z, z, pseudo_classes=torch.zeros(4, 2, dtype=torch.long), level=2)
    with pytest.raises(ValueError, match="pseudo_classes"):
        global_contrastive_loss(z, z, pseudo_classes=torch.zeros(3, dtype=torch.long))


def test_g_d_minus_is_simclr_when_all_partitions_differ():
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    simclr = cluster_guided_nt_xent(z1, z2, temperature=0.3, reduction="none")
    vols = torch.tensor([0, 0, 0, 1, 1, 1])
    for strategy in GLOBAL_STRATEGIES:  # without same-partition pairs every strategy reduces to SimCLR
        got = global_contrastive_loss(z1, z2, torch.arange(6), vols, 0.3, "none", strategy=strategy)
        torch.testing.assert_close(got, simclr)


def test_g_d_minus_is_nt_xent_with_partitions_as_pseudo_classes():
    # G_D- removes same-partition samples from the negatives: cluster-guided NT-Xent with partition labels
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    ref = cluster_guided_nt_xent(z1, z2, PARTS[:, None], temperature=0.2, reduction="none")
    got = GlobalContrastiveLoss(0.2, reduction="none", strategy="G_D-")(z1, z2, PARTS, VOLS)
    torch.testing.assert_close(got, ref)
    assert not torch.allclose(got, cluster_guided_nt_xent(z1, z2, temperature=0.2, reduction="none"))


def test_g_r_ignores_partitions():
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    torch.testing.assert_close(
        GlobalContrastiveLoss(0.3, strategy="G_R")(z1, z2, PARTS, VOLS), cluster_guided_nt_xent(z1, z2, temperature=0.3)
    )


def test_strategies_differ_only_through_cross_volume_same_partition_pairs():
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    parts = torch.tensor([0, 0, 1, 1])
    cross = torch.tensor([0, 1, 0, 1])  # each partition has slices of two volumes
    g_d = global_contrastive_loss(z1, z2, parts, cross, reduction="none", strategy="G_D")
    g_dm = global_contrastive_loss(z1, z2, parts, cross, reduction="none", strategy="G_D-")
    assert (g_d - g_dm).abs().min() > 1e-4
    # same partition only within one volume: excluded in both, so the strategies agree (and are not SimCLR)
    within = torch.tensor([0, 0, 1, 1])
    g_d = global_contrastive_loss(z1, z2, parts, within, reduction="none", strategy="G_D")
    g_dm = global_contrastive_loss(z1, z2, parts, within, reduction="none", strategy="G_D-")
    torch.testing.assert_close(g_d, g_dm)
    torch.testing.assert_close(g_d.double(), loop_reference(z1, z2, parts, within, 0.1, "G_D"), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(g_d, cluster_guided_nt_xent(z1, z2, reduction="none"))


def test_agrees_with_pytorch_metric_learning_on_balanced_partitions():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    z1, z2 = torch.randn(9, 6), torch.randn(9, 6)
    parts = torch.tensor([0, 1, 2] * 3)
    # PML treats every same-label pair as positive (against all other-label negatives) and averages over
    # pairs; with equally many positives per anchor that equals our per-anchor G_D average.
    ref = pml.NTXentLoss(temperature=0.1)(torch.cat([z1, z2]), parts.repeat(2))
    assert math.isclose(global_contrastive_loss(z1, z2, parts, temperature=0.1).item(), ref.item(), rel_tol=1e-5)


@pytest.mark.parametrize("strategy", ["G_D", "G_D-"])
def test_reductions_and_single_partition_batch(strategy):
    z1, z2 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3)
    none = global_contrastive_loss(z1, z2, PARTS[:5], reduction="none", strategy=strategy)
    total = global_contrastive_loss(z1, z2, PARTS[:5], reduction="sum", strategy=strategy)
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(global_contrastive_loss(z1, z2, PARTS[:5], strategy=strategy), none.mean())
    zero = global_contrastive_loss(z1, z2, torch.zeros(5, dtype=torch.long), temperature=0.005, strategy=strategy)
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(z1.grad, torch.zeros_like(z1))


@pytest.mark.parametrize("strategy", GLOBAL_STRATEGIES)
def test_finite_and_correct_gradient_at_temperature_0005(strategy):
    z1 = torch.randn(8, 4)
    z2 = z1 + 0.01 * torch.randn(8, 4)
    a = z1.clone().requires_grad_(True)
    loss = global_contrastive_loss(a, z2, PARTS, VOLS, temperature=0.005, strategy=strategy)
    loss.backward()
    b = z1.double().requires_grad_(True)
    ref = loop_reference(b, z2.double(), PARTS, VOLS, 0.005, strategy).mean()
    ref.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-4, abs_tol=1e-5)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("strategy", ["G_D", "G_D-"])
def test_loss_falls_when_optimising_free_embeddings(strategy):
    z1 = torch.randn(12, 8, requires_grad=True)
    z2 = torch.randn(12, 8, requires_grad=True)
    parts = torch.arange(12) % 4
    vols = torch.arange(12) // 4
    loss_fn = GlobalContrastiveLoss(temperature=0.2, strategy=strategy)
    optim = torch.optim.SGD([z1, z2], lr=0.5)
    first = loss_fn(z1, z2, parts, vols).item()
    for _ in range(20):
        optim.zero_grad()
        loss_fn(z1, z2, parts, vols).backward()
        optim.step()
    assert loss_fn(z1, z2, parts, vols).item() < 0.8 * first


def test_strategy_is_kept_and_shown():
    loss = GlobalContrastiveLoss(strategy="G_D-")
    assert loss.strategy == "G_D-" and "strategy='G_D-'" in repr(loss)
    assert GlobalContrastiveLoss().strategy == "G_D"
    assert check_global_strategy("G_R") == "G_R"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": 0}, ValueError, "temperature"),
        ({"temperature": None}, TypeError, "temperature"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"strategy": "G_D^-"}, ValueError, r"strategy must be one of \['G_D', 'G_D-', 'G_R'\].*got 'G_D\^-'"),
        ({"strategy": "gd"}, ValueError, r"strategy must be one of .*got 'gd'"),
        ({"strategy": 2}, TypeError, r"strategy must be one of .*got int 2"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        GlobalContrastiveLoss(**kwargs)


def test_functional_bad_strategy_names_it():
    with pytest.raises(ValueError, match=r"strategy must be one of \['G_D', 'G_D-', 'G_R'\]"):
        global_contrastive_loss(torch.randn(4, 3), torch.randn(4, 3), PARTS[:4], strategy="random")


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
@pytest.mark.parametrize("strategy", GLOBAL_STRATEGIES)
def test_forward_errors(z1, z2, parts, vols, error, match, strategy):
    with pytest.raises(error, match=match):
        GlobalContrastiveLoss(strategy=strategy)(z1, z2, parts, vols)


def test_gather_without_process_group_is_a_clear_error():
    with pytest.raises(RuntimeError, match="init_process_group"):
        GlobalContrastiveLoss(gather_distributed=True)(torch.randn(4, 3), torch.randn(4, 3), PARTS[:4])
