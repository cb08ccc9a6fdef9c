"""GPU checks of every CUDA-capable backend (`cuda`: csrc/cuda through torch.ops.jsla; `triton`) at
the model's real shapes, and of the CUDA-graph runtime. All marked `gpu`: skipped without CUDA,
run with `pytest -m gpu` on a GPU machine. On such a machine every backend of AUTO_ORDER["cuda"]
must be available: a missing one fails (the install builds the CUDA kernels when torch has CUDA),
except a missing `triton` package, which skips its tests with the reason (helpers/backends.py).

Every op output is compared element by element with the float64 specification from the same
rounded inputs, within the bound tests/helpers/compare.py derives for that element (dtype,
reduction length, conditioning; the `cuda` ConvLSTM's fp32 path is TF32), and each comparison
must reject perturbed copies of the output (its mutations) at these very shapes. The ops run
inside ``poisoned_allocations``: every buffer they allocate (outputs, workspaces) starts as NaN,
so an element a kernel never writes fails the comparison.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch

from helpers.backends import fused_backend
from helpers.compare import (ATTENTION_MUTATIONS, CONVLSTM_MUTATIONS, TF32_PRODUCT, Arith, assert_close,
                             assert_mutations_fail, attention_expected, convlstm_arith, convlstm_expected, rms,
                             unit_roundoff)
from helpers.models import force_layer, make_diverse_selector, randomise_batchnorm
from helpers.ops import ATTENTION_SHAPES, poisoned_allocations, record_op_calls, seeded_attention_inputs, \
    seeded_convlstm_inputs
from jsla_fast.ops import AUTO_ORDER, attention_reference, available, convlstm_step_reference, why_unavailable

pytestmark = pytest.mark.gpu

GPU_BACKENDS = [n for n in AUTO_ORDER["cuda"] if n != "reference"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
KERNELS = (1, 3, 5, 7)  # the model's ConvLSTM: D=128, hid=96 (n=24 per branch), 14x14


@pytest.fixture(params=GPU_BACKENDS)
def gpu_backend(request):
    return fused_backend(request.param, "cuda")


def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t.contiguous()


@contextmanager
def cudnn_tf32(enabled: bool):
    """cuDNN convolutions with (the PyTorch default) or without TF32, restored on leaving."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", [1, 40])
def test_attention_real_shapes(gpu_backend, B, dtype, layout, seed):
    for C, H, W in ATTENTION_SHAPES:
        feat, eh, weight, bias = seeded_attention_inputs(seed, B, C, H, W, 5, dtype=dtype, device="cuda")
        feat, eh = laid_out(feat, layout), laid_out(eh, layout)
        expected = attention_expected(feat, eh, weight, bias, 0.01)
        with poisoned_allocations("cuda"):
            out, alpha = gpu_backend.attention(feat, eh, weight, bias, 0.01)
            torch.cuda.synchronize()
        assert out.dtype == alpha.dtype == dtype and out.shape == feat.shape and alpha.shape == (B, 1, H, W)
        what = f"{gpu_backend.name} {C}x{H}x{W} B={B} {layout}"
        expected.check(out, alpha, what=what)
        assert_mutations_fail(expected, (out, alpha), ATTENTION_MUTATIONS)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", [1, 40])
def test_convlstm_real_shapes(gpu_backend, B, dtype, layout, seed):
    x, h, c, ws, bs = seeded_convlstm_inputs(seed, B, 128, 24, KERNELS, (14, 14), dtype=dtype, device="cuda")
    x, h, c = (laid_out(t, layout) for t in (x, h, c))
    expected = convlstm_expected(x, h, c, ws, bs, convlstm_arith(gpu_backend.name, dtype))
    with poisoned_allocations("cuda"):
        h1, c1 = gpu_backend.convlstm_step(x, h, c, ws, bs)
        torch.cuda.synchronize()
    assert h1.dtype == c1.dtype == dtype and h1.shape == c1.shape == h.shape
    expected.check(h1, c1, what=f"{gpu_backend.name} B={B} {layout}")
    assert_mutations_fail(expected, (h1, c1), CONVLSTM_MUTATIONS)


# -- training: the registered backward --------------------------------------------------------
GRADIENT_NAMES = ["F", "Eh", "W_att", "b_att", "x", "h", "c", *(f"W_{k}" for k in KERNELS),
                  *(f"b_{k}" for k in KERNELS)]


def gradient_budget(backend: str, tf32: bool, attention: tuple, convlstm: tuple) -> float:
    """The gradients' error relative to their typical magnitude: the forward outputs the backward
    reads (alpha, c'), at their own bounds' typical size relative to the values (rms(bound) /
    rms(want)), plus two stages of convolutions in jsla_fast/ops/backward.py on any path to a
    gradient (the gates recomputed, whose error reaches the gradients through sigma' and tanh',
    slopes <= 1; then one conv2d_input or conv2d_weight), over reductions of at most n = 224 * 49
    terms, each a dot error (helpers/compare.py) relative to the terms' root-sum-square, which is
    the typical size of a sum of random-sign terms: with TF32 (10-bit operands, tensor cores) or
    in fp32."""
    fwd = [attention_expected(*attention, 0.01), convlstm_expected(*convlstm, convlstm_arith(backend, torch.float32))]
    forward = max(rms(r * w.abs() + a) / rms(w) for e in fwd for w, r, a in zip(e.want, e.rtol, e.atol))
    stage = Arith(torch.float32, TF32_PRODUCT if tf32 else unit_roundoff(torch.float32), tensor_cores=tf32)
    return forward + 2 * stage.dot_error(1.0, 224 * 49)


@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
def test_gradients_match_reference(gpu_backend, tf32, seed):
    """Training on GPU: the fused ops' gradients (their registered backward, shared by every
    backend: jsla_fast/ops/backward.py) equal the float64 reference's autograd. The backward's
    convolutions are PyTorch's, so like any convolution's backward they follow
    torch.backends.cudnn.allow_tf32 (True by default): both settings, each within its own bound
    (gradient_budget); every element within budget * (|want| + rms(want))."""
    feat, eh, weight, bias = seeded_attention_inputs(seed, 2, 512, 14, 14, 5, device="cuda")
    x, h, c, ws, bs = seeded_convlstm_inputs(seed + 1, 2, 128, 24, KERNELS, (14, 14), device="cuda")
    inputs = [feat, eh, weight, bias, x, h, c, *ws, *bs]
    g = torch.Generator("cuda").manual_seed(seed + 2)
    probes = [torch.randn(s, generator=g, device="cuda", dtype=torch.float64)
              for s in (feat.shape, (2, 1, 14, 14), h.shape, h.shape)]

    def grads(att, step, dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in inputs]
        f, e, w, b, xx, hh, cc, *rest = leaves
        outs = (*att(f, e, w, b, 0.01), *step(xx, hh, cc, rest[:4], rest[4:]))
        torch.autograd.backward(list(outs), [p.to(dtype) for p in probes])
        return [leaf.grad for leaf in leaves]

    want = grads(attention_reference, convlstm_step_reference, torch.float64)
    with cudnn_tf32(tf32):
        got = grads(gpu_backend.attention, gpu_backend.convlstm_step, torch.float32)
    budget = gradient_budget(gpu_backend.name, tf32, (feat, eh, weight, bias), (x, h, c, ws, bs))
    assert budget < 0.1, budget  # the mutations below (20 %) must stay detectable
    for name, gv, wv in zip(GRADIENT_NAMES, got, want):
        if name == "b_att":
            continue  # zero in exact arithmetic: below
        assert_close(gv, wv, rtol=budget, atol=budget * rms(wv), what=f"gradient of {name}")
        row = int(torch.unravel_index(wv.abs().argmax(), wv.shape)[0])
        bad = gv.clone()
        bad[row] *= 1.2  # the row of the largest element, 20 % off: must fail
        with pytest.raises(AssertionError):
            assert_close(bad, wv, rtol=budget, atol=budget * rms(wv))
    # A softmax does not move when every logit moves by the same amount, so the attention bias's
    # gradient is sum_p dL_p = 0: what the fused backward returns is the rounding of that sum, at
    # most the budget of the terms it adds (their absolute sum, in float64 here).
    f, e, w, b = (t.detach().double() for t in (feat, eh, weight, bias))
    logits = torch.nn.functional.conv2d(torch.nn.functional.leaky_relu(f + e, 0.01), w, b, padding=2)
    logits.requires_grad_()
    alpha = torch.softmax(logits.flatten(1), dim=1).view_as(logits)
    torch.autograd.backward([f * alpha, alpha], probes[:2])
    assert abs(float(want[3])) < 1e-9 * float(logits.grad.abs().sum())
    assert abs(float(got[3])) <= budget * float(logits.grad.abs().sum()), (float(got[3]), budget)


# -- launches on the Localizer's own tensors ---------------------------------------------------------
def _model(seed):
    from jsla_fast import JSLA, ModelConfig

    torch.manual_seed(seed)
    model = JSLA(ModelConfig(task="pose")).eval()
    randomise_batchnorm(model, torch.Generator().manual_seed(seed))  # as after training
    return model


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_launch_budget_on_the_localizers_layout(backend, monkeypatch, seed):
    """docs/DESIGN.md, "The fused ops": the fused attention is at most 2 kernels, the ConvLSTM step
    at most 2 (memsets aside), on the very tensors a Localizer hands the ops (fp16, model converted
    to channels-last): the weights already in the layout the kernels read, so no step copies one."""
    from torch.profiler import ProfilerActivity, profile

    from jsla_fast.runtime import Localizer

    fused = fused_backend(backend, "cuda")
    loc = Localizer(_model(seed), "cuda", backend=backend, dtype=torch.float16, cuda_graph=False, check=False)
    assert any(not m.weight.is_contiguous() for m in loc.model.modules() if isinstance(m, torch.nn.Conv2d)), \
        "the Localizer no longer converts the model to channels-last: this test would prove nothing"
    calls = record_op_calls(monkeypatch)
    loc(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(seed)))
    torch.cuda.synchronize()
    assert set(calls) == {"attention", "convlstm_step"}, calls.keys()
    weights = [calls["attention"][2], *calls["convlstm_step"][3]]
    assert all(w.is_contiguous() for w in weights), [w.stride() for w in weights]
    for name, budget in (("attention", 2), ("convlstm_step", 2)):
        args = calls[name]
        with torch.inference_mode():
            getattr(fused, name)(*args)  # compile / plan outside the profile
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                getattr(fused, name)(*args)
                torch.cuda.synchronize()
        kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                   and "memset" not in e.name.lower()]
        assert 1 <= len(kernels) <= budget, (name, kernels)


# -- the CUDA-graph runtime -------------------------------------------------------------------------
#: Eager and graphed runs differ only in summation orders (a mixed eager batch runs each layer's
#: samples as a sub-batch, which changes the fused kernels' splits and may change cuDNN's algorithm;
#: the test turns TF32 off, whose 10-bit products would differ by ~1e-3 between two algorithms):
#: fp32 ~ u sqrt(n) ~ 1e-5 relative per op for n up to 25600, compounded over three steps and the
#: head: 1e-4; fp16 rounds every layer's output to 11 bits, so an order change flips the last bit
#: (2^-10 relative) of some elements, and a few such flips can meet in one output: 10 ulps, 1e-2.
#: Relative to each element and to the output's typical size (rms). A layer choice whose top two
#: scores are closer than this (relative to the top score) may flip between the two runs: those
#: samples are left out.
GRAPH_TOL = {torch.float32: 1e-4, torch.float16: 1e-2}


def decisive(out, tol: float) -> torch.Tensor:
    """Per sample: every step's layer choice is clear of the two runs' differences."""
    keep = torch.ones(out.layers.shape[0], dtype=torch.bool, device=out.layers.device)
    for scores in out.selection_logits:
        top = scores.float().topk(2, dim=1).values
        keep &= (top[:, 0] - top[:, 1]) > tol * (top[:, 0].abs() + 1)
    return keep


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("backend", ["reference", *GPU_BACKENDS])
def test_cuda_graph_equals_eager_for_every_layer_choice(backend, dtype, seed):
    """The replayed graph equals the eager runtime (same backend, dtype, folding) for each possible
    layer choice (B=1), and for a batch of 40 whose samples choose differently; replaying a new
    frame gives that frame's own result (the input is copied in, the outputs copied out). The
    graphs: one per input shape seen, the start-up check's frame included, none captured twice."""
    if backend != "reference":
        fused_backend(backend, "cuda")
    assert backend in available("cuda", dtype), why_unavailable(backend, "cuda")
    with cudnn_tf32(False):
        _check_graphs(backend, dtype, seed)


def _check_graphs(backend, dtype, seed):
    from jsla_fast.runtime import Localizer

    base = _model(seed)
    gen = torch.Generator().manual_seed(seed)
    mixed = torch.randn(40, 3, 224, 224, generator=gen)
    tol = GRAPH_TOL[dtype]
    for layer in [*range(len(base.branches)), None]:
        model = copy.deepcopy(base)
        if layer is not None:
            force_layer(model, layer)
        else:
            make_diverse_selector(model, mixed, seed)
        eager = Localizer(copy.deepcopy(model), "cuda", backend=backend, dtype=dtype, cuda_graph=False)
        graphed = Localizer(model, "cuda", backend=backend, dtype=dtype, cuda_graph=True)
        assert not eager.graphs
        startup = dict(graphed.graphs)
        assert len(startup) == 1, list(startup)  # the start-up check ran one frame, through a graph
        frames = [torch.randn(1, 3, 224, 224, generator=gen) for _ in range(2)] if layer is not None else \
            [mixed, torch.randn(40, 3, 224, 224, generator=gen)]
        for i, images in enumerate(frames):  # the first call captures, the second replays on a new frame
            want, got = eager(images.cuda()), graphed(images.cuda())
            keep = decisive(want, tol)
            if layer is not None:
                assert set(want.layers.flatten().tolist()) == {layer} and bool(keep.all())
            else:
                assert int((~keep).sum()) <= len(keep) // 4, f"{int((~keep).sum())} near-ties of {len(keep)}"
                if i == 0:
                    assert len(set(want.layers[keep, 0].tolist())) > 1, "the batch should choose different layers"
            what = f"{backend} {dtype} layer {layer} frame {i}"
            assert got.layers[keep].tolist() == want.layers[keep].tolist(), what
            assert_close(got.pose[keep], want.pose[keep], rtol=tol, atol=tol * rms(want.pose[keep]), what=what)
            for a, b in zip(got.attention, want.attention, strict=True):
                assert_close(a[keep], b[keep], rtol=tol, atol=tol * rms(b[keep]), what=f"{what} attention")
        assert set(graphed.graphs) == set(startup) | {tuple(f.shape) for f in frames}, list(graphed.graphs)
        assert all(graphed.graphs[shape] is graph for shape, graph in startup.items())
