"""The fused ops' test inputs, NaN-poisoned outputs and float64 references, shared by the op,
Triton and GPU tests."""
from __future__ import annotations

import math

import torch

from jsla_fast.config import layer_shapes
from jsla_fast.ops import attention_reference, convlstm_step_reference

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
    """Random F, Eh, W, b; W scaled so logits are O(wscale) whatever C and k (a peaked but not
    one-hot softmax, so errors in any position show)."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(B, C, H, W, generator=g)
    eh = torch.randn(B, C, H, W, generator=g)
    weight = torch.randn(1, C, k, k, generator=g) * (wscale * 2.0 / math.sqrt(C * k * k))
    bias = torch.randn(1, generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (feat, eh, weight, bias))


def seeded_convlstm_inputs(seed, B, D, n, ks, hw, dtype=torch.float32, device="cpu"):
    """x, h, c, weights (~1/sqrt(fan-in), like nn.Conv2d), biases from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    hid = n * len(ks)
    x = torch.randn(B, D, *hw, generator=g)
    h = torch.randn(B, hid, *hw, generator=g)
    c = torch.randn(B, hid, *hw, generator=g)
    # weights ~ 1/sqrt(fan_in) like nn.Conv2d, so the gates are O(1) and the sigmoids not saturated
    ws = [torch.randn(4 * n, D + hid, k, k, generator=g) / ((D + hid) * k * k) ** 0.5 for k in ks]
    bs = [torch.randn(4 * n, generator=g) * 0.5 for _ in ks]
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return cast(x), cast(h), cast(c), [cast(w) for w in ws], [cast(b) for b in bs]


# -- poisoned outputs ------------------------------------------------------------------------
def poisoned(shape, dtype, device, channels_last=False):
    """A NaN-filled buffer: an element a kernel should write but does not shows up as NaN."""
    t = torch.full(shape, float("nan"), dtype=dtype, device=device)
    return t.to(memory_format=torch.channels_last) if channels_last else t


def nan_like(t, memory_format=torch.contiguous_format):
    return torch.full_like(t, float("nan"), memory_format=memory_format)


# -- float64 references ----------------------------------------------------------------------
def attention_f64(feat, eh, weight, bias, slope):
    """The specification in float64 from the very same (rounded) inputs, returned as fp32: cuDNN's
    fp32 convolution may use TF32 or Winograd/FFT algorithms, whose error would be of the order of
    the fp32 tolerance itself."""
    o, a = attention_reference(feat.double(), eh.double(), weight.double(), bias.double(), slope)
    return o.float(), a.float()


def convlstm_f64(x, h, c, ws, bs):
    """The specification in float64 on the very same (rounded) inputs."""
    f64 = lambda t: t.double()  # noqa: E731
    return convlstm_step_reference(f64(x), f64(h), f64(c), [f64(w) for w in ws], [f64(b) for b in bs])
