"""Decoding a pose head's raw output into a pose, shared by JSLA and the PoseNet baseline.

Heads predict the position standardised by the training set: ``x = mean + scale * raw_xyz``
(``mean``, ``scale`` are buffers fitted by training, so checkpoints carry them). Without it a head
must grow weights of the scene's size (metres to hundreds of metres) before its outputs move,
which takes Adam thousands of steps. The quaternion is normalised with qw >= 0.
"""
from __future__ import annotations

import torch
from torch import nn

from ..pose import canonical_quaternion


class PoseDecoder(nn.Module):
    """``uncertainty``: the head also predicts 6 log-variances; then ``sigma_scale`` (position,
    rotation) multiplies the predicted sigmas (1 until calibrated on validation data) and
    ``calibrated`` says whether it was."""

    def __init__(self, uncertainty: bool = False) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("scale", torch.ones(1))
        self.uncertainty = uncertainty
        if uncertainty:
            self.register_buffer("sigma_scale", torch.ones(2))
            self.register_buffer("calibrated", torch.tensor(False))
        # test-time MC dropout's variances (the samples' spread, plus the predicted ones): one factor
        # each for position and rotation, fitted with ``mc_samples`` samples (0: never calibrated)
        self.register_buffer("mc_scale", torch.ones(2))
        self.register_buffer("mc_samples", torch.tensor(0))

    @torch.no_grad()
    def set_calibration(self, position: float, rotation: float) -> None:
        self.sigma_scale.copy_(torch.tensor([position, rotation]))
        self.calibrated.fill_(True)

    @torch.no_grad()
    def set_mc_calibration(self, position: float, rotation: float, samples: int) -> None:
        self.mc_scale.copy_(torch.tensor([position, rotation]))
        self.mc_samples.fill_(samples)

    def factors(self, mc: bool) -> torch.Tensor | None:
        """The (position, rotation) factors the sigmas are multiplied by: MC dropout's when ``mc``,
        else the predicted sigmas' (None: this decoder predicts none)."""
        if mc:
            return self.mc_scale
        return self.sigma_scale if self.uncertainty else None

    def is_calibrated(self, mc: bool) -> bool:
        """Whether those factors were fitted on held-out data (MC dropout's when ``mc``)."""
        if mc:
            return bool(self.mc_samples)
        return self.uncertainty and bool(self.calibrated)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before MC calibration existed: never calibrated
        state_dict.setdefault(prefix + "mc_scale", torch.ones(2))
        state_dict.setdefault(prefix + "mc_samples", torch.tensor(0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fit(self, positions: torch.Tensor) -> None:
        """Centre on the positions' mean; one isotropic scale (RMS distance to it), so metres stay
        metres in every direction."""
        mean = positions.mean(0)
        rms = (positions - mean).pow(2).sum(1).mean().sqrt()
        self.mean.copy_(mean)
        self.scale.fill_(max(float(rms), 1e-3))

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``raw [B,7]`` (``[B,13]`` with ``uncertainty``) -> ``(pose, pose_raw, log_var)``: both poses
        with the position in metres; ``pose`` has the unit quaternion (qw >= 0), ``pose_raw`` the
        quaternion as predicted (for the loss). With uncertainty the last 6 are log-variances, as
        ``log_var [B,6]``: position x, y, z in m^2 (the head's standardised units shifted by
        2 log scale, so an untrained head starts at sigma = the training positions' spread) and
        rotation about x, y, z in rad^2; otherwise None."""
        xyz = raw[:, :3] * self.scale + self.mean
        quat = raw[:, 3:7]
        log_var = None
        if self.uncertainty:
            calib = 2 * torch.log(self.sigma_scale)
            log_var = torch.cat([raw[:, 7:10] + 2 * torch.log(self.scale) + calib[0], raw[:, 10:13] + calib[1]], dim=1)
        pose_raw = torch.cat([xyz, quat], dim=1)
        return torch.cat([xyz, canonical_quaternion(quat)], dim=1), pose_raw, log_var


class PoseHead(nn.Linear):
    """A model's final FC (an ``nn.Linear`` for the pose or the class logits). With
    ``variance_hidden`` (an aleatoric head trained ``decoupled``) the six log-variances come from a
    small MLP (one hidden ReLU layer of that width) on the same features with their gradient
    stopped: the variances learn from the network's features without reshaping them, so the network
    itself trains on the pose loss alone (letting the likelihood's gradient into it gave the demo's
    JSLA 43 % more median position error, docs/TRAINING.md)."""

    def __init__(self, in_features: int, out_features: int, variance_hidden: int | None = None) -> None:
        super().__init__(in_features, 7 if variance_hidden else out_features)
        self.variance = (nn.Sequential(nn.Linear(in_features, variance_hidden), nn.ReLU(),
                                       nn.Linear(variance_hidden, out_features - 7)) if variance_hidden else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if self.variance is None else torch.cat([out, self.variance(x.detach())], dim=1)

    @torch.no_grad()
    def start_at(self, outputs: torch.Tensor, weight_scale: float = 0.1) -> None:
        """Start the outputs near ``outputs`` whatever the features: biases set to it, last weights shrunk."""
        last = [self] if self.variance is None else [self, self.variance[-1]]
        for layer, part in zip(last, outputs.split([layer.out_features for layer in last])):
            layer.bias.copy_(part.to(layer.bias))
            layer.weight.mul_(weight_scale)


#: width of the decoupled variance MLP's hidden layer
VARIANCE_HIDDEN = 128


def pose_head(in_features: int, config) -> PoseHead:
    """The final FC of a model with ``config`` (a ModelConfig): pose (+ log-variances) or class logits."""
    decoupled = config.uncertainty == "aleatoric" and config.loss.aleatoric == "decoupled"
    return PoseHead(in_features, config.output_dim, VARIANCE_HIDDEN if decoupled else None)
