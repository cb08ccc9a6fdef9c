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

import logging
import math

import torch

from .model.base import Model
from .pose import rotation_error_vector

log = logging.getLogger("jsla_fast.uncertainty")


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


def sigmas_calibrated(model: Model, mc_samples: int | None) -> bool:
    """Whether the sigmas a pose ``model`` gives (with MC dropout of ``mc_samples``, or without)
    were calibrated on held-out data."""
    return model.pose_decoder.is_calibrated(mc=bool(mc_samples))


def calibration_note(model: Model, mc_samples: int | None) -> str:
    """Where the sigmas come from and how they were calibrated, in words (the node's /diagnostics)."""
    decoder = model.pose_decoder
    aleatoric = model.config.uncertainty == "aleatoric"
    if mc_samples:
        what = f"MC dropout spread of {mc_samples} samples" + (" plus the predicted sigmas" if aleatoric else "")
        k = int(decoder.mc_samples)
        return (f"{what}, calibrated on validation with {k} samples (factors "
                + ", ".join(f"{v:.3g}" for v in decoder.mc_scale.tolist()) + ")" if k else f"{what}, not calibrated")
    if decoder.is_calibrated(mc=False):
        return "predicted sigmas, calibrated on validation (factors " + ", ".join(
            f"{v:.3g}" for v in decoder.sigma_scale.tolist()) + ")"
    return "predicted sigmas, not calibrated (factor 1)"


def mc_spreads(model: Model, warn: bool = False) -> bool:
    """Whether MC dropout gives a pose ``model`` any variance: dropout to sample, or predicted sigmas
    (``warn``: log it when not)."""
    spreads = float(model.dropout.p) > 0 or model.config.uncertainty == "aleatoric"
    if warn and not spreads:
        log.warning("MC dropout on a model without dropout or predicted sigmas: every sample is the same pose "
                    "and the sigmas are zero (train with model.dropout > 0 for MC dropout's spread)")
    return spreads


def check_samples(samples) -> None:
    """The one check of an MC-dropout sample count (Localizer, predict, evaluate, the node)."""
    if not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"mc_samples must be an integer >= 1 (or None for no MC dropout), got {samples!r}")


def mc_dropout(model: Model, images: torch.Tensor, samples: int, generator: torch.Generator | None = None):
    """Test-time MC dropout (Bayesian PoseNet, Kendall & Cipolla 2016) on a pose model, whose
    ``dropout`` sits right before its ``head`` (the :class:`Model` contract): the backbone and the
    recurrence run once, the head ``samples`` times on independently dropped-out copies of its
    input. Returns the model's output with ``pose`` the samples' mean (positions averaged,
    quaternions averaged after aligning their signs, then normalised) and ``log_var`` the
    per-axis variance: the samples' spread (position, and rotation as rotation vectors about the
    mean) plus, for an aleatoric model, the mean of their predicted variances, times the squared
    MC calibration factors when the model has them (``pose_decoder.mc_scale``). With
    ``samples == 1`` and no dropout it is the deterministic output."""
    check_samples(samples)
    if model.pose_decoder is None:
        raise ValueError("MC dropout gives pose uncertainty; this is a scene model")
    captured = []
    hook = model.head.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
    try:
        out = model(images)
    finally:
        hook.remove()
    features = captured[0]  # the head's input: the dropout's output, an identity at eval
    p = float(model.dropout.p)
    keep = torch.rand((samples, *features.shape), generator=generator, device=features.device) >= p
    dropped = features[None] * keep.to(features.dtype) / (1.0 - p)
    pose_k, _, log_var_k = model.pose_decoder(model.head(dropped.flatten(0, 1)))
    pose_k = pose_k.view(samples, *out.pose.shape)
    quat = pose_k[..., 3:]
    quat = torch.where((quat * quat[:1]).sum(-1, keepdim=True) < 0, -quat, quat)  # one hemisphere
    mean_q = quat[0]  # one sample: its own (already unit) quaternion, bit for bit
    if samples > 1:
        mean_q = quat.mean(0)
        mean_q = mean_q / mean_q.norm(dim=-1, keepdim=True)
        mean_q = torch.where(mean_q[..., :1] < 0, -mean_q, mean_q)
    xyz = pose_k[..., :3]
    rot = rotation_error_vector(quat.flatten(0, 1), mean_q.repeat(samples, 1)).view(samples, -1, 3)
    var = torch.cat([xyz.var(0, unbiased=False), rot.square().mean(0)], dim=-1)
    if log_var_k is not None:
        var = var + torch.exp(log_var_k.view(samples, -1, 6)).mean(0)
    decoder = model.pose_decoder
    if int(decoder.mc_samples):  # calibrated (jsla_fast.calibrate)
        var = var * decoder.mc_scale.to(var).repeat_interleave(3).square()
    out.pose = torch.cat([xyz.mean(0), mean_q], dim=-1)
    out.log_var = torch.log(var.clamp_min(torch.finfo(var.dtype).tiny))
    return out


class MCDropout:
    """A pose model whose forward is :func:`mc_dropout` with ``samples`` (for ``run_model``)."""

    def __init__(self, model: Model, samples: int, seed: int = 0) -> None:
        check_samples(samples)
        mc_spreads(model, warn=True)
        self.model, self.samples = model, samples
        self.generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)

    def eval(self) -> MCDropout:
        self.model.eval()
        return self

    def __call__(self, images: torch.Tensor):
        return mc_dropout(self.model, images, self.samples, self.generator)
