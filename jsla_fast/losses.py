"""Training losses (docs/TRAINING.md, "The pose loss"): PoseNet's beta loss, learned (s_x, s_q) weighting, cross-entropy.

The pose losses take the model's *raw* quaternion (``out.pose_raw``) and normalise it as in
PoseNet's ``||q - q^/||q^|| ||``; the ground truth is a unit quaternion with w >= 0. Both terms
are in the data's units (metres, unit-quaternion distance), so beta keeps PoseNet's meaning.

Why the weighting starts from the data: Adam moves s_x, s_q by about the learning rate per step,
so in a run of a few thousand steps they stay near their start. Kendall & Cipolla's start
(s_x = 0, s_q = -3) then acts as a fixed beta = e^3 = 20, which, like PoseNet's beta = 500,
makes a degree of rotation error worth metres of position error and starves the position term
of a model trained from scratch (measured: the training images' own positions stay at 1.03 m
against 1.16 m for the mean pose). Started at ``s = log(term of the mean pose)``, each term is
weighted by one over its own scale in the training set, which is also the learned weighting's
equilibrium (``d/ds = 0`` at ``s = log L``), and the run begins balanced.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import JSLAConfig
from .pose import rotation_error_vector

#: a term of the mean pose below this (1 cm; quaternion distance 0.01, about 1.1 deg) is taken as
#: this, so a nearly constant target (one orientation for every image) gets a bounded weight
TERM_FLOOR = 1e-2


def posenet_terms(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch means of ``||x - x^||_2`` and ``||q - q^/||q^|| ||_2`` for poses ``[B,7]``."""
    lx = (pred[:, :3] - target[:, :3]).norm(dim=1).mean()
    q_hat = F.normalize(pred[:, 3:], dim=1)
    lq = (target[:, 3:] - q_hat).norm(dim=1).mean()
    return lx, lq


def aleatoric_nll(pose_raw: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor,
                  detach_error: bool = False) -> torch.Tensor:
    """Kendall & Gal's heteroscedastic loss with a Gaussian likelihood, batch mean: per position
    axis (metres) and rotation axis (radians, :func:`rotation_error_vector`)
    ``0.5 (e^2 exp(-s) + s)`` summed, ``s`` the predicted log-variance. Each error is weighed by its
    own predicted variance (their "loss attenuation"). ``detach_error``: the gradient reaches only
    the variances, not the pose (the ``decoupled`` training)."""
    err = torch.cat([pose_raw[:, :3] - target[:, :3], rotation_error_vector(pose_raw[:, 3:7], target[:, 3:7])], dim=1)
    if detach_error:
        err = err.detach()
    return 0.5 * (err.square() * torch.exp(-log_var) + log_var).sum(1).mean()


def posenet_loss(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """PoseNet (Kendall et al. 2015): ``||x - x^|| + beta ||q - q^/||q^|| ||``, batch mean."""
    lx, lq = posenet_terms(pred, target)
    return lx + beta * lq


class JSLALoss(nn.Module):
    """The training objective for a :class:`~jsla_fast.JSLA` output.

    Pose with ``uncertainty="aleatoric"``: with ``loss.aleatoric = "attenuation"``
    :func:`aleatoric_nll` on the main head instead of the pose loss; with ``"decoupled"`` the pose
    loss below plus :func:`aleatoric_nll` on the detached errors. The pose loss: with
    ``learned_weighting`` (the default), Kendall & Cipolla's
    ``Lx exp(-s_x) + s_x + Lq exp(-s_q) + s_q`` with s_x, s_q learned (parameters of this module:
    give it to the optimiser), started by :meth:`fit` from the training poses; otherwise PoseNet's
    beta loss. Scene: cross-entropy. Auxiliary per-step heads, when present, add ``aux_weight``
    times their mean loss.

    ``weights`` (a buffer) is the fixed (w_x, w_q) that :meth:`score` uses to compare validation
    errors across epochs: (1, beta), or the learned weighting's starting weights exp(-s).
    """

    def __init__(self, config: JSLAConfig) -> None:
        super().__init__()
        self.task = config.task
        self.cfg = config.loss
        self.learned = self.task == "pose" and self.cfg.learned_weighting
        self.aleatoric = self.cfg.aleatoric if self.task == "pose" and config.uncertainty == "aleatoric" else None
        #: whether training moves (s_x, s_q): not when the likelihood replaces the pose loss on the
        #: only head (they still set the validation score's fixed weights)
        self.trains_weighting = self.learned and (self.aleatoric != "attenuation" or config.aux_heads)
        if self.learned:
            self.s_x = nn.Parameter(torch.tensor(float(self.cfg.s_x_init or 0.0)))
            self.s_q = nn.Parameter(torch.tensor(float(self.cfg.s_q_init or 0.0)))
            start = torch.exp(-torch.stack([self.s_x.detach(), self.s_q.detach()]))
        else:
            start = torch.tensor([1.0, float(self.cfg.beta)])
        self.register_buffer("weights", start.clone())

    @torch.no_grad()
    def fit(self, poses: torch.Tensor, start: torch.Tensor) -> tuple[float, float]:
        """Set the unset s_x, s_q from the training ``poses [N,7]`` and the pose the heads start
        at (``start [7]``, the mean pose): ``s = log(term)``. Returns the two terms."""
        lx, lq = (max(float(t), TERM_FLOOR) for t in posenet_terms(start.expand_as(poses).double(), poses.double()))
        if self.learned:
            if self.cfg.s_x_init is None:
                self.s_x.fill_(math.log(lx))
            if self.cfg.s_q_init is None:
                self.s_q.fill_(math.log(lq))
            self.weights.copy_(torch.exp(-torch.stack([self.s_x, self.s_q])))
        return lx, lq

    def score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``w_x Lx + w_q Lq`` with the fixed :attr:`weights`: a validation loss comparable across epochs."""
        lx, lq = posenet_terms(pred, target)
        return self.weights[0].to(lx) * lx + self.weights[1].to(lq) * lq

    def weigh(self, lx: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """The pose loss from its two terms (learned weighting or fixed beta)."""
        if self.learned:
            return lx * torch.exp(-self.s_x) + self.s_x + lq * torch.exp(-self.s_q) + self.s_q
        return lx + self.cfg.beta * lq

    def term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "scene":
            return F.cross_entropy(pred, target)
        return self.weigh(*posenet_terms(pred, target))

    def forward(self, out, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.task == "pose":
            lx, lq = posenet_terms(out.pose_raw, target)
            if self.aleatoric == "attenuation":
                main = aleatoric_nll(out.pose_raw, out.log_var, target)
            else:
                main = self.weigh(lx, lq)
                if self.aleatoric == "decoupled":
                    main = main + aleatoric_nll(out.pose_raw, out.log_var, target, detach_error=True)
            parts = {"main": float(main.detach()), "t_m": float(lx.detach()), "q": float(lq.detach())}
        else:
            main = self.term(out.logits, target)
            parts = {"main": float(main.detach())}
        total = main
        if out.aux:
            aux = torch.stack([self.term(a, target) for a in out.aux]).mean()
            parts["aux"] = float(aux.detach())
            total = total + self.cfg.aux_weight * aux
        parts["total"] = float(total.detach())
        return total, parts
