"""The C++ extension ``jsla_fast._C``: ``torch.ops.jsla.*`` with CPU kernels (backend ``cpp``) and,
when it was built with CUDA, CUDA kernels on the same ops (backend ``cuda``: the dispatcher picks
by the tensors' device). Registers the ops' fake kernels (shapes for torch.compile / export) and
autograd formulas once, for both.

On a CPU with AMX, the bfloat16 ConvLSTM step at inference runs on oneDNN instead
(:mod:`jsla_fast.ops.onednn`): a choice of kernel inside the ``cpp`` backend, by dtype and CPU,
which the dispatch table leaves to this module (:mod:`jsla_fast.ops.dispatch` says so).

The package imports without the extension; :func:`unavailable_reason` and
:func:`cuda_unavailable_reason` then say why and how to build it, and asking for the backend
raises that message.
"""
from __future__ import annotations

import importlib

import torch

from . import onednn
from .backward import register_autograd

_BUILD_HINT = ("build it with `pip install --no-build-isolation -e .` (or `python setup.py build_ext --inplace`) "
               "in the jsla_fast checkout, with torch installed and a C++ compiler on PATH")


def _load() -> str | None:
    try:
        importlib.import_module("jsla_fast._C")
    except ImportError as e:
        return f"the C++ extension jsla_fast._C is not built or does not load ({e}); {_BUILD_HINT}"
    return None


_UNAVAILABLE = _load()
#: whether the extension registered CUDA kernels (fixed once it is loaded; resolve() asks per forward)
_CUDA_KERNELS = _UNAVAILABLE is None and torch._C._dispatch_has_kernel_for_dispatch_key("jsla::attention", "CUDA")


def unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the cpp backend can run, else why not and what to do."""
    return _UNAVAILABLE


def cuda_unavailable_reason(device: torch.device | None = None) -> str | None:
    """None when the CUDA kernels of the extension can run, else why not and what to do."""
    if _UNAVAILABLE is not None:
        return _UNAVAILABLE
    if not _CUDA_KERNELS:
        return ("jsla_fast._C was built without its CUDA kernels (they need a CUDA build of torch and nvcc at build "
                "time; torch here is " + torch.__version__ + "); " + _BUILD_HINT)
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch"
    return None


def attention(feat, eh, weight, bias, slope):
    return torch.ops.jsla.attention(feat, eh, weight, bias, float(slope))


def convlstm_step(x, h, c, weights, biases):
    if x.dtype == torch.bfloat16 and x.device.type == "cpu" and onednn.amx_convlstm() and not (
            torch.is_grad_enabled() and any(t.requires_grad for t in (x, h, c, *weights, *biases))):
        return onednn.convlstm_step(x, h, c, weights, biases)  # inference in bf16 on AMX: see ops/onednn.py
    return torch.ops.jsla.convlstm_step(x, h, c, list(weights), list(biases))


def _register() -> None:
    @torch.library.register_fake("jsla::attention")
    def _(feat, eh, weight, bias, slope):
        return torch.empty_like(feat), feat.new_empty(feat.shape[0], 1, *feat.shape[2:])

    @torch.library.register_fake("jsla::convlstm_step")
    def _(x, h, c, weights, biases):
        return torch.empty_like(h), torch.empty_like(h)

    @torch.library.register_fake("jsla::max_pool2d")
    def _(x, kernel, stride, padding, ceil_mode):
        out = torch.nn.functional.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)
        return out.contiguous(memory_format=torch.channels_last)

    register_autograd("jsla::attention", "jsla::convlstm_step")


if _UNAVAILABLE is None:
    _register()
