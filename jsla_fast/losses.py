"""Training losses (SPEC §2): PoseNet's beta loss, learned (s_x, s_q) weighting, cross-entropy.

The pose losses take the model's *raw* quaternion (``out.pose_raw``) and normalise it as in
PoseNet's ``||q - q^/||q^|| ||``; the ground truth is a unit quaternion with w >= 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import JSLAConfig


def posenet_terms(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch means of ``||x - x^||_2`` and ``||q - q^/||q^|| ||_2`` for poses ``[B,7]``."""
    lx = (pred[:, :3] - target[:, :3]).norm(dim=1).mean()
    q_hat = F.normalize(pred[:, 3:], dim=1)
    lq = (target[:, 3:] - q_hat).norm(dim=1).mean()
    return lx, lq


def posenet_loss(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """PoseNet (Kendall et al. 2015): ``||x - x^|| + beta ||q - q^/||q^|| ||``, batch mean."""
    lx, lq = posenet_terms(pred, target)
    return lx + beta * lq


class JSLALoss(nn.Module):
    """The training objective for a :class:`~jsla_fast.JSLA` output.

    Pose: PoseNet beta loss, or with ``learned_weighting`` Kendall & Cipolla's
    ``Lx exp(-s_x) + s_x + Lq exp(-s_q) + s_q`` with s_x, s_q learned (parameters of this module:
    give it to the optimiser). Scene: cross-entropy. Auxiliary per-step heads, when present, add
    ``aux_weight`` times their mean loss.
    """

    def __init__(self, config: JSLAConfig) -> None:
        super().__init__()
        self.task = config.task
        self.cfg = config.loss
        if self.task == "pose" and self.cfg.learned_weighting:
            self.s_x = nn.Parameter(torch.tensor(float(self.cfg.s_x_init)))
            self.s_q = nn.Parameter(torch.tensor(float(self.cfg.s_q_init)))

    def term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "scene":
            return F.cross_entropy(pred, target)
        if self.cfg.learned_weighting:
            lx, lq = posenet_terms(pred, target)
            return lx * torch.exp(-self.s_x) + self.s_x + lq * torch.exp(-self.s_q) + self.s_q
        return posenet_loss(pred, target, self.cfg.beta)

    def forward(self, out, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        main = self.term(out.pose_raw if self.task == "pose" else out.logits, target)
        parts = {"main": float(main.detach())}
        total = main
        if out.aux:
            aux = torch.stack([self.term(a, target) for a in out.aux]).mean()
            parts["aux"] = float(aux.detach())
            total = total + self.cfg.aux_weight * aux
        parts["total"] = float(total.detach())
        return total, parts
