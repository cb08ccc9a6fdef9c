"""The comparison every kernel test uses (tests/helpers/compare.py), proven on the CPU before any
GPU runs it: per-element bounds, NaN never passes, the worst element is reported; for each op
and dtype the kernel's real output (Triton's interpreter here) passes and every mutation of it
fails; the NaN poisoning of fresh allocations exposes an unwritten element."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.backends import fused_backend, require_triton
from helpers.compare import (ATTENTION_MUTATIONS, CONVLSTM_MUTATIONS, Arith, assert_mutations_fail, attention_expected,
                             compare, convlstm_arith, convlstm_expected, floor, ulp)
from helpers.ops import nan_like, poisoned, poisoned_allocations, seeded_attention_inputs, seeded_convlstm_inputs

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# -- the comparison itself, on CPU tensors ----------------------------------------------------------
def test_nan_and_inf_never_pass():
    want = torch.tensor([1.0, 2.0, 3.0])
    for bad in (float("nan"), float("inf"), -float("inf")):
        got = want.clone()
        got[1] = bad
        assert compare(got, want, rtol=1e30, atol=1e30) is not None, bad
    assert compare(want, torch.tensor([1.0, float("nan"), 3.0]), rtol=1e30, atol=1e30) is not None
    assert compare(want[:2], want, rtol=1.0, atol=1.0) is not None  # shapes must agree


def test_bound_follows_each_element_and_names_the_worst():
    """A small element 20 % off fails even next to a large one (a bound scaled to the largest
    element, like max|got - want| / max|want|, would pass it), and the report points at it."""
    want = torch.tensor([[1000.0, 1e-4, 5.0], [2.0, -3e-4, 7.0]])
    got = want.clone()
    got[0, 1] *= 1.2
    got[1, 1] *= 1.1
    assert float((got - want).abs().max() / want.abs().max()) < 1e-7
    failure = compare(got, want, rtol=1e-2, atol=0.0)
    assert failure is not None and "2 of 6" in failure and "worst at (0, 1)" in failure, failure
    assert compare(got, want, rtol=0.25, atol=0.0) is None
    assert compare(got, want, rtol=torch.tensor([[0.0], [0.25]]), atol=torch.tensor([[0.0, 1e-5, 0.0]])) is not None
    assert compare(got, want, rtol=torch.tensor([[0.0], [0.25]]), atol=torch.tensor([[0.0, 3e-5, 0.0]])) is None


def test_dot_error_bounds_fp32_summation(seed):
    """The dot-product bound against what fp32 really does: recursive summation (the longest
    chain of roundings any order has) of n random-sign terms, n up to the attention's 25600."""
    gen = torch.Generator().manual_seed(seed)
    for n in (25, 11000, 25600):
        terms = (torch.randn(64, n, generator=gen, dtype=torch.float64)
                 * torch.rand(64, n, generator=gen, dtype=torch.float64))
        exact = terms.sum(dim=1)
        sequential = np.add.accumulate(terms.float().numpy(), axis=1, dtype=np.float32)[:, -1]
        err = (torch.from_numpy(sequential).double() - exact).abs()
        bound = Arith(torch.float32).dot_error(terms.float().double().square().sum(dim=1).sqrt(), n)
        rounding_of_terms = terms.abs().sum(dim=1) * 2.0 ** -24  # the terms' own fp32 rounding
        assert (err <= bound + rounding_of_terms).all(), float((err / bound).max())


def test_output_rounding_units():
    assert ulp(torch.float32) == 2.0 ** -23 and ulp(torch.float16) == 2.0 ** -10 and ulp(torch.bfloat16) == 2.0 ** -7
    assert floor(torch.float16) == 2.0 ** -24 and floor(torch.float32) == 2.0 ** -126


# -- each op and dtype: the real output passes, its mutations fail ----------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_comparison_rejects_mutations(seed, dtype):
    require_triton()
    from jsla_fast.kernels.attention import attention_forward

    B, C, H, W, k = 2, 17, 7, 6, 5
    feat, eh, weight, bias = seeded_attention_inputs(seed, B, C, H, W, k, dtype=dtype, wscale=2.0)
    out, alpha = attention_forward(feat, eh, weight, bias, 0.01, out=poisoned(feat.shape, dtype, "cpu"),
                                   alpha_out=poisoned((B, 1, H, W), dtype, "cpu"), splits=3)
    assert_mutations_fail(attention_expected(feat, eh, weight, bias, 0.01), (out, alpha), ATTENTION_MUTATIONS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_convlstm_comparison_rejects_mutations(seed, dtype):
    require_triton()
    from jsla_fast.kernels.convlstm import convlstm_forward

    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 1, 5, 3, (1, 3, 5, 7), (3, 5), dtype=dtype)
    out = convlstm_forward(x, h, c, ws, bs, h_out=nan_like(h), c_out=nan_like(c))
    expected = convlstm_expected(x, h, c, ws, bs, convlstm_arith("triton", dtype))
    assert_mutations_fail(expected, out, CONVLSTM_MUTATIONS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_arithmetic_bounds_still_reject_mutations(seed, dtype):
    """The loosest bounds the GPU tests use (TF32 products, truncating tensor-core sums) at the
    model's ConvLSTM shape (n up to 224 * 49) still reject the mutations: checked here on the
    float64 result itself rounded to dtype, i.e. a kernel that is exact up to its output rounding."""
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, 1, 128, 24, (1, 3, 5, 7), (14, 14), dtype=dtype)
    expected = convlstm_expected(x, h, c, ws, bs, convlstm_arith("cuda", dtype))
    assert_mutations_fail(expected, [t.to(dtype) for t in expected.want], CONVLSTM_MUTATIONS)
    feat, eh, weight, bias = seeded_attention_inputs(seed, 1, 832, 14, 14, 5, dtype=dtype)
    expected = attention_expected(feat, eh, weight, bias, 0.01)
    assert_mutations_fail(expected, [t.to(dtype) for t in expected.want], ATTENTION_MUTATIONS)


# -- poisoned allocations -------------------------------------------------------------------------
def test_poisoned_allocations_expose_an_unwritten_element(seed):
    """Inside poisoned_allocations an op's fresh outputs start as NaN: one that skips an element
    fails the comparison; the cpp kernels, which write every element, pass it."""
    cpp = fused_backend("cpp")
    feat, eh, weight, bias = seeded_attention_inputs(seed, 2, 13, 5, 7, 5)
    expected = attention_expected(feat, eh, weight, bias, 0.01)

    def lazy_attention(*args):
        out, alpha = cpp.attention(*args)
        partial = torch.empty_like(out)
        partial.view(-1)[1:] = out.reshape(-1)[1:]  # forgets element 0
        return partial, alpha

    with poisoned_allocations("cpu"):
        lazy = lazy_attention(feat, eh, weight, bias, 0.01)
        full = cpp.attention(feat, eh, weight, bias, 0.01)
    assert math.isnan(lazy[0].view(-1)[0].item())
    assert expected.failures(*lazy)
    expected.check(*full)
    assert not torch.are_deterministic_algorithms_enabled()  # restored on leaving
