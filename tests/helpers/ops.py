"""The fused ops' test inputs and NaN-poisoned outputs, shared by the op, Triton and GPU tests
(the comparison with the specification is helpers/compare.py)."""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from jsla_fast.config import layer_shapes

#: the attention op's shapes in the model: the candidate layers at 224 x 224, (C, h, w)
ATTENTION_SHAPES = list(layer_shapes(224).values())


# -- inputs ------------------------------------------------------------------------------------
def attention_inputs(batch, c, h, w, k, dtype, gen):
    """F, Eh, W, b drawn in float64 from ``gen`` and cast to ``dtype``; W scaled by 2/sqrt(C k^2)."""
    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    return rand(batch, c, h, w), rand(batch, c, h, w), rand(1, c, k, k, scale=(c * k * k) ** -0.5 * 2), rand(1)


def convlstm_inputs(batch, d, hid, h, w, kernels, dtype, gen, scale=1.0):
    """x, h, c, weights, biases drawn in float64 from ``gen`` and cast to ``dtype``."""
    n = hid // len(kernels)

    def rand(*shape, s=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * s).to(dtype)
    weights = [rand(4 * n, d + hid, k, k, s=scale * ((d + hid) * k * k) ** -0.5) for k in kernels]
    biases = [rand(4 * n, s=0.1) for _ in kernels]
    return rand(batch, d, h, w), rand(batch, hid, h, w), rand(batch, hid, h, w), weights, biases


def seeded_attention_inputs(seed, B, C, H, W, k, dtype=torch.float32, device="cpu", wscale=1.0):
    """Random F, Eh, W, b drawn on ``device``; W scaled so logits are O(wscale) whatever C and k
    (a peaked but not one-hot softmax, so errors in any position show)."""
    g = torch.Generator(device).manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=device)
    feat, eh = rand(B, C, H, W), rand(B, C, H, W)
    weight = rand(1, C, k, k) * (wscale * 2.0 / math.sqrt(C * k * k))
    return tuple(t.to(dtype) for t in (feat, eh, weight, rand(1)))


def seeded_convlstm_inputs(seed, B, D, n, ks, hw, dtype=torch.float32, device="cpu"):
    """x, h, c, weights (~1/sqrt(fan-in), like nn.Conv2d), biases drawn on ``device`` from ``seed``."""
    g = torch.Generator(device).manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=device)
    hid = n * len(ks)
    x, h, c = rand(B, D, *hw), rand(B, hid, *hw), rand(B, hid, *hw)
    # weights ~ 1/sqrt(fan_in) like nn.Conv2d, so the gates are O(1) and the sigmoids not saturated
    ws = [rand(4 * n, D + hid, k, k) / ((D + hid) * k * k) ** 0.5 for k in ks]
    bs = [rand(4 * n) * 0.5 for _ in ks]
    return x.to(dtype), h.to(dtype), c.to(dtype), [w.to(dtype) for w in ws], [b.to(dtype) for b in bs]


# -- poisoned outputs ------------------------------------------------------------------------
def poisoned(shape, dtype, device, channels_last=False):
    """A NaN-filled buffer: an element a kernel should write but does not shows up as NaN."""
    t = torch.full(shape, float("nan"), dtype=dtype, device=device)
    return t.to(memory_format=torch.channels_last) if channels_last else t


def nan_like(t, memory_format=torch.contiguous_format):
    return torch.full_like(t, float("nan"), memory_format=memory_format)


@contextmanager
def poisoned_allocations(device):
    """Inside, every tensor torch allocates uninitialised on any device (torch.empty*, at::empty
    in the C++ ops: an op's outputs and workspaces alike) comes filled with NaN (integer ones
    with all bits set, NaN when read as floats): deterministic mode's fill_uninitialized_memory.
    So an element an op never writes reads NaN whichever block the caching allocator hands out,
    and a comparison that never passes NaN proves every element was written."""
    mode = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)  # our ops have no nondeterministic path to refuse
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        probe = torch.empty(64, device=device)
        assert torch.isnan(probe).all(), "uninitialised memory is not NaN-filled here"
        del probe
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])


def record_op_calls(monkeypatch) -> dict[str, tuple]:
    """From now on, the first arguments the model hands each fused op entry
    (:func:`jsla_fast.ops.attention`: F, Eh, W, b, slope; :func:`jsla_fast.ops.convlstm_step`: x, h,
    c, weights, biases), by op name; the calls themselves go through unchanged."""
    from jsla_fast import ops

    calls: dict[str, tuple] = {}
    for name in ("attention", "convlstm_step"):
        op = getattr(ops, name)

        def spy(*args, _op=op, _name=name, **kwargs):
            calls.setdefault(_name, tuple(list(a) if isinstance(a, (list, tuple)) else a for a in args[:5]))
            return _op(*args, **kwargs)
        monkeypatch.setattr(ops, name, spy)
    return calls
