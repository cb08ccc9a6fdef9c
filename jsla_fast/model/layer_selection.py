"""Layer attention (paper §3.2; docs/DESIGN.md, "The model"): pick one candidate layer per sample and step.

``s = GAP(h_{t-1}) -> FC -> BN -> ReLU -> FC -> K logits``. Training: Gumbel-max hard one-hot in
the forward pass with the straight-through Gumbel-softmax gradient at temperature tau. Eval:
deterministic argmax, no noise.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import Fusable, fuse_bn


class LayerSelector(nn.Module, Fusable):
    def __init__(self, hidden_channels: int, embedding: int, num_layers: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_channels, embedding)
        self.bn = nn.BatchNorm1d(embedding)
        self.fc2 = nn.Linear(embedding, num_layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h [B,hidden,G,G] -> logits [B,K]`` (unnormalised log-probabilities of each layer)."""
        return self.fc2(torch.relu(self.bn(self.fc1(h.mean(dim=(2, 3))))))

    def fuse(self) -> int:
        return fuse_bn(self, self.fc1)


def gumbel_straight_through(logits: torch.Tensor, tau: float,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Straight-through Gumbel-softmax (Jang et al.).

    Returns ``(z [B,K], index [B])``: ``z`` equals the one-hot of ``argmax(logits + g)`` in value,
    while its gradient is that of ``softmax((logits + g) / tau)``.
    """
    u = torch.rand(logits.shape, device=logits.device, dtype=logits.dtype, generator=generator)
    tiny = torch.finfo(logits.dtype).tiny
    e = -torch.log(u.clamp_min(tiny))  # Exp(1) sample, > 0
    g = -torch.log(e.clamp_min(tiny))  # Gumbel(0, 1)
    noisy = logits + g
    soft = torch.softmax(noisy / tau, dim=-1)
    index = noisy.argmax(dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, index.unsqueeze(-1), 1.0)
    return hard - soft.detach() + soft, index


def temperature(progress: float, tau_start: float, tau_end: float, schedule: str = "exponential") -> float:
    """Gumbel temperature at training progress in [0, 1] (tau is 'progressively lowered', paper §3.2)."""
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "exponential":
        return tau_start * math.exp(p * math.log(tau_end / tau_start))
    if schedule == "linear":
        return tau_start + p * (tau_end - tau_start)
    raise ValueError(f"unknown temperature schedule {schedule!r}; use 'exponential' or 'linear'")
