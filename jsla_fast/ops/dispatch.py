"""The one dispatch table of the fused ops' backends (docs/DESIGN.md, "Backends").

    reference  plain PyTorch (:mod:`jsla_fast.ops.reference`): the specification, every device
    cpp        C++ CPU kernels (csrc/cpu/) as torch.ops.jsla.*  (:mod:`jsla_fast.ops.extension`)
    cuda       CUDA kernels (csrc/cuda/) on the same torch.ops.jsla.*, built when torch has CUDA and
               nvcc is found at build time                          (:mod:`jsla_fast.ops.extension`)
    triton     Triton kernels (kernels/) as torch.ops.jsla_triton.*: CUDA, and CPU inside Triton's
               interpreter (TRITON_INTERPRET=1, for tests)          (:mod:`jsla_fast.ops.triton`)
    auto       the fastest available for the device: AUTO_ORDER below

Each entry names its module; the module is imported the first time the backend is resolved or
asked about, so building and running a model on the CPU never imports triton. A backend module
exposes ``attention``, ``convlstm_step`` (the raw kernels, without the shared argument checks:
call them through :func:`jsla_fast.ops.attention` / :func:`jsla_fast.ops.convlstm_step`) and the
function named by ``availability``. Adding a backend: its module, one entry here, its tests.

Nothing else in the package branches on backend names: what the model needs to know about a
backend is a field of its entry (``folds_attention``). Which kernel a backend runs for a call is
its module's business: ``cpp`` sends the bfloat16 ConvLSTM step at inference to oneDNN's AMX
convolutions on CPUs that have them (:mod:`jsla_fast.ops.extension`, measured faster there), the
same op on the same backend, tested against the same reference.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

import torch

from .checks import FLOAT_DTYPES


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Backend:
    name: str
    devices: tuple[str, ...]
    module: str  #: the module with the kernels (imported on first use)
    #: the module's ``(device) -> None | reason`` function: None when usable there, else why not
    availability: str = "unavailable_reason"
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    #: whether the model gives this backend's attention op the E_att -> BN -> C_A chain folded into
    #: one conv (SpatialAttention.fold; BN in eval). False: the model runs the chain unfolded, as
    #: the paper writes it, so that the reference model is the specification the folded op is held to
    folds_attention: bool = True
    _loaded: dict = field(default_factory=dict, compare=False, repr=False)

    def _impl(self) -> ModuleType:
        if "module" not in self._loaded:
            self._loaded["module"] = importlib.import_module(self.module)
        return self._loaded["module"]

    @property
    def attention(self):
        """``(F, Eh, W [1,C,k,k], b [1], slope) -> (O, alpha)``, equal to attention_reference."""
        return self._impl().attention

    @property
    def convlstm_step(self):
        """``(x, h, c, weights, biases) -> (h', c')``, equal to convlstm_step_reference."""
        return self._impl().convlstm_step

    def unavailable(self, device: torch.device) -> str | None:
        return getattr(self._impl(), self.availability)(device)


_HALF = (torch.float32, torch.float16, torch.bfloat16)
BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("reference", ("cpu", "cuda"), "jsla_fast.ops.reference", dtypes=FLOAT_DTYPES, folds_attention=False),
    Backend("cpp", ("cpu",), "jsla_fast.ops.extension", dtypes=(torch.float32, torch.float64, torch.bfloat16)),
    Backend("cuda", ("cuda",), "jsla_fast.ops.extension", "cuda_unavailable_reason", _HALF),
    Backend("triton", ("cuda", "cpu"), "jsla_fast.ops.triton", dtypes=_HALF),
)}
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
