"""Triton ConvLSTM step (kernels/convlstm.py) against ``convlstm_step_reference``.

On CPU the kernel runs in Triton's interpreter (slow): shapes are tiny and odd so that every
masked edge is hit (n not a power of two, several M / N / channel tiles, 1x1 images where every
tap but the centre is padding, > 4 branches split over two launches). Outputs are preallocated
and filled with NaN, so any element the kernel forgets to write fails the comparison; so are the
split-K workspaces in the split-K tests (fixture ``nan_workspace``). On CPU the automatic split-K
choice assumes ``INTERPRETER_SMS`` = 4 SMs, so the smallest cases (one M tile, <= 2 branches) take
split-K even when not forced.

Every output is compared element by element with the float64 specification from the same rounded
inputs, within the bound tests/helpers/compare.py derives for the kernel's arithmetic (dtype,
reduction length (D + hid) k^2, conditioning; fp32 runs tl.dot with input_precision="ieee")."""
from __future__ import annotations

import pytest
import torch

from helpers.backends import require_triton

require_triton()  # the whole file needs the kernels

from helpers.compare import CONVLSTM_MUTATIONS, assert_mutations_fail, convlstm_arith, convlstm_expected  # noqa: E402
from helpers.ops import nan_like, seeded_convlstm_inputs  # noqa: E402
from jsla_fast.kernels import convlstm as convlstm_kernels  # noqa: E402
from jsla_fast.kernels.convlstm import convlstm_forward, launch_plan  # noqa: E402
from jsla_fast.model.convlstm import MultiKernelConvLSTM  # noqa: E402


def check(h_new, c_new, x, h, c, ws, bs, what=""):
    """h', c' against the float64 specification within the Triton kernel's bound."""
    assert h_new.dtype == c_new.dtype == x.dtype
    expected = convlstm_expected(x, h, c, ws, bs, convlstm_arith("triton", x.dtype))
    expected.check(h_new, c_new, what=what)
    return expected


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
    h_out, c_out = nan_like(h), nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    assert h_new is h_out and c_new is c_out
    check(h_new, c_new, x, h, c, ws, bs)


def test_allocates_outputs(seed):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 1, 3, 2, (1, 3), (3, 5))
    check(*convlstm_forward(x, h, c, ws, bs), x, h, c, ws, bs)


def test_channels_last(seed):
    """Strided (NHWC) inputs and outputs are read and written in place through their strides."""
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 2, 5, 3, (1, 3), (3, 5))
    cl = torch.channels_last
    x, h, c = (t.contiguous(memory_format=cl) for t in (x, h, c))
    assert not x.is_contiguous()
    h_out, c_out = nan_like(h, cl), nan_like(c, cl)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    assert h_new is h_out and h_new.is_contiguous(memory_format=cl)
    check(h_new, c_new, x, h, c, ws, bs)


def test_c_in_place_and_h_alias_rejected(seed):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 1, 3, 2, (1, 3), (3, 5))
    expected = convlstm_expected(x, h, c, ws, bs, convlstm_arith("triton", x.dtype))  # before c is overwritten
    with pytest.raises(ValueError):  # other programs still read h while h' is written
        convlstm_forward(x, h, c, ws, bs, h_out=h)
    buf = nan_like(h)
    with pytest.raises(ValueError):  # h' and c' in one buffer would overwrite each other
        convlstm_forward(x, h, c, ws, bs, h_out=buf, c_out=buf)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=nan_like(h), c_out=c)
    assert c_new is c
    expected.check(h_new, c_new)


# --- 16-bit inputs: exact products, fp32 accumulation, h' and c' rounded once to the input type
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_parity_low_precision(seed, dtype):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 2, 5, 3, (1, 3, 5, 7), (3, 5), dtype=dtype)
    h_out, c_out = nan_like(h), nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out)
    check(h_new, c_new, x, h, c, ws, bs)


# --- split-K (kernel 1 writes fp32 partial gates, kernel 2 sums them + epilogue): the same bounds,
# which hold for any summation order


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


def _check_split(x, h, c, ws, bs, splits, workspace_sizes, memory_format=torch.contiguous_format):
    """Run with NaN-filled outputs, compare with float64; return the launch plan that was used."""
    B, _, H, W = x.shape
    n = ws[0].shape[0] // 4
    plan = launch_plan(B * H * W, x.shape[1], n, [w.shape[-1] for w in ws], cuda=x.is_cuda,
                       sms=convlstm_kernels._sm_count(x.device), splits=splits)
    h_out, c_out = nan_like(h, memory_format), nan_like(c, memory_format)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out, splits=splits)
    assert h_new is h_out and c_new is c_out
    check(h_new, c_new, x, h, c, ws, bs, what=f"splits={splits}")
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
    plan = _check_split(x, h, c, ws, bs, splits, nan_workspace)
    assert [g.splits for g in plan] == expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_splitk_low_precision(seed, nan_workspace, dtype):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 2, 5, 3, (1, 3, 5, 7), (3, 5), dtype=dtype)
    plan = _check_split(x, h, c, ws, bs, [2, 5, 7, 11], nan_workspace)
    assert plan[0].splits == (2, 5, 7, 11)


def test_splitk_channels_last(seed, nan_workspace):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 2, 5, 3, (1, 3), (3, 5))
    cl = torch.channels_last
    x, h, c = (t.contiguous(memory_format=cl) for t in (x, h, c))
    assert not x.is_contiguous()
    plan = _check_split(x, h, c, ws, bs, [2, 4], nan_workspace, memory_format=cl)
    assert plan[0].splits == (2, 4)


def test_splitk_c_in_place(seed, nan_workspace):
    """c_out = c with split-K: the reduction program reads each c element before writing it."""
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 1, 3, 2, (1, 3), (3, 5))
    expected = convlstm_expected(x, h, c, ws, bs, convlstm_arith("triton", x.dtype))  # before c is overwritten
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=nan_like(h), c_out=c, splits=[2, 3])
    assert c_new is c and len(nan_workspace) == 1
    expected.check(h_new, c_new)


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


def test_plan_takes_symbolic_shapes():
    """torch.compile(dynamic=True) runs the launcher on SymInt shapes: the launch plan must come
    out the same, with plain ints where Triton needs constexprs (block sizes)."""
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    env = ShapeEnv()

    def sym(value, name):
        return env.create_symintnode(env.create_symbol(value, source=ConstantSource(name),
                                                       dynamic_dim=DimDynamic.DYNAMIC), hint=value)
    ks = (1, 3, 5, 7)
    for M, D, n, cuda, sms in ((196, 128, 24, True, 132), (7840, 128, 24, True, 132), (15, 3, 2, False, 4),
                               (30, 5, 3, False, 4)):
        want = launch_plan(M, D, n, ks, cuda=cuda, sms=sms)
        got = launch_plan(sym(M, "M"), sym(D, "D"), sym(n, "n"), ks, cuda=cuda, sms=sms)
        blocks = convlstm_kernels._blocks(sym(n, "n2"), cuda)
        assert all(type(v) is int for v in blocks) and blocks == convlstm_kernels._blocks(n, cuda)

        def concrete(v):
            return None if v is None else tuple(int(e) for e in v)
        assert [(g.start, g.ks, concrete(g.splits), concrete(g.grid), concrete(g.reduce_grid)) for g in got] == \
            [(g.start, g.ks, g.splits, g.grid, g.reduce_grid) for g in want]


# --- GPU: the model's shape (D=128, hid=96 (n=24), k=1,3,5,7, 14x14) ------------------------------
# splits: None = automatic (split-K at B=1, the fused single pass at B=40), 0 = forced off, 1 = forced
# on with S = k^2 (1, 9, 25, 49). The split-K result is checked to be bitwise reproducible.


@pytest.mark.gpu
@pytest.mark.parametrize("splits", [None, 0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
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
    h_out, c_out = nan_like(h), nan_like(c)
    h_new, c_new = convlstm_forward(x, h, c, ws, bs, h_out=h_out, c_out=c_out, splits=splits)
    torch.cuda.synchronize()
    assert len(nan_workspace) == (1 if splits == 1 or (splits is None and B == 1) else 0)
    expected = check(h_new, c_new, x, h, c, ws, bs, what=f"B={B} splits={splits}")
    assert_mutations_fail(expected, (h_new, c_new), CONVLSTM_MUTATIONS)
    h2, c2 = convlstm_forward(x, h, c, ws, bs, splits=splits)  # fixed summation order: same bits
    assert torch.equal(h2, h_new) and torch.equal(c2, c_new)
