"""Straight-through Gumbel selection and the temperature schedule."""
from __future__ import annotations

import pytest
import torch

from jsla_fast.model import gumbel_straight_through, temperature


def test_hard_forward_soft_backward(seed):
    logits = torch.randn(64, 4, requires_grad=True)
    z, index = gumbel_straight_through(logits, tau=0.7, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(z.detach(), torch.nn.functional.one_hot(index, 4).float())
    w = torch.randn(4)
    (z * w).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # each row's gradient is that of softmax((logits+g)/tau): it sums to zero over the K logits
    torch.testing.assert_close(logits.grad.sum(1), torch.zeros(64), atol=1e-6, rtol=0)


def test_gumbel_max_samples_the_softmax_distribution(seed):
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    n = 40000
    _, index = gumbel_straight_through(logits.expand(n, 4), 1.0, generator=torch.Generator().manual_seed(seed))
    freq = torch.bincount(index, minlength=4).float() / n
    # 5 standard errors of a frequency near 0.5 at n=40000 is 0.0125
    torch.testing.assert_close(freq, torch.softmax(logits, 0), atol=0.0125, rtol=0)


def test_temperature_schedules():
    assert temperature(0, 1.0, 0.1) == pytest.approx(1.0)
    assert temperature(0.5, 1.0, 0.1) == pytest.approx(0.1 ** 0.5)
    assert temperature(1, 1.0, 0.1) == pytest.approx(0.1)
    assert temperature(2, 1.0, 0.1) == pytest.approx(0.1)  # clamped
    assert temperature(0.5, 1.0, 0.1, "linear") == pytest.approx(0.55)
    taus = [temperature(p / 10, 1.0, 0.1) for p in range(11)]
    assert all(a > b for a, b in zip(taus, taus[1:]))
    with pytest.raises(ValueError, match="schedule"):
        temperature(0.5, 1.0, 0.1, "cosine")
