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
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("scale", torch.ones(1))

    @torch.no_grad()
    def fit(self, positions: torch.Tensor) -> None:
        """Centre on the positions' mean; one isotropic scale (RMS distance to it), so metres stay
        metres in every direction."""
        mean = positions.mean(0)
        rms = (positions - mean).pow(2).sum(1).mean().sqrt()
        self.mean.copy_(mean)
        self.scale.fill_(max(float(rms), 1e-3))

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``raw [B,7]`` -> ``(pose, pose_raw)``: both with the position in metres; ``pose`` has the
        unit quaternion (qw >= 0), ``pose_raw`` the quaternion as predicted (for the loss)."""
        xyz = raw[:, :3] * self.scale + self.mean
        pose_raw = torch.cat([xyz, raw[:, 3:]], dim=1)
        return torch.cat([xyz, canonical_quaternion(raw[:, 3:])], dim=1), pose_raw
