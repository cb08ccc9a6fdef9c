"""GoogLeNet (Inception v1) backbone that returns the candidate layers (docs/DESIGN.md, "The model").

Module names follow torchvision's ``googlenet`` so its state dicts load key for key
(``conv1.conv.weight``, ``inception4e.branch2.1.bn.running_mean``, ...). Two styles:

- ``torchvision``: BasicConv2d = conv (no bias) + BN(eps=1e-3), the 3x3 "5x5" branch and the
  2x2 pool4 of torchvision's port;
- ``caffe``: the original BVLC/Places network: conv with bias, no BN, true 5x5 branch, LRN after
  pool1 and conv3, 3x3 pool4. Places-GoogLeNet weights (the paper's) need this style.

Candidate layers are taken *before* the following max-pool: 3b 480x28x28, 4c 512x14x14,
4e 832x14x14, 5b 1024x7x7 for a 224x224 input. Only the blocks up to the deepest requested
layer are built, so a model without 5b carries no 5a/5b weights.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import BACKBONE_STYLES
from .base import Fusable, fuse_bn

# name -> (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), Szegedy et al. Table 1
INCEPTION_BLOCKS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}
# the max-pool that precedes each block (torchvision's attribute names)
POOL_BEFORE = {"3a": "maxpool2", "4a": "maxpool3", "5a": "maxpool4"}


class BasicConv2d(nn.Module, Fusable):
    """Conv + (BN) + ReLU, named as torchvision's ``BasicConv2d`` (``conv``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 style: str = "torchvision") -> None:
        super().__init__()
        caffe = style == "caffe"
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=caffe)
        self.bn = nn.Identity() if caffe else nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))

    def fuse(self) -> int:
        return fuse_bn(self, self.conv)


class Inception(nn.Module):
    def __init__(self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, style: str) -> None:
        super().__init__()
        # torchvision's port uses a 3x3 conv in the "5x5" branch (kept there for compatibility)
        k5 = 5 if style == "caffe" else 3
        self.branch1 = BasicConv2d(cin, ch1x1, 1, style=style)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, 1, style=style),
                                     BasicConv2d(ch3x3red, ch3x3, 3, padding=1, style=style))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, 1, style=style),
                                     BasicConv2d(ch5x5red, ch5x5, k5, padding=k5 // 2, style=style))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, 1, style=style))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """Feature extractor: ``forward(images) -> {layer name: feature map}`` for ``outputs``."""

    def __init__(self, outputs: tuple[str, ...] = ("3b", "4c", "4e", "5b"), style: str = "torchvision") -> None:
        super().__init__()
        if style not in BACKBONE_STYLES:
            raise ValueError(f"GoogLeNet style {style!r} is unknown; use one of {BACKBONE_STYLES}")
        unknown = [o for o in outputs if o not in INCEPTION_BLOCKS]
        if unknown or not outputs:
            raise ValueError(f"GoogLeNet outputs {list(outputs)} invalid; choose from {list(INCEPTION_BLOCKS)}")
        self.style = style
        self.outputs = tuple(outputs)
        caffe = style == "caffe"
        self.conv1 = BasicConv2d(3, 64, 7, stride=2, padding=3, style=style)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if caffe else nn.Identity()
        self.conv2 = BasicConv2d(64, 64, 1, style=style)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1, style=style)
        self.lrn2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if caffe else nn.Identity()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True) if caffe else nn.MaxPool2d(2, stride=2, ceil_mode=True)
        order = list(INCEPTION_BLOCKS)
        self.blocks = order[: max(order.index(o) for o in outputs) + 1]
        for name in self.blocks:
            setattr(self, f"inception{name}", Inception(*INCEPTION_BLOCKS[name], style=style))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.lrn1(self.maxpool1(self.conv1(x)))
        x = self.lrn2(self.conv3(self.conv2(x)))
        feats: dict[str, torch.Tensor] = {}
        for name in self.blocks:
            if name in POOL_BEFORE:
                x = getattr(self, POOL_BEFORE[name])(x)
            x = getattr(self, f"inception{name}")(x)
            if name in self.outputs:
                feats[name] = x
        return feats
