"""Per-image pose uncertainty after training (``JSLAConfig(uncertainty="aleatoric")``): calibration
of the predicted sigmas on the validation split, and how well they describe the errors.

The model's sigmas come from one likelihood fitted on the training images, which it fits better
than new ones, so they tend to be too small on held-out data; a filter given them would trust the
poses too much. Calibration multiplies each quantity's sigmas (position, rotation) by the one
factor that makes the validation errors' normalised second moment 1: ``f = sqrt(mean(e^2 /
sigma^2))`` over all images and the three axes, which is the maximum-likelihood scale of a
Gaussian error model. The factors live in the model (``pose_decoder.sigma_scale``), so every
runtime applies them.
"""
from __future__ import annotations

import math

import torch

from .losses import rotation_error_vector


def axis_errors(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis errors ``[N,3]`` of position (m) and rotation (rad, the rotation vector)."""
    return pred[:, :3] - target[:, :3], rotation_error_vector(pred[:, 3:7], target[:, 3:7])


def calibration_factors(pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(position factor, rotation factor) for sigmas predicted as ``log_var [N,6]``."""
    e_t, e_r = axis_errors(pred.double(), target.double())
    var = torch.exp(log_var.double())
    return (float((e_t.square() / var[:, :3]).mean().sqrt()), float((e_r.square() / var[:, 3:]).mean().sqrt()))


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else math.nan


def uncertainty_metrics(pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> dict:
    """How the predicted sigmas describe the errors: per quantity, the fraction of per-axis errors
    within 1 and 2 sigma (a Gaussian's: 0.683, 0.954) and the Spearman rank correlation between an
    image's sigma (root of the summed variances) and its error (the norm)."""
    e_t, e_r = axis_errors(pred.double(), target.double())
    sigma = torch.exp(log_var.double() / 2)
    out = {}
    for name, e, s in (("position", e_t, sigma[:, :3]), ("rotation", e_r, sigma[:, 3:])):
        z = (e / s).abs()
        out[name] = {"within_1_sigma": float((z <= 1).double().mean()), "within_2_sigma": float((z <= 2).double().mean()),
                     "spearman_sigma_error": _spearman(s.square().sum(1).sqrt(), e.norm(dim=1)),
                     "median_sigma": float(s.square().sum(1).sqrt().median())}
    return out
