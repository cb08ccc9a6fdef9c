"""oneDNN convolutions on weights packed once, and what the CPU computes natively.

torch's own CPU convolution reorders the weights into oneDNN's blocked layout on every call and
runs ReLU as a separate pass. ``torch.ops.mkldnn._reorder_convolution_weight`` packs them once (what
Inductor's freezing does) and ``torch.ops.mkldnn._convolution_pointwise`` runs the conv with its
bias and an optional ReLU as one primitive. Two users: the ``onednn`` backbone executor
(:mod:`jsla_fast.executors`) and the ``cpp`` backend's bfloat16 ConvLSTM step on CPUs with AMX
(:func:`convlstm_step`), where oneDNN's direct AMX convolution beats the C++ Winograd kernel, whose
arithmetic is float32 (docs/PERFORMANCE.md, "bfloat16").

Cost of that step at the model's shape (D=128, hid=96, 14x14, k = 1, 3, 5, 7): 709 MFLOP of direct
convolution, 0.35 ms at the ~2 TFLOP/s AMX bf16 matmul peak of 2 Xeon cores, the 3.6 MB of bf16
weights 0.1 ms at 34 GB/s; measured 0.59 ms for the four convolutions, 0.97 ms for the whole step
with the gate update (the C++ kernel: 1.6 ms).
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from .reference import lstm_update


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return None


def native_bfloat16() -> str | None:
    """None when this CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16), else why not."""
    flags = cpu_flags()
    if flags is None:
        return "cannot read /proc/cpuinfo to check for AVX512_BF16 or AMX-BF16"
    if flags & {"avx512_bf16", "amx_bf16"}:
        return None
    return ("this CPU has neither AVX512_BF16 nor AMX-BF16, so bfloat16 would be emulated and slower "
            "than float32; use dtype='float32'")


def unavailable_reason() -> str | None:
    """None when the packed oneDNN convolutions can run, else why not."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    if torch.ops.mkldnn._is_mkldnn_acl_supported():
        return "oneDNN runs on Arm Compute Library here, which has no fused conv + ReLU primitive"
    return None


class PackedConv:
    """``conv(x) + b`` (then ReLU when ``relu``) as one oneDNN primitive on ``weight`` reordered once,
    for inputs of ``input_size``, into oneDNN's blocked layout. Inputs of other sizes still compute
    the same (oneDNN reorders as needed), only slower."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, padding: Sequence[int], stride: Sequence[int],
                 dilation: Sequence[int], groups: int, input_size: Sequence[int], relu: bool = False) -> None:
        self.args = (list(padding), list(stride), list(dilation), groups)
        self.bias = None if bias is None else bias.detach()
        self.attr = "relu" if relu else "none"
        self.packed = torch.ops.mkldnn._reorder_convolution_weight(weight.detach(), *self.args, list(input_size))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.packed, self.bias, *self.args, self.attr, [], "")

    def __deepcopy__(self, memo: dict) -> PackedConv:
        # an opaque oneDNN tensor cannot be deep-copied; nothing writes to it, so copies share it
        return self


def amx_convlstm() -> bool:
    """Whether the bfloat16 ConvLSTM step runs on oneDNN here: AMX-BF16 and oneDNN present. Without
    AMX (AVX512_BF16 alone, e.g. AMD Zen 4) the direct convolution's 709 MFLOP at about twice the
    fp32 rate would take longer than the Winograd kernel's 221 MFLOP of float32 GEMM."""
    global _AMX
    if _AMX is None:
        _AMX = unavailable_reason() is None and "amx_bf16" in (cpu_flags() or set())
    return _AMX


_AMX: bool | None = None
#: id(weight) -> (a weak reference to it, (its version, its bias and the bias's version, the input
#: size), PackedConv); entries whose weight is gone are dropped at the next packing
_PACKED: dict[int, tuple] = {}


def _packed(weight: torch.Tensor, bias: torch.Tensor, size: tuple[int, ...]) -> PackedConv:
    k = weight.shape[-1]
    # the C++ kernels' rule (csrc/torch/cpu.cpp): weights that require grad may change through
    # .data without a version bump, inference tensors have no version: pack those on every call
    if any(t.is_inference() or t.requires_grad for t in (weight, bias)):
        return PackedConv(weight, bias, (k // 2, k // 2), (1, 1), (1, 1), 1, size)
    key = (weight._version, id(bias), bias._version, size)
    hit = _PACKED.get(id(weight))
    if hit is None or hit[0]() is not weight or hit[1] != key:
        for dead in [i for i, v in _PACKED.items() if v[0]() is None]:
            del _PACKED[dead]
        hit = (weakref.ref(weight), key, PackedConv(weight, bias, (k // 2, k // 2), (1, 1), (1, 1), 1, size))
        _PACKED[id(weight)] = hit
    return hit[2]


def convlstm_step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weights: Sequence[torch.Tensor],
                  biases: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ConvLSTM step (:func:`jsla_fast.ops.reference.convlstm_step_reference`) in bfloat16 for
    inference: each branch's 'same' convolution one oneDNN primitive on weights packed on first use
    (again when a weight changes), channels-last, accumulating in float32 and writing its gate
    pre-activations in bfloat16; then the reference's gate update in float32, rounded to bfloat16
    once. So the gates are rounded once more than in the C++ kernel (tests/test_ops.py bounds it)."""
    xh = torch.cat([x, h], dim=1).contiguous(memory_format=torch.channels_last)
    size = tuple(xh.shape)
    gates = [_packed(w, b, size)(xh).float() for w, b in zip(weights, biases)]
    return tuple(t.to(x.dtype) for t in lstm_update(gates, c.float()))
