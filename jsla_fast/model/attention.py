"""Spatial attention (paper Eq. 1) on one candidate layer (docs/DESIGN.md, "The model").

    Eh = resize(conv1x1(h_{t-1}))               96 -> C, to F's grid
    A  = LeakyReLU(F + Eh)                      slope 0.01 (0 = the main paper's ReLU)
    L  = C_A(BN(E_att(A)))                      E_att: 1x1, 3x3, 5x5 convs C -> 16 each, stacked
    alpha = softmax of L over the h*w positions ;  O = F * alpha

E_att -> BN -> C_A is linear, so in eval it folds exactly into one 5x5 conv C -> 1 plus a bias
(:meth:`SpatialAttention.folded`); the fused op :func:`jsla_fast.ops.attention` computes that
folded form, specified by :func:`jsla_fast.ops.attention_reference`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .base import Fusable


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring a feature map to ``size``: identity, area (average) pooling when shrinking, bilinear
    (align_corners=False) otherwise. 28->14 is avg-pool 2, 7->14 is bilinear x2."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if h >= size[0] and w >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SpatialAttention(nn.Module, Fusable):
    def __init__(self, channels: int, hidden_channels: int, kernel_sizes: tuple[int, ...] = (1, 3, 5),
                 width: int = 16, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = slope
        self.embed_h = nn.Conv2d(hidden_channels, channels, 1)  # E_h
        self.embed_att = nn.ModuleList(  # E_att; no bias, BN follows
            nn.Conv2d(channels, width, k, padding=k // 2, bias=False) for k in kernel_sizes
        )
        self.bn = nn.BatchNorm2d(width * len(kernel_sizes))
        self.score = nn.Conv2d(width * len(kernel_sizes), 1, 1)  # C_A

    def embed_hidden(self, h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return resize_to(self.embed_h(h), size)

    def logits(self, a: torch.Tensor) -> torch.Tensor:
        return self.score(self.bn(torch.cat([conv(a) for conv in self.embed_att], dim=1)))

    def forward(self, feat: torch.Tensor, h: torch.Tensor, backend=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``backend``: a resolved :class:`jsla_fast.ops.Backend`. One that ``folds_attention`` runs
        the folded form through its fused op whenever BN uses running statistics; None, the
        reference, or BN in training mode (whose batch statistics can't be folded) runs the
        unfolded module below."""
        eh = self.embed_hidden(h, feat.shape[-2:])
        if backend is not None and backend.folds_attention and not self.bn.training:
            weight, bias = self._frozen if self._frozen is not None else self.fold()
            return ops.attention(feat, eh, weight, bias, self.slope, backend=backend)
        a = F.leaky_relu(feat + eh, self.slope)
        logits = self.logits(a)
        alpha = torch.softmax(logits.flatten(1), dim=1).view_as(logits)
        return feat * alpha, alpha

    _frozen: tuple[torch.Tensor, torch.Tensor] | None = None

    def freeze(self) -> None:
        """Fold once and reuse it in every later forward (inference runtimes; parameters must not
        change afterwards). ``unfreeze()`` goes back to folding on every call."""
        self._frozen = self.folded()

    def unfreeze(self) -> None:
        self._frozen = None

    def fuse(self) -> int:
        """:meth:`freeze`. The BN stays: the reference path (and training) runs the unfolded
        module, so none is folded away."""
        self.freeze()
        return 0

    def _apply(self, fn, recurse=True):
        # .to(dtype/device), .half(), .cuda() reach the frozen folded weights too; they stay in the
        # contiguous layout the fused kernels read (a channels-last conversion would make every call copy them)
        super()._apply(fn, recurse)
        if self._frozen is not None:
            self._frozen = tuple(fn(t).contiguous() for t in self._frozen)
        return self

    @torch.no_grad()
    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`fold` without autograd."""
        return self.fold()

    def fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W [1,C,k,k], b [1])`` with ``conv2d(A, W, b, padding=k//2) == self.logits(A)`` in eval
        (BN uses its running statistics), k the largest E_att kernel. Differentiable, so training
        with frozen BN reaches E_att, BN's affine and C_A through the fused op."""
        kmax = max(conv.kernel_size[0] for conv in self.embed_att)
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        shift = self.bn.bias - self.bn.running_mean * scale
        ca = self.score.weight.view(-1)  # [48]
        parts, start = [], 0
        for conv in self.embed_att:
            k, n = conv.kernel_size[0], conv.out_channels
            coef = (ca[start:start + n] * scale[start:start + n]).view(n, 1, 1, 1)
            pad = (kmax - k) // 2
            parts.append(F.pad((coef * conv.weight).sum(0, keepdim=True), (pad, pad, pad, pad)))
            start += n
        weight = torch.stack(parts).sum(0)
        bias = (ca * shift).sum().view(1) + self.score.bias
        return weight, bias
