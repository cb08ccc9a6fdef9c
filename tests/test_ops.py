"""The fused ops of every backend against the reference (docs/DESIGN.md, "The fused ops"), on fresh random inputs each
run: the candidate-layer shapes and odd ones, batch 1-5, contiguous / channels-last / strided
views; gradients (gradcheck in float64), torch.library.opcheck, and clear errors on bad input."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from helpers.backends import fused_backend
from helpers.compare import (ATTENTION_MUTATIONS, CONVLSTM_MUTATIONS, Expected, assert_mutations_fail,
                             attention_expected, convlstm_arith, convlstm_expected)
from helpers.ops import attention_inputs, convlstm_inputs, record_op_calls, seeded_attention_inputs, \
    seeded_convlstm_inputs
from jsla_fast import ops
from jsla_fast.config import layer_shapes
from jsla_fast.ops import BACKENDS, BackendUnavailable, why_unavailable
from jsla_fast.ops import attention_reference, convlstm_step_reference

#: Triton runs on CPU only inside its interpreter, which tests/conftest.py turns on where there is
#: no GPU: tiny shapes only. Its real shapes, and the CUDA kernels, are the `gpu` tests
#: (tests/test_triton_*.py, tests/test_gpu.py), so on a GPU machine these CPU tests leave it out.
INTERPRETED = ("triton",)
#: the fused backends checked on CPU here
FUSED = [name for name, b in BACKENDS.items() if name != "reference" and "cpu" in b.devices
         and not (name in INTERPRETED and torch.cuda.is_available())]
LAYOUTS = ("contiguous", "channels_last", "strided")
TINY = 2000  # values per image (C*h*w) an interpreted kernel handles in about a second


def backend(name: str):
    # The test command builds every CPU backend: one that is missing is a failure, except a missing
    # triton package, a skip that says so (helpers/backends.py).
    return fused_backend(name, "cpu")


@pytest.fixture(params=FUSED)
def fused(request):
    return backend(request.param)


#: tracing (opcheck's fake-tensor tests, torch.compile) needs compiled kernels: Triton's interpreter
#: runs launches even on fake tensors, so the Triton ops are traced in `test_triton_ops_trace_on_gpu`
@pytest.fixture(params=[name for name in FUSED if name not in INTERPRETED])
def traceable(request):
    return backend(request.param)


def with_backends(cases, size):
    """(backend, case) pairs: every fused backend with every case, interpreted ones with the tiny cases."""
    return [pytest.param(name, case, id=f"{name}-" + "x".join(map(str, case[:4])))
            for name in FUSED for case in cases if name not in INTERPRETED or size(case) <= TINY]


def float_dtypes(fused) -> list[torch.dtype]:
    return [d for d in (torch.float32, torch.float64) if d in fused.dtypes]


def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other channel of a bigger buffer, width-major inside
        big = torch.zeros(t.shape[0], 2 * t.shape[1], t.shape[3], t.shape[2], dtype=t.dtype)
        view = big[:, ::2].transpose(2, 3)
        view.copy_(t)
        return view
    return t.contiguous()


ATTENTION_CASES = [  # (C, h, w, k): the candidate layers, then odd ones
    *((c, h, w, 5) for c, h, w in layer_shapes(224).values()),
    (13, 5, 7, 5), (1, 1, 1, 5), (7, 3, 1, 3), (33, 9, 6, 1), (20, 2, 11, 3),
]


@pytest.mark.parametrize("name,case", with_backends(ATTENTION_CASES, lambda c: c[0] * c[1] * c[2]))
def test_attention_matches_reference(name, case, seed):
    fused = backend(name)
    c, h, w, k = case
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = 1 if c * h * w > 200_000 else rng.randint(1, 5)
    slope = rng.choice([0.0, 0.01, 0.2])
    for dtype in float_dtypes(fused):
        feat, eh, weight, bias = attention_inputs(batch, c, h, w, k, dtype, gen)
        expected = attention_expected(feat, eh, weight, bias, slope)  # helpers/compare.py: derived bounds
        for layout in LAYOUTS:
            got_o, got_a = fused.attention(laid_out(feat, rng.choice(LAYOUTS)), laid_out(eh, layout), weight, bias,
                                           slope)
            assert got_a.shape == (batch, 1, h, w) and got_o.shape == feat.shape
            expected.check(got_o, got_a, what=f"{name} {dtype} {layout}")
        if c > 1 and h * w > 1:  # room for every mutation (channels to permute, positions to swap)
            assert_mutations_fail(expected, (got_o, got_a), ATTENTION_MUTATIONS)


def convlstm_atol(x, h, weights, biases) -> float:
    """float32 tolerance on h', c': 1e-5 of the largest gate pre-activation. Winograd filtering
    (the cpp kernel for k = 3, 5, 7) rounds ~10x more than a direct convolution, in proportion to
    the pre-activations' size (measured 3-4e-6 of the largest one over weight scales 1-30x; PyTorch's
    own float32 convolution: 3-4e-7)."""
    with torch.no_grad():
        xh = torch.cat([x, h], dim=1).double()
        return 1e-5 * max(float(F.conv2d(xh, w.double(), b.double(), padding=w.shape[-1] // 2).abs().max())
                          for w, b in zip(weights, biases))


CONVLSTM_CASES = [  # (D, hid, H, W, kernels): the model's step, then odd ones
    (128, 96, 14, 14, (1, 3, 5, 7)), (5, 6, 5, 7, (1, 3)), (3, 6, 3, 2, (3, 5, 7)), (4, 8, 1, 1, (1, 3, 5, 7)),
    (7, 3, 6, 9, (5,)), (2, 4, 4, 4, (9, 1)),
]


@pytest.mark.parametrize("name,case", with_backends(CONVLSTM_CASES, lambda c: (c[0] + c[1]) * c[2] * c[3]))
def test_convlstm_matches_reference(name, case, seed):
    fused = backend(name)
    d, hid, h, w, kernels = case
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = rng.randint(1, 5)
    for dtype in float_dtypes(fused):
        x, hh, cc, ws, bs = convlstm_inputs(batch, d, hid, h, w, kernels, dtype, gen, scale=rng.choice([1.0, 3.0]))
        if name == "cpp" and dtype == torch.float32:
            # Winograd (k = 3, 5, 7) is not a plain dot product: its own measured bound (convlstm_atol)
            want = convlstm_step_reference(x.double(), hh.double(), cc.double(), [t.double() for t in ws],
                                           [t.double() for t in bs])
            atol = convlstm_atol(x, hh, ws, bs)
            expected = Expected(("h", "c"), want, (0.0, 0.0), (atol, atol))
        else:
            expected = convlstm_expected(x, hh, cc, ws, bs, convlstm_arith(name, dtype))
        for layout in LAYOUTS:
            got = fused.convlstm_step(laid_out(x, layout), laid_out(hh, rng.choice(LAYOUTS)),
                                      laid_out(cc, rng.choice(LAYOUTS)), ws, bs)
            expected.check(*got, what=f"{name} {dtype} {layout}")
        if hid > 1:
            assert_mutations_fail(expected, got, CONVLSTM_MUTATIONS)


#: the CPU backends that take bfloat16 tensors; they compute in float32 (csrc/torch/cpu.cpp), so the
#: only error beyond float32's is the final rounding of each output to bfloat16: 2^-8 relative
BF16_CPU = [name for name in FUSED if name not in INTERPRETED and torch.bfloat16 in BACKENDS[name].dtypes]
BF16_RTOL = 2 ** -8


@pytest.mark.parametrize("name", BF16_CPU)
def test_bfloat16_ops_are_float32_math_rounded_once(name, seed):
    """The kernels themselves: on a CPU with AMX the op entry sends a bf16 ConvLSTM step at
    inference to oneDNN instead (the next test), so the step's kernel is called directly here."""
    fused = backend(name)
    gen = torch.Generator().manual_seed(seed)
    for c, h, w, k in ATTENTION_CASES:
        feat, eh, weight, bias = attention_inputs(3, c, h, w, k, torch.bfloat16, gen)  # one sample at a time
        got_o, got_a = fused.attention(feat, eh, weight, bias, 0.01)
        assert got_o.dtype == got_a.dtype == torch.bfloat16
        attention_expected(feat, eh, weight, bias, 0.01).check(got_o, got_a, what=f"{c}x{h}x{w}")
    for d, hid, h, w, kernels in CONVLSTM_CASES:
        x, hh, cc, ws, bs = convlstm_inputs(2, d, hid, h, w, kernels, torch.bfloat16, gen)
        want_h, want_c = convlstm_step_reference(x.double(), hh.double(), cc.double(), [t.double() for t in ws],
                                                 [t.double() for t in bs])
        for _ in range(2):  # the second call takes the packed weights from the cache
            got_h, got_c = torch.ops.jsla.convlstm_step(laid_out(x, "channels_last"), hh, cc, ws, bs)
            assert got_h.dtype == got_c.dtype == torch.bfloat16
            atol = convlstm_atol(x.float(), hh.float(), [t.float() for t in ws], [t.float() for t in bs])
            torch.testing.assert_close(got_h.double(), want_h, rtol=BF16_RTOL, atol=atol)
            torch.testing.assert_close(got_c.double(), want_c, rtol=BF16_RTOL, atol=atol)


def test_bfloat16_convlstm_on_onednn_rounds_the_gates_once_more(monkeypatch, seed):
    """ops/onednn.py: oneDNN writes the gate pre-activations z in bf16 (one more rounding than the
    kernel: |dz| <= 2^-8 max|z|, plus float32 accumulation), then the update runs in float32 and
    rounds once. Propagated with sigma' <= 1/4, tanh' <= 1: |dc'| <= dz (max|c| / 4 + 1/4 + 1),
    |dh'| <= dz / 4 + |dc'|. The op entry takes this path exactly when it should."""
    from jsla_fast.ops import extension, onednn

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("oneDNN's bfloat16 convolution needs AVX512 (BW, VL, DQ) or AVX-NE-CONVERT, which this CPU "
                    "lacks (the op entry never sends bfloat16 to oneDNN here: it needs AMX)")

    def check(x, hh, cc, ws, bs):
        want_h, want_c = convlstm_step_reference(x.double(), hh.double(), cc.double(), [t.double() for t in ws],
                                                 [t.double() for t in bs])
        z_max = convlstm_atol(x.float(), hh.float(), [t.float() for t in ws], [t.float() for t in bs]) / 1e-5
        dz = (2 ** -8 + 1e-5) * z_max
        c_atol = dz * (float(cc.abs().max()) / 4 + 1.25)
        got_h, got_c = onednn.convlstm_step(x, hh, cc, ws, bs)
        assert got_h.dtype == got_c.dtype == torch.bfloat16 and got_h.shape == hh.shape
        torch.testing.assert_close(got_c.double(), want_c, rtol=BF16_RTOL, atol=c_atol)
        torch.testing.assert_close(got_h.double(), want_h, rtol=BF16_RTOL, atol=dz / 4 + c_atol)

    gen = torch.Generator().manual_seed(seed)
    for d, hid, h, w, kernels in CONVLSTM_CASES:
        x, hh, cc, ws, bs = convlstm_inputs(2, d, hid, h, w, kernels, torch.bfloat16, gen)
        check(x, hh, cc, ws, bs)
        check(x, hh, cc, ws, bs)  # the packed weights from the cache
    with torch.no_grad():  # an in-place update bumps the version: repacked
        ws[0].mul_(-2)
    check(x, hh, cc, ws, bs)
    # dispatch: oneDNN on AMX at inference; the kernel without AMX or when autograd needs it
    kernel = torch.ops.jsla.convlstm_step(x, hh, cc, ws, bs)
    on_onednn = onednn.convlstm_step(x, hh, cc, ws, bs)
    for amx, grad, want in ((True, False, on_onednn), (False, False, kernel), (True, True, kernel)):
        monkeypatch.setattr(onednn, "amx_convlstm", lambda amx=amx: amx)
        leaves = [t.detach().requires_grad_(grad) for t in ws]
        got = extension.convlstm_step(x, hh, cc, leaves, bs)
        torch.testing.assert_close([t.detach() for t in got], list(want), rtol=0, atol=0)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_convlstm_weight_cache_sees_updates(fused, requires_grad, seed):
    """Packed weights may be reused across calls; in-place updates (an optimizer step, copy_,
    and for weights that require grad even writes through .data) must be seen."""
    gen = torch.Generator().manual_seed(seed)
    x, h, c, ws, bs = convlstm_inputs(2, 6, 8, 5, 5, (1, 3), torch.float32, gen)
    for t in (*ws, *bs):
        t.requires_grad_(requires_grad)
    first = fused.convlstm_step(x, h, c, ws, bs)
    torch.testing.assert_close(fused.convlstm_step(x, h, c, ws, bs), first, rtol=0, atol=0)
    with torch.no_grad():
        ws[1].mul_(-1.5)
        bs[0].add_(0.3)
    want = convlstm_step_reference(x, h, c, ws, bs)
    torch.testing.assert_close(fused.convlstm_step(x, h, c, ws, bs), want, rtol=0, atol=convlstm_atol(x, h, ws, bs))
    if requires_grad:
        ws[0].data.mul_(2.0)  # no version bump
        want = convlstm_step_reference(x, h, c, ws, bs)
        torch.testing.assert_close(fused.convlstm_step(x, h, c, ws, bs), want, rtol=0,
                                   atol=convlstm_atol(x, h, ws, bs))


def assert_grads_match_reference(fused_fn, reference_fn, inputs, atol):
    """For backends without float64 (their kernels accumulate in float32, so gradcheck's finite
    differences would measure rounding): the gradients of a random projection of the outputs equal
    the reference's autograd in float32."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    ref_leaves = [t.detach().clone().requires_grad_() for t in inputs]
    got, want = fused_fn(*leaves), reference_fn(*ref_leaves)
    probes = [torch.randn_like(w) for w in want]
    torch.autograd.backward(list(got), probes)
    torch.autograd.backward(list(want), probes)
    for g, w in zip(leaves, ref_leaves):
        torch.testing.assert_close(g.grad, w.grad, rtol=1e-4, atol=atol)


def test_attention_gradcheck(fused, seed):
    gen = torch.Generator().manual_seed(seed)
    if torch.float64 not in fused.dtypes:
        inputs = attention_inputs(2, 3, 4, 5, 3, torch.float32, gen)
        for slope in (0.1, 0.0):
            assert_grads_match_reference(lambda *a: fused.attention(*a, slope),
                                         lambda *a: attention_reference(*a, slope), inputs, atol=1e-5)
        return
    feat, eh, weight, bias = (t.requires_grad_() for t in attention_inputs(2, 3, 4, 5, 3, torch.float64, gen))
    assert torch.autograd.gradcheck(lambda *a: fused.attention(*a, 0.1), (feat, eh, weight, bias))
    # at slope 0 (ReLU) too, away from the kink
    feat2 = (feat.detach() + torch.sign(feat.detach() + eh.detach()) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: fused.attention(*a, 0.0), (feat2, eh, weight, bias))


def test_convlstm_gradcheck(fused, seed):
    gen = torch.Generator().manual_seed(seed)
    if torch.float64 not in fused.dtypes:
        x, h, c, (w0, w1), (b0, b1) = convlstm_inputs(2, 3, 4, 3, 4, (1, 3), torch.float32, gen)
        assert_grads_match_reference(lambda x, h, c, w0, w1, b0, b1: fused.convlstm_step(x, h, c, [w0, w1], [b0, b1]),
                                     lambda x, h, c, w0, w1, b0, b1: convlstm_step_reference(x, h, c, [w0, w1], [b0, b1]),
                                     (x, h, c, w0, w1, b0, b1), atol=1e-5)
        return
    x, h, c, ws, bs = convlstm_inputs(2, 3, 4, 3, 4, (1, 3), torch.float64, gen)
    leaves = [t.requires_grad_() for t in (x, h, c, *ws, *bs)]

    def step(x, h, c, w0, w1, b0, b1):
        return fused.convlstm_step(x, h, c, [w0, w1], [b0, b1])
    assert torch.autograd.gradcheck(step, (leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], leaves[6]))


#: the torch.library namespace of each fused backend's ops
NAMESPACE = {"cpp": "jsla", "triton": "jsla_triton"}


def test_opcheck_attention(traceable, seed):
    op = getattr(torch.ops, NAMESPACE[traceable.name]).attention.default
    gen = torch.Generator().manual_seed(seed)
    for requires_grad in (False, True):
        args = [t.requires_grad_(requires_grad) for t in attention_inputs(2, 5, 4, 6, 3, torch.float32, gen)]
        torch.library.opcheck(op, (*args, 0.01))


def test_opcheck_convlstm(traceable, seed):
    op = getattr(torch.ops, NAMESPACE[traceable.name]).convlstm_step.default
    gen = torch.Generator().manual_seed(seed)
    for requires_grad in (False, True):
        x, h, c, ws, bs = convlstm_inputs(2, 3, 4, 3, 4, (1, 3), torch.float32, gen)
        for t in (x, h, c, *ws, *bs):
            t.requires_grad_(requires_grad)
        torch.library.opcheck(op, (x, h, c, ws, bs))


def test_fused_ops_under_torch_compile(traceable, seed):
    gen = torch.Generator().manual_seed(seed)
    feat, eh, weight, bias = attention_inputs(2, 6, 5, 5, 5, torch.float32, gen)
    compiled = torch.compile(lambda *a: traceable.attention(*a, 0.01), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(feat, eh, weight, bias), traceable.attention(feat, eh, weight, bias, 0.01))


@pytest.mark.gpu
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_triton_ops_trace_on_gpu(dynamic, seed):
    """On CUDA the Triton ops are real triton_ops: opcheck (schema, fake tensors, autograd
    registration) and torch.compile with fullgraph see through them, with static shapes and with
    dynamic ones (the launchers' grid arithmetic then runs on SymInts: two shapes, one graph)."""
    triton_backend = fused_backend("triton", "cuda")
    gen = torch.Generator().manual_seed(seed)
    args = [t.cuda() for t in attention_inputs(2, 5, 4, 6, 3, torch.float32, gen)]
    torch.library.opcheck(torch.ops.jsla_triton.attention.default, (*args, 0.01))
    x, h, c, ws, bs = convlstm_inputs(2, 3, 4, 3, 4, (1, 3), torch.float32, gen)
    x, h, c, ws, bs = x.cuda(), h.cuda(), c.cuda(), [w.cuda() for w in ws], [b.cuda() for b in bs]
    torch.library.opcheck(torch.ops.jsla_triton.convlstm_step.default, (x, h, c, ws, bs))
    torch._dynamo.reset()
    attention = torch.compile(lambda *a: triton_backend.attention(*a, 0.01), fullgraph=True, dynamic=dynamic)
    step = torch.compile(lambda x, h, c, ws, bs: triton_backend.convlstm_step(x, h, c, ws, bs), fullgraph=True,
                         dynamic=dynamic)
    for i, (B, C, H, W) in enumerate(((2, 24, 5, 6), (3, 40, 9, 7))):
        feat, eh, weight, bias = seeded_attention_inputs(seed + i, B, C, H, W, 5, device="cuda")
        attention_expected(feat, eh, weight, bias, 0.01).check(*attention(feat, eh, weight, bias),
                                                               what=f"compiled attention {B}x{C}x{H}x{W}")
        x, h, c, ws, bs = seeded_convlstm_inputs(seed + i, B, C, 24, (1, 3, 5, 7), (H, W), device="cuda")
        convlstm_expected(x, h, c, ws, bs, convlstm_arith("triton", torch.float32)).check(
            *step(x, h, c, ws, bs), what=f"compiled convlstm_step {B}x{C}x{H}x{W}")


def test_localizer_hands_the_fused_ops_contiguous_weights(monkeypatch, seed):
    """The Localizer converts the model to channels-last; the fused ops' weights (the ConvLSTM's
    W_b, the attention's folded W) keep the contiguous layout the kernels read, so that no step
    copies them (the CUDA and Triton ConvLSTM would, at every step): they reach the op as the
    module's own tensors, untouched."""
    from helpers.models import randomise_batchnorm
    from jsla_fast import JSLA, ModelConfig
    from jsla_fast.runtime import Localizer

    torch.manual_seed(seed)
    model = JSLA(ModelConfig(task="pose")).eval()
    randomise_batchnorm(model, torch.Generator().manual_seed(seed))
    loc = Localizer(model, "cpu", backend="cpp", check=False)
    assert loc.channels_last and any(not m.weight.is_contiguous() for m in loc.model.modules()
                                     if isinstance(m, torch.nn.Conv2d)), "the backbone should be channels-last"
    calls = record_op_calls(monkeypatch)
    loc(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(seed)))
    feat, eh, weight, bias, slope = calls["attention"]
    x, h, c, weights, biases = calls["convlstm_step"]
    assert weight.is_contiguous() and all(w.is_contiguous() for w in weights), [w.stride() for w in weights]
    assert all(w is conv.weight for w, conv in zip(weights, loc.model.convlstm.convs))
    # and a model converted by hand, in training, keeps them too
    model = JSLA(ModelConfig(task="pose")).train().to(memory_format=torch.channels_last)
    assert all(conv.weight.is_contiguous() for conv in model.convlstm.convs)


# -- errors: clear messages, never a crash ---------------------------------------------------------
def test_bad_inputs_give_clear_errors(fused, seed):
    gen = torch.Generator().manual_seed(seed)
    feat, eh, weight, bias = attention_inputs(1, 4, 5, 5, 3, torch.float32, gen)
    name = fused.name
    with pytest.raises(TypeError, match="dtype torch.int64"):
        ops.attention(feat.long(), eh.long(), weight.long(), bias.long(), 0.01, backend=name)
    if torch.float16 not in fused.dtypes:
        with pytest.raises(TypeError, match="float16"):
            ops.attention(feat.half(), eh.half(), weight.half(), bias.half(), 0.01, backend=name)
    with pytest.raises(TypeError, match="eh has dtype torch.float64"):
        ops.attention(feat, eh.double(), weight, bias, 0.01, backend=name)
    with pytest.raises(ValueError, match="4-d"):
        ops.attention(feat[0], eh[0], weight, bias, 0.01, backend=name)
    with pytest.raises(ValueError, match="resize Eh"):
        ops.attention(feat, eh[..., :4], weight, bias, 0.01, backend=name)
    with pytest.raises(ValueError, match="k odd"):
        ops.attention(feat, eh, torch.zeros(1, 4, 4, 4), bias, 0.01, backend=name)
    with pytest.raises(ValueError, match=r"\[1,4,k,k\]"):
        ops.attention(feat, eh, torch.zeros(1, 3, 3, 3), bias, 0.01, backend=name)
    with pytest.raises(BackendUnavailable, match="not meta"):
        ops.attention(feat.to("meta"), eh.to("meta"), weight.to("meta"), bias.to("meta"), 0.01, backend=name)
    x, h, c, ws, bs = convlstm_inputs(1, 3, 4, 3, 3, (1, 3), torch.float32, gen)
    with pytest.raises(ValueError, match="differ in batch or grid"):
        ops.convlstm_step(x[..., :2], h, c, ws, bs, backend=name)
    with pytest.raises(ValueError, match=r"weights\[1\] must be \[8,7,k,k\]"):
        ops.convlstm_step(x, h, c, [ws[0], ws[1][:, :5]], bs, backend=name)
    with pytest.raises(ValueError, match="one of each per branch"):
        ops.convlstm_step(x, h, c, ws, bs[:1], backend=name)
    with pytest.raises(ValueError, match="do not split"):
        ops.convlstm_step(x, h, c, ws * 3, bs * 3, backend=name)


def test_cpp_op_checks_its_inputs_when_called_directly():
    assert why_unavailable("cpp") is None, why_unavailable("cpp")
    feat = torch.randn(1, 4, 5, 5)
    with pytest.raises(RuntimeError, match="eh has shape"):
        torch.ops.jsla.attention(feat, feat[..., :3], torch.zeros(1, 4, 3, 3), torch.zeros(1), 0.0)
    with pytest.raises(RuntimeError, match="feat has dtype Half; the CPU implementation supports float32, float64 and bfloat16"):
        torch.ops.jsla.attention(feat.half(), feat.half(), torch.zeros(1, 4, 3, 3).half(), torch.zeros(1).half(), 0.0)
    x, h = torch.randn(1, 3, 4, 4), torch.randn(1, 4, 4, 4)
    with pytest.raises(RuntimeError, match=r"weights\[0\] must be"):
        torch.ops.jsla.convlstm_step(x, h, h, [torch.zeros(16, 6, 3, 3)], [torch.zeros(16)])
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.jsla.convlstm_step(x, h, h.double(), [torch.zeros(16, 7, 3, 3)], [torch.zeros(16)])


def test_the_same_bad_input_raises_the_same_error_on_every_backend(seed):
    """The shared checks run before any backend's kernel, the reference's included."""
    gen = torch.Generator().manual_seed(seed)
    feat, eh, weight, bias = attention_inputs(2, 3, 5, 5, 3, torch.float32, gen)
    x, h, c, ws, bs = convlstm_inputs(2, 3, 4, 5, 5, (1, 3), torch.float32, gen)
    bad = {
        "rank": lambda b: ops.attention(feat[0], eh[0], weight, bias, 0.01, backend=b),
        "grid": lambda b: ops.attention(feat, eh[..., :4], weight, bias, 0.01, backend=b),
        "even k": lambda b: ops.attention(feat, eh, torch.zeros(1, 3, 4, 4), bias, 0.01, backend=b),
        "mixed dtype": lambda b: ops.attention(feat, eh.double(), weight, bias, 0.01, backend=b),
        "slope": lambda b: ops.attention(feat, eh, weight, bias, torch.tensor(0.01), backend=b),
        "batch": lambda b: ops.convlstm_step(x[:1], h, c, ws, bs, backend=b),
        "branches": lambda b: ops.convlstm_step(x, h, c, ws[:1], bs, backend=b),
        "int64": lambda b: ops.convlstm_step(x.long(), h.long(), c.long(), [w.long() for w in ws],
                                             [v.long() for v in bs], backend=b),
    }
    for case, call in bad.items():
        errors = {}
        for name in ["reference", *FUSED]:
            with pytest.raises((TypeError, ValueError)) as info:
                call(name)
            text = str(info.value)
            # the dtype message names the backend's own dtype list after the ';'
            errors[name] = (type(info.value), text.split(";")[0] if case == "int64" else text)
        assert len(set(errors.values())) == 1, (case, errors)


def test_cpp_max_pool_equals_torch(seed):
    """torch.ops.jsla.max_pool2d (the onednn backbone executor's pools) gives F.max_pool2d's values
    exactly, NaNs included, for any input layout, and rejects what it does not do."""
    assert why_unavailable("cpp") is None, why_unavailable("cpp")
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = [((1, 64, 112, 112), 3, 2, 0), ((1, 192, 28, 28), 3, 1, 1), ((1, 832, 14, 14), 2, 2, 0)]
    cases += [((rng.randint(1, 3), rng.randint(1, 40), rng.randint(1, 12), rng.randint(1, 12)), k, rng.randint(1, 3),
               rng.randint(0, k // 2)) for k in (1, 2, 3, 4, 5) for _ in range(3)]
    cases += [((1, 832, 1, 1), 2, 2, 0), ((2, 5, 2, 3), 3, 2, 0)]  # tiny inputs: windows hang over the end
    for shape, k, stride, pad in cases:
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            x = torch.randn(shape, generator=gen).to(dtype)
            x.view(-1)[:: rng.randint(5, 50)] = float("nan")
            for ceil in (True, False):
                try:
                    want = F.max_pool2d(x, k, stride, pad, ceil_mode=ceil)
                except RuntimeError:  # an output smaller than 1x1: both refuse
                    with pytest.raises(RuntimeError, match="is too small for kernel"):
                        torch.ops.jsla.max_pool2d(x, [k, k], [stride, stride], [pad, pad], ceil)
                    continue
                for layout in LAYOUTS:
                    got = torch.ops.jsla.max_pool2d(laid_out(x, layout), [k, k], [stride, stride], [pad, pad], ceil)
                    assert got.is_contiguous(memory_format=torch.channels_last)
                    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(RuntimeError, match="padding at most half the kernel"):
        torch.ops.jsla.max_pool2d(x, [3, 3], [1, 1], [2, 2], True)
    with pytest.raises(RuntimeError, match="x has dtype Half; the CPU implementation supports float32"):
        torch.ops.jsla.max_pool2d(x.half(), [3, 3], [1, 1], [1, 1], True)
    with pytest.raises(RuntimeError, match=r"input \[1, 3, 2, 2\] is too small for kernel \[5, 5\]"):
        torch.ops.jsla.max_pool2d(torch.randn(1, 3, 2, 2), [5, 5], [1, 1], [1, 1], False)
