// Fused spatial attention (docs/DESIGN.md, "The fused ops"): torch.ops.jsla.attention, CUDA.
//
// What it computes (specification: jsla_fast.ops.attention_reference), per image b,
// for F, Eh [B,C,h,w], W [C,k,k] (odd k <= 9), bias [1] (device memory), slope:
//   A     = LeakyReLU(F + Eh, slope)                  never written to memory
//   L     = conv2d(A, W, padding k//2) + bias         [B,1,h,w], fp32
//   alpha = softmax of L over the h*w positions       fp32 math, stored in the input dtype
//   O     = F * alpha                                 with alpha as stored (as torch computes it)
// Limits: any B, C >= 0, h, w >= 1 with h*w <= 8192 (kernel 2 keeps one image's logits in
// shared memory); larger images, even or > 9 kernels return cudaErrorInvalidValue, nothing
// launched. Any element strides for F, Eh, O (NCHW, channels_last, sliced views); W, alpha
// contiguous. fp32 / fp16 / bf16, all arithmetic in fp32.
//
// Design: two launches, no atomics (the summation order is fixed: deterministic), no
// allocation, no synchronisation, no host reads: capturable in a CUDA graph.
//  * The conv is a GEMM plus a shift: Z[t, q] = sum_c W[c, t] A[c, q] for the k*k taps t at every
//    position q, then L[p] = sum_t Z[t, p + offset_t] (taps outside the image skipped: A's zero
//    padding). A thread keeps Z for its V positions x k*k taps in registers (V = 2 for k = 5, 50
//    accumulators), so each A value is read from shared memory once per channel and used for
//    all k*k taps, and the weights are warp-uniform float4 broadcasts: ~V + k*k/4 shared loads
//    per 25 V FMAs, FMA-bound rather than shared-memory-bound (a direct k x k window per output
//    would need ~k shared loads per k FMAs).
//  * kernel 1 `partial_logits_kernel`, 1-D grid over (image, position tile, channel split),
//    256 threads: a block takes an output tile, its "region" (tile + k/2 halo, clipped to the
//    image, <= 256 V positions) and one channel split. Per chunk of cc channels, F and Eh of the
//    region are loaded into registers (the next chunk's loads are in flight while this chunk's
//    FMAs run), A = LeakyReLU(F + Eh) goes to shared memory [cc][region] with the chunk's
//    weights, and G groups of NG threads (channels g, g+G, ...) accumulate Z. The load layout is
//    chosen at run time: consecutive threads on consecutive positions (w-contiguous layouts) or
//    on consecutive channels (channels_last), so both are coalesced; any strides work.
//    Epilogue: the groups' Z pass through shared memory in rounds of tap rows, are summed over
//    groups in group order, shifted and summed into the tile's fp32 partial logits in the
//    workspace [B, S, h*w]. Channel splits (and, at small B, tiles) fill the GPU:
//    attention_plan aims at ~4 x SMs blocks with >= 16 channels per split. <= 128 registers
//    (2 blocks of 256 per SM; k = 9: 1 block), <= 45 KB dynamic shared memory (no opt-in).
//  * kernel 2 `softmax_scale_kernel`, grid B x channel blocks, 256 threads: sums the S partials
//    plus bias for the whole image (in split order) into shared memory, max / exp / sum with
//    block reductions in fp32, channel block 0 stores alpha, every block stores O = F * alpha for
//    its channels (loads batched ahead of stores). The softmax is redone per channel block (S*hw
//    fp32 L2 reads), cheaper than a third launch or a grid-wide sync. Kernel 1 reads Eh with
//    evict-first loads so that F, re-read here, is more likely to still be in L2.
//
// Launch configuration, k = 5, 132 SMs (H100 and H200; target 4 x 132 = 528 blocks). Kernel 1's grid is
// B x tiles x splits, kernel 2's B x channel blocks:
//   C x h x w     B = 1: tiles (edges)  splits  k1 grid  k2 grid   B = 40: tiles (edges)  splits  k1 grid  k2 grid
//   480 x 28 x 28      20 (6x7)         26      520      1 x 15            2 (14x28)      6       480      40 x 13
//   512 x 14 x 14      16 (4x4)         32      512      1 x 16            1 (14x14)      13      520      40 x 13
//   832 x 14 x 14      12 (4x5)         44      528      1 x 26            1 (14x14)      13      520      40 x 13
//  1024 x  7 x  7       4 (4x4)         64      256      1 x 32            1 (7x7)        13      520      40 x 13
// At B = 1 the tiles' halos cost up to ~4x redundant FMAs; cheap there (B = 1 is latency-bound).
//
// Cost (jsla_fast.ops.cost.attention_cost): FLOPs = 2k^2*C*hw + 4*C*hw + 5*hw per image;
// minimum bytes = read F and Eh, write O and alpha. B=40, C=832, 14x14, k=5, fp16: 0.352 GFLOP
// and 39.2 MB (9 FLOP/byte). Floors at the measured ceilings of jsla_fast.ops.cost.GPU_CEILINGS:
// memory 13.1 us on the H100, 9.1 us on the H200 (compute 0.44 / 0.45 us at the bf16 tensor-core
// rate); this kernel's 0.16 G FMAs run on the CUDA cores, ~5 us at the nominal non-tensor fp32
// rate (33.5 T FMA/s, a datasheet figure; ~7 us here: at 14x14, 196 of 256 lanes hold a
// position): the op is memory-bound on both, by less on the H200. Bytes this design moves:
// F + Eh once (26.1 MB; at 28x28, +14% L2 re-reads of the two tiles' halo rows),
// F again in kernel 2 (13.0 MB, an L2 hit when it survived), O + alpha (13.1 MB), the partials
// (B*S*hw*4 = 0.41 MB written, then read by each of the 13 channel blocks: 5.3 MB of L2 reads).
// DRAM: 39.6 MB at best, 52.6 MB when F's second read misses L2 (floor 13-18 us on the H100,
// 9-12 us on the H200).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/kernels.h"

namespace jsla {
namespace cuda {
namespace {

constexpr int kThreads1 = 256;          // kernel 1 block
constexpr int kThreads2 = 256;          // kernel 2 block
constexpr int kMaxPositions = 8192;     // h*w limit: kernel 2's logits in shared memory (32 KB)
constexpr int kMaxKernel = 9;
constexpr int kMinSplitChannels = 16;   // below this a split's fixed costs dominate
constexpr int kMinTileEdge = 4;         // smaller tiles would be mostly halo
constexpr int kBlocksPerSM = 4;         // grid target: hides load latency, small tail
constexpr int kMinBlockChannels2 = 32;  // kernel 2: channels per block at least (softmax redone per block)
constexpr int kUnionBudget = 40 * 1024; // kernel 1 A-chunk / Z buffer; + weights (<= 4 KB) < 48 KB
constexpr int kWPT = 4;                 // kernel 1: chunk weights prefetched per thread

// Per-k constants of kernel 1. V: positions per thread (V * k*k fp32 accumulators, ~50-100
// registers); LPT: F/Eh elements prefetched per thread per chunk (2 * LPT registers).
__host__ __device__ constexpr int positions_per_thread(int k) { return k <= 1 ? 8 : k <= 3 ? 4 : k <= 5 ? 2 : 1; }
__host__ __device__ constexpr int loads_per_thread(int) { return 8; }
// 2 blocks per SM (<= 128 registers) fit without spills up to k = 7; k = 9's 81 accumulators don't.
__host__ __device__ constexpr int min_blocks1(int k) { return k >= 9 ? 1 : 2; }
__host__ __device__ constexpr int padded_taps(int k) { return (k * k + 3) / 4 * 4; }  // float4 rows

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// fp32 <-> storage type.
template <typename T>
struct Num;
template <>
struct Num<float> {
  static __device__ __forceinline__ float to(float x) { return x; }
  static __device__ __forceinline__ float from(float x) { return x; }
};
template <>
struct Num<__half> {
  static __device__ __forceinline__ float to(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from(float x) { return __float2half_rn(x); }
};
template <>
struct Num<__nv_bfloat16> {
  static __device__ __forceinline__ float to(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
};

// n / d for 0 <= n < 2^22 by a float reciprocal and one correction: a few instructions instead
// of a ~20-instruction integer division (the divisors vary per block, so no compile-time magic).
struct SmallDiv {
  int d;
  float rcp;
  __device__ __forceinline__ explicit SmallDiv(int divisor) : d(divisor), rcp(1.0f / static_cast<float>(divisor)) {}
  __device__ __forceinline__ int operator()(int n) const {
    int q = __float2int_rz(__int2float_rn(n) * rcp);  // off by at most one for n < 2^22
    const int r = n - q * d;
    if (r >= d) ++q;
    else if (r < 0) --q;
    return q;
  }
};

// An optimisation barrier: index math derived from x is redone where it is used instead of being
// hoisted out of the chunk loop, which would keep LPT addresses alive across the FMAs (spills).
__device__ __forceinline__ int opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}

// Position (tile) thread layout of a block: NG threads per channel group, G groups.
__host__ __device__ inline int group_threads(int pz, int v) { return ((pz + v - 1) / v + 31) / 32 * 32; }

template <typename T>
struct LogitParams {
  const T* feat;
  const T* eh;
  const T* weight;  // [C][k*k]
  float* part;      // [B][S][HW]
  Strides4 fs, es;
  int C, H, W, HW;
  float slope;
  int S, chunk;                  // channel splits, channels per split
  int tiles, tiles_x, th, tw;    // tiles per image, tiles per row, output tile edges
  int cc;                        // channels per shared-memory chunk
  int mode_c, tc;                // load layout: channels fastest (tc lanes along channels)?
  int union_floats;              // A-chunk / Z buffer size
};

// Kernel 1: partial logits of one (image, tile, channel split). See the header comment.
template <typename T, int K>
__global__ void __launch_bounds__(kThreads1, min_blocks1(K)) partial_logits_kernel(const LogitParams<T> p) {
  constexpr int R = K / 2, KK = K * K, KKP = padded_taps(K);
  constexpr int V = positions_per_thread(K), LPT = loads_per_thread(K);
  constexpr int NT = kThreads1;
  extern __shared__ float4 smem4[];
  float* const sW = reinterpret_cast<float*>(smem4);  // [cc][KKP], float4-aligned rows
  float* const sU = sW + p.cc * KKP;                  // A chunk [cc][pzs], later Z rows

  const int tid = threadIdx.x;
  int blk = blockIdx.x;
  const int tile = blk % p.tiles;  // tiles fastest: neighbouring tiles share halo rows in L2
  blk /= p.tiles;
  const int split = blk % p.S;
  const int b = blk / p.S;
  const int ty = tile / p.tiles_x, tx = tile - ty * p.tiles_x;
  const int oy0 = ty * p.th, oy1 = min(p.H, oy0 + p.th);
  const int ox0 = tx * p.tw, ox1 = min(p.W, ox0 + p.tw);
  const int zy0 = max(0, oy0 - R), zy1 = min(p.H, oy1 + R);
  const int zx0 = max(0, ox0 - R), zx1 = min(p.W, ox1 + R);
  const int ZH = zy1 - zy0, ZW = zx1 - zx0, PZ = ZH * ZW;
  const int pzs = PZ | 1;  // odd row stride: channel-fastest stores hit distinct banks
  const SmallDiv div_zw(ZW);

  const int64_t c_lo64 = min(static_cast<int64_t>(p.C), static_cast<int64_t>(split) * p.chunk);
  const int c_lo = static_cast<int>(c_lo64);
  const int c_hi = min(p.C, c_lo + p.chunk);
  const T* const fb = p.feat + b * p.fs.n + zy0 * p.fs.h + zx0 * p.fs.w;
  const T* const eb = p.eh + b * p.es.n + zy0 * p.es.h + zx0 * p.es.w;

  // Load layout: element (channel cl, position q) with cl = tc_id + i*TC, q = tq_id + m*TQ.
  int TQ, TC, tq_id0, tc_id0;
  const int tid0 = tid;  // (the lambdas below take opaque copies)
  if (p.mode_c) {  // channels_last: consecutive threads read consecutive channels
    TC = p.tc;
    TQ = NT / TC;
    tc_id0 = tid % TC;
    tq_id0 = tid / TC;
  } else {  // consecutive threads read consecutive positions (w-contiguous rows)
    TQ = min(PZ, NT);
    TC = NT / TQ;
    tc_id0 = tid / TQ;
    tq_id0 = tid - tc_id0 * TQ;
  }
  const int NM = (PZ + TQ - 1) / TQ;
  const int NI = (p.cc + TC - 1) / TC;
  const int NJ = NM * NI;  // <= LPT (the host sized cc for it)

  // Compute layout: group g takes chunk channels g, g+G, ...; thread gi of it positions gi + v*NG.
  const int NG = group_threads(PZ, V);
  const int G = NT / NG;
  const int g = tid / NG, gi = tid - g * NG;

  T fr[LPT], er[LPT];
  T wr[kWPT];
  const T zero = Num<T>::from(0.0f);

  // Global -> registers for the chunk at c_base (cc_n channels), issued before the FMAs of the
  // chunk before it so the loads are in flight while those run. Eh is read once: evict-first.
  auto prefetch = [&](int c_base, int cc_n) {
    const int tq_id = opaque(tq_id0), tc_id = opaque(tc_id0), t_id = opaque(tid0);
    int m = 0, i = 0;
    int64_t zf = 0, ze = 0;
#pragma unroll
    for (int j = 0; j < LPT; ++j) {
      T f = zero, e = zero;
      if (j < NJ) {
        const int q = tq_id + m * TQ, cl = tc_id + i * TC;
        if (i == 0 && q < PZ) {  // a new position: its spatial offsets
          const int y = div_zw(q), x = q - y * ZW;
          zf = y * p.fs.h + x * p.fs.w;
          ze = y * p.es.h + x * p.es.w;
        }
        if (tc_id < TC && q < PZ && cl < cc_n) {  // tc_id >= TC: an idle thread
          const int64_t c = c_base + cl;
          f = fb[c * p.fs.c + zf];
          e = __ldcs(eb + c * p.es.c + ze);
        }
      }
      fr[j] = f;
      er[j] = e;
      if (++i == NI) {
        i = 0;
        ++m;
      }
    }
#pragma unroll
    for (int j = 0; j < kWPT; ++j) {
      const int idx = t_id + j * NT;
      const int cl = idx / KKP, t = idx - cl * KKP;
      wr[j] = (cl < cc_n && t < KK) ? p.weight[(static_cast<int64_t>(c_base) + cl) * KK + t] : zero;
    }
  };
  // Registers -> shared memory: A = LeakyReLU(F + Eh) in fp32, and the chunk's weights.
  auto commit = [&](int cc_n) {
    const int tq_id = opaque(tq_id0), tc_id = opaque(tc_id0), t_id = opaque(tid0);
    int m = 0, i = 0;
#pragma unroll
    for (int j = 0; j < LPT; ++j) {
      const int q = tq_id + m * TQ, cl = tc_id + i * TC;
      if (j < NJ && tc_id < TC && q < PZ && cl < cc_n) {
        const float a = Num<T>::to(fr[j]) + Num<T>::to(er[j]);
        sU[cl * pzs + q] = a >= 0.0f ? a : a * p.slope;
      }
      if (++i == NI) {
        i = 0;
        ++m;
      }
    }
#pragma unroll
    for (int j = 0; j < kWPT; ++j) {
      const int idx = t_id + j * NT;
      if (idx < p.cc * KKP) sW[idx] = Num<T>::to(wr[j]);  // padding taps and missing channels: 0
    }
  };

  float acc[KK][V];
#pragma unroll
  for (int t = 0; t < KK; ++t)
#pragma unroll
    for (int v = 0; v < V; ++v) acc[t][v] = 0.0f;

  const int nchunks = c_hi > c_lo ? (c_hi - c_lo + p.cc - 1) / p.cc : 0;
  if (nchunks > 0) prefetch(c_lo, min(p.cc, c_hi - c_lo));
  for (int k = 0; k < nchunks; ++k) {
    const int c_base = c_lo + k * p.cc;
    const int cc_n = min(p.cc, c_hi - c_base);
    commit(cc_n);
    __syncthreads();
    if (k + 1 < nchunks) prefetch(c_base + p.cc, min(p.cc, c_hi - c_base - p.cc));
    if (g < G) {
      int qv[V];
#pragma unroll
      for (int v = 0; v < V; ++v) qv[v] = min(gi + v * NG, PZ - 1);  // clamped: unused lanes read a valid slot
      for (int cl = g; cl < cc_n; cl += G) {
        const float* const arow = sU + cl * pzs;
        float a[V];
#pragma unroll
        for (int v = 0; v < V; ++v) a[v] = arow[qv[v]];
        const float4* const w4 = reinterpret_cast<const float4*>(sW + cl * KKP);
#pragma unroll
        for (int t4 = 0; t4 < KKP / 4; ++t4) {
          const float4 w = w4[t4];  // same address across the warp: one broadcast
          const float wv[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            if (t4 * 4 + u < KK) {
#pragma unroll
              for (int v = 0; v < V; ++v) acc[t4 * 4 + u][v] = fmaf(wv[u], a[v], acc[t4 * 4 + u][v]);
            }
          }
        }
      }
    }
    __syncthreads();  // the next commit overwrites sU / sW
  }

  // Epilogue. Outputs p = tid + n*NT of the tile (tile <= region <= NT*V positions).
  const int TWa = ox1 - ox0, PT = (oy1 - oy0) * TWa;
  int ry[V], rx[V];  // region coordinates of the outputs
  float lacc[V];
#pragma unroll
  for (int n = 0; n < V; ++n) {
    const int pp = tid + n * NT;
    const int y = pp / TWa;
    ry[n] = y + oy0 - zy0;
    rx[n] = pp - y * TWa + ox0 - zx0;
    lacc[n] = 0.0f;
  }
  // Z rows go through sU in rounds of tr tap rows: all G groups' [tr*K][PZ] slabs at once.
  const int tr = min(K, p.union_floats / (K * G * PZ));  // >= 1: the host sized union_floats
  const int gstride = tr * K * PZ;
#pragma unroll
  for (int dy = 0; dy < K; ++dy) {
    const int slot = dy % tr;
    if (slot == 0) __syncthreads();  // the FMAs' (or last round's) reads of sU are done
    if (g < G) {
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const int q = gi + v * NG;
        if (q < PZ) {
#pragma unroll
          for (int dx = 0; dx < K; ++dx) sU[g * gstride + (slot * K + dx) * PZ + q] = acc[dy * K + dx][v];
        }
      }
    }
    if (slot == tr - 1 || dy == K - 1) {  // block-uniform
      __syncthreads();
      const int nz = (slot + 1) * K * PZ;
      if (G > 1) {  // sum the groups in group order into group 0's slab
        for (int idx = tid; idx < nz; idx += NT) {
          float s = sU[idx];
          for (int gg = 1; gg < G; ++gg) s += sU[gg * gstride + idx];
          sU[idx] = s;
        }
      }
      __syncthreads();
      const int dy0 = dy - slot;
#pragma unroll
      for (int n = 0; n < V; ++n) {
        if (tid + n * NT < PT) {
          for (int rr = 0; rr <= slot; ++rr) {
            const int yy = ry[n] + dy0 + rr - R;
            if (yy >= 0 && yy < ZH) {
              const float* const zrow = sU + rr * K * PZ + yy * ZW;
#pragma unroll
              for (int dx = 0; dx < K; ++dx) {
                const int xx = rx[n] + dx - R;
                if (xx >= 0 && xx < ZW) lacc[n] += zrow[dx * PZ + xx];
              }
            }
          }
        }
      }
    }
  }
  float* const out = p.part + (static_cast<int64_t>(b) * p.S + split) * p.HW;
#pragma unroll
  for (int n = 0; n < V; ++n) {
    if (tid + n * NT < PT) out[(ry[n] + zy0) * p.W + rx[n] + zx0] = lacc[n];
  }
}

template <typename T>
struct SoftmaxParams {
  const T* feat;
  const T* bias;
  const float* part;  // [B][S][HW]
  T* out;
  T* alpha;  // [B][HW]
  Strides4 fs, os;
  int C, W, HW, S;
  int ncb, cpb;    // channel blocks per image, channels per block
  int mode_c, tc;  // O layout: channels fastest (tc lanes along channels)?
};

// Block-wide reductions, every thread gets the result; fixed order (deterministic). Each call
// site has its own `red` so a fast warp cannot overwrite values a slow one still reads.
__device__ __forceinline__ float block_max(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kThreads2 / 32; ++w) r = fmaxf(r, red[w]);
  return r;
}
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < kThreads2 / 32; ++w) r += red[w];
  return r;
}

// Kernel 2: logits = bias + sum of partials, softmax, alpha (channel block 0), O for the block's
// channels.
template <typename T>
__global__ void __launch_bounds__(kThreads2) softmax_scale_kernel(const SoftmaxParams<T> p) {
  extern __shared__ float sL[];  // [HW]: logits, then alpha as stored
  __shared__ float red_max[kThreads2 / 32], red_sum[kThreads2 / 32];
  const int tid = threadIdx.x;
  const int cb = blockIdx.x % p.ncb;
  const int b = blockIdx.x / p.ncb;

  const float* const part = p.part + static_cast<int64_t>(b) * p.S * p.HW;
  const float bias = Num<T>::to(*p.bias);
  float mx = -INFINITY;
  for (int q = tid; q < p.HW; q += kThreads2) {
    float l = 0.0f;
#pragma unroll 4
    for (int s = 0; s < p.S; ++s) l += part[static_cast<int64_t>(s) * p.HW + q];  // split order
    l += bias;
    sL[q] = l;
    mx = fmaxf(mx, l);
  }
  mx = block_max(mx, red_max);
  float sum = 0.0f;
  for (int q = tid; q < p.HW; q += kThreads2) {  // same q as above: own writes, no sync needed
    const float e = expf(sL[q] - mx);
    sL[q] = e;
    sum += e;
  }
  sum = block_sum(sum, red_sum);  // its __syncthreads also publishes sL
  const float inv = 1.0f / sum;
  for (int q = tid; q < p.HW; q += kThreads2) {
    const T a = Num<T>::from(sL[q] * inv);
    if (cb == 0) p.alpha[static_cast<int64_t>(b) * p.HW + q] = a;
    sL[q] = Num<T>::to(a);  // O = F * alpha as stored, like the reference's feat * alpha
  }
  __syncthreads();

  const int c0 = cb * p.cpb, c1 = min(p.C, c0 + p.cpb);
  int TQ, TC, tq_id, tc_id;
  if (p.mode_c) {
    TC = p.tc;
    TQ = kThreads2 / TC;
    tc_id = tid % TC;
    tq_id = tid / TC;
  } else {
    TQ = min(p.HW, kThreads2);
    TC = kThreads2 / TQ;
    tc_id = tid / TQ;
    tq_id = tid - tc_id * TQ;
  }
  if (tc_id >= TC) return;  // no barrier follows
  // This thread's elements: positions tq_id + m*TQ x channels c0 + tc_id + i*TC, walked channel
  // index fastest. Loads go in batches ahead of the stores: F and O might alias as far as the
  // compiler knows, so a plain loop would keep one load in flight per thread.
  const int nq = tq_id < p.HW ? (p.HW - tq_id + TQ - 1) / TQ : 0;
  const int nc = c0 + tc_id < c1 ? (c1 - c0 - tc_id + TC - 1) / TC : 0;
  const int64_t total = static_cast<int64_t>(nq) * nc;
  const SmallDiv div_w(p.W);
  const T* const fb = p.feat + b * p.fs.n;
  T* const ob = p.out + b * p.os.n;
  constexpr int kBatch = 8;
  int m = 0, i = 0;
  for (int64_t j0 = 0; j0 < total; j0 += kBatch) {
    float f[kBatch], a[kBatch];
    int64_t oo[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      f[u] = 0.0f;
      a[u] = 0.0f;
      oo[u] = 0;
      if (j0 + u < total) {
        const int q = tq_id + m * TQ;
        const int64_t c = c0 + tc_id + i * TC;
        const int y = div_w(q), x = q - y * p.W;
        f[u] = Num<T>::to(__ldcs(fb + y * p.fs.h + x * p.fs.w + c * p.fs.c));  // F's last use
        a[u] = sL[q];
        oo[u] = y * p.os.h + x * p.os.w + c * p.os.c;
        if (++i == nc) {
          i = 0;
          ++m;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      if (j0 + u < total) ob[oo[u]] = Num<T>::from(f[u] * a[u]);
    }
  }
}

// ---- host side ------------------------------------------------------------------------------

bool valid_shape(const AttentionShape& s) {
  return s.batch >= 0 && s.channels >= 0 && s.channels <= INT32_MAX / 2 && s.height >= 0 && s.width >= 0 &&
         s.height <= kMaxPositions && s.width <= kMaxPositions && s.height * s.width <= kMaxPositions &&
         s.kernel >= 1 && s.kernel <= kMaxKernel && s.kernel % 2 == 1;
}

struct Tiling {
  int th, tw, ny, nx;  // output tile edges, tiles along h and w
};

// The next smaller tile edge along a dimension of n (one more tile), or t if there is none.
int next_edge(int n, int t) {
  for (int64_t cnt = ceil_div(n, t) + 1; cnt <= n; ++cnt) {
    const int e = static_cast<int>(ceil_div(n, cnt));
    if (e < t) return e;
  }
  return t;
}

int64_t region_size(int H, int W, int R, int th, int tw) {
  return static_cast<int64_t>(std::min(H, th + 2 * R)) * std::min(W, tw + 2 * R);
}

// Tiles: the largest whose region fits a block (<= 256 V positions), then smaller (edges >= 4)
// until B * tiles * max_splits reaches the target. Depends on shape and target only, so plan and
// forward agree; the workspace size does not depend on it.
Tiling choose_tiling(const AttentionShape& s, int64_t target) {
  const int H = static_cast<int>(s.height), W = static_cast<int>(s.width), K = static_cast<int>(s.kernel);
  const int R = K / 2;
  const int64_t pzmax = static_cast<int64_t>(kThreads1) * positions_per_thread(K);
  int th = H, tw = W;
  while (region_size(H, W, R, th, tw) > pzmax) {
    if (th >= tw && th > 1) th = next_edge(H, th);
    else tw = next_edge(W, tw);
  }
  const int64_t max_splits = std::max<int64_t>(1, s.channels / kMinSplitChannels);
  while (s.batch * ceil_div(H, th) * ceil_div(W, tw) * max_splits < target) {
    const int nth = next_edge(H, th), ntw = next_edge(W, tw);
    const bool cy = nth < th && nth >= kMinTileEdge, cx = ntw < tw && ntw >= kMinTileEdge;
    if (cy && (th >= tw || !cx)) th = nth;
    else if (cx) tw = ntw;
    else break;
  }
  return Tiling{th, tw, static_cast<int>(ceil_div(H, th)), static_cast<int>(ceil_div(W, tw))};
}

int64_t grid_target(int device) { return static_cast<int64_t>(kBlocksPerSM) * multiprocessor_count(device); }

// Splits: ~target blocks in all, >= 16 channels each, then no empty split after rounding.
int64_t choose_splits(const AttentionShape& s, const Tiling& t, int64_t target) {
  const int64_t C = s.channels;
  const int64_t tiles = static_cast<int64_t>(t.ny) * t.nx;
  const int64_t max_splits = std::max<int64_t>(1, C / kMinSplitChannels);
  int64_t S = std::clamp<int64_t>(target / std::max<int64_t>(1, s.batch * tiles), 1, max_splits);
  if (C > 0) S = ceil_div(C, ceil_div(C, S));
  return S;
}

template <typename T, int K>
cudaError_t launch_logits(const AttentionShape& s, const T* feat, Strides4 fs, const T* eh, Strides4 es,
                          const T* weight, float slope, float* part, int64_t S, const Tiling& t,
                          cudaStream_t stream) {
  constexpr int R = K / 2, KKP = padded_taps(K), V = positions_per_thread(K), LPT = loads_per_thread(K);
  LogitParams<T> p{};
  p.feat = feat;
  p.eh = eh;
  p.weight = weight;
  p.part = part;
  p.fs = fs;
  p.es = es;
  p.C = static_cast<int>(s.channels);
  p.H = static_cast<int>(s.height);
  p.W = static_cast<int>(s.width);
  p.HW = p.H * p.W;
  p.slope = slope;
  p.S = static_cast<int>(S);
  p.chunk = static_cast<int>(std::max<int64_t>(1, ceil_div(s.channels, S)));
  p.th = t.th;
  p.tw = t.tw;
  p.tiles_x = t.nx;
  p.tiles = t.ny * t.nx;

  // Largest region and largest G * region over the tiles (edge tiles have smaller regions).
  int pz_max = 1, gpz_max = 1;
  for (int ty = 0; ty < t.ny; ++ty) {
    const int oy0 = ty * t.th, oy1 = std::min(p.H, oy0 + t.th);
    const int zh = std::min(p.H, oy1 + R) - std::max(0, oy0 - R);
    for (int tx = 0; tx < t.nx; ++tx) {
      const int ox0 = tx * t.tw, ox1 = std::min(p.W, ox0 + t.tw);
      const int pz = zh * (std::min(p.W, ox1 + R) - std::max(0, ox0 - R));
      pz_max = std::max(pz_max, pz);
      gpz_max = std::max(gpz_max, kThreads1 / group_threads(pz, V) * pz);
    }
  }
  if (pz_max > kThreads1 * V) return cudaErrorInvalidValue;  // choose_tiling guarantees it

  // Chunk channels cc: the load layout's elements per thread (NI * NM) <= LPT, the weights fit
  // kWPT per thread, the A chunk fits the budget, and a multiple of the compute groups.
  const bool w_unit = fs.w == 1 && es.w == 1;
  p.mode_c = (!w_unit && fs.c == 1 && es.c == 1) ? 1 : 0;
  int cc = 1;
  if (p.mode_c) {
    for (int tc = 32; tc >= 1; tc /= 2) {
      const int nm = static_cast<int>(ceil_div(pz_max, kThreads1 / tc));
      if (nm <= LPT || tc == 1) {
        p.tc = tc;
        cc = tc * std::max(1, LPT / nm);
        break;
      }
    }
  } else {
    const int tq = std::min(pz_max, kThreads1), tc = kThreads1 / tq;
    const int nm = static_cast<int>(ceil_div(pz_max, tq));
    p.tc = tc;
    cc = tc * std::max(1, LPT / nm);
  }
  const int budget_floats = kUnionBudget / 4;
  const int pzs_max = pz_max | 1;
  cc = std::min({cc, kThreads1 * kWPT / KKP, budget_floats / pzs_max, p.chunk});
  cc = std::max(cc, 1);
  const int g0 = kThreads1 / group_threads(pz_max, V);
  if (cc > g0) cc = cc / g0 * g0;
  p.cc = cc;
  if (K * gpz_max > budget_floats) return cudaErrorInvalidValue;  // cannot happen for K <= 9
  const int rows = std::min(K, budget_floats / (K * gpz_max));
  p.union_floats = std::max(cc * pzs_max, rows * K * gpz_max);
  const size_t smem = static_cast<size_t>(cc * KKP + p.union_floats) * sizeof(float);

  const int64_t blocks = s.batch * static_cast<int64_t>(p.tiles) * S;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  partial_logits_kernel<T, K><<<static_cast<unsigned>(blocks), kThreads1, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch(const AttentionShape& s, const void* feat, Strides4 fs, const void* eh, Strides4 es,
                   const void* weight, const void* bias, float slope, void* out, Strides4 os, void* alpha,
                   int64_t S, void* workspace, int64_t target, cudaStream_t stream) {
  const Tiling t = choose_tiling(s, target);
  float* const part = static_cast<float*>(workspace);
  const T* const f = static_cast<const T*>(feat);

  // Kernel 2's configuration first: a grid it cannot launch must fail before kernel 1 runs.
  SoftmaxParams<T> p{};
  p.feat = f;
  p.bias = static_cast<const T*>(bias);
  p.part = part;
  p.out = static_cast<T*>(out);
  p.alpha = static_cast<T*>(alpha);
  p.fs = fs;
  p.os = os;
  p.C = static_cast<int>(s.channels);
  p.W = static_cast<int>(s.width);
  p.HW = static_cast<int>(s.height * s.width);
  p.S = static_cast<int>(S);
  int64_t ncb = std::clamp<int64_t>(target / std::max<int64_t>(1, s.batch), 1,
                                    std::max<int64_t>(1, s.channels / kMinBlockChannels2));
  const int64_t cpb = s.channels > 0 ? ceil_div(s.channels, ncb) : 1;
  ncb = s.channels > 0 ? ceil_div(s.channels, cpb) : 1;  // >= 1 even for C = 0: alpha is still written
  p.ncb = static_cast<int>(ncb);
  p.cpb = static_cast<int>(cpb);
  p.mode_c = (!(fs.w == 1 && os.w == 1) && fs.c == 1 && os.c == 1) ? 1 : 0;
  p.tc = 1;
  while (p.tc < 32 && p.tc < cpb) p.tc *= 2;
  const int64_t blocks = s.batch * ncb;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;

  const T* const e = static_cast<const T*>(eh);
  const T* const w = static_cast<const T*>(weight);
  cudaError_t err = cudaErrorInvalidValue;
  switch (s.kernel) {
    case 1: err = launch_logits<T, 1>(s, f, fs, e, es, w, slope, part, S, t, stream); break;
    case 3: err = launch_logits<T, 3>(s, f, fs, e, es, w, slope, part, S, t, stream); break;
    case 5: err = launch_logits<T, 5>(s, f, fs, e, es, w, slope, part, S, t, stream); break;
    case 7: err = launch_logits<T, 7>(s, f, fs, e, es, w, slope, part, S, t, stream); break;
    case 9: err = launch_logits<T, 9>(s, f, fs, e, es, w, slope, part, S, t, stream); break;
    default: break;
  }
  if (err != cudaSuccess) return err;
  softmax_scale_kernel<T><<<static_cast<unsigned>(blocks), kThreads2, p.HW * sizeof(float), stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

AttentionPlan attention_plan(const AttentionShape& shape, int device) {
  AttentionPlan plan{1, 0};
  // attention_forward rejects an invalid shape and returns early for an empty one.
  if (!valid_shape(shape) || shape.batch == 0 || shape.height * shape.width == 0) return plan;
  const int64_t target = grid_target(device);
  plan.splits = choose_splits(shape, choose_tiling(shape, target), target);
  plan.workspace_bytes = shape.batch * plan.splits * shape.height * shape.width * static_cast<int64_t>(sizeof(float));
  return plan;
}

cudaError_t attention_forward(const AttentionShape& shape, DType dtype, const void* feat, Strides4 feat_strides,
                              const void* eh, Strides4 eh_strides, const void* weight, const void* bias, float slope,
                              void* out, Strides4 out_strides, void* alpha, const AttentionPlan& plan,
                              void* workspace, cudaStream_t stream) {
  if (!valid_shape(shape)) return cudaErrorInvalidValue;
  if (shape.batch == 0 || shape.height * shape.width == 0) return cudaSuccess;  // nothing to compute
  const int64_t S = plan.splits;
  if (S < 1 || S > INT32_MAX || workspace == nullptr ||
      plan.workspace_bytes < shape.batch * S * shape.height * shape.width * static_cast<int64_t>(sizeof(float)))
    return cudaErrorInvalidValue;
  // Tiles and kernel 2's channel blocks follow the current device's size (only the speed
  // depends on them; the splits, hence the workspace, come from the plan).
  int device = 0;
  const cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const int64_t target = grid_target(device);
  switch (dtype) {
    case DType::kFloat32:
      return launch<float>(shape, feat, feat_strides, eh, eh_strides, weight, bias, slope, out, out_strides, alpha, S,
                           workspace, target, stream);
    case DType::kFloat16:
      return launch<__half>(shape, feat, feat_strides, eh, eh_strides, weight, bias, slope, out, out_strides, alpha, S,
                            workspace, target, stream);
    case DType::kBFloat16:
      return launch<__nv_bfloat16>(shape, feat, feat_strides, eh, eh_strides, weight, bias, slope, out, out_strides,
                                   alpha, S, workspace, target, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace jsla
