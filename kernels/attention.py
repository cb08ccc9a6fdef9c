"""Fused spatial attention (the folded form, :func:`jsla_fast.ops.attention_reference`).

What it computes, per image b, for F, Eh [B,C,H,W], W [1,C,k,k] (k odd), bias [1], slope:
    A      = LeakyReLU(F + Eh, slope)                     never written to memory
    L      = conv2d(A, W, bias, padding=k//2)             [B,1,H,W]
    alpha  = softmax of L over the H*W positions          fp32 math, stored in F's dtype
    O      = F * alpha                                    broadcast over C

Design: two launches, deterministic (no atomics), no torch op launching anything but torch.empty.
  kernel 1 `_partial_logits_kernel`, grid (B, position tiles, S channel splits): each program takes
    BLOCK_P flattened positions and one chunk of channels; for every tap of the k x k window it
    reloads F+Eh at the shifted positions (masked loads give the zero padding; the re-reads hit
    L1/L2), applies LeakyReLU, multiplies by the tap's weights and accumulates; the channel sum of
    its chunk goes to an fp32 scratch [B, S, H*W]. Splitting channels S ways is what fills the GPU
    at B=1 (e.g. 28x28x480: 13 tiles x 30 splits) while keeping the sum order fixed.
  kernel 2 `_softmax_scale_kernel`, grid (B, channel blocks): each program sums the S partials plus
    bias for the whole image (BLOCK_HW = next_power_of_2(H*W), 1024 for the model's 28x28), does
    max/exp/sum in fp32, the channel-block-0 program stores alpha, and every program stores
    O = F * alpha for its channels. The softmax is recomputed per channel block: S*H*W fp32 reads
    from L2, cheaper than a third launch or a grid-wide sync.
  Element strides are passed for every tensor, so NCHW-contiguous and channels_last both work
  without copies.

Cost (jsla_fast.ops.cost.attention_cost: 2k^2*C*HW + 4*C*HW + 5*HW FLOPs; bytes = read F and Eh,
write O and alpha): B=40, C=832, 14x14, k=5, fp16 -> 0.352 GFLOP and 39.2 MB, i.e. 9 FLOP/byte.
Floors at the measured ceilings of jsla_fast.ops.cost.GPU_CEILINGS: memory 13.1 us on the H100,
9.1 us on the H200; compute 0.44 / 0.45 us at the bf16 tensor-core rate, and still ~5 us at the
nominal non-tensor fp32 FMA rate this kernel uses (67 TFLOP/s, a datasheet figure): the op is
memory-bound on both. This design moves a little more than the minimum: F is read twice (once
per kernel; the second read is likely L2-hit only for small images) plus the fp32 partials.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from torch.library import wrap_triton  # torch >= 2.6: torch.compile traces launches inside a triton_op


@triton.jit
def _partial_logits_kernel(
    f_ptr, e_ptr, w_ptr, part_ptr,
    C, H, W, HW, chunk, S, slope,
    sfb, sfc, sfh, sfw,
    seb, sec, seh, sew,
    swc, swh, sww,
    K: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    b = tl.program_id(0)
    tile = tl.program_id(1)
    split = tl.program_id(2)
    R: tl.constexpr = K // 2

    p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < HW
    h = p // W
    w = p % W
    # int64 batch offset: B*C*H*W can pass 2^31 for large batches.
    f_base = f_ptr + b.to(tl.int64) * sfb
    e_base = e_ptr + b.to(tl.int64) * seb

    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    c_lo = split * chunk
    for c0 in range(c_lo, c_lo + chunk, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_ok = c < C  # the last split's chunk may run past C
        for dy in tl.static_range(K):
            hh = h + (dy - R)
            row_ok = p_ok & (hh >= 0) & (hh < H)
            for dx in tl.static_range(K):
                ww = w + (dx - R)
                ok = row_ok & (ww >= 0) & (ww < W)
                m = c_ok[:, None] & ok[None, :]
                fo = c[:, None] * sfc + (hh * sfh + ww * sfw)[None, :]
                eo = c[:, None] * sec + (hh * seh + ww * sew)[None, :]
                a = (tl.load(f_base + fo, mask=m, other=0.0).to(tl.float32)
                     + tl.load(e_base + eo, mask=m, other=0.0).to(tl.float32))
                # LeakyReLU(0) = 0, so masked (padding) taps contribute nothing, as zero padding must.
                a = tl.where(a >= 0, a, a * slope)
                wt = tl.load(w_ptr + c * swc + dy * swh + dx * sww, mask=c_ok, other=0.0).to(tl.float32)
                acc += a * wt[:, None]
    logit = tl.sum(acc, axis=0)
    tl.store(part_ptr + (b * S + split).to(tl.int64) * HW + p, logit, mask=p_ok)


@triton.jit
def _softmax_scale_kernel(
    f_ptr, part_ptr, bias_ptr, out_ptr, alpha_ptr,
    C, W, HW, S, ch_per_prog,
    sfb, sfc, sfh, sfw,
    sob, soc, soh, sow,
    sab, sah, saw,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0)
    cb = tl.program_id(1)

    p = tl.arange(0, BLOCK_HW)
    p_ok = p < HW
    h = p // W
    w = p % W

    # Fixed-order sum over the splits: the result does not depend on scheduling.
    logit = tl.zeros([BLOCK_HW], dtype=tl.float32)
    part = part_ptr + (b * S).to(tl.int64) * HW
    for s in range(0, S):
        logit += tl.load(part + s * HW + p, mask=p_ok, other=0.0)
    logit += tl.load(bias_ptr).to(tl.float32)
    logit = tl.where(p_ok, logit, -float("inf"))
    mx = tl.max(logit, axis=0)
    ex = tl.where(p_ok, tl.exp(logit - mx), 0.0)
    alpha = ex / tl.sum(ex, axis=0)

    # One program per image stores alpha (a uniform branch: the whole program takes it or not).
    if cb == 0:
        a_off = b.to(tl.int64) * sab + h * sah + w * saw
        tl.store(alpha_ptr + a_off, alpha.to(alpha_ptr.dtype.element_ty), mask=p_ok)

    f_base = f_ptr + b.to(tl.int64) * sfb
    o_base = out_ptr + b.to(tl.int64) * sob
    f_pos = h * sfh + w * sfw
    o_pos = h * soh + w * sow
    c_lo = cb * ch_per_prog
    for c0 in range(c_lo, c_lo + ch_per_prog, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = (c < C)[:, None] & p_ok[None, :]
        f = tl.load(f_base + c[:, None] * sfc + f_pos[None, :], mask=m, other=0.0).to(tl.float32)
        o = f * alpha[None, :]
        tl.store(o_base + c[:, None] * soc + o_pos[None, :], o.to(out_ptr.dtype.element_ty), mask=m)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _target_programs(device: torch.device) -> int:
    # ~4 programs per SM hides load latency; on CPU (interpreter) keep it tiny: each program is slow.
    if device.type == "cuda":
        return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4


def next_pow2(n) -> int:
    """triton.next_power_of_2 for an int or a SymInt (torch.compile(dynamic=True) runs the
    launchers on symbolic shapes, where triton's bit-twiddling version returns a SymInt): the
    comparisons guard the power-of-two bucket, and the result is a plain int, as a constexpr
    block size must be."""
    p = 1
    while p < n:
        p *= 2
    return p


class AttentionPlan(NamedTuple):
    """The two launches' tiling. Plain ints: the constexprs; the rest may be SymInts under
    torch.compile(dynamic=True) (grids and runtime arguments)."""
    BLOCK_P: int
    BLOCK_C1: int
    tiles: int
    S: int          # channel splits of kernel 1
    chunk: int      # channels per split
    BLOCK_HW: int
    BLOCK_C2: int
    per_prog: int   # channels per kernel-2 program
    n_cb: int       # kernel-2 programs per image
    num_warps2: int


def attention_plan(B, C, H, W, target: int, splits: int | None = None, block_p: int | None = None) -> AttentionPlan:
    """The tiling of ``attention_forward`` for [B, C, H, W] on a device that wants ``target`` programs."""
    HW = H * W
    # Kernel 1: positions x channel splits; enough splits that B * tiles * S reaches the target.
    BLOCK_P = block_p or min(64, next_pow2(HW))
    BLOCK_C1 = min(16, next_pow2(max(C, 1)))
    tiles = triton.cdiv(HW, BLOCK_P)
    c_blocks = max(1, triton.cdiv(C, BLOCK_C1))
    S = splits if splits is not None else triton.cdiv(target, B * tiles)
    S = max(1, min(S, c_blocks))
    chunk = triton.cdiv(triton.cdiv(C, S), BLOCK_C1) * BLOCK_C1
    S = max(1, triton.cdiv(C, chunk))  # no empty splits after rounding the chunk up
    # Kernel 2: the [BLOCK_C2, BLOCK_HW] tile stays at ~4K elements to bound registers.
    BLOCK_HW = next_pow2(HW)
    BLOCK_C2 = max(1, min(4096 // BLOCK_HW, next_pow2(max(C, 1))))
    per_prog = BLOCK_C2 * max(1, triton.cdiv(triton.cdiv(C, BLOCK_C2) * B, target))
    n_cb = max(1, triton.cdiv(C, per_prog))  # >= 1 so that alpha is written even for C == 0
    return AttentionPlan(BLOCK_P, BLOCK_C1, tiles, S, chunk, BLOCK_HW, BLOCK_C2, per_prog, n_cb,
                         4 if BLOCK_HW <= 256 else 8)


def _check_out(t: torch.Tensor, shape, dtype, device, name: str) -> None:
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != device:
        raise ValueError(f"{name} must be {tuple(shape)} {dtype} on {device}, got "
                         f"{tuple(t.shape)} {t.dtype} on {t.device}")


def attention_forward(feat: torch.Tensor, eh: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      slope: float, out: torch.Tensor | None = None, alpha_out: torch.Tensor | None = None,
                      *, splits: int | None = None, block_p: int | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(O [B,C,H,W], alpha [B,1,H,W])`` in feat's dtype; equals ``attention_reference``.

    ``out`` / ``alpha_out``: optional preallocated outputs (any strides). ``splits`` / ``block_p``:
    override the channel-split count and position tile of kernel 1 (tuning and tests).

    The arguments are those :func:`jsla_fast.ops.attention` has checked (jsla_fast.ops.checks);
    this launcher checks only what is its own: the preallocated outputs."""
    B, C, H, W = feat.shape
    k = int(weight.shape[-1])  # a constexpr: under torch.compile(dynamic=True) this guards on k
    dev, dt = feat.device, feat.dtype
    if out is None:
        out = torch.empty_like(feat)  # keeps channels_last when feat has it
    else:
        _check_out(out, feat.shape, dt, dev, "out")
    if alpha_out is None:
        alpha_out = torch.empty((B, 1, H, W), dtype=dt, device=dev)
    else:
        _check_out(alpha_out, (B, 1, H, W), dt, dev, "alpha_out")
    HW = H * W
    if B == 0 or HW == 0:
        return out, alpha_out

    plan = attention_plan(B, C, H, W, _target_programs(dev), splits, block_p)
    part = torch.empty((B, plan.S, HW), dtype=torch.float32, device=dev)
    bias_t = bias.reshape(1)  # a view: no copy, no launch
    wrap_triton(_partial_logits_kernel)[(B, plan.tiles, plan.S)](
        feat, eh, weight, part,
        C, H, W, HW, plan.chunk, plan.S, float(slope),
        *feat.stride(), *eh.stride(), *weight.stride()[1:],
        K=k, BLOCK_C=plan.BLOCK_C1, BLOCK_P=plan.BLOCK_P, num_warps=4,
    )
    wrap_triton(_softmax_scale_kernel)[(B, plan.n_cb)](
        feat, part, bias_t, out, alpha_out,
        C, W, HW, plan.S, plan.per_prog,
        *feat.stride(), *out.stride(),
        alpha_out.stride(0), alpha_out.stride(2), alpha_out.stride(3),
        BLOCK_HW=plan.BLOCK_HW, BLOCK_C=plan.BLOCK_C2, num_warps=plan.num_warps2,
    )
    return out, alpha_out
