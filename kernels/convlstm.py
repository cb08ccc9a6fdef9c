"""Fused multi-kernel ConvLSTM step (Triton): conv over [x, h] as an implicit GEMM + LSTM epilogue.

What it computes (the specification is ``jsla_fast.model.convlstm.convlstm_step_reference``):
    xh = [x, h] (channels), per branch b: gates_b = conv2d(xh, W_b, bias_b, padding=k_b // 2)
    split into (i, f, g, o) of n channels each; hidden channel b*n + j belongs to branch b;
    c' = sigmoid(f) c + sigmoid(i) tanh(g),  h' = sigmoid(o) tanh(c').

Design
  * Implicit GEMM per branch: M = positions (B*H*W, flattened b/y/x), N = the n channels of one
    gate (one BLOCK_N tile, n = 24 padded to 32 and masked), K = (D + hid) * k * k walked as
    (tap, channel block). For each tap the A tile [BLOCK_M, BLOCK_K] is gathered from x (channels
    < D) and then from h (channels >= D) through two pointers, so [x, h] is never concatenated;
    out-of-image taps (the 'same' padding) and ragged channel/position edges are masked to 0.
    The B tiles [BLOCK_K, BLOCK_N] are read straight from W_b [4n, D+hid, k, k] (contiguous), one
    per gate; four fp32 accumulators (i, f, g, o) are fed by tl.dot.
  * The gates never touch memory: the epilogue adds the bias, reads c, and writes only h', c'
    (any strides: channels_last in and out is fine). tanh(x) = 2 sigmoid(2x) - 1 and
    sigmoid(x) = 1 / (1 + exp(-x)), so everything also runs under TRITON_INTERPRET=1.
  * One launch for all branches: grid = (M tiles, branches * N tiles). The branch is a grid axis;
    up to MAX_BRANCHES = 4 per launch, each branch's weight/bias pointers are separate arguments
    and its k is a constexpr (the "table" is the argument list), dispatched by a runtime `if` on
    the branch id into the same @jit helper specialised per k. More than 4 branches -> one launch
    per group of 4 (the model has 4: one launch).
  * fp32 inputs use input_precision="ieee" (no TF32: K is ~11k for k=7, TF32 would miss 1e-4).

Cost (jsla_fast.ops.cost.convlstm_cost; model shape D=128, hid=96 (n=24), k=1,3,5,7, 14x14, fp16)
  B=1 : 0.709 GFLOP, 3.81 MB minimum (3.61 MB of it is the weights, read once; activations 0.2 MB).
        H100 floors: 3.81 MB / 3.35 TB/s = 1.14 us (memory), 0.709 GFLOP / 990 TFLOP/s = 0.72 us
        -> intensity 186 FLOP/B < ridge ~296: MEMORY bound, the floor is ~1.1 us (weight streaming).
  B=40: 28.3 GFLOP, 11.6 MB -> 28.6 us compute vs 3.5 us memory: COMPUTE bound, floor ~29 us.
  (The kernel re-reads each weight tile once per M tile: 4 tiles at B=1, so weight traffic is mostly
  L2 hits; at B=40, 123 M tiles re-read the 3.6 MB of weights from L2, not HBM.)

Not implemented: split-K. At B=1 the grid is only 4 M tiles x 4 branches = 16 CTAs on 132 SMs,
and the k=7 branch does 49x the work of the k=1 one, so the launch is both under-occupied and
unbalanced. Plan: a third grid axis splits each branch's K = taps x channel blocks into S_b
chunks (S_b ~ k_b^2 so every CTA does about the same number of (tap, block) steps, e.g. 1/9/25/49
-> chunks of 1 tap); each CTA writes its four [BLOCK_M, BLOCK_N] fp32 partials to a workspace
[S_total, 4, M, n] (torch.empty, every element written), then a second, light kernel sums the S_b
partials per branch, adds the bias and runs the same LSTM epilogue. (Alternatively fp32
tl.atomic_add into a zeroed buffer, but that is non-deterministic and needs a memset.) Chosen
only when M tiles x branches is well below the SM count; at B=40 the single pass already fills
the GPU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton  # torch >= 2.6: torch.compile traces launches inside a triton_op

MAX_BRANCHES = 4


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # written via sigmoid (no libdevice): saturates correctly at +-inf since exp overflows to inf
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _w(ptrs, mask, DOT_F32: tl.constexpr):
    w = tl.load(ptrs, mask=mask, other=0.0)
    if DOT_F32:
        w = w.to(tl.float32)
    return w


@triton.jit
def _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, w_ptr, bias_ptr, branch, pid_m, pid_n,
                 M, H, W, D, HID, NCH,
                 sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                 scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                 KS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, IN_PREC: tl.constexpr, DOT_F32: tl.constexpr):
    HW = H * W
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    bb = offs_m // HW
    rem = offs_m % HW
    yy = rem // W
    xx = rem % W
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < NCH
    offs_k = tl.arange(0, BLOCK_K)

    # W_b is contiguous [4n, D+hid, k, k]: output-channel stride (D+hid) k^2, input-channel k^2
    KK: tl.constexpr = KS * KS
    PAD: tl.constexpr = KS // 2
    swo = (D + HID) * KK
    w_i = (0 * NCH + offs_n)[None, :] * swo
    w_f = (1 * NCH + offs_n)[None, :] * swo
    w_g = (2 * NCH + offs_n)[None, :] * swo
    w_o = (3 * NCH + offs_n)[None, :] * swo

    acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    # runtime loop over taps (not unrolled: k = 7 has 49 taps)
    for t in range(KK):
        ys = yy + (t // KS - PAD)
        xs = xx + (t % KS - PAD)
        # the zero padding of the 'same' conv is the mask: out-of-image taps contribute 0
        valid = m_mask & (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
        x_row = x_ptr + bb * sxb + ys * sxh + xs * sxw
        h_row = h_ptr + bb * shb + ys * shh + xs * shw
        w_tap = w_ptr + t
        # channels [0, D) come from x ...
        for c0 in range(0, D, BLOCK_K):
            cc = c0 + offs_k
            c_ok = cc < D
            a = tl.load(x_row[:, None] + cc[None, :] * sxc, mask=valid[:, None] & c_ok[None, :], other=0.0)
            if DOT_F32:
                a = a.to(tl.float32)
            wk = w_tap + cc[:, None] * KK
            km = c_ok[:, None] & n_mask[None, :]
            acc_i = tl.dot(a, _w(wk + w_i, km, DOT_F32), acc_i, input_precision=IN_PREC)
            acc_f = tl.dot(a, _w(wk + w_f, km, DOT_F32), acc_f, input_precision=IN_PREC)
            acc_g = tl.dot(a, _w(wk + w_g, km, DOT_F32), acc_g, input_precision=IN_PREC)
            acc_o = tl.dot(a, _w(wk + w_o, km, DOT_F32), acc_o, input_precision=IN_PREC)
        # ... channels [D, D+hid) from h: two pointers instead of a materialised cat
        for c0 in range(0, HID, BLOCK_K):
            cc = c0 + offs_k
            c_ok = cc < HID
            a = tl.load(h_row[:, None] + cc[None, :] * shc, mask=valid[:, None] & c_ok[None, :], other=0.0)
            if DOT_F32:
                a = a.to(tl.float32)
            wk = w_tap + (D + cc)[:, None] * KK
            km = c_ok[:, None] & n_mask[None, :]
            acc_i = tl.dot(a, _w(wk + w_i, km, DOT_F32), acc_i, input_precision=IN_PREC)
            acc_f = tl.dot(a, _w(wk + w_f, km, DOT_F32), acc_f, input_precision=IN_PREC)
            acc_g = tl.dot(a, _w(wk + w_g, km, DOT_F32), acc_g, input_precision=IN_PREC)
            acc_o = tl.dot(a, _w(wk + w_o, km, DOT_F32), acc_o, input_precision=IN_PREC)

    # epilogue: bias + LSTM update in fp32; only h' and c' are written
    gi = acc_i + tl.load(bias_ptr + 0 * NCH + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    gf = acc_f + tl.load(bias_ptr + 1 * NCH + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    gg = acc_g + tl.load(bias_ptr + 2 * NCH + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    go = acc_o + tl.load(bias_ptr + 3 * NCH + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    ch = (branch * NCH + offs_n)[None, :]  # hidden channel of this branch's j-th output
    mask2 = m_mask[:, None] & n_mask[None, :]
    b2 = bb[:, None]
    y2 = yy[:, None]
    x2 = xx[:, None]
    c_prev = tl.load(c_ptr + b2 * scb + ch * scc + y2 * sch + x2 * scw, mask=mask2, other=0.0).to(tl.float32)
    c_new = _sigmoid(gf) * c_prev + _sigmoid(gi) * _tanh(gg)
    h_new = _sigmoid(go) * _tanh(c_new)
    tl.store(co_ptr + b2 * spb + ch * spc + y2 * sph + x2 * spw,
             c_new.to(co_ptr.dtype.element_ty), mask=mask2)
    tl.store(ho_ptr + b2 * sob + ch * soc + y2 * soh + x2 * sow,
             h_new.to(ho_ptr.dtype.element_ty), mask=mask2)


@triton.jit
def _convlstm_kernel(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr,
                     w0, w1, w2, w3, b0, b1, b2, b3, branch0,
                     M, H, W, D, HID, NCH,
                     sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                     scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                     K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
                     N_TILES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, IN_PREC: tl.constexpr, DOT_F32: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bn = tl.program_id(1)
    local = pid_bn // N_TILES   # branch within this launch's group
    pid_n = pid_bn % N_TILES
    # K_i == 0 marks an absent branch slot (constexpr: its code is not even generated)
    if local == 0:
        _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, w0, b0, branch0 + 0, pid_m, pid_n,
                     M, H, W, D, HID, NCH, sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                     scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                     K0, BLOCK_M, BLOCK_N, BLOCK_K, IN_PREC, DOT_F32)
    if K1 > 0:
        if local == 1:
            _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, w1, b1, branch0 + 1, pid_m, pid_n,
                         M, H, W, D, HID, NCH, sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                         scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                         K1, BLOCK_M, BLOCK_N, BLOCK_K, IN_PREC, DOT_F32)
    if K2 > 0:
        if local == 2:
            _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, w2, b2, branch0 + 2, pid_m, pid_n,
                         M, H, W, D, HID, NCH, sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                         scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                         K2, BLOCK_M, BLOCK_N, BLOCK_K, IN_PREC, DOT_F32)
    if K3 > 0:
        if local == 3:
            _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, w3, b3, branch0 + 3, pid_m, pid_n,
                         M, H, W, D, HID, NCH, sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                         scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                         K3, BLOCK_M, BLOCK_N, BLOCK_K, IN_PREC, DOT_F32)


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def convlstm_forward(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                     weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                     h_out: torch.Tensor | None = None, c_out: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One ConvLSTM step, equal to ``convlstm_step_reference``; returns ``(h', c')``.

    x, h, c may have any strides (e.g. channels_last); weights are made contiguous (a no-op for
    nn.Conv2d parameters). ``h_out`` / ``c_out``: optional preallocated outputs of shape
    [B, hid, H, W] (any strides). ``c_out`` may alias ``c`` (each element is read then written by
    the same program); h_out / c_out must not share memory with x, h or each other (other
    programs still read x and h)."""
    B, D, H, W = x.shape
    nb = len(weights)
    if nb == 0 or len(biases) != nb:
        raise ValueError("need one weight and one bias per branch")
    n = weights[0].shape[0] // 4
    hid = nb * n
    if h.shape != (B, hid, H, W) or c.shape != (B, hid, H, W):
        raise ValueError(f"h and c must be {(B, hid, H, W)}, got {tuple(h.shape)} and {tuple(c.shape)}")
    if h.dtype != x.dtype or c.dtype != x.dtype or h.device != x.device or c.device != x.device:
        raise ValueError("x, h and c must share dtype and device")
    ws, bs, ks = [], [], []
    for w, bias in zip(weights, biases):
        k = w.shape[-1]
        if w.shape != (4 * n, D + hid, k, k) or k % 2 == 0 or bias.shape != (4 * n,):
            raise ValueError(f"weights must be [4n, D+hid, k, k] with odd k and biases [4n]: "
                             f"{tuple(w.shape)}, {tuple(bias.shape)}")
        ws.append(w.to(x.dtype).contiguous())
        bs.append(bias.to(x.dtype).contiguous())
        ks.append(k)
    # only outputs the caller passes can alias the inputs (and fake tensors, under torch.compile or
    # opcheck, have no real storage to compare), so only those are checked
    for name, out in (("h_out", h_out), ("c_out", c_out)):
        if out is not None and (out.shape != h.shape or out.dtype != x.dtype or out.device != x.device):
            raise ValueError(f"{name} must be {tuple(h.shape)} {x.dtype} on {x.device}")
    if (h_out is not None and (_shares_memory(h_out, h) or _shares_memory(h_out, x)
                               or (c_out is not None and _shares_memory(h_out, c_out)))) \
            or (c_out is not None and (_shares_memory(c_out, h) or _shares_memory(c_out, x))):
        raise ValueError("h_out / c_out must not share memory with x or h (read by other programs)")
    h_out = torch.empty_like(h) if h_out is None else h_out
    c_out = torch.empty_like(c) if c_out is None else c_out

    M = B * H * W
    if x.is_cuda:
        BLOCK_M, BLOCK_K, num_warps = 64, 32, 4
        BLOCK_N = min(32, max(16, triton.next_power_of_2(n)))
    else:  # interpreter: the smallest tl.dot tiles (>= 16) keep the numpy emulation fast
        BLOCK_M, BLOCK_N, BLOCK_K, num_warps = 16, 16, 16, 1
    n_tiles = triton.cdiv(n, BLOCK_N)
    in_prec = "ieee" if x.dtype == torch.float32 else "tf32"  # tf32 is ignored for 16-bit inputs
    # Triton 3.8's interpreter multiplies bf16 tiles in tl.dot wrongly (garbage, seen on a 16x16
    # test): there, upcast the tiles to fp32 first (exact: a bf16 x bf16 product fits fp32's
    # mantissa). On the GPU the bf16 tensor-core path is used.
    dot_f32 = x.dtype == torch.bfloat16 and not x.is_cuda
    strides = (*x.stride(), *h.stride(), *c.stride(), *h_out.stride(), *c_out.stride())
    for g0 in range(0, nb, MAX_BRANCHES):
        gw, gb, gk = ws[g0:g0 + MAX_BRANCHES], bs[g0:g0 + MAX_BRANCHES], ks[g0:g0 + MAX_BRANCHES]
        cnt = len(gw)
        pad = MAX_BRANCHES - cnt  # unused slots: any valid pointer, K = 0 compiles them out
        grid = (triton.cdiv(M, BLOCK_M), cnt * n_tiles)
        wrap_triton(_convlstm_kernel)[grid](
            x, h, c, h_out, c_out, *gw, *([gw[0]] * pad), *gb, *([gb[0]] * pad), g0,
            M, H, W, D, hid, n, *strides, *gk, *([0] * pad),
            N_TILES=n_tiles, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
            IN_PREC=in_prec, DOT_F32=dot_f32, num_warps=num_warps)
    return h_out, c_out
