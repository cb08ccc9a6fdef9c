"""The one comparison of a kernel's output with its specification, shared by the op, Triton and
GPU tests: every element against the float64 specification computed from the same (rounded)
inputs, within a bound derived for that element; NaN or inf never passes; a failure names the
worst element. Each op's bound comes with perturbed outputs that it must reject (the mutations),
so a comparison that could pass a wrong kernel shows up as a failing mutation test.

    assert_close(got, want, rtol, atol)     |got_i - want_i| <= rtol_i |want_i| + atol_i
    attention_expected(...)                 the float64 (O, alpha) and their bounds
    convlstm_expected(..., arith)           the float64 (h', c') and their bounds
    assert_mutations_fail(expected, outputs, MUTATIONS)

Error model (u: unit roundoff, 2^-24 fp32, 2^-11 fp16, 2^-8 bf16, 2^-53 fp64):
- Output rounding: one ulp of the stored type (2u relative). A GPU rounds to nearest (half an
  ulp); Triton's interpreter truncates some conversions (bf16: up to one ulp). Below the normal
  range the floor is fp16's subnormal spacing 2^-24 (kept by the conversion), and fp32/bf16's
  smallest normal 2^-126 (results there may be flushed to zero, e.g. by ex2.approx.ftz).
- Dot products accumulated in fp32 (fp64 for fp64 inputs) in whatever order the kernel takes:
  the attention logits sum n = C k^2 terms (up to 1024 * 25 = 25600), the ConvLSTM gates
  n = (D + hid) k^2 (up to 224 * 49 = 10976). The tests' weights are zero-mean random, so the
  terms t_i = w_i a_i have random signs; S2 = sqrt(sum t_i^2) is computed per output element
  in float64 (a convolution of the squares).
  * Round-to-nearest additions, any order: |error| <= LAMBDA u sqrt(sum_j s_j^2) over the
    partial sums s_j (Higham & Mary 2019, mean-independent rounding errors: probability
    >= 1 - 2 exp(-LAMBDA^2 / 2)); each partial sum is a sum of random-sign terms, so
    |s_j| <= LAMBDA S2 (Hoeffding, the same probability), hence |error| <= LAMBDA^2 sqrt(n) u S2.
  * Tensor cores (tl.dot on 16-bit or TF32 operands, wmma) may truncate when they accumulate
    (Fasi et al. 2021): a bias, so no sqrt(n). At most 2u |s_j| per MMA step and n/8 steps
    (k = 8 for TF32, 16 for 16-bit): |error| <= LAMBDA n u S2 / 4.
  * Operands rounded before the product (TF32: both to 10 mantissa bits, by rounding or, in the
    tensor cores themselves, truncation: below 2^-10 each, 2^-9 per product), independent per
    product: |error| <= LAMBDA * 2^-9 * S2 (Hoeffding). 16-bit operands multiply exactly in fp32
    (no term); fp32 operands formed by an fp32 add first (the attention's F + Eh, its
    LeakyReLU) carry 2u.
  LAMBDA = 8: each bound fails with probability below 2 (n + 1) e^-32 < 1e-9 per element.
- What the ops do with the dot products is in attention_expected and convlstm_expected.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LAMBDA = 8.0
_UNIT_ROUNDOFF = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11,
                  torch.bfloat16: 2.0 ** -8}
#: relative error of one product of two fp32 operands cut to TF32 (10 explicit mantissa bits each,
#: rounded or truncated: < 2^-10 each)
TF32_PRODUCT = 2.0 ** -9


def unit_roundoff(dtype: torch.dtype) -> float:
    return _UNIT_ROUNDOFF[dtype]


def ulp(dtype: torch.dtype) -> float:
    """One ulp of ``dtype`` relative to the value: round-to-nearest or truncation."""
    return 2 * _UNIT_ROUNDOFF[dtype]


def floor(dtype: torch.dtype) -> float:
    """The absolute error allowed below ``dtype``'s normal range (see the module docstring)."""
    return 2.0 ** -24 if dtype == torch.float16 else torch.finfo(dtype).tiny


@dataclass(frozen=True)
class Arith:
    """How a kernel computes its dot products: accumulation type, per-product operand rounding
    (relative), and whether tensor cores accumulate (possibly truncating)."""
    acc: torch.dtype = torch.float32
    operand: float = 0.0
    tensor_cores: bool = False

    @property
    def u(self) -> float:
        return unit_roundoff(self.acc)

    def dot_error(self, s2: torch.Tensor | float, n: int) -> torch.Tensor | float:
        """Bound on the error of a length-``n`` dot product whose terms have root-sum-square ``s2``."""
        adds = max(LAMBDA ** 2 * math.sqrt(n), LAMBDA * n / 4 if self.tensor_cores else 0.0)
        return (LAMBDA * self.operand + adds * self.u) * s2


def accumulation(dtype: torch.dtype) -> torch.dtype:
    """Every kernel accumulates 16-bit and fp32 inputs in fp32, fp64 inputs in fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


#: the attention kernels (cuda, triton, cpp): fp32 FMA, no tensor cores; A = LeakyReLU(F + Eh)
#: formed in the accumulation type first (two roundings of the operand a)
def attention_arith(dtype: torch.dtype) -> Arith:
    acc = accumulation(dtype)
    return Arith(acc, operand=2 * unit_roundoff(acc))


def convlstm_arith(backend: str, dtype: torch.dtype) -> Arith:
    """The ConvLSTM kernels' arithmetic (their file headers): 16-bit operands on tensor cores
    (exact products, fp32 accumulation); fp32 on `cuda` as TF32 (csrc/cuda/convlstm.cu), on
    `triton` with input_precision="ieee" (fp32 FMA); fp64 (cpp) in fp64."""
    if dtype in (torch.float16, torch.bfloat16):
        return Arith(torch.float32, 0.0, tensor_cores=True)
    if dtype == torch.float32 and backend == "cuda":
        return Arith(torch.float32, TF32_PRODUCT, tensor_cores=True)
    acc = accumulation(dtype)
    return Arith(acc, unit_roundoff(acc))


# -- the comparison --------------------------------------------------------------------------
def compare(got: torch.Tensor, want: torch.Tensor, rtol, atol) -> str | None:
    """None when ``|got - want| <= rtol |want| + atol`` element by element (``rtol``, ``atol``:
    floats or tensors broadcasting to ``want``), else what failed and the worst element."""
    if tuple(got.shape) != tuple(want.shape):
        return f"shape {tuple(got.shape)}, want {tuple(want.shape)}"
    g, w = got.detach().double(), want.detach().double().to(got.device)
    bound = (torch.as_tensor(rtol, dtype=torch.float64, device=g.device) * w.abs()
             + torch.as_tensor(atol, dtype=torch.float64, device=g.device)).expand_as(w)
    err = (g - w).abs()
    bad = ~(err <= bound)  # NaN in got (or want) compares False: never passes
    if not bool(bad.any()):
        return None
    # the worst element: the largest error / bound among the failing ones, NaN first
    ratio = torch.where(bad, torch.nan_to_num(err / bound, nan=math.inf), torch.full_like(err, -1.0))
    i = int(ratio.flatten().argmax())
    index = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), w.shape))
    g_i, w_i, e_i, b_i = (t.flatten()[i].item() for t in (g, w, err, bound))
    return (f"{int(bad.sum())} of {w.numel()} elements out of bounds; worst at {index}: got {g_i:.6g}, "
            f"want {w_i:.6g}, |error| {e_i:.3g} > bound {b_i:.3g} (rtol |want| + atol)")


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol, atol, what: str = "") -> None:
    failure = compare(got, want, rtol, atol)
    assert failure is None, f"{what}: {failure}" if what else failure


def rms(t: torch.Tensor) -> float:
    return float(t.double().square().mean().sqrt())


@dataclass
class Expected:
    """An op's float64 outputs with each element's bound (``rtol``, ``atol`` per output)."""
    names: tuple[str, ...]
    want: tuple[torch.Tensor, ...]
    rtol: tuple
    atol: tuple

    def failures(self, *got: torch.Tensor) -> list[str]:
        assert len(got) == len(self.want), (len(got), self.names)
        return [f"{name}: {msg}" for name, g, w, r, a in zip(self.names, got, self.want, self.rtol, self.atol)
                if (msg := compare(g, w, r, a)) is not None]

    def check(self, *got: torch.Tensor, what: str = "") -> None:
        failures = self.failures(*got)
        assert not failures, f"{what}: " + "; ".join(failures)


# -- the ops' bounds -------------------------------------------------------------------------
def attention_expected(feat, eh, weight, bias, slope: float, arith: Arith | None = None) -> Expected:
    """(O, alpha) of :func:`jsla_fast.ops.attention_reference` in float64 from the same inputs,
    with relative bounds (a softmax and a product do not cancel):
      logits: dL = dot error (n = C k^2) + u |L| (the bias add);
      alpha:  |d alpha / alpha| <= 2 max_q dL_q (softmax: dL_p - sum_q alpha_q dL_q)
              + u (2 |L - max L| + 10 + LAMBDA sqrt(h w)) (exp's argument and exp itself, the
              normalising sum of h w positive terms, the division), then stored (+1 ulp);
      O = F alpha: + u, stored (+2 ulp: a kernel may form it from the stored alpha, as the CUDA
              one does, which also carries alpha's floor: + |F| floor)."""
    dtype = feat.dtype
    arith = arith or attention_arith(dtype)
    f, e, w, b = (t.detach().double() for t in (feat, eh, weight, bias))
    pad = w.shape[-1] // 2
    a = F.leaky_relu(f + e, slope)
    logits = F.conv2d(a, w, b, padding=pad)
    s2 = F.conv2d(a * a, w * w, padding=pad).sqrt()
    d_logit = arith.dot_error(s2, w[0].numel()) + arith.u * logits.abs()
    alpha = torch.softmax(logits.flatten(1), dim=1).view_as(logits)
    out = f * alpha
    hw = logits.shape[-1] * logits.shape[-2]
    spread = (logits - logits.amax(dim=(1, 2, 3), keepdim=True)).abs()
    rel_alpha = 2 * d_logit.amax(dim=(1, 2, 3), keepdim=True) + arith.u * (2 * spread + 10 + LAMBDA * math.sqrt(hw))
    return Expected(("out", "alpha"), (out, alpha), (rel_alpha + arith.u + 2 * ulp(dtype), rel_alpha + ulp(dtype)),
                    (floor(dtype) * (1 + f.abs()), floor(dtype)))


def convlstm_expected(x, h, c, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                      arith: Arith) -> Expected:
    """(h', c') of :func:`jsla_fast.ops.convlstm_step_reference` in float64 from the same inputs,
    with absolute bounds (c' = sigma(f) c + sigma(i) tanh(g) may cancel):
      gates: dz = dot error (n = (D + hid) k_b^2 of the element's branch) + u |z| (the bias add);
      first order through the update, derivatives at the float64 values, + the second order dz^2:
        dc' = sigma'(f) |c| df + sigma'(i) |tanh g| di + sigma(i) (1 - tanh^2 g) dg + 32 u (|c| + 1)
        dh' = sigma'(o) |tanh c'| do + sigma(o) (1 - tanh^2 c') dc' + 32 u
      (32 u: sigmoid and tanh in fp32 through exp, __expf's 2 + 1.2 |z| ulp included), each
      stored (+1 ulp, + the floor)."""
    dtype = x.dtype
    xh = torch.cat([x, h], dim=1).detach().double()
    xh2 = xh * xh
    gates, errors = [], []
    for w, b in zip(weights, biases):
        w = w.detach().double()
        pad = w.shape[-1] // 2
        z = F.conv2d(xh, w, b.detach().double(), padding=pad)
        s2 = F.conv2d(xh2, w * w, padding=pad).sqrt()
        gates.append(z.chunk(4, dim=1))
        errors.append((arith.dot_error(s2, w[0].numel()) + arith.u * z.abs()).chunk(4, dim=1))
    zi, zf, zg, zo = (torch.cat([g[j] for g in gates], dim=1) for j in range(4))
    di, df, dg, do = (torch.cat([e[j] for e in errors], dim=1) for j in range(4))
    c0 = c.detach().double()
    si, sf, so, tg = torch.sigmoid(zi), torch.sigmoid(zf), torch.sigmoid(zo), torch.tanh(zg)
    c_new = sf * c0 + si * tg
    tc = torch.tanh(c_new)
    h_new = so * tc
    u = arith.u
    dc = (sf * (1 - sf) * c0.abs() * df + si * (1 - si) * tg.abs() * di + si * (1 - tg * tg) * dg
          + 32 * u * (c0.abs() + 1) + di * di + df * df + dg * dg)
    dh = so * (1 - so) * tc.abs() * do + so * (1 - tc * tc) * dc + 32 * u + do * do
    return Expected(("h", "c"), (h_new, c_new), (ulp(dtype), ulp(dtype)), (dh + floor(dtype), dc + floor(dtype)))


# -- mutations: perturbed outputs every bound above must reject ------------------------------------
def scale_row(t: torch.Tensor) -> torch.Tensor:
    """Row H/2 of image 0 (every channel) scaled by 1.2."""
    t = t.detach().clone()
    t[0, :, t.shape[2] // 2] *= 1.2
    return t


def scale_channel(t: torch.Tensor) -> torch.Tensor:
    """The channel of image 0 with the largest magnitude scaled by 1.2."""
    t = t.detach().clone()
    ch = int(t[0].abs().flatten(1).amax(dim=1).argmax())
    t[0, ch] *= 1.2
    return t


def permute_position(t: torch.Tensor) -> torch.Tensor:
    """The channels at one position of image 0 rotated by one."""
    t = t.detach().clone()
    y, x = t.shape[2] // 2, t.shape[3] // 2
    t[0, :, y, x] = t[0, :, y, x].roll(1)
    return t


def swap_positions(t: torch.Tensor) -> torch.Tensor:
    """The weights of image 0's most and least attended positions exchanged."""
    t = t.detach().clone(memory_format=torch.contiguous_format)
    flat = t[0].view(-1)
    i, j = int(flat.argmax()), int(flat.argmin())
    flat[[i, j]] = flat[[j, i]].clone()
    return t


Mutation = tuple[int, Callable[[torch.Tensor], torch.Tensor]]
#: name -> (which output, how): O and alpha of the attention
ATTENTION_MUTATIONS: dict[str, Mutation] = {
    "out: one row x1.2": (0, scale_row),
    "out: one position's channels permuted": (0, permute_position),
    "alpha: one row x1.2": (1, scale_row),
    "alpha: two positions' weights swapped": (1, swap_positions),
}
#: h' and c' of the ConvLSTM step
CONVLSTM_MUTATIONS: dict[str, Mutation] = {
    "h: one channel x1.2": (0, scale_channel),
    "c: one position's channels permuted": (1, permute_position),
}


def assert_mutations_fail(expected: Expected, outputs: Sequence[torch.Tensor], mutations: dict[str, Mutation]) -> None:
    """The unperturbed outputs pass ``expected``'s comparison and every mutation of them fails it."""
    expected.check(*outputs, what="unperturbed")
    for name, (i, mutate) in mutations.items():
        mutated = list(outputs)
        mutated[i] = mutate(outputs[i])
        assert not torch.equal(mutated[i], outputs[i]), f"mutation {name!r} changed nothing"
        assert expected.failures(*mutated), f"mutation {name!r} passed the comparison"
