"""Triton ConvLSTM step (kernels/convlstm.py) against ``convlstm_step_reference``.

On CPU the kernel runs in Triton's interpreter (slow): shapes are tiny and odd so that every
masked edge is hit (n not a power of two, several M / N / channel tiles, 1x1 images where every
tap but the centre is padding, > 4 branches split over two launches). Outputs are preallocated
and filled with NaN, so any element the kernel forgets to write fails the comparison; so are the
split-K workspaces in the split-K tests (fixture ``nan_workspace``). On CPU the automatic split-K
choice assumes ``INTERPRETER_SMS`` = 4 SMs, so the smallest cases (one M tile, <= 2 branches) take
split-K even when not forced."""
from __future__ import annotations

import pytest
import torch

from jsla_fast.kernels import convlstm as convlstm_kernels
from jsla_fast.kernels.convlstm import convlstm_forward, launch_plan
from jsla_fast.model.convlstm import MultiKernelConvLSTM
from helpers.ops import convlstm_f64, nan_like, seeded_convlstm_inputs
from jsla_fast.ops import convlstm_step_reference


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
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, B, D, n, ks, hw)
    h_ref, c_ref = convlstm_step_reference(x, h, c, ws, bs)
    h_out, c_out = nan_like(h), nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    assert h_new is h_out and c_new is c_out
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


def test_allocates_outputs(seed):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 1, 3, 2, (1, 3), (3, 5))
    h_new, c_new = convlstm_forward(x, h, c, ws, bs)
    h_ref, c_ref = convlstm_step_reference(x, h, c, ws, bs)
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


def test_channels_last(seed):
    """Strided (NHWC) inputs and outputs are read and written in place through their strides."""
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 2, 5, 3, (1, 3), (3, 5))
    h_ref, c_ref = convlstm_step_reference(x, h, c, ws, bs)
    cl = torch.channels_last
    x, h, c = (t.contiguous(memory_format=cl) for t in (x, h, c))
    assert not x.is_contiguous()
    h_out, c_out = nan_like(h, cl), nan_like(c, cl)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    assert h_new is h_out and h_new.is_contiguous(memory_format=cl)
    torch.testing.assert_close(c_new, c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new, h_ref, atol=1e-5, rtol=1e-5)


def test_c_in_place_and_h_alias_rejected(seed):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 1, 3, 2, (1, 3), (3, 5))
    h_ref, c_ref = convlstm_step_reference(x, h, c, ws, bs)
    with pytest.raises(ValueError):  # other programs still read h while h' is written
        convlstm_forward(x, h, c, ws, bs, h_out=h)
    buf = nan_like(h)
    with pytest.raises(ValueError):  # h' and c' in one buffer would overwrite each other
        convlstm_forward(x, h, c, ws, bs, h_out=buf, c_out=buf)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=nan_like(h), c_out=c)
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
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 2, 5, 3, (1, 3, 5, 7), (3, 5), dtype=dtype)
    h_ref, c_ref = _reference_f32(x, h, c, ws, bs)
    h_out, c_out = nan_like(h), nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    assert h_new.dtype == dtype and c_new.dtype == dtype
    tol = LOWP_TOL[dtype]
    torch.testing.assert_close(c_new.float(), c_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(h_new.float(), h_ref, atol=tol, rtol=tol)


# --- split-K (kernel 1 writes fp32 partial gates, kernel 2 sums them + epilogue) -----------------
# Reference: convlstm_step_reference in float64 on the kernel's (rounded) inputs, so the error
# measured is the kernel's own; tolerances as above (1e-5 for fp32, LOWP_TOL for 16-bit).


@pytest.fixture
def nan_workspace(monkeypatch):
    """Split-K workspaces filled with NaN instead of torch.empty's leftovers: a partial that the
    reduction reads but no program wrote turns the output NaN. Records the allocated sizes (one
    allocation per launch group that takes split-K)."""
    sizes = []

    def alloc(numel, device):
        sizes.append(numel)
        return torch.full((numel,), float("nan"), dtype=torch.float32, device=device)

    monkeypatch.setattr(convlstm_kernels, "_alloc_workspace", alloc)
    return sizes


def _check_split(x, h, c, ws, bs, splits, workspace_sizes, tol, memory_format=torch.contiguous_format):
    """Run with NaN-filled outputs, compare with float64; return the launch plan that was used."""
    B, _, H, W = x.shape
    n = ws[0].shape[0] // 4
    plan = launch_plan(B * H * W, x.shape[1], n, [w.shape[-1] for w in ws], cuda=x.is_cuda,
                       sms=convlstm_kernels._sm_count(x.device), splits=splits)
    h_ref, c_ref = convlstm_f64(x, h, c, ws, bs)
    h_out, c_out = nan_like(h, memory_format), nan_like(c, memory_format)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out, splits=splits)
    assert h_new is h_out and c_new is c_out
    torch.testing.assert_close(c_new.double(), c_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(h_new.double(), h_ref, atol=tol, rtol=tol)
    split_groups = [g for g in plan if g.splits is not None]
    assert workspace_sizes == [sum(g.splits) * 4 * B * H * W * n for g in split_groups]
    return plan


# (B, D, n, kernel sizes, (H, W), splits, expected S per launch group (None: single pass))
SPLIT_CASES = [
    # 30 positions: 2 M tiles, the last ragged; 2 channel blocks per tap (5 x, 6 h channels), so
    # k=3's 18 steps in 5 chunks of 3/4/3/4/4 start and end inside taps; k=1's 2 steps in 2
    (2, 5, 3, (1, 3), (3, 5), [2, 5], [(2, 5)]),
    # 2 N tiles (n=17), 5 channel blocks (2 x, 3 h): 3 chunks of 5 steps, 7 chunks of 45; a request
    # above a branch's step count is clamped (k=1 has 5 steps)
    (1, 17, 17, (1, 3), (3, 5), [9, 7], [(5, 7)]),
    # int u: u * k^2 splits: the model's branches, one tap per program
    (1, 3, 2, (1, 3, 5, 7), (3, 5), 1, [(1, 9, 25, 49)]),
    # 5 branches: two launch pairs (groups of 4), both split
    (1, 3, 2, (1, 3, 1, 5, 3), (3, 5), 1, [(1, 9, 1, 25), (9,)]),
    # forced off (0, or all ones) on a shape that the automatic choice splits
    (1, 3, 2, (1, 3), (3, 5), 0, [None]),
    (1, 3, 2, (1, 3), (3, 5), [1, 1], [None]),
    # automatic: on for 1 M tile x 2 branches (<= half of the 4 interpreter SMs), S ~ k^2 ...
    (1, 3, 2, (1, 3), (3, 5), None, [(1, 7)]),
    # ... and off for 2 M tiles x 2 branches
    (2, 5, 3, (1, 3), (3, 5), None, [None]),
]


@pytest.mark.parametrize("B,D,n,ks,hw,splits,expected", SPLIT_CASES)
def test_splitk_parity_fp32(seed, nan_workspace, B, D, n, ks, hw, splits, expected):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, B, D, n, ks, hw)
    plan = _check_split(x, h, c, ws, bs, splits, nan_workspace, tol=1e-5)
    assert [g.splits for g in plan] == expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_splitk_low_precision(seed, nan_workspace, dtype):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 2, 5, 3, (1, 3, 5, 7), (3, 5), dtype=dtype)
    plan = _check_split(x, h, c, ws, bs, [2, 5, 7, 11], nan_workspace, tol=LOWP_TOL[dtype])
    assert plan[0].splits == (2, 5, 7, 11)


def test_splitk_channels_last(seed, nan_workspace):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 2, 5, 3, (1, 3), (3, 5))
    cl = torch.channels_last
    x, h, c = (t.contiguous(memory_format=cl) for t in (x, h, c))
    assert not x.is_contiguous()
    plan = _check_split(x, h, c, ws, bs, [2, 4], nan_workspace, tol=1e-5, memory_format=cl)
    assert plan[0].splits == (2, 4)


def test_splitk_c_in_place(seed, nan_workspace):
    """c_out = c with split-K: the reduction program reads each c element before writing it."""
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 1, 3, 2, (1, 3), (3, 5))
    h_ref, c_ref = convlstm_f64(x, h, c, ws, bs)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=nan_like(h), c_out=c, splits=[2, 3])
    assert c_new is c and len(nan_workspace) == 1
    torch.testing.assert_close(c_new.double(), c_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_new.double(), h_ref, atol=1e-5, rtol=1e-5)


def test_splitk_plan_model_shape():
    """The grids the module docstring states for the model (D=128, n=24, k=1,3,5,7, 14x14) on an
    H100 (132 SMs): split-K at B=1, one fused pass at B=40."""
    ks = (1, 3, 5, 7)
    (b1,) = launch_plan(1 * 14 * 14, 128, 24, ks, cuda=True, sms=132)
    assert b1.splits == (1, 7, 20, 39) and b1.grid == (4, 67) and b1.reduce_grid == (37, 4)
    assert 2 * 132 <= b1.grid[0] * b1.grid[1] <= 4 * 132
    (b40,) = launch_plan(40 * 14 * 14, 128, 24, ks, cuda=True, sms=132)
    assert b40.splits is None and b40.grid == (123, 4) and b40.reduce_grid is None
    (off,) = launch_plan(196, 128, 24, ks, cuda=True, sms=132, splits=0)
    assert off.splits is None and off.grid == (4, 4)
    for bad in (-1, [1, 2, 3], [1, 0, 1, 1]):
        with pytest.raises(ValueError):
            launch_plan(196, 128, 24, ks, cuda=True, sms=132, splits=bad)


# --- GPU: the model's shape (D=128, hid=96 (n=24), k=1,3,5,7, 14x14) ------------------------------
# The reference runs in fp32 (TF32 off) on the same (rounded) inputs, so the error measured is the
# kernel's own. fp32: K = 224*49 = 10976 products summed in another order than cuDNN, each gate
# ~O(1) with |error| ~ sqrt(K) * 2^-24 * O(1) ~ 1e-5; sigmoid/tanh are 1-Lipschitz, so 1e-4 leaves
# room without hiding a wrong term (a single dropped tap changes the gates by ~1e-2).
# fp16 / bf16: as LOWP_TOL above (fp32 accumulation; output rounding dominates).


# splits: None = automatic (split-K at B=1, the fused single pass at B=40), 0 = forced off, 1 = forced
# on with S = k^2 (1, 9, 25, 49). The split-K result is checked to be bitwise reproducible.


@pytest.mark.gpu
@pytest.mark.parametrize("splits", [None, 0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B", [1, 40])
def test_model_shape_gpu(seed, nan_workspace, B, dtype, splits):
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
    h_out, c_out = nan_like(h), nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out, splits=splits)
    torch.cuda.synchronize()
    assert h_new.dtype == dtype and c_new.dtype == dtype
    assert len(nan_workspace) == (1 if splits == 1 or (splits is None and B == 1) else 0)
    tol = LOWP_TOL[dtype]
    torch.testing.assert_close(c_new.float(), c_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(h_new.float(), h_ref, atol=tol, rtol=tol)
    h2, c2 = convlstm_forward(x, h, c, ws, bs, splits=splits)  # fixed summation order: same bits
    assert torch.equal(h2, h_new) and torch.equal(c2, c_new)
