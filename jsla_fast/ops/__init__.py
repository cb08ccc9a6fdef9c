"""The op layer under the model: the two fused ops, one public entry each (docs/DESIGN.md,
"The fused ops").

    O, alpha = attention(F, Eh, W, b, slope, backend="auto")
    h, c     = convlstm_step(x, h, c, weights, biases, backend="auto")

``backend`` is a name from the dispatch table (:mod:`jsla_fast.ops.dispatch`) or a resolved
:class:`Backend`. Every call, whatever the backend, runs the same argument checks
(:mod:`jsla_fast.ops.checks`), so bad input raises the same error everywhere; the model's modules
call these entries, never a backend's kernels directly.

    reference.py   the ops in plain PyTorch: the specification
    dispatch.py    the backends table, resolve(), available()
    checks.py      the shared argument checks
    extension.py   the compiled C++/CUDA extension (backends cpp and cuda)
    triton.py      the Triton kernels' registration (backend triton)
    backward.py    the reference backward every fused backend registers
    cost.py        minimum FLOPs and bytes of each op, the GPUs' measured ceilings (the floors)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .checks import check_attention, check_convlstm
from .dispatch import AUTO_ORDER, BACKENDS, NAMES, Backend, BackendUnavailable, available, resolve, why_unavailable
from .reference import attention_reference, convlstm_step_reference


def _backend(backend: str | Backend, t) -> Backend:
    if isinstance(backend, Backend):
        return backend
    return resolve(backend, t.device if isinstance(t, torch.Tensor) else "cpu")


def attention(feat: torch.Tensor, eh: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, slope: float,
              backend: str | Backend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Fused spatial attention, equal to :func:`attention_reference`:
    ``(F [B,C,h,w], Eh [B,C,h,w], W [1,C,k,k], b [1], slope) -> (O [B,C,h,w], alpha [B,1,h,w])``."""
    impl = _backend(backend, feat)
    check_attention(feat, eh, weight, bias, slope, impl.dtypes)
    return impl.attention(feat, eh, weight, bias, float(slope))


def convlstm_step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weights: Sequence[torch.Tensor],
                  biases: Sequence[torch.Tensor], backend: str | Backend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-kernel ConvLSTM step, equal to :func:`convlstm_step_reference`:
    ``x [B,D,H,W], h, c [B,hid,H,W], weights[b] [4n,D+hid,k,k], biases[b] [4n] -> (h', c')``."""
    impl = _backend(backend, x)
    check_convlstm(x, h, c, weights, biases, impl.dtypes)
    return impl.convlstm_step(x, h, c, list(weights), list(biases))


__all__ = ["attention", "convlstm_step", "attention_reference", "convlstm_step_reference", "check_attention",
           "check_convlstm", "Backend", "BackendUnavailable", "BACKENDS", "AUTO_ORDER", "NAMES", "available",
           "resolve", "why_unavailable"]
