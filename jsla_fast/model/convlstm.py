"""Multi-kernel ConvLSTM step (the supplement's multi-convolutional LSTM; docs/DESIGN.md, "The model").

Hidden channels ``[24b, 24b+24)`` come from branch b, a k_b x k_b 'same' convolution
(k = 1, 3, 5, 7) over ``[x_t, h_{t-1}]`` (D + 96 in) giving 4 x 24 gate pre-activations in the
order i, f, g, o. ``c' = sigma(f) c + sigma(i) tanh(g)``, ``h' = sigma(o) tanh(c')``.
The step is the fused op :func:`jsla_fast.ops.convlstm_step`, specified by
:func:`jsla_fast.ops.convlstm_step_reference`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import ops


class MultiKernelConvLSTM(nn.Module):
    def __init__(self, input_channels: int, kernel_sizes: Sequence[int] = (1, 3, 5, 7),
                 branch_channels: int = 24) -> None:
        super().__init__()
        self.hidden_channels = len(kernel_sizes) * branch_channels
        cin = input_channels + self.hidden_channels
        self.convs = nn.ModuleList(nn.Conv2d(cin, 4 * branch_channels, k, padding=k // 2) for k in kernel_sizes)
        with torch.no_grad():  # forget-gate bias 1: remember by default early in training (ours)
            for conv in self.convs:
                conv.bias.zero_()
                conv.bias[branch_channels:2 * branch_channels] = 1.0

    def _apply(self, fn, recurse=True):
        # The fused kernels read W_b in its contiguous [4n, D+hid, k, k] layout (csrc/cuda/kernels.h,
        # kernels/convlstm.py) and would copy any other at every step: keep that layout through
        # .to(memory_format=...) (the Localizer's channels-last conversion). Optimizer steps update
        # the parameters in place, so it also holds in training.
        super()._apply(fn, recurse)
        for conv in self.convs:
            for t in (conv.weight, conv.weight.grad):
                if t is not None and not t.is_contiguous():
                    t.data = t.data.contiguous()
        return self

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, backend=None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``backend``: a resolved :class:`jsla_fast.ops.Backend`; None runs the reference."""
        return ops.convlstm_step(x, h, c, [m.weight for m in self.convs], [m.bias for m in self.convs],
                                 backend=backend or ops.BACKENDS["reference"])
