"""PoseNet baseline (Kendall et al. 2015) on the same backbone, data and loss as JSLA.

GoogLeNet -> GAP of 5b -> FC 2048 -> ReLU -> dropout -> FC to the pose (x,y,z + quaternion) or
class logits: PoseNet's final regressor (its two auxiliary regressors are left out). For the
scene task it is the plain GoogLeNet baseline of the paper's Table 2.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .base import Model, ModelOutput
from .googlenet import GoogLeNet
from .pose_head import PoseDecoder, pose_head


class PoseNet(Model):
    kind = "posenet"

    def __init__(self, config: ModelConfig | None = None, hidden: int = 2048) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = GoogLeNet(outputs=("5b",), style=cfg.backbone_style)
        self.fc = nn.Linear(1024, hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = pose_head(hidden, cfg)
        self.pose_decoder = PoseDecoder(cfg.uncertainty == "aleatoric") if cfg.task == "pose" else None

    def regress(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, hidden]`` FC features -> ``[B, output_dim]`` (the part PoseLSTM replaces)."""
        return self.head(self.dropout(features))

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> ModelOutput:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"PoseNet expects images [B,3,H,W], got {tuple(images.shape)}")
        pooled = self.backbone(images)["5b"].mean(dim=(2, 3))
        raw = self.regress(torch.relu(self.fc(pooled)))
        none = torch.zeros(images.shape[0], 0, dtype=torch.int64, device=images.device)
        if self.pose_decoder is not None:
            pose, raw, log_var = self.pose_decoder(raw)
            return ModelOutput(pose=pose, logits=None, layers=none, attention=[], selection_logits=[], pose_raw=raw,
                              log_var=log_var)
        return ModelOutput(pose=None, logits=raw, layers=none, attention=[], selection_logits=[])
