"""Fused multi-kernel ConvLSTM step (Triton): conv over [x, h] as an implicit GEMM + LSTM epilogue.

What it computes (the specification is ``jsla_fast.ops.convlstm_step_reference``):
    xh = [x, h] (channels), per branch b: gates_b = conv2d(xh, W_b, bias_b, padding=k_b // 2)
    split into (i, f, g, o) of n channels each; hidden channel b*n + j belongs to branch b;
    c' = sigmoid(f) c + sigmoid(i) tanh(g),  h' = sigmoid(o) tanh(c').

Design
  * Implicit GEMM per branch: M = positions (B*H*W, flattened b/y/x), N = the n channels of one
    gate (one BLOCK_N tile, n = 24 padded to 32 and masked), K = (D + hid) * k * k walked as
    (tap, channel block) steps: k^2 taps x NCB = cdiv(D, BLOCK_K) + cdiv(hid, BLOCK_K) blocks.
    For each tap the A tile [BLOCK_M, BLOCK_K] is gathered from x (channels < D) and then from h
    (channels >= D) through two pointers, so [x, h] is never concatenated; out-of-image taps (the
    'same' padding) and ragged channel/position edges are masked to 0. The B tiles
    [BLOCK_K, BLOCK_N] are read straight from W_b [4n, D+hid, k, k] (contiguous), one per gate;
    four fp32 accumulators (i, f, g, o) are fed by tl.dot.
  * Single pass (large M): the gates never touch memory: the epilogue (`_lstm_epilogue`) adds the
    bias, reads c, and writes only h', c' (any strides: channels_last in and out is fine).
    tanh(x) = 2 sigmoid(2x) - 1 and sigmoid(x) = 1 / (1 + exp(-x)), so everything also runs under
    TRITON_INTERPRET=1.
  * One launch for all branches: grid = (M tiles, sum_b S_b * N tiles) (S_b = 1 without split-K).
    The branch is found from the flattened axis by comparing against the prefix sums O_1..O_3 of
    S_b; up to MAX_BRANCHES = 4 per launch, each branch's weight/bias pointers are separate
    arguments and its k is a constexpr (the "table" is the argument list), dispatched by a runtime
    `if` on the branch into the same @jit helper specialised per k. More than 4 branches -> one
    launch (pair) per group of 4 (the model has 4).
  * Split-K (small M): when M tiles x branches x N tiles is at most half the SM count, each
    branch's k^2 * NCB steps are cut into S_b contiguous chunks (a chunk may start and end inside
    a tap), S_b ~ k_b^2 so every program does about the same number of steps, scaled so that the
    launch has ~SPLITK_PROGRAMS_PER_SM programs per SM (`_split_counts`). Each program stores its
    four fp32 [BLOCK_M, BLOCK_N] partial gate tiles to a workspace [sum S_b, 4, M, n] (torch.empty:
    every element is written by exactly one program, masked to m < M, j < n); then
    `_splitk_reduce_kernel`, grid (cdiv(M*n, RBLOCK), branches), sums a branch's S_b partials in a
    fixed order (chunks of RBLOCK_S splits: a tree sum inside a chunk, chunks in sequence;
    deterministic; fp32 tl.atomic_add into a zeroed buffer would be neither deterministic nor
    memset-free), adds the bias and runs the same `_lstm_epilogue`. 2 launches per group with
    split-K, 1 without. `convlstm_forward(..., splits=)` forces it on or off.
  * fp32 inputs use input_precision="ieee" (no TF32: K is ~11k for k=7, TF32 would miss 1e-4).

Grids for the model shape (D=128, hid=96 = 4 branches of n=24, k=1,3,5,7, 14x14) on an H100 or
H200 (132 SMs each), BLOCK_M=64, BLOCK_N=32 (1 N tile), BLOCK_K=32 (NCB = 4 + 3 = 7):
  B=1 : M=196 -> 4 M tiles x 4 branches = 16 programs <= 66: split-K, S = (1, 7, 20, 39) (chunks
        of 7, 9, 8.75, 8.8 steps), kernel 1 grid (4, 67) = 268 programs (2.0 per SM), workspace
        67 x 4 x 196 x 24 fp32 = 5.0 MB (written once, read once, mostly L2); reduction grid
        (cdiv(196*24, 128) = 37, 4) = 148 programs.
  B=40: M=7840 -> 123 M tiles x 4 branches = 492 programs: single fused pass, grid (123, 4).

Cost (jsla_fast.ops.cost.convlstm_cost; model shape, fp16; floors at the measured ceilings of
jsla_fast.ops.cost.GPU_CEILINGS)
  B=1 : 0.709 GFLOP, 3.81 MB minimum (3.61 MB of it is the weights, read once; activations 0.2 MB):
        intensity 186 FLOP/B. H100: 1.27 us memory, 0.89 us compute (ridge 266 FLOP/B): MEMORY
        bound, floor ~1.3 us (weight streaming). H200: 0.89 us memory, 0.90 us compute (ridge
        183 FLOP/B): balanced, floor ~0.9 us. Launch latency (a few us) is larger than either.
        Without split-K the grid was 16 CTAs on 132 SMs and the k=7 CTAs did 49x the steps of the
        k=1 ones (343 vs 7): under-occupied and unbalanced. Split-K trades that for the 5.0 MB
        fp32 workspace round trip (L2-resident on an H100's 50 MB L2) and a second launch.
  B=40: 28.3 GFLOP, 11.6 MB: H100 35.5 us compute vs 3.9 us memory, H200 36.0 vs 2.7 us: COMPUTE
        bound, floor ~36 us (fp32 runs as ieee fp32 here, far below the bf16 tensor-core rate).
  (The kernel re-reads each weight tile once per M tile: 4 tiles at B=1, so weight traffic is mostly
  L2 hits; at B=40, 123 M tiles re-read the 3.6 MB of weights from L2, not HBM.)
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton  # torch >= 2.6: torch.compile traces launches inside a triton_op

from .attention import next_pow2  # int or SymInt -> int: block sizes are constexprs

MAX_BRANCHES = 4
#: split-K aims at this many kernel-1 programs per SM (2-4 hide latency; more only grows the fp32
#: workspace: 4 gates x BLOCK_M x n floats per program, 24 KB at BLOCK_M=64, n=24)
SPLITK_PROGRAMS_PER_SM = 2
#: the "SM count" used on CPU (the interpreter), small so that the tests' tiny shapes take split-K
INTERPRETER_SMS = 4


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
def _lstm_epilogue(acc_i, acc_f, acc_g, acc_o, bias_ptr, c_ptr, ho_ptr, co_ptr, branch, NCH,
                   j, j_ok, bb, yy, xx, mask,
                   scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw):
    """Bias + LSTM update in fp32 on the gate sums acc_* of branch ``branch``; writes only h', c'.

    j: gate channel within the branch (j_ok: j < NCH), bb/yy/xx: position; the index tensors
    broadcast against acc_* (2-D tiles in the single pass, 1-D element blocks after split-K)."""
    gi = acc_i + tl.load(bias_ptr + 0 * NCH + j, mask=j_ok, other=0.0).to(tl.float32)
    gf = acc_f + tl.load(bias_ptr + 1 * NCH + j, mask=j_ok, other=0.0).to(tl.float32)
    gg = acc_g + tl.load(bias_ptr + 2 * NCH + j, mask=j_ok, other=0.0).to(tl.float32)
    go = acc_o + tl.load(bias_ptr + 3 * NCH + j, mask=j_ok, other=0.0).to(tl.float32)
    ch = branch * NCH + j  # hidden channel of this branch's j-th output
    c_prev = tl.load(c_ptr + bb * scb + ch * scc + yy * sch + xx * scw, mask=mask, other=0.0).to(tl.float32)
    c_new = _sigmoid(gf) * c_prev + _sigmoid(gi) * _tanh(gg)
    h_new = _sigmoid(go) * _tanh(c_new)
    tl.store(co_ptr + bb * spb + ch * spc + yy * sph + xx * spw, c_new.to(co_ptr.dtype.element_ty), mask=mask)
    tl.store(ho_ptr + bb * sob + ch * soc + yy * soh + xx * sow, h_new.to(ho_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, ws_ptr, w_ptr, bias_ptr, branch,
                 g, g_lo, g_hi, pid_m, pid_n,
                 M, H, W, D, HID, NCH,
                 sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                 scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                 KS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, SPLIT: tl.constexpr, IN_PREC: tl.constexpr,
                 DOT_F32: tl.constexpr):
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

    # K as steps: tap t, channel block cb (x blocks [0, NXB), then h blocks [NXB, NCB)); step
    # t * NCB + cb. Split s of S takes steps [s * steps // S, (s + 1) * steps // S).
    NXB = (D + BLOCK_K - 1) // BLOCK_K
    NCB = NXB + (HID + BLOCK_K - 1) // BLOCK_K
    if SPLIT:
        lo = (g - g_lo) * (KK * NCB) // (g_hi - g_lo)
        hi = (g - g_lo + 1) * (KK * NCB) // (g_hi - g_lo)
    else:
        lo = 0
        hi = KK * NCB
    # runtime loop over taps (not unrolled: k = 7 has 49 taps)
    for t in range(lo // NCB, (hi + NCB - 1) // NCB):
        ys = yy + (t // KS - PAD)
        xs = xx + (t % KS - PAD)
        # the zero padding of the 'same' conv is the mask: out-of-image taps contribute 0
        valid = m_mask & (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
        x_row = x_ptr + bb * sxb + ys * sxh + xs * sxw
        h_row = h_ptr + bb * shb + ys * shh + xs * shw
        w_tap = w_ptr + t
        cb_lo = tl.maximum(lo - t * NCB, 0)    # this tap's blocks inside [lo, hi)
        cb_hi = tl.minimum(hi - t * NCB, NCB)
        # channels [0, D) come from x ...
        for cb in range(cb_lo, tl.minimum(cb_hi, NXB)):
            cc = cb * BLOCK_K + offs_k
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
        for cb in range(tl.maximum(cb_lo, NXB) - NXB, cb_hi - NXB):
            cc = cb * BLOCK_K + offs_k
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

    mask2 = m_mask[:, None] & n_mask[None, :]
    if SPLIT:
        # partial gates of split g -> workspace [g, gate, m, j] (fp32); the masked tiles of all
        # programs cover every m < M, j < NCH of every (split, gate) exactly once
        mn = M * NCH
        part = ws_ptr + g.to(tl.int64) * 4 * mn + offs_m[:, None] * NCH + offs_n[None, :]
        tl.store(part + 0 * mn, acc_i, mask=mask2)
        tl.store(part + 1 * mn, acc_f, mask=mask2)
        tl.store(part + 2 * mn, acc_g, mask=mask2)
        tl.store(part + 3 * mn, acc_o, mask=mask2)
    else:
        _lstm_epilogue(acc_i, acc_f, acc_g, acc_o, bias_ptr, c_ptr, ho_ptr, co_ptr, branch, NCH,
                       offs_n[None, :], n_mask[None, :], bb[:, None], yy[:, None], xx[:, None], mask2,
                       scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw)


@triton.jit
def _convlstm_kernel(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, ws_ptr,
                     w0, w1, w2, w3, b0, b1, b2, b3, branch0, O1, O2, O3, O4,
                     M, H, W, D, HID, NCH,
                     sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                     scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                     K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
                     N_TILES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, SPLIT: tl.constexpr, IN_PREC: tl.constexpr,
                     DOT_F32: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_gn = tl.program_id(1)
    # split g of the launch; branch i owns splits [O_i, O_i+1) (O_0 = 0; without split-K O_i = i)
    g = pid_gn // N_TILES
    pid_n = pid_gn % N_TILES
    local = (g >= O1).to(tl.int32) + (g >= O2).to(tl.int32) + (g >= O3).to(tl.int32)
    # K_i == 0 marks an absent branch slot (constexpr: its code is not even generated)
    if local == 0:
        _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, ws_ptr, w0, b0, branch0 + 0, g, 0, O1,
                     pid_m, pid_n, M, H, W, D, HID, NCH, sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                     scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                     K0, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT, IN_PREC, DOT_F32)
    if K1 > 0:
        if local == 1:
            _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, ws_ptr, w1, b1, branch0 + 1, g, O1, O2,
                         pid_m, pid_n, M, H, W, D, HID, NCH, sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                         scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                         K1, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT, IN_PREC, DOT_F32)
    if K2 > 0:
        if local == 2:
            _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, ws_ptr, w2, b2, branch0 + 2, g, O2, O3,
                         pid_m, pid_n, M, H, W, D, HID, NCH, sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                         scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                         K2, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT, IN_PREC, DOT_F32)
    if K3 > 0:
        if local == 3:
            _branch_step(x_ptr, h_ptr, c_ptr, ho_ptr, co_ptr, ws_ptr, w3, b3, branch0 + 3, g, O3, O4,
                         pid_m, pid_n, M, H, W, D, HID, NCH, sxb, sxc, sxh, sxw, shb, shc, shh, shw,
                         scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                         K3, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT, IN_PREC, DOT_F32)


@triton.jit
def _splitk_reduce_kernel(ws_ptr, c_ptr, ho_ptr, co_ptr, b0, b1, b2, b3, branch0, O1, O2, O3, O4,
                          M, H, W, NCH,
                          scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw,
                          BLOCK: tl.constexpr, BLOCK_S: tl.constexpr):
    """Split-K second pass: one program sums BLOCK elements (m, j) of one branch's S partials."""
    local = tl.program_id(1)
    g_lo = tl.where(local == 0, 0, tl.where(local == 1, O1, tl.where(local == 2, O2, O3)))
    g_hi = tl.where(local == 0, O1, tl.where(local == 1, O2, tl.where(local == 2, O3, O4)))
    bias_ptr = b0
    if local == 1:
        bias_ptr = b1
    if local == 2:
        bias_ptr = b2
    if local == 3:
        bias_ptr = b3
    mn = M * NCH
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # element m * NCH + j of a [M, NCH] gate plane
    e_ok = e < mn
    offs_s = tl.arange(0, BLOCK_S)
    acc_i = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK,), dtype=tl.float32)
    # fixed order: BLOCK_S splits at a time (independent loads in flight), tree-summed, in sequence
    for s0 in range(g_lo, g_hi, BLOCK_S):
        gs = s0 + offs_s
        pm = (gs < g_hi)[:, None] & e_ok[None, :]
        part = ws_ptr + (gs.to(tl.int64) * 4 * mn)[:, None] + e[None, :]
        acc_i += tl.sum(tl.load(part + 0 * mn, mask=pm, other=0.0), axis=0)
        acc_f += tl.sum(tl.load(part + 1 * mn, mask=pm, other=0.0), axis=0)
        acc_g += tl.sum(tl.load(part + 2 * mn, mask=pm, other=0.0), axis=0)
        acc_o += tl.sum(tl.load(part + 3 * mn, mask=pm, other=0.0), axis=0)
    m = e // NCH
    HW = H * W
    rem = m % HW
    _lstm_epilogue(acc_i, acc_f, acc_g, acc_o, bias_ptr, c_ptr, ho_ptr, co_ptr, branch0 + local, NCH,
                   e % NCH, e_ok, m // HW, rem // W, rem % W, e_ok,
                   scb, scc, sch, scw, sob, soc, soh, sow, spb, spc, sph, spw)


class Blocks(NamedTuple):
    BLOCK_M: int
    BLOCK_N: int
    BLOCK_K: int
    num_warps: int
    RBLOCK: int      # elements per split-K reduction program
    RBLOCK_S: int    # splits summed per reduction step


def _blocks(n: int, cuda: bool) -> Blocks:
    if cuda:
        return Blocks(64, min(32, max(16, next_pow2(n))), 32, 4, 128, 8)
    # interpreter: the smallest tl.dot tiles (>= 16) keep the numpy emulation fast
    return Blocks(16, 16, 16, 1, 64, 4)


class LaunchGroup(NamedTuple):
    """One group of <= 4 branches: kernel 1's grid, and with split-K its S_b and the reduction grid."""
    start: int                              # first branch of the group
    ks: tuple[int, ...]
    splits: tuple[int, ...] | None          # S_b per branch; None: single fused pass
    grid: tuple[int, int]
    reduce_grid: tuple[int, int] | None


def _split_counts(ks: Sequence[int], m_tiles: int, n_tiles: int, ncb: int, sms: int,
                  splits: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """S_b for one launch group (clamped to [1, k_b^2 * ncb] steps), None for the single pass.
    Integer arithmetic only, so that SymInt shapes (torch.compile(dynamic=True)) go through."""
    if splits is None:  # automatic: only when the plain grid is well below the SM count
        if m_tiles == 0 or 2 * m_tiles * n_tiles * len(ks) > sms:
            return None
        # S_b = round(programs * k_b^2 / (m_tiles * n_tiles * sum k^2)), programs ~ SPLITK_PROGRAMS_PER_SM per SM
        programs, units = SPLITK_PROGRAMS_PER_SM * sms, m_tiles * n_tiles * sum(k * k for k in ks)
        want = [(2 * programs * k * k + units) // (2 * units) for k in ks]
    elif isinstance(splits, int):
        want = [splits * k * k for k in ks]
    else:
        want = list(splits)
    s = tuple(min(max(1, w), k * k * ncb) for w, k in zip(want, ks))
    return None if all(v == 1 for v in s) else s


def launch_plan(M: int, D: int, n: int, ks: Sequence[int], *, cuda: bool, sms: int,
                splits: int | Sequence[int] | None = None) -> list[LaunchGroup]:
    """The launches of ``convlstm_forward`` for M = B*H*W positions on a device with ``sms`` SMs."""
    hid = n * len(ks)
    blk = _blocks(n, cuda)
    m_tiles, n_tiles = triton.cdiv(M, blk.BLOCK_M), triton.cdiv(n, blk.BLOCK_N)
    ncb = triton.cdiv(D, blk.BLOCK_K) + triton.cdiv(hid, blk.BLOCK_K)
    if splits is not None and not isinstance(splits, int):
        if len(splits) != len(ks) or any(int(s) < 1 for s in splits):
            raise ValueError(f"splits must be None, an int >= 0 or one int >= 1 per branch, got {splits}")
    elif isinstance(splits, int) and splits < 0:
        raise ValueError(f"splits must be >= 0, got {splits}")
    groups = []
    for g0 in range(0, len(ks), MAX_BRANCHES):
        gk = tuple(ks[g0:g0 + MAX_BRANCHES])
        gs = splits[g0:g0 + MAX_BRANCHES] if splits is not None and not isinstance(splits, int) else splits
        s = _split_counts(gk, m_tiles, n_tiles, ncb, sms, gs)
        if s is None:
            groups.append(LaunchGroup(g0, gk, None, (m_tiles, len(gk) * n_tiles), None))
        else:
            groups.append(LaunchGroup(g0, gk, s, (m_tiles, sum(s) * n_tiles),
                                      (triton.cdiv(M * n, blk.RBLOCK), len(gk))))
    return groups


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRETER_SMS
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())


def _alloc_workspace(numel: int, device: torch.device) -> torch.Tensor:
    """The split-K partials (fp32). torch.empty: kernel 1 writes every element kernel 2 reads
    (the tests swap this for a NaN-filled buffer to check that)."""
    return torch.empty(numel, dtype=torch.float32, device=device)


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def convlstm_forward(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                     weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                     h_out: torch.Tensor | None = None, c_out: torch.Tensor | None = None, *,
                     splits: int | Sequence[int] | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One ConvLSTM step, equal to ``convlstm_step_reference``; returns ``(h', c')``.

    x, h, c may have any strides (e.g. channels_last); weights are made contiguous (a no-op for
    nn.Conv2d parameters). ``h_out`` / ``c_out``: optional preallocated outputs of shape
    [B, hid, H, W] (any strides). ``c_out`` may alias ``c`` (each element is read then written by
    the same program); h_out / c_out must not share memory with x, h or each other (other
    programs still read x and h).

    ``splits`` (split-K, see the module docstring): None = automatic (on only when the plain grid
    is well below the SM count, e.g. B=1 on a GPU); an int u >= 0 = u * k_b^2 splits for branch b
    (u = 0: split-K off, the single fused pass; u = 1: S = 1, 9, 25, 49 for k = 1, 3, 5, 7); a
    sequence of one int >= 1 per branch = those S_b (all 1: off). Every S_b is clamped to the
    branch's k_b^2 * NCB (tap, channel-block) steps, so no split is empty."""
    # the arguments are those jsla_fast.ops.convlstm_step has checked (jsla_fast.ops.checks); this
    # launcher checks only what is its own: the preallocated outputs and the tuning arguments
    B, D, H, W = x.shape
    n = weights[0].shape[0] // 4
    hid = len(weights) * n
    ws, bs, ks = [], [], []
    for w, bias in zip(weights, biases):
        k = int(w.shape[-1])  # a constexpr: under torch.compile(dynamic=True) this guards on k
        # the layout the kernel reads; a no-op for the model's weights (MultiKernelConvLSTM keeps it)
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
    plan = launch_plan(M, D, n, ks, cuda=x.is_cuda, sms=_sm_count(x.device), splits=splits)
    if M == 0:
        return h_out, c_out
    blk = _blocks(n, x.is_cuda)
    in_prec = "ieee" if x.dtype == torch.float32 else "tf32"  # tf32 is ignored for 16-bit inputs
    # Triton 3.8's interpreter multiplies bf16 tiles in tl.dot wrongly (garbage, seen on a 16x16
    # test): there, upcast the tiles to fp32 first (exact: a bf16 x bf16 product fits fp32's
    # mantissa). On the GPU the bf16 tensor-core path is used.
    dot_f32 = x.dtype == torch.bfloat16 and not x.is_cuda
    out_strides = (*c.stride(), *h_out.stride(), *c_out.stride())
    for grp in plan:
        g0, cnt = grp.start, len(grp.ks)
        gw, gb = ws[g0:g0 + cnt], bs[g0:g0 + cnt]
        pad = MAX_BRANCHES - cnt  # unused slots: any valid pointer, K = 0 compiles them out
        s = grp.splits or (1,) * cnt
        offs = [sum(s[:i]) for i in range(1, cnt + 1)] + [sum(s)] * pad  # O_1 .. O_4
        wargs, bargs = (*gw, *([gw[0]] * pad)), (*gb, *([gb[0]] * pad))
        # without split-K kernel 1 never touches the workspace argument: pass a read-only input
        part = x if grp.splits is None else _alloc_workspace(sum(s) * 4 * M * n, x.device)
        wrap_triton(_convlstm_kernel)[grp.grid](
            x, h, c, h_out, c_out, part, *wargs, *bargs, g0, *offs,
            M, H, W, D, hid, n, *x.stride(), *h.stride(), *out_strides, *grp.ks, *([0] * pad),
            N_TILES=int(triton.cdiv(n, blk.BLOCK_N)), BLOCK_M=blk.BLOCK_M, BLOCK_N=blk.BLOCK_N,
            BLOCK_K=blk.BLOCK_K, SPLIT=grp.splits is not None, IN_PREC=in_prec, DOT_F32=dot_f32,
            num_warps=blk.num_warps)
        if grp.splits is not None:
            wrap_triton(_splitk_reduce_kernel)[grp.reduce_grid](
                part, c, h_out, c_out, *bargs, g0, *offs, M, H, W, n, *out_strides,
                BLOCK=blk.RBLOCK, BLOCK_S=blk.RBLOCK_S, num_warps=4 if x.is_cuda else 1)
    return h_out, c_out
