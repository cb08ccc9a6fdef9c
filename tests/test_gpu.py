"""GPU checks of every CUDA-capable backend (`cuda`: csrc/cuda through torch.ops.jsla; `triton`) at
the model's real shapes, and of the CUDA-graph runtime. All marked `gpu`: skipped without CUDA,
run with `pytest -m gpu` on a GPU machine. On such a machine every backend of AUTO_ORDER["cuda"]
must be available: a missing one fails (the install builds the CUDA kernels when torch has CUDA).

Tolerances, as max |got - ref| / max |ref| against the float64 reference of the same rounded
inputs (each output separately):
  attention  fp32 1e-5 (fp32 FMA, no tensor cores), fp16 2e-3, bf16 1.6e-2 (the output's rounding:
             half an ulp is 2^-11 / 2^-8 of the value, plus the fp32 softmax);
  convlstm   fp32: `cuda` 2e-3 (TF32 tensor cores, like cuDNN's default for PyTorch convolutions),
             `triton` 1e-4 (ieee fp32 dot); fp16 5e-3, bf16 3e-2 (16-bit operands over K ~ 11k
             products, fp32 accumulation, output rounding).
Outputs are poisoned: the caching allocator's block the op will get is filled with NaN first, so an
element the kernel never writes shows up as NaN.
"""
from __future__ import annotations

import copy

import pytest
import torch

from helpers.models import force_layer, make_diverse_selector, randomise_batchnorm
from jsla_fast.config import layer_shapes
from jsla_fast.ops import AUTO_ORDER, BACKENDS, available, why_unavailable
from jsla_fast.ops import attention_reference, convlstm_step_reference

pytestmark = pytest.mark.gpu

GPU_BACKENDS = [n for n in AUTO_ORDER["cuda"] if n != "reference"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ATTENTION_SHAPES = list(layer_shapes(224).values())
ATTENTION_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
CONVLSTM_TOL = {("cuda", torch.float32): 2e-3, ("triton", torch.float32): 1e-4,
                torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.fixture(params=GPU_BACKENDS)
def gpu_backend(request):
    reason = why_unavailable(request.param, "cuda")
    assert reason is None, reason  # on a GPU machine every GPU backend must be built
    return BACKENDS[request.param]


def poison_allocator(*shapes, dtype) -> None:
    """Fill with NaN the blocks the next allocations of these shapes will reuse."""
    blocks = [torch.full(s, float("nan"), device="cuda", dtype=dtype) for s in shapes]
    del blocks  # freed to the caching allocator, contents kept


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(got).any(), "NaN in the output: an element was not written"
    return ((got.double() - ref).abs().max() / ref.abs().max()).item()


def rand(gen, *shape, dtype, scale=1.0, layout="contiguous"):
    t = (torch.randn(*shape, generator=gen) * scale).to("cuda", dtype)
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" and t.dim() == 4 else t


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", [1, 40])
def test_attention_real_shapes(gpu_backend, B, dtype, layout, seed):
    gen = torch.Generator().manual_seed(seed)
    for C, H, W in ATTENTION_SHAPES:
        feat, eh = rand(gen, B, C, H, W, dtype=dtype, layout=layout), rand(gen, B, C, H, W, dtype=dtype, layout=layout)
        weight, bias = rand(gen, 1, C, 5, 5, dtype=dtype, scale=0.05), rand(gen, 1, dtype=dtype)
        ref_o, ref_a = attention_reference(feat.double(), eh.double(), weight.double(), bias.double(), 0.01)
        poison_allocator((B, C, H, W), (B, 1, H, W), dtype=dtype)
        out, alpha = gpu_backend.attention(feat, eh, weight, bias, 0.01)
        torch.cuda.synchronize()
        assert out.dtype == dtype and alpha.shape == (B, 1, H, W)
        for name, got, ref in (("out", out, ref_o), ("alpha", alpha, ref_a)):
            err = rel_err(got, ref)
            assert err <= ATTENTION_TOL[dtype], f"{gpu_backend.name} {name} {C}x{H}x{W} B={B}: {err:.2e}"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", [1, 40])
def test_convlstm_real_shapes(gpu_backend, B, dtype, layout, seed):
    gen = torch.Generator().manual_seed(seed)
    D, hid, G, kernels = 128, 96, 14, (1, 3, 5, 7)
    x = rand(gen, B, D, G, G, dtype=dtype, layout=layout)
    h, c = rand(gen, B, hid, G, G, dtype=dtype, layout=layout), rand(gen, B, hid, G, G, dtype=dtype, layout=layout)
    ws = [rand(gen, 4 * 24, D + hid, k, k, dtype=dtype, scale=(D + hid) ** -0.5 / k) for k in kernels]
    bs = [rand(gen, 4 * 24, dtype=dtype, scale=0.1) for _ in kernels]
    ref_h, ref_c = convlstm_step_reference(x.double(), h.double(), c.double(), [w.double() for w in ws],
                                           [b.double() for b in bs])
    poison_allocator((B, hid, G, G), (B, hid, G, G), dtype=dtype)
    h1, c1 = gpu_backend.convlstm_step(x, h, c, ws, bs)
    torch.cuda.synchronize()
    tol = CONVLSTM_TOL.get((gpu_backend.name, dtype), CONVLSTM_TOL.get(dtype))
    for name, got, ref in (("h", h1, ref_h), ("c", c1, ref_c)):
        err = rel_err(got, ref)
        assert err <= tol, f"{gpu_backend.name} {name} B={B}: {err:.2e} > {tol}"


def test_gradients_match_reference(gpu_backend, seed):
    """Training on GPU: the fused ops' gradients (their registered backward) equal the reference's."""
    gen = torch.Generator().manual_seed(seed)
    feat, eh = rand(gen, 2, 512, 14, 14, dtype=torch.float32), rand(gen, 2, 512, 14, 14, dtype=torch.float32)
    weight, bias = rand(gen, 1, 512, 5, 5, dtype=torch.float32, scale=0.05), rand(gen, 1, dtype=torch.float32)
    x, h, c = (rand(gen, 2, n, 14, 14, dtype=torch.float32) for n in (128, 96, 96))
    ws = [rand(gen, 96, 224, k, k, dtype=torch.float32, scale=224 ** -0.5 / k) for k in (1, 3, 5, 7)]
    bs = [rand(gen, 96, dtype=torch.float32, scale=0.1) for _ in range(4)]
    inputs = [feat, eh, weight, bias, x, h, c, *ws, *bs]

    def loss(att, step, tensors):
        f, e, w, b, xx, hh, cc, *rest = tensors
        o, a = att(f, e, w, b, 0.01)
        h1, c1 = step(xx, hh, cc, rest[:4], rest[4:])
        r = torch.Generator().manual_seed(seed + 1)
        return sum((t.double() * torch.randn(t.shape, generator=r).to(t.device, torch.double)).sum()
                   for t in (o, a, h1, c1))

    def grads(att, step, precision):
        leaves = [t.detach().to(precision).requires_grad_() for t in inputs]
        loss(att, step, leaves).backward()
        return [leaf.grad for leaf in leaves]

    want = grads(attention_reference, convlstm_step_reference, torch.float64)
    got = grads(gpu_backend.attention, gpu_backend.convlstm_step, torch.float32)
    tol = 2e-3 if gpu_backend.name == "cuda" else 1e-4  # the backward is the reference's; TF32 forward for cuda
    for i, (g, w) in enumerate(zip(got, want)):
        assert rel_err(g, w) <= tol, f"gradient {i}: {rel_err(g, w):.2e}"


def test_cuda_kernel_launch_budget(seed):
    """docs/DESIGN.md, "The fused ops": the fused attention is at most 2 kernels; the ConvLSTM step at most 2 (+ a memset)."""
    from torch.profiler import ProfilerActivity, profile

    assert why_unavailable("cuda", "cuda") is None, why_unavailable("cuda", "cuda")
    gen = torch.Generator().manual_seed(seed)
    feat, eh = rand(gen, 1, 480, 28, 28, dtype=torch.float16), rand(gen, 1, 480, 28, 28, dtype=torch.float16)
    weight, bias = rand(gen, 1, 480, 5, 5, dtype=torch.float16), rand(gen, 1, dtype=torch.float16)
    x, h, c = (rand(gen, 1, n, 14, 14, dtype=torch.float16) for n in (128, 96, 96))
    ws = [rand(gen, 96, 224, k, k, dtype=torch.float16, scale=0.01) for k in (1, 3, 5, 7)]
    bs = [rand(gen, 96, dtype=torch.float16) for _ in range(4)]
    cuda = BACKENDS["cuda"]
    for call, budget in ((lambda: cuda.attention(feat, eh, weight, bias, 0.01), 2),
                         (lambda: cuda.convlstm_step(x, h, c, ws, bs), 2)):
        call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
        kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                   and "memset" not in e.name.lower()]
        assert 1 <= len(kernels) <= budget, kernels


# -- the CUDA-graph runtime -------------------------------------------------------------------------
def _model(seed):
    from jsla_fast import JSLA, JSLAConfig

    torch.manual_seed(seed)
    model = JSLA(JSLAConfig(task="pose")).eval()
    randomise_batchnorm(model, torch.Generator().manual_seed(seed))  # as after training
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("backend", ["reference", *GPU_BACKENDS])
def test_cuda_graph_equals_eager_for_every_layer_choice(backend, dtype, seed):
    """The replayed graph equals the eager runtime (same backend, dtype, folding) for each possible
    layer choice (B=1), and for a batch of 40 whose samples choose differently; replaying a new
    frame gives that frame's own result (the input is copied in, the outputs copied out)."""
    from jsla_fast.runtime import Localizer

    assert backend in available("cuda", dtype), why_unavailable(backend, "cuda")
    base = _model(seed)
    gen = torch.Generator().manual_seed(seed)
    mixed = torch.randn(40, 3, 224, 224, generator=gen)
    tol = 1e-5 if dtype == torch.float32 else 1e-3
    for layer in [*range(len(base.branches)), None]:
        model = copy.deepcopy(base)
        if layer is not None:
            force_layer(model, layer)
        else:
            make_diverse_selector(model, mixed, seed)
        eager = Localizer(copy.deepcopy(model), "cuda", backend=backend, dtype=dtype, cuda_graph=False)
        graphed = Localizer(model, "cuda", backend=backend, dtype=dtype, cuda_graph=True)
        frames = [torch.randn(1, 3, 224, 224, generator=gen) for _ in range(2)] if layer is not None else \
            [mixed, torch.randn(40, 3, 224, 224, generator=gen)]
        for i, images in enumerate(frames):  # the first call captures, the second replays on a new frame
            want, got = eager(images.cuda()), graphed(images.cuda())
            if layer is not None:
                assert set(want.layers.flatten().tolist()) == {layer}
            elif i == 0:
                assert len(set(want.layers[:, 0].tolist())) > 1, "the batch should choose different layers"
            assert got.layers.tolist() == want.layers.tolist()
            torch.testing.assert_close(got.pose.float(), want.pose.float(), rtol=0, atol=tol)
            for a, b in zip(got.attention, want.attention, strict=True):
                torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=tol)
        assert len(graphed.graphs) == 1
