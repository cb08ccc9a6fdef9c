"""Triton ConvLSTM step (kernels/convlstm.py) against ``convlstm_step_reference``.

On CPU the kernel runs in Triton's interpreter (slow): shapes are tiny and odd so that every
masked edge is hit (n not a power of two, several M / N / channel tiles, 1x1 images where every
tap but the centre is padding, > 4 branches split over two launches). Outputs are preallocated
and filled with NaN, so any element the kernel forgets to write fails the comparison."""
from __future__ import annotations

import pytest
import torch

from jsla_fast.kernels.convlstm import convlstm_forward
from jsla_fast.model.convlstm import MultiKernelConvLSTM, convlstm_step_reference


def _inputs(seed, B, D, n, ks, hw, dtype=torch.float32, device="cpu"):
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


def _nan_like(t, memory_format=torch.contiguous_format):
    return torch.full_like(t, float("nan"), memory_format=memory_format)


# (B, D, n, kernel sizes, (H, W)); sized so the whole file stays well under a minute on 2 cores
CASES = [
    (1, 3, 2, (1, 3), (3, 5)),
    (2, 5, 3, (1, 3), (6, 7)),          # 84 positions: 6 M tiles, last one ragged
    (1, 5, 5, (1, 3, 5, 7), (1, 1)),    # every off-centre tap is padding
    (2, 3, 3, (1, 3, 5, 7), (3, 5)),
    (1, 17, 17, (1, 3), (3, 5)),        # 2 N tiles, 2 x-channel and 3 h-channel blocks
    (1, 3, 2, (1, 3, 1, 5, 3), (3, 5)),  # 5 branches: two launches (groups of 4)
    (2, 3, 2, (1, 3, 5, 7), (6, 7)),    # the model's branches, 7x7 taps larger than the image
]


@pytest.mark.parametrize("B,D,n,ks,hw", CASES)
def test_parity_fp32(seed, B, D, n, ks, hw):
    x, h, c, ws, bs = _inputs(seed, B, D, n, ks, hw)
    h_ref, c_ref = convlstm_step_reference(x, h, c, ws, bs)
    h_out, c_out = _nan_like(h), _nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    assert h_new is h_out and c_new is c_out
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


def test_allocates_outputs(seed):
    x, h, c, ws, bs = _inputs(seed, 1, 3, 2, (1, 3), (3, 5))
    h_new, c_new = convlstm_forward(x, h, c, ws, bs)
    h_ref, c_ref = convlstm_step_reference(x, h, c, ws, bs)
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


def test_channels_last(seed):
    """Strided (NHWC) inputs and outputs are read and written in place through their strides."""
    x, h, c, ws, bs = _inputs(seed, 2, 5, 3, (1, 3), (3, 5))
    h_ref, c_ref = convlstm_step_reference(x, h, c, ws, bs)
    cl = torch.channels_last
    x, h, c = (t.contiguous(memory_format=cl) for t in (x, h, c))
    assert not x.is_contiguous()
    h_out, c_out = _nan_like(h, cl), _nan_like(c, cl)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    assert h_new is h_out and h_new.is_contiguous(memory_format=cl)
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


def test_c_in_place_and_h_alias_rejected(seed):
    x, h, c, ws, bs = _inputs(seed, 1, 3, 2, (1, 3), (3, 5))
    h_ref, c_ref = convlstm_step_reference(x, h, c, ws, bs)
    with pytest.raises(ValueError):  # other programs still read h while h' is written
        convlstm_forward(x, h, c, ws, bs, h_out=h)
    buf = _nan_like(h)
    with pytest.raises(ValueError):  # h' and c' in one buffer would overwrite each other
        convlstm_forward(x, h, c, ws, bs, h_out=buf, c_out=buf)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=_nan_like(h), c_out=c)
    assert c_new is c
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


# --- 16-bit inputs: reference in fp32 from the same rounded inputs (tolerances: see LOWP_TOL) ----
# The kernel accumulates in fp32, so the error is dominated by rounding h', c' to the output type,
# with |c'| up to ~5. fp16: half an ulp is 2^-11 relative -> 2e-3 (atol and rtol) leaves room for
# the fp32 accumulation order. bf16: on the GPU the cast rounds to nearest (2^-8 relative), but
# Triton 3.8's interpreter truncates fp32 -> bf16 (up to a full ulp, 2^-7 = 7.8e-3 relative), so
# 1.6e-2. A wrong gate or tap moves values by O(0.1), far outside either.
LOWP_TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _reference_f32(x, h, c, ws, bs):
    f32 = lambda t: t.float()  # noqa: E731
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN's TF32 would be less exact than the kernel
    try:
        return convlstm_step_reference(f32(x), f32(h), f32(c), [f32(w) for w in ws], [f32(b) for b in bs])
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_parity_low_precision(seed, dtype):
    x, h, c, ws, bs = _inputs(seed, 2, 5, 3, (1, 3, 5, 7), (3, 5), dtype=dtype)
    h_ref, c_ref = _reference_f32(x, h, c, ws, bs)
    h_out, c_out = _nan_like(h), _nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    assert h_new.dtype == dtype and c_new.dtype == dtype
    tol = LOWP_TOL[dtype]
    torch.testing.assert_close(c_new.float(), c_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(h_new.float(), h_ref, atol=tol, rtol=tol)


# --- GPU: the model's shape (D=128, hid=96 (n=24), k=1,3,5,7, 14x14) ------------------------------
# The reference runs in fp32 (TF32 off) on the same (rounded) inputs, so the error measured is the
# kernel's own. fp32: K = 224*49 = 10976 products summed in another order than cuDNN, each gate
# ~O(1) with |error| ~ sqrt(K) * 2^-24 * O(1) ~ 1e-5; sigmoid/tanh are 1-Lipschitz, so 1e-4 leaves
# room without hiding a wrong term (a single dropped tap changes the gates by ~1e-2).
# fp16 / bf16: as LOWP_TOL above (fp32 accumulation; output rounding dominates).


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 40])
def test_model_shape_gpu(seed, B, dtype):
    dev = "cuda"
    mod = MultiKernelConvLSTM(128).to(dev)  # nn.Conv2d init (seeded by the fixture)
    g = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn(B, 128, 14, 14, device=dev, generator=g).to(dtype)
    h = torch.randn(B, 96, 14, 14, device=dev, generator=g).to(dtype)
    c = torch.randn(B, 96, 14, 14, device=dev, generator=g).to(dtype)
    with torch.no_grad():
        for conv in mod.convs:  # nonzero biases so a missing bias fails
            conv.bias.copy_(torch.randn(conv.bias.shape, device=dev, generator=g) * 0.5)
    ws = [m.weight.detach().to(dtype) for m in mod.convs]
    bs = [m.bias.detach().to(dtype) for m in mod.convs]
    h_ref, c_ref = _reference_f32(x, h, c, ws, bs)
    h_out, c_out = _nan_like(h), _nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    torch.cuda.synchronize()
    assert h_new.dtype == dtype and c_new.dtype == dtype
    tol = LOWP_TOL[dtype]
    torch.testing.assert_close(c_new.float(), c_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(h_new.float(), h_ref, atol=tol, rtol=tol)
