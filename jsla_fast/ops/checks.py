"""Argument checks shared by every backend of the fused ops, so a wrong dtype, device, rank or
shape gives the same clear message whichever backend runs (the C++ ops check again for memory
safety when called directly through ``torch.ops.jsla``)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _tensor(t, op: str, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _same(ts: dict[str, torch.Tensor], op: str, dtypes: Sequence[torch.dtype]) -> None:
    first_name, first = next(iter(ts.items()))
    if first.dtype not in dtypes:
        raise TypeError(f"{op}: {first_name} has dtype {first.dtype}; this backend supports "
                        f"{', '.join(str(d) for d in dtypes)} (cast the model with .float())")
    for name, t in ts.items():
        if t.dtype != first.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {first_name} has {first.dtype}; "
                            "all inputs must share one dtype")
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; "
                             "move all inputs to one device")


def _rank4(t: torch.Tensor, op: str, name: str) -> None:
    if t.dim() != 4:
        raise ValueError(f"{op}: {name} must be 4-d [B,C,H,W], got shape {tuple(t.shape)}")


def check_attention(feat, eh, weight, bias, slope, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    op = "attention"
    ts = {n: _tensor(t, op, n) for n, t in (("feat", feat), ("eh", eh), ("weight", weight), ("bias", bias))}
    _same(ts, op, dtypes)
    _rank4(feat, op, "feat")
    if eh.shape != feat.shape:
        raise ValueError(f"{op}: eh has shape {tuple(eh.shape)} but feat has {tuple(feat.shape)}; "
                         "resize Eh to the feature map's grid first")
    c = feat.shape[1]
    if weight.dim() != 4 or weight.shape[0] != 1 or weight.shape[1] != c or weight.shape[2] != weight.shape[3] \
            or weight.shape[2] % 2 == 0:
        raise ValueError(f"{op}: weight must be [1,{c},k,k] with k odd, got {tuple(weight.shape)}")
    if bias.numel() != 1:
        raise ValueError(f"{op}: bias must hold one value, got shape {tuple(bias.shape)}")
    if not isinstance(slope, (int, float)):
        raise TypeError(f"{op}: slope must be a Python float, got {type(slope).__name__}")


def check_convlstm(x, h, c, weights, biases, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    op = "convlstm_step"
    ts = {n: _tensor(t, op, n) for n, t in (("x", x), ("h", h), ("c", c))}
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(f"{op}: got {len(weights)} weights and {len(biases)} biases; need one of each per branch")
    for i, (w, b) in enumerate(zip(weights, biases)):
        ts[f"weights[{i}]"] = _tensor(w, op, f"weights[{i}]")
        ts[f"biases[{i}]"] = _tensor(b, op, f"biases[{i}]")
    _same(ts, op, dtypes)
    for name in ("x", "h", "c"):
        _rank4(ts[name], op, name)
    if h.shape != c.shape:
        raise ValueError(f"{op}: h has shape {tuple(h.shape)} but c has {tuple(c.shape)}")
    if x.shape[0] != h.shape[0] or x.shape[2:] != h.shape[2:]:
        raise ValueError(f"{op}: x {tuple(x.shape)} and h {tuple(h.shape)} differ in batch or grid")
    d, hid = x.shape[1], h.shape[1]
    if hid % len(weights):
        raise ValueError(f"{op}: {hid} hidden channels do not split over {len(weights)} branches")
    n = hid // len(weights)
    for i, (w, b) in enumerate(zip(weights, biases)):
        if w.dim() != 4 or w.shape[0] != 4 * n or w.shape[1] != d + hid or w.shape[2] != w.shape[3] \
                or w.shape[2] % 2 == 0:
            raise ValueError(f"{op}: weights[{i}] must be [{4 * n},{d + hid},k,k] with k odd, got {tuple(w.shape)}")
        if b.shape != (4 * n,):
            raise ValueError(f"{op}: biases[{i}] must be [{4 * n}], got {tuple(b.shape)}")
