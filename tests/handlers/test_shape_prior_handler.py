"""ShapePriorHandler: one discriminator step per iteration on detached cluster maps, switchable, checked inputs."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from monai_cluster.handlers import ShapePriorHandler, assignment_from_output
from monai_cluster.losses import ShapePriorLoss
from monai_cluster.networks import ShapePriorDiscriminator


def _prior_and_masks():
    torch.manual_seed(0)
    prior = ShapePriorLoss(ShapePriorDiscriminator(2, features=(4, 4)), cluster_index=0)
    masks = torch.zeros(4, 1, 16, 16)
    masks[:, :, 6:10, :] = 1.0  # horizontal bars: the "shape"
    return prior, masks


def _engine(assignment: torch.Tensor, mix_weight=None) -> Engine:
    engine = Engine(lambda e, b: {"pred": {"assignment": assignment}, "label": {"mix_weight": mix_weight}})
    return engine


def test_discriminator_learns_to_separate_masks_from_cluster_maps():
    prior, masks = _prior_and_masks()
    optimizer = torch.optim.Adam(prior.discriminator.parameters(), lr=1e-2)
    fake = torch.softmax(torch.randn(4, 3, 16, 16), dim=1)
    handler = ShapePriorHandler(prior, optimizer, masks, seed=0)
    engine = _engine(fake)
    handler.attach(engine)
    before = prior.discriminator_loss(fake, masks).item()
    engine.run(range(30), max_epochs=1)
    after = prior.discriminator_loss(fake, masks).item()
    assert after < 0.75 * before
    assert engine.state.shape_prior_d_loss == handler.last_loss and handler.last_loss < before


def test_generator_gradients_in_the_discriminator_are_dropped_before_its_step():
    prior, masks = _prior_and_masks()
    optimizer = torch.optim.SGD(prior.discriminator.parameters(), lr=0.0)
    fake = torch.softmax(torch.randn(4, 3, 16, 16), dim=1)
    handler = ShapePriorHandler(prior, optimizer, masks[:1].expand(4, -1, -1, -1), seed=0)
    prior.discriminator.zero_grad()
    prior.discriminator_loss(fake, masks[:1].expand(4, -1, -1, -1)).backward()
    expected = [p.grad.clone() for p in prior.discriminator.parameters()]
    for p in prior.discriminator.parameters():
        p.grad = torch.full_like(p, 1e3)  # what the generator term would leave behind
    engine = _engine(fake)
    engine.state.output = engine._process_function(engine, None)
    handler(engine)
    for p, g in zip(prior.discriminator.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


def test_disabled_handler_does_nothing_and_mixed_rows_are_dropped():
    prior, masks = _prior_and_masks()
    optimizer = torch.optim.SGD(prior.discriminator.parameters(), lr=1.0)
    state = {k: v.clone() for k, v in prior.discriminator.state_dict().items()}
    engine = _engine(torch.softmax(torch.randn(4, 3, 16, 16), dim=1))
    ShapePriorHandler(prior, optimizer, masks, enabled=False).attach(engine)
    engine.run(range(2), max_epochs=1)
    assert all(torch.equal(state[k], v) for k, v in prior.discriminator.state_dict().items())
    rows = torch.rand(6, 3, 16, 16)
    out = {"pred": {"assignment": rows}, "label": {"mix_weight": torch.rand(2)}}
    assert assignment_from_output(out).shape[0] == 4
    assert assignment_from_output({"pred": {"assignment": rows}, "label": None}).shape[0] == 6


def test_errors_name_the_input():
    prior, masks = _prior_and_masks()
    optimizer = torch.optim.Adam(prior.discriminator.parameters())
    with pytest.raises(ValueError, match="discriminator's parameters"):
        ShapePriorHandler(prior, torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]), masks)
    with pytest.raises(ValueError, match=r"prior_masks must hold finite values in \[0, 1\]"):
        ShapePriorHandler(prior, optimizer, masks * 2)
    with pytest.raises(ValueError, match="prior_masks must have 1 channel"):
        ShapePriorHandler(prior, optimizer, masks.repeat(1, 2, 1, 1))
    with pytest.raises(TypeError, match="shape_prior must be a ShapePriorLoss"):
        ShapePriorHandler(prior.discriminator, optimizer, masks)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        ShapePriorHandler(prior, optimizer, masks, enabled="yes")
    with pytest.raises(ValueError, match="decollate=False"):
        assignment_from_output([{"pred": torch.zeros(1)}])
