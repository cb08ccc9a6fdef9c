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

    @torch.no_grad()
    def set_calibration(self, position: float, rotation: float) -> None:
        self.sigma_scale.copy_(torch.tensor([position, rotation]))
        self.calibrated.fill_(True)

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
