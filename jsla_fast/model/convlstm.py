"""Multi-kernel ConvLSTM step (SPEC §2 step 4, the supplement's multi-convolutional LSTM).

Hidden channels ``[24b, 24b+24)`` come from branch b, a k_b x k_b 'same' convolution
(k = 1, 3, 5, 7) over ``[x_t, h_{t-1}]`` (D + 96 in) giving 4 x 24 gate pre-activations in the
order i, f, g, o. ``c' = sigma(f) c + sigma(i) tanh(g)``, ``h' = sigma(o) tanh(c')``.
:func:`convlstm_step_reference` is the specification every fused ConvLSTM kernel must equal.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def convlstm_step_reference(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                            weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [B,D,H,W], h, c [B,hid,H,W]``, ``weights[b] [4*n,D+hid,k_b,k_b]``, ``biases[b] [4*n]``
    with ``hid = len(weights) * n`` -> ``(h', c')``."""
    xh = torch.cat([x, h], dim=1)
    gates = [F.conv2d(xh, w, b, padding=w.shape[-1] // 2).chunk(4, dim=1) for w, b in zip(weights, biases)]
    i, f, g, o = (torch.cat([branch[j] for branch in gates], dim=1) for j in range(4))
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next


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

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, backend=None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``backend``: a :class:`jsla_fast.backends.Backend`; None runs the reference."""
        step = convlstm_step_reference if backend is None else backend.convlstm_step
        return step(x, h, c, [m.weight for m in self.convs], [m.bias for m in self.convs])
