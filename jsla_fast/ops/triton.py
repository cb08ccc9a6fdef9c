"""The Triton backend: the kernels of ``kernels/`` (installed as :mod:`jsla_fast.kernels`)
registered as ``torch.ops.jsla_triton.attention`` / ``convlstm_step`` with
:func:`torch.library.triton_op`, so ``torch.compile`` sees the kernels, and with the shared
reference backward (:func:`jsla_fast.ops.backward.register_autograd`).

Runs on CUDA; on CPU only inside Triton's interpreter (``TRITON_INTERPRET=1`` set before Python
starts: slow, for the CPU tests), which :func:`unavailable_reason` explains.
"""
from __future__ import annotations

import os

import torch

from .backward import register_autograd


def _load() -> str | None:
    try:
        import triton  # noqa: F401
        from torch.library import triton_op, wrap_triton  # noqa: F401

        from ..kernels import attention as _a, convlstm as _c  # noqa: F401
    except ImportError as e:
        return (f"the Triton backend does not load ({e}); it needs `pip install triton` (CUDA builds of torch "
                "bring it) and torch >= 2.6")
    return None


_UNAVAILABLE = _load()


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the Triton kernels can run on ``device``, else why not and what to do."""
    if _UNAVAILABLE is not None:
        return _UNAVAILABLE
    if device is not None and torch.device(device).type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return ("Triton kernels run on CPU only in Triton's interpreter: start Python with TRITON_INTERPRET=1 "
                "(slow; meant for tests) or use backend='cpp' on CPU")
    return None


def _register() -> None:
    from torch.library import triton_op

    from ..kernels.attention import attention_forward
    from ..kernels.convlstm import convlstm_forward

    @triton_op("jsla_triton::attention", mutates_args=())
    def attention_op(feat: torch.Tensor, eh: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     slope: float) -> tuple[torch.Tensor, torch.Tensor]:
        return attention_forward(feat, eh, weight, bias, slope)

    @triton_op("jsla_triton::convlstm_step", mutates_args=())
    def convlstm_op(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weights: list[torch.Tensor],
                    biases: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return convlstm_forward(x, h, c, weights, biases)

    register_autograd("jsla_triton::attention", "jsla_triton::convlstm_step")


def attention(feat, eh, weight, bias, slope):
    return torch.ops.jsla_triton.attention(feat, eh, weight, bias, float(slope))


def convlstm_step(x, h, c, weights, biases):
    return torch.ops.jsla_triton.convlstm_step(x, h, c, list(weights), list(biases))


if _UNAVAILABLE is None:
    _register()
