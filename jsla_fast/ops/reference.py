"""The two fused ops in plain PyTorch: the specification every kernel must equal
(docs/DESIGN.md, "The fused ops"). Backend ``reference`` runs these; the tests compare every other
backend with them in float64.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def attention_reference(feat: torch.Tensor, eh: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused spatial attention: ``(F [B,C,h,w], Eh [B,C,h,w], W [1,C,k,k], b [1], slope) -> (O, alpha)``.

    ``A = LeakyReLU(F + Eh, slope)``, ``L = conv2d(A, W, b, padding=k//2)``, ``alpha [B,1,h,w]`` the
    softmax of ``L`` over the h*w positions (sums to 1), ``O = F * alpha``.
    """
    a = F.leaky_relu(feat + eh, slope)
    logits = F.conv2d(a, weight, bias, padding=weight.shape[-1] // 2)
    alpha = torch.softmax(logits.flatten(1), dim=1).view_as(logits)
    return feat * alpha, alpha


def convlstm_step_reference(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                            weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-kernel ConvLSTM step: ``x [B,D,H,W], h, c [B,hid,H,W]``, ``weights[b] [4n,D+hid,k_b,k_b]``,
    ``biases[b] [4n]`` with ``hid = len(weights) * n`` -> ``(h', c')``.

    Branch b is a 'same' k_b x k_b convolution over ``[x, h]`` giving its 4n gate pre-activations in
    the order i, f, g, o; it owns hidden channels ``[b n, (b+1) n)``.
    ``c' = sigma(f) c + sigma(i) tanh(g)``, ``h' = sigma(o) tanh(c')``.
    """
    xh = torch.cat([x, h], dim=1)
    return lstm_update([F.conv2d(xh, w, b, padding=w.shape[-1] // 2) for w, b in zip(weights, biases)], c)


def lstm_update(gates: Sequence[torch.Tensor], c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The LSTM update from each branch's gate pre-activations ``gates[b] [B,4n,H,W]`` (i, f, g, o)."""
    chunks = [g.chunk(4, dim=1) for g in gates]
    i, f, g, o = (torch.cat([branch[j] for branch in chunks], dim=1) for j in range(4))
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next


#: the names every backend module exposes (see :mod:`jsla_fast.ops.dispatch`)
attention = attention_reference
convlstm_step = convlstm_step_reference


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """The reference runs on every device torch supports."""
    return None
