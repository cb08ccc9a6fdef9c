"""Losses against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from jsla_fast import JSLA, JSLAConfig, JSLALoss
from jsla_fast.losses import posenet_loss
from jsla_fast.model.jsla import JSLAOutput


def out_with(pose_raw=None, logits=None, aux=()):
    return JSLAOutput(pose=None, logits=logits, layers=torch.zeros(1, 1, dtype=torch.long), attention=[],
                      selection_logits=[], pose_raw=pose_raw, aux=list(aux))


def test_posenet_loss_value():
    pred = torch.tensor([[1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 2.0]])  # quaternion normalises to (0,0,0,1)
    target = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    assert float(posenet_loss(pred, target, beta=10.0)) == pytest.approx(3.0 + 10.0 * math.sqrt(2))


def test_learned_weighting_formula_and_parameters():
    cfg = JSLAConfig(loss={"learned_weighting": True, "s_x_init": 0.5, "s_q_init": -2.0})
    loss = JSLALoss(cfg)
    assert {n for n, _ in loss.named_parameters()} == {"s_x", "s_q"}
    pred = torch.tensor([[3.0, 4.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    total, parts = loss(out_with(pose_raw=pred), target)
    expect = 5.0 * math.exp(-0.5) + 0.5 + math.sqrt(2) * math.exp(2.0) - 2.0
    assert float(total.detach()) == pytest.approx(expect, rel=1e-6)
    total.backward()
    assert loss.s_x.grad is not None and loss.s_q.grad is not None


def test_scene_cross_entropy_and_aux_weight():
    cfg = JSLAConfig(task="scene", num_classes=3, aux_heads=True, loss={"aux_weight": 0.5})
    loss = JSLALoss(cfg)
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    target = torch.tensor([1])
    ce = lambda z: float(torch.nn.functional.cross_entropy(z, target))  # noqa: E731
    aux = [torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 3.0]])]
    total, parts = loss(out_with(logits=logits, aux=aux), target)
    assert float(total) == pytest.approx(ce(logits) + 0.5 * (ce(aux[0]) + ce(aux[1])) / 2)
    assert set(parts) == {"main", "aux", "total"}


def test_loss_on_a_real_model_output_backpropagates():
    cfg = JSLAConfig(steps=2, aux_heads=True)
    model = JSLA(cfg).train()
    out = model(torch.randn(2, 3, 128, 128))
    target = torch.tensor([[0.0, 0, 0, 1, 0, 0, 0]]).repeat(2, 1)
    total, _ = JSLALoss(cfg)(out, target)
    total.backward()
    assert model.head.weight.grad.abs().sum() > 0 and model.aux_heads[0].weight.grad.abs().sum() > 0


def test_learned_weighting_starts_from_the_training_poses():
    """Unset s_x, s_q start at log(term of the mean pose); score() keeps those starting weights."""
    poses = torch.tensor([[0.0, 0, 0, 1, 0, 0, 0], [2.0, 0, 0, 0, 1, 0, 0]])
    start = torch.tensor([1.0, 0, 0, 1, 0, 0, 0])  # 1 m from both; quaternion 0 and sqrt(2) away
    loss = JSLALoss(JSLAConfig())
    assert loss.learned
    lx, lq = loss.fit(poses, start)
    assert (lx, lq) == pytest.approx((1.0, math.sqrt(2) / 2))
    assert loss.s_x.item() == pytest.approx(0.0, abs=1e-7) and loss.s_q.item() == pytest.approx(math.log(lq))
    assert loss.weights.tolist() == pytest.approx([1.0, 1 / lq])
    # a set start is kept; the term floor bounds the weight of a constant orientation
    fixed = JSLALoss(JSLAConfig(loss={"s_x_init": 0.0, "s_q_init": -3.0}))
    fixed.fit(poses[:1].expand(4, 7) + torch.tensor([[0.5, 0, 0, 0, 0, 0, 0]]), poses[0])
    assert (fixed.s_x.item(), fixed.s_q.item()) == (0.0, -3.0)
    one_view = JSLALoss(JSLAConfig())
    assert one_view.fit(poses[:1].expand(4, 7), poses[0]) == (0.01, 0.01)
    pred, target = torch.tensor([[3.0, 4.0, 0.0, 1.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0, 0, 0, 1, 0, 0]])
    assert float(loss.score(pred, target)) == pytest.approx(5.0 + math.sqrt(2) / lq)


def test_fixed_beta_has_no_parameters_and_scores_with_beta():
    loss = JSLALoss(JSLAConfig(loss={"learned_weighting": False, "beta": 10.0}))
    assert not list(loss.parameters()) and loss.weights.tolist() == [1.0, 10.0]
    assert loss.fit(torch.tensor([[0.0, 0, 0, 1, 0, 0, 0]]), torch.tensor([1.0, 0, 0, 1, 0, 0, 0])) == (1.0, 0.01)
    assert loss.weights.tolist() == [1.0, 10.0]
    pred, target = torch.tensor([[1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 2.0]]), torch.tensor([[0.0, 0, 0, 1, 0, 0, 0]])
    assert float(loss.score(pred, target)) == pytest.approx(3.0 + 10.0 * math.sqrt(2))
    total, parts = loss(out_with(pose_raw=pred), target)
    assert parts["t_m"] == pytest.approx(3.0) and parts["q"] == pytest.approx(math.sqrt(2))
