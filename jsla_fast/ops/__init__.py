"""The two fused ops of SPEC §3 behind one entry each; ``backend`` picks the implementation
(:mod:`jsla_fast.backends`). Inputs are checked the same way for every backend.

    O, alpha = attention(F, Eh, W, b, slope, backend="cpp")
    h, c     = convlstm_step(x, h, c, weights, biases, backend="cpp")
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .checks import check_attention, check_convlstm


def attention(feat: torch.Tensor, eh: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, slope: float,
              backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Fused spatial attention, equal to :func:`jsla_fast.model.attention_reference`:
    ``(F [B,C,h,w], Eh [B,C,h,w], W [1,C,k,k], b [1], slope) -> (O [B,C,h,w], alpha [B,1,h,w])``."""
    from ..backends import resolve

    impl = resolve(backend, feat.device if isinstance(feat, torch.Tensor) else "cpu")
    check_attention(feat, eh, weight, bias, slope, impl.dtypes)
    return impl.attention(feat, eh, weight, bias, float(slope))


def convlstm_step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weights: Sequence[torch.Tensor],
                  biases: Sequence[torch.Tensor], backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-kernel ConvLSTM step, equal to :func:`jsla_fast.model.convlstm_step_reference`:
    ``x [B,D,H,W], h, c [B,hid,H,W], weights[b] [4n,D+hid,k,k], biases[b] [4n] -> (h', c')``."""
    from ..backends import resolve

    impl = resolve(backend, x.device if isinstance(x, torch.Tensor) else "cpu")
    check_convlstm(x, h, c, weights, biases, impl.dtypes)
    return impl.convlstm_step(x, h, c, list(weights), list(biases))


__all__ = ["attention", "convlstm_step", "check_attention", "check_convlstm"]
