"""The one dispatch table of backends for the fused ops (SPEC §2 "backend=", §3).

    reference  PyTorch eager ops (jsla_fast.model): the specification, every device
    cpp        C++ CPU kernels, torch.ops.jsla.* (csrc/)
    triton     Triton kernels (kernels/), torch.ops.jsla_triton.*: CUDA, and CPU inside Triton's
               interpreter (TRITON_INTERPRET=1, for tests)
    cuda       CUDA kernels (csrc/cuda) on the same torch.ops.jsla.* (built when torch has CUDA and nvcc
               is found at build time)
    auto       the fastest available for the device: AUTO_ORDER below

The model (``JSLA(..., backend=)``), the ops (:mod:`jsla_fast.ops`), the runtime and the bench all
resolve names here; nothing else branches on backend names.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .model.attention import attention_reference
from .model.convlstm import convlstm_step_reference
from .ops import cpp, triton


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Backend:
    name: str
    devices: tuple[str, ...]
    #: ``(F, Eh, W [1,C,k,k], b [1], slope) -> (O, alpha)``, equal to attention_reference
    attention: Callable
    #: ``(x, h, c, weights, biases) -> (h', c')``, equal to convlstm_step_reference
    convlstm_step: Callable
    #: ``(device) -> None`` when usable there, else why not (checked when the backend is resolved)
    unavailable: Callable[[torch.device], str | None]
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)


BACKENDS: dict[str, Backend] = {
    "reference": Backend("reference", ("cpu", "cuda"), attention_reference, convlstm_step_reference, lambda device: None,
                         (torch.float32, torch.float64, torch.float16, torch.bfloat16)),
    "cpp": Backend("cpp", ("cpu",), cpp.attention, cpp.convlstm_step, cpp.unavailable_reason),
    "cuda": Backend("cuda", ("cuda",), cpp.attention, cpp.convlstm_step, cpp.cuda_unavailable_reason,
                    (torch.float32, torch.float16, torch.bfloat16)),
    "triton": Backend("triton", ("cuda", "cpu"), triton.attention, triton.convlstm_step, triton.unavailable_reason,
                      (torch.float32, torch.float16, torch.bfloat16)),
}
#: fastest first; 'auto' takes the first one available for the device
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cpu": ("cpp", "reference"), "cuda": ("cuda", "triton", "reference")}
NAMES = ("auto", *BACKENDS)


def why_unavailable(name: str, device: torch.device | str = "cpu") -> str | None:
    """None when backend ``name`` can run on ``device``, else the reason."""
    device = torch.device(device)
    if name not in BACKENDS:
        return f"unknown backend {name!r}; choose one of {', '.join(NAMES)}"
    backend = BACKENDS[name]
    if device.type not in backend.devices:
        return (f"backend {name!r} runs on {', '.join(backend.devices)}, not {device.type}; "
                f"use backend='auto' to pick one for {device.type}")
    return backend.unavailable(device)


def available(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> list[str]:
    """The backends that can run on ``device`` (with ``dtype``, when given), fastest first."""
    return [n for n in AUTO_ORDER[torch.device(device).type] if why_unavailable(n, device) is None
            and (dtype is None or dtype in BACKENDS[n].dtypes)]


def resolve(name: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> Backend:
    """The backend called ``name`` (or the fastest one for ``device`` and ``dtype`` when
    ``name == 'auto'``)."""
    device = torch.device(device)
    if name == "auto":
        return BACKENDS[available(device, dtype)[0]]
    reason = why_unavailable(name, device)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is not available: {reason}")
    backend = BACKENDS[name]
    if dtype is not None and dtype not in backend.dtypes:
        raise BackendUnavailable(f"backend {name!r} does not support {dtype}; it runs "
                                 f"{', '.join(str(d) for d in backend.dtypes)} (or use backend='auto')")
    return backend
