"""Pseudo-label consistency: voxels below the threshold are ignored, values by hand, bf16 autocast, ramp-up."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cluster.losses import (
    PseudoLabelConsistencyLoss,
    confident_pseudo_labels,
    pseudo_label_consistency_loss,
    sigmoid_rampup,
)


def _pair(spatial, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, *spatial, generator=g)
    probs = torch.softmax(3.0 * torch.randn(2, k, *spatial, generator=g), dim=1)
    return logits, probs


@pytest.mark.parametrize("spatial", [(6, 5), (4, 5, 3)])
@pytest.mark.parametrize("dice_weight", [0.0, 0.5])
def test_voxels_below_the_threshold_change_neither_loss_nor_gradient(spatial, dice_weight):
    logits, probs = _pair(spatial)
    _, keep = confident_pseudo_labels(probs, 0.8)
    assert 0 < keep.sum() < keep.numel()  # some kept, some dropped
    other = logits.clone()
    other[keep.unsqueeze(1).expand_as(other).logical_not()] = torch.randn(int((~keep).sum()) * 3) * 50
    values, grads = [], []
    for lg in (logits, other):
        lg = lg.clone().requires_grad_(True)
        loss = pseudo_label_consistency_loss(lg, probs, threshold=0.8, dice_weight=dice_weight)
        loss.backward()
        values.append(loss.detach())
        grads.append(lg.grad)
    torch.testing.assert_close(values[0], values[1], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)
    dropped = (~keep).unsqueeze(1).expand_as(grads[0])
    assert torch.count_nonzero(grads[0][dropped]) == 0 and torch.count_nonzero(grads[0][~dropped]) > 0


@pytest.mark.parametrize("spatial", [(6, 5), (4, 5, 3)])
def test_values_against_a_hand_computation(spatial):
    logits, probs = _pair(spatial, seed=1)
    thr = 0.7
    b, k = logits.shape[:2]
    flat_l = logits.movedim(1, -1).reshape(-1, k).double()
    flat_p = probs.movedim(1, -1).reshape(-1, k).double()
    ce_terms, inter, psum, ysum = [], [0.0] * k, [0.0] * k, [0.0] * k
    for lv, pv in zip(flat_l, flat_p):
        if pv.max() < thr:
            continue
        c = int(pv.argmax())
        soft = [math.exp(v) for v in lv.tolist()]
        total = sum(soft)
        ce_terms.append(-math.log(soft[c] / total))
        for j in range(k):
            psum[j] += soft[j] / total
            ysum[j] += float(j == c)
            inter[j] += soft[j] / total * float(j == c)
    ce = sum(ce_terms) / len(ce_terms)
    dice = sum(1 - (2 * i + 1e-5) / (p + y + 1e-5) for i, p, y in zip(inter, psum, ysum)) / k
    got_ce = pseudo_label_consistency_loss(logits, probs, threshold=thr)
    got = pseudo_label_consistency_loss(logits, probs, threshold=thr, dice_weight=0.25)
    assert got_ce.item() == pytest.approx(ce, rel=1e-5)
    assert got.item() == pytest.approx(ce + 0.25 * dice, rel=1e-5)
    summed = pseudo_label_consistency_loss(logits, probs, threshold=thr, reduction="sum")
    per_voxel = pseudo_label_consistency_loss(logits, probs, threshold=thr, reduction="none")
    assert summed.item() == pytest.approx(sum(ce_terms), rel=1e-5)
    assert per_voxel.shape == (b, *spatial) and per_voxel.sum().item() == pytest.approx(sum(ce_terms), rel=1e-5)


def test_nothing_kept_gives_zero_with_a_graph():
    logits, probs = _pair((4, 4))
    logits.requires_grad_(True)
    loss = PseudoLabelConsistencyLoss(threshold=1.0, dice_weight=1.0)
    value = loss(logits, torch.full_like(probs, 1 / 3))
    assert value.item() == 0.0 and value.requires_grad and loss.last_kept_fraction.item() == 0.0
    value.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_threshold_zero_keeps_every_voxel_and_equals_cross_entropy():
    logits, probs = _pair((5, 4))
    expected = torch.nn.functional.cross_entropy(logits, probs.argmax(1))
    torch.testing.assert_close(PseudoLabelConsistencyLoss(threshold=0.0)(logits, probs), expected)


def test_bf16_autocast_runs_in_float32_and_matches():
    logits, probs = _pair((8, 8), seed=3)
    ref = PseudoLabelConsistencyLoss(0.6, dice_weight=0.5)(logits, probs)
    lg = logits.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = PseudoLabelConsistencyLoss(0.6, dice_weight=0.5)(lg, probs.bfloat16())
    assert got.dtype == torch.float32 and torch.isfinite(got)
    got.backward()
    assert lg.grad is not None and lg.grad.dtype == torch.bfloat16
    ref_bf = PseudoLabelConsistencyLoss(0.6, dice_weight=0.5)(logits.bfloat16().float(), probs.bfloat16().float())
    torch.testing.assert_close(got, ref_bf)
    assert abs(got.item() - ref.item()) < 0.1


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(10, 10) == 1.0 and sigmoid_rampup(50, 10) == 1.0 and sigmoid_rampup(3, 0) == 1.0
    with pytest.raises(ValueError, match="rampup_length"):
        sigmoid_rampup(1, -1)


def test_bad_inputs_are_named():
    logits, probs = _pair((4, 4))
    with pytest.raises(ValueError, match="threshold"):
        PseudoLabelConsistencyLoss(threshold=1.5)
    with pytest.raises(ValueError, match="dice_weight"):
        PseudoLabelConsistencyLoss(dice_weight=-1)
    with pytest.raises(ValueError, match="reduction='mean'"):
        PseudoLabelConsistencyLoss(dice_weight=1.0, reduction="sum")
    with pytest.raises(ValueError, match="teacher_probs"):
        pseudo_label_consistency_loss(logits, probs[:, :2])
    with pytest.raises(ValueError, match="student_logits"):
        pseudo_label_consistency_loss(logits[0], probs[0])
    with pytest.raises(TypeError, match="teacher_probs"):
        confident_pseudo_labels(probs.argmax(1, keepdim=True), 0.5)
