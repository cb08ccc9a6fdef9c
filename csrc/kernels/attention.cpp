// Fused spatial attention: jsla::attention_forward<T> (contract in attention.h, specification
// jsla_fast.model.attention.attention_reference).
//
// Shapes and layout
//   F, Eh: [B,C,h,w], any element strides (NCHW, NHWC, sliced views); W: [C,k,k] contiguous;
//   O: [B,C,h,w] through its strides; alpha: [B,h,w] contiguous. k odd >= 1, C >= 0, h, w >= 1.
//
// Algorithm. With A = lrelu(F + Eh) and taps t = (dy, dx), o_t = (dy - k/2, dx - k/2):
//   Z[q, t] = sum_c A[c, q] W[c, t]               a GEMM: positions x C times C x k*k
//   L[p]    = bias + sum_t Z[p + o_t, t]          the 'same' conv as a k*k-term shifted sum
//   alpha   = softmax_p L ;  O = F * alpha
// Phase 1 (the cost) runs over items (image, channel chunk, block of V positions), V = one
// 512-bit vector (16 floats / 8 doubles): K*K <= 25 accumulator vectors stay in registers while
// the channel loop computes A on the fly and does one FMA per tap with W[c, t] broadcast. The
// A vector of a block is read straight from memory when positions are unit-stride (NCHW and
// channel-sliced NCHW views); for channels-last it is transposed in registers from V x V tiles
// (positions x channels) into a small L1 panel; any other layout gathers it with scalar loads.
// k > 5 runs the taps in groups of 25 (the last one zero-padded). Phase 2, per image: sum the
// channel-chunk partials of Z, the shifted sum (zero padding = clipped ranges), softmax
// (max-subtracted, sum in double) straight into alpha. Phase 3: O = F * alpha over the same
// items as phase 1 with the same chunking, so each thread re-reads the F it just streamed; the
// loop walks the layout's unit stride (positions for NCHW-like, channels for NHWC-like).
// Work split: channel chunks are only used when an image has too few position blocks to keep
// the threads busy (batch 1 at 14x14 or 7x7); images are processed in waves whose F + Eh fit in
// a slice of L3, so that phase 3's re-read of F does not go to DRAM at large batch.
//
// Cost, per image (T = k*k taps):
//   FLOPs: 2*T*C*h*w for the logits GEMM, + ~3*C*h*w (add, lrelu) + ~(2T + 10)*h*w (shifted
//          sum, softmax) + C*h*w (O) -- the GEMM is > 90% for C >= 13 at k = 5.
//   bytes: read F and Eh once, write O, write alpha: (3*C*h*w + h*w) * sizeof(T); the design
//          re-reads F once for O (from L2/L3, not counted in the floor). Z scratch is 4*T*h*w
//          bytes per image and stays in cache.
//   Floor on the 2-core Zen 4 host (fp32, k = 5; 1 zmm FMA/cycle/core ~ 2 x 32 FLOP/cycle at
//   ~3 GHz = ~190 GFLOP/s; data in L3): compute-bound everywhere,
//     480x28x28: 18.8 MFLOP, 4.5 MB -> ~100 us ; 512x14x14: 5.0 MFLOP, 1.2 MB -> ~27 us
//     832x14x14: 8.2 MFLOP, 2.0 MB -> ~43 us ; 1024x7x7: 2.5 MFLOP, 0.6 MB -> ~13 us (the last
//     block of 49 positions holds 1 of 16 lanes: 64/49 of the FLOPs are issued).
//
// Paths: AVX-512 intrinsics when compiled with __AVX512F__, else (or when forced through
// attention_detail::attention_forward_path, which the unit test uses) the same code over a
// plain-array vector type that the compiler vectorises as it can.

#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#ifdef __AVX512F__
// GCC 12 flags the _mm512_undefined_* pass-through of unpack/shuffle intrinsics as
// maybe-uninitialized (a false positive located in the header), so silence it there only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace jsla {
namespace attention_detail {

// Flags for attention_forward_path (the unit test forces each path; production passes 0).
constexpr int kForcePortable = 1;  // plain-array vectors instead of AVX-512 intrinsics
constexpr int kForceGeneric = 2;   // scalar strided gather for A and strided loops for O
constexpr int kForceStream = 4;    // non-temporal stores for O whatever its size (AVX-512 only)
#ifndef JSLA_STREAM_MB
#define JSLA_STREAM_MB 24
#endif

template <typename T>
void attention_forward_path(const AttentionShape& shape, const T* feat, Strides4 feat_strides, const T* eh,
                            Strides4 eh_strides, const T* weight, T bias, T slope, T* out, Strides4 out_strides,
                            T* alpha, const Host& host, int flags);

}  // namespace attention_detail

namespace {

constexpr int kGroupTaps = 25;        // taps per register group (25 accumulators + A + spare)
constexpr int64_t kPackChannels = 128;  // channels per panel of the packed (transposed) A
constexpr int64_t kWaveBytes = 6 << 20;  // F + Eh bytes of the images processed per wave
constexpr int64_t kMinItems = 16;        // items per wave below which channels are split
constexpr int64_t kMinChunk = 64;        // smallest channel chunk
constexpr int64_t kGrainCycles = 20000;  // rough work per parallel chunk at least
constexpr int64_t kStreamBytes = int64_t(JSLA_STREAM_MB) << 20;  // O bytes above which O is written non-temporally
constexpr int64_t kPrefetchBlocks = 2;  // unit-stride positions: software prefetch distance

// ---------------------------------------------------------------------------------------------
// Vector types: the same kernel code runs over PortableOps (arrays) or NativeOps (AVX-512).

template <typename T>
struct PortableOps {
  static constexpr int V = 64 / sizeof(T);
  struct vec {
    T v[V];
  };
  static inline vec zero() {
    vec r;
    for (int l = 0; l < V; ++l) r.v[l] = T(0);
    return r;
  }
  static inline vec set1(T a) {
    vec r;
    for (int l = 0; l < V; ++l) r.v[l] = a;
    return r;
  }
  static inline vec load(const T* p) { return loadu(p); }
  static inline vec loadu(const T* p) {
    vec r;
    for (int l = 0; l < V; ++l) r.v[l] = p[l];
    return r;
  }
  static inline vec loadn(const T* p, int n) {
    vec r;
    for (int l = 0; l < V; ++l) r.v[l] = l < n ? p[l] : T(0);
    return r;
  }
  static inline void store(T* p, const vec& a) {
    for (int l = 0; l < V; ++l) p[l] = a.v[l];
  }
  static inline vec add(const vec& a, const vec& b) {
    vec r;
    for (int l = 0; l < V; ++l) r.v[l] = a.v[l] + b.v[l];
    return r;
  }
  static inline vec lrelu(const vec& x, const vec& s) {
    vec r;
    for (int l = 0; l < V; ++l) r.v[l] = x.v[l] < T(0) ? x.v[l] * s.v[l] : x.v[l];
    return r;
  }
  static inline vec fmadd_bcast(const vec& x, const T* w, const vec& acc) {
    const T b = *w;
    vec r;
    for (int l = 0; l < V; ++l) r.v[l] = acc.v[l] + x.v[l] * b;
    return r;
  }
  static inline void transpose(vec* r) {
    for (int i = 0; i < V; ++i)
      for (int j = i + 1; j < V; ++j) std::swap(r[i].v[j], r[j].v[i]);
  }
  static inline vec mul(const vec& a, const vec& b) {
    vec r;
    for (int l = 0; l < V; ++l) r.v[l] = a.v[l] * b.v[l];
    return r;
  }
  static constexpr bool kCanStream = false;
  static inline void stream(T* p, const vec& a) { store(p, a); }
  static inline void store_fence() {}
  static inline void prefetch(const T*) {}
};

#ifdef __AVX512F__
template <typename T>
struct NativeOps;

template <>
struct NativeOps<float> {
  static constexpr int V = 16;
  using vec = __m512;
  static inline vec zero() { return _mm512_setzero_ps(); }
  static inline vec set1(float a) { return _mm512_set1_ps(a); }
  static inline vec load(const float* p) { return _mm512_load_ps(p); }
  static inline vec loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline vec loadn(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  }
  static inline void store(float* p, vec a) { _mm512_store_ps(p, a); }
  static inline vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static inline vec lrelu(vec x, vec s) {
    return _mm512_mask_mul_ps(x, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), x, s);
  }
  static inline vec fmadd_bcast(vec x, const float* w, vec acc) { return _mm512_fmadd_ps(x, _mm512_set1_ps(*w), acc); }
  static inline vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static constexpr bool kCanStream = true;
  static inline void stream(float* p, vec a) { _mm512_stream_ps(p, a); }
  static inline void store_fence() { _mm_sfence(); }
  static inline void prefetch(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1); }
  // 16 x 16 in registers: r[i][j] -> r[j][i].
  static inline void transpose(vec* r) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
      const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
      const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
      r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
      r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
      r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
      r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 4; ++i) {
      t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
      t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
      t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
      t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; ++i) {
      r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
      r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
  }
};

template <>
struct NativeOps<double> {
  static constexpr int V = 8;
  using vec = __m512d;
  static inline vec zero() { return _mm512_setzero_pd(); }
  static inline vec set1(double a) { return _mm512_set1_pd(a); }
  static inline vec load(const double* p) { return _mm512_load_pd(p); }
  static inline vec loadu(const double* p) { return _mm512_loadu_pd(p); }
  static inline vec loadn(const double* p, int n) {
    return _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p);
  }
  static inline void store(double* p, vec a) { _mm512_store_pd(p, a); }
  static inline vec add(vec a, vec b) { return _mm512_add_pd(a, b); }
  static inline vec lrelu(vec x, vec s) {
    return _mm512_mask_mul_pd(x, _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_LT_OQ), x, s);
  }
  static inline vec fmadd_bcast(vec x, const double* w, vec acc) {
    return _mm512_fmadd_pd(x, _mm512_set1_pd(*w), acc);
  }
  static inline vec mul(vec a, vec b) { return _mm512_mul_pd(a, b); }
  static constexpr bool kCanStream = true;
  static inline void stream(double* p, vec a) { _mm512_stream_pd(p, a); }
  static inline void store_fence() { _mm_sfence(); }
  static inline void prefetch(const double* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1); }
  // 8 x 8 in registers.
  static inline void transpose(vec* r) {
    __m512d t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);      // cols 0,2,4,6 of rows 2i, 2i+1
      t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);  // cols 1,3,5,7
    }
    for (int h = 0; h < 2; ++h) {  // rows 4h .. 4h+3
      u[4 * h + 0] = _mm512_shuffle_f64x2(t[4 * h], t[4 * h + 2], 0x88);      // cols 0, 4
      u[4 * h + 1] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0x88);  // cols 1, 5
      u[4 * h + 2] = _mm512_shuffle_f64x2(t[4 * h], t[4 * h + 2], 0xdd);      // cols 2, 6
      u[4 * h + 3] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0xdd);  // cols 3, 7
    }
    for (int j = 0; j < 4; ++j) {
      r[j] = _mm512_shuffle_f64x2(u[j], u[j + 4], 0x88);
      r[j + 4] = _mm512_shuffle_f64x2(u[j], u[j + 4], 0xdd);
    }
  }
};
#endif

// ---------------------------------------------------------------------------------------------

enum class AMode { kUnitPositions, kChannelsLast, kGeneric };
enum class OMode { kUnitPositions, kChannelsLast, kGeneric };

template <typename T>
struct Ctx {
  int64_t B, C, H, W, K, HW, taps;
  int64_t ngroups, nt, tp;  // tap groups, taps per group (1, 9 or 25), padded taps = ngroups*nt
  int64_t npb, ldz;         // position blocks per image, Z row length (npb*V)
  int64_t nck, cchunk;      // channel chunks per image and their size
  const T* feat;
  Strides4 fs;
  const T* eh;
  Strides4 es;
  const T* w;  // [ngroups][C][nt]
  T bias, slope;
  T* out;
  Strides4 os;
  T* alpha;
  AMode amode;
  OMode omode;
};

// Are the h*w positions at element offsets q = y*w + x (unit stride over the flattened grid)?
inline bool unit_positions(const Strides4& s, int64_t H, int64_t W) {
  return (W == 1 || s.w == 1) && (H == 1 || s.h == W);
}

template <typename T>
inline T lrelu_scalar(T x, T slope) {
  return x < T(0) ? x * slope : x;
}

// Z[t, lanes] = sum_{c0 <= c < c1} A[c, lanes] * w[c*NT + t] for t < NT, stored to z[t*ldz + lane].
// load_a(c) returns A's vector for channel c.
template <class S, int NT, typename T, class LoadA>
inline void block_gemm(const LoadA& load_a, int64_t c0, int64_t c1, const T* w, T* z, int64_t ldz) {
  using vec = typename S::vec;
  vec acc[NT];
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t) acc[t] = S::zero();
  for (int64_t c = c0; c < c1; ++c) {
    const vec x = load_a(c);
    const T* wc = w + c * NT;
#pragma GCC unroll 32
    for (int t = 0; t < NT; ++t) acc[t] = S::fmadd_bcast(x, wc + t, acc[t]);
  }
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t) S::store(z + t * ldz, acc[t]);
}

// Same, with A packed panel by panel by pack(cc, m, buf): buf[i*V + lane] = A[cc + i, lane].
template <class S, int NT, typename T, class Pack>
inline void block_gemm_packed(const Pack& pack, int64_t c0, int64_t c1, const T* w, T* z, int64_t ldz) {
  using vec = typename S::vec;
  constexpr int V = S::V;
  alignas(64) T buf[kPackChannels * V];
  vec acc[NT];
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t) acc[t] = S::zero();
  for (int64_t cc = c0; cc < c1; cc += kPackChannels) {
    const int64_t m = std::min(kPackChannels, c1 - cc);
    pack(cc, m, buf);
    for (int64_t i = 0; i < m; ++i) {
      const vec x = S::load(buf + i * V);
      const T* wc = w + (cc + i) * NT;
#pragma GCC unroll 32
      for (int t = 0; t < NT; ++t) acc[t] = S::fmadd_bcast(x, wc + t, acc[t]);
    }
  }
#pragma GCC unroll 32
  for (int t = 0; t < NT; ++t) S::store(z + t * ldz, acc[t]);
}

// Channels-last panel: buf[i*V + l] = A[cc + i] at lane l's position, whose channels start at
// fl[l] (F) and el[l] (Eh) with unit stride; V x V tiles (positions x channels) are transposed in
// registers.
template <class S, typename T>
inline void pack_channels_last(const T* const* fl, const T* const* el, int64_t cc, int64_t m, typename S::vec slope,
                               T* buf) {
  using vec = typename S::vec;
  constexpr int V = S::V;
  vec r[V];
  int64_t j = 0;
  for (; j + V <= m; j += V) {
#pragma GCC unroll 16
    for (int l = 0; l < V; ++l) r[l] = S::lrelu(S::add(S::loadu(fl[l] + cc + j), S::loadu(el[l] + cc + j)), slope);
    S::transpose(r);
#pragma GCC unroll 16
    for (int u = 0; u < V; ++u) S::store(buf + (j + u) * V, r[u]);
  }
  if (j < m) {
    const int mc = static_cast<int>(m - j);
    for (int l = 0; l < V; ++l)
      r[l] = S::lrelu(S::add(S::loadn(fl[l] + cc + j, mc), S::loadn(el[l] + cc + j, mc)), slope);
    S::transpose(r);
    for (int u = 0; u < mc; ++u) S::store(buf + (j + u) * V, r[u]);
  }
}

// Phase 1 for items [i0, i1) of a wave starting at image b0; item = (bw, ck, block). Consecutive
// items of the same (bw, ck) form a run of position blocks.
template <class S, int NT, typename T>
void phase1(const Ctx<T>& x, int64_t b0, int64_t i0, int64_t i1, int64_t nbw, T* zbuf) {
  using vec = typename S::vec;
  constexpr int V = S::V;
  const vec slope = S::set1(x.slope);
  int64_t i = i0;
  while (i < i1) {
    const int64_t bw = i / (x.nck * x.npb), ck = (i / x.npb) % x.nck, blk0 = i % x.npb;
    const int64_t blk1 = blk0 + std::min(i1 - i, x.npb - blk0);
    i += blk1 - blk0;
    const int64_t b = b0 + bw;
    const int64_t c0 = ck * x.cchunk, c1 = std::min(x.C, c0 + x.cchunk);
    T* zrun = zbuf + ((ck * nbw + bw) * x.tp) * x.ldz;
    const T* f = x.feat + b * x.fs.n;
    const T* e = x.eh + b * x.es.n;
    const int64_t fsc = x.fs.c, esc = x.es.c;

    if (x.amode == AMode::kUnitPositions) {
      // One block at a time over all the chunk's channels: 2*(c1 - c0) rows of F and Eh advance
      // by one cache line per block; the software prefetch runs kPrefetchBlocks blocks ahead
      // (the hardware prefetchers do not follow that many streams).
      for (int64_t g = 0; g < x.ngroups; ++g) {
        const T* w = x.w + g * x.C * NT;
        for (int64_t blk = blk0; blk < blk1; ++blk) {
          const int64_t q0 = blk * V;
          const int n = static_cast<int>(std::min<int64_t>(V, x.HW - q0));
          T* z = zrun + g * NT * x.ldz + q0;
          const T* fq = f + q0;
          const T* eq = e + q0;
          if (n == V) {
            block_gemm<S, NT>(
                [&](int64_t c) {
                  S::prefetch(fq + c * fsc + kPrefetchBlocks * V);
                  S::prefetch(eq + c * esc + kPrefetchBlocks * V);
                  return S::lrelu(S::add(S::loadu(fq + c * fsc), S::loadu(eq + c * esc)), slope);
                },
                c0, c1, w, z, x.ldz);
          } else {
            block_gemm<S, NT>(
                [&](int64_t c) { return S::lrelu(S::add(S::loadn(fq + c * fsc, n), S::loadn(eq + c * esc, n)), slope); },
                c0, c1, w, z, x.ldz);
          }
        }
      }
      continue;
    }

    for (int64_t blk = blk0; blk < blk1; ++blk) {
      const int64_t q0 = blk * V;
      const int n = static_cast<int>(std::min<int64_t>(V, x.HW - q0));
      // Per-lane element offsets and row pointers of the block's positions; lanes past the last
      // position repeat position q0 (their Z columns are never read).
      int64_t pf[V], pe[V];
      const T* fl[V];
      const T* el[V];
      for (int l = 0; l < V; ++l) {
        const int64_t q = q0 + (l < n ? l : 0), yy = q / x.W, xx = q % x.W;
        pf[l] = yy * x.fs.h + xx * x.fs.w;
        pe[l] = yy * x.es.h + xx * x.es.w;
        fl[l] = f + pf[l];
        el[l] = e + pe[l];
      }
      for (int64_t g = 0; g < x.ngroups; ++g) {
        const T* w = x.w + g * x.C * NT;
        T* z = zrun + g * NT * x.ldz + q0;
        if (x.amode == AMode::kChannelsLast) {
          block_gemm_packed<S, NT>(
              [fl, el, slope](int64_t cc, int64_t m, T* buf) { pack_channels_last<S>(fl, el, cc, m, slope, buf); }, c0,
              c1, w, z, x.ldz);
        } else {
          const T sl = x.slope;
          block_gemm_packed<S, NT>(
              [&pf, &pe, f, e, fsc, esc, sl](int64_t cc, int64_t m, T* buf) {
                for (int64_t u = 0; u < m; ++u) {
                  const T* fc = f + (cc + u) * fsc;
                  const T* ec = e + (cc + u) * esc;
                  T* bu = buf + u * V;
                  for (int l = 0; l < V; ++l) bu[l] = lrelu_scalar<T>(fc[pf[l]] + ec[pe[l]], sl);
                }
              },
              c0, c1, w, z, x.ldz);
        }
      }
    }
  }
}

// Phase 2 for images [bw0, bw1) of the wave: reduce Z over channel chunks, shifted sum, softmax.
template <typename T>
void phase2(const Ctx<T>& x, int64_t b0, int64_t bw0, int64_t bw1, int64_t nbw, T* zbuf) {
  const int64_t H = x.H, W = x.W, HW = x.HW, r = x.K / 2;
  for (int64_t bw = bw0; bw < bw1; ++bw) {
    T* __restrict__ z0 = zbuf + bw * x.tp * x.ldz;
    for (int64_t ck = 1; ck < x.nck; ++ck) {
      const T* __restrict__ zk = zbuf + (ck * nbw + bw) * x.tp * x.ldz;
      for (int64_t t = 0; t < x.taps; ++t)
        for (int64_t q = 0; q < HW; ++q) z0[t * x.ldz + q] += zk[t * x.ldz + q];
    }
    T* __restrict__ L = x.alpha + (b0 + bw) * HW;
    for (int64_t q = 0; q < HW; ++q) L[q] = x.bias;
    for (int64_t dy = 0; dy < x.K; ++dy) {
      const int64_t oy = dy - r;
      const int64_t y0 = std::max<int64_t>(0, -oy), y1 = std::min<int64_t>(H, H - oy);
      for (int64_t dx = 0; dx < x.K; ++dx) {
        const int64_t ox = dx - r;
        const int64_t x0 = std::max<int64_t>(0, -ox), x1 = std::min<int64_t>(W, W - ox);
        const T* __restrict__ zt = z0 + (dy * x.K + dx) * x.ldz;
        for (int64_t y = y0; y < y1; ++y) {
          T* __restrict__ Ly = L + y * W;
          const T* __restrict__ zy = zt + (y + oy) * W + ox;
          for (int64_t xx = x0; xx < x1; ++xx) Ly[xx] += zy[xx];
        }
      }
    }
    T m = L[0];
    for (int64_t q = 1; q < HW; ++q) m = std::max(m, L[q]);
    double s = 0.0;
    for (int64_t q = 0; q < HW; ++q) {
      const T ev = std::exp(L[q] - m);
      L[q] = ev;
      s += static_cast<double>(ev);
    }
    const T inv = static_cast<T>(1.0 / s);
    for (int64_t q = 0; q < HW; ++q) L[q] *= inv;
  }
}

// o[i] = f[i] * a[i] (vector alpha, NCHW-like rows) or f[i] * a0 (scalar, NHWC-like rows), i < n;
// with Stream, 64-byte-aligned vectors of o are written with non-temporal stores (large outputs
// that will not stay in cache anyway: no read-for-ownership of O's lines).
template <class S, bool Stream, typename T>
inline void scale_row(T* __restrict__ o, const T* __restrict__ f, const T* __restrict__ a, T a0, int64_t n) {
  int64_t i = 0;
  if (Stream) {
    constexpr int V = S::V;
    const int64_t head = static_cast<int64_t>(((64 - reinterpret_cast<std::uintptr_t>(o) % 64) % 64) / sizeof(T));
    if (reinterpret_cast<std::uintptr_t>(o) % sizeof(T) == 0) {
      for (; i < std::min(head, n); ++i) o[i] = f[i] * (a ? a[i] : a0);
      if (a) {
        for (; i + V <= n; i += V) S::stream(o + i, S::mul(S::loadu(f + i), S::loadu(a + i)));
      } else {
        const typename S::vec av = S::set1(a0);
        for (; i + V <= n; i += V) S::stream(o + i, S::mul(S::loadu(f + i), av));
      }
    }
  }
  if (a) {
    for (; i < n; ++i) o[i] = f[i] * a[i];
  } else {
    for (; i < n; ++i) o[i] = f[i] * a0;
  }
}

template <class S, bool Stream, typename T>
void output_blocks(const Ctx<T>& x, int64_t b, int64_t ck, int64_t q0, int64_t q1) {
  const int64_t c0 = ck * x.cchunk, c1 = std::min(x.C, c0 + x.cchunk);
  const T* al = x.alpha + b * x.HW;
  const T* f = x.feat + b * x.fs.n;
  T* o = x.out + b * x.os.n;
  if (x.omode == OMode::kUnitPositions) {
    for (int64_t c = c0; c < c1; ++c)
      scale_row<S, Stream>(o + c * x.os.c + q0, f + c * x.fs.c + q0, al + q0, T(0), q1 - q0);
  } else if (x.omode == OMode::kChannelsLast) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t yy = q / x.W, xx = q % x.W;
      scale_row<S, Stream>(o + yy * x.os.h + xx * x.os.w + c0, f + yy * x.fs.h + xx * x.fs.w + c0,
                           static_cast<const T*>(nullptr), al[q], c1 - c0);
    }
  } else {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t yy = q / x.W, xx = q % x.W;
      const T* fq = f + yy * x.fs.h + xx * x.fs.w;
      T* oq = o + yy * x.os.h + xx * x.os.w;
      const T a = al[q];
      for (int64_t c = c0; c < c1; ++c) oq[c * x.os.c] = fq[c * x.fs.c] * a;
    }
  }
}

// Phase 3 for items [i0, i1): O = F * alpha over each item's positions and channels, a run of
// consecutive blocks of the same (image, channel chunk) at a time.
template <class S, bool Stream, typename T>
void phase3(const Ctx<T>& x, int64_t b0, int64_t i0, int64_t i1) {
  constexpr int V = S::V;
  int64_t i = i0;
  while (i < i1) {
    const int64_t bw = i / (x.nck * x.npb), ck = (i / x.npb) % x.nck, blk = i % x.npb;
    const int64_t run = std::min(i1 - i, x.npb - blk);
    output_blocks<S, Stream>(x, b0 + bw, ck, blk * V, std::min(x.HW, (blk + run) * V));
    i += run;
  }
  if (Stream) S::store_fence();
}

template <class S, typename T>
void run_waves(Ctx<T>& x, const Host& host, bool force_stream) {
  constexpr int V = S::V;
  x.npb = (x.HW + V - 1) / V;
  x.ldz = x.npb * V;

  // Wave size: F + Eh of a wave (and its Z) within kWaveBytes, at least one image.
  const int64_t img_bytes = (2 * x.C * x.HW + x.tp * x.ldz) * static_cast<int64_t>(sizeof(T));
  const int64_t nbw_max = std::max<int64_t>(1, std::min<int64_t>(x.B, kWaveBytes / std::max<int64_t>(1, img_bytes)));
  // Channel chunks: only when a wave has too few position blocks to spread over the threads.
  int64_t nck = 1;
  if (nbw_max * x.npb < kMinItems) {
    nck = std::min((kMinItems + nbw_max * x.npb - 1) / (nbw_max * x.npb), std::max<int64_t>(1, x.C / kMinChunk));
  }
  x.cchunk = std::max<int64_t>(1, (x.C + nck - 1) / nck);
  if (nck > 1) x.cchunk = (x.cchunk + V - 1) / V * V;
  x.nck = std::max<int64_t>(1, (x.C + x.cchunk - 1) / x.cchunk);

  const int64_t item_cycles = x.cchunk * x.ngroups * (x.nt + 4) + x.tp * 2 + 16;
  const int64_t grain = std::max<int64_t>(1, kGrainCycles / item_cycles);

  const int64_t zsize = x.nck * nbw_max * x.tp * x.ldz;
  std::unique_ptr<T[]> zmem(new T[zsize + 64 / sizeof(T)]);
  T* zbuf = zmem.get();
  {
    const auto addr = reinterpret_cast<std::uintptr_t>(zbuf);
    zbuf += ((64 - addr % 64) % 64) / sizeof(T);
  }

  // Outputs much larger than the L3 are written with non-temporal stores.
  const bool stream =
      S::kCanStream && (force_stream || x.B * x.C * x.HW * static_cast<int64_t>(sizeof(T)) > kStreamBytes);

  for (int64_t b0 = 0; b0 < x.B; b0 += nbw_max) {
    const int64_t nbw = std::min(nbw_max, x.B - b0);
    const int64_t items = nbw * x.nck * x.npb;
    host.parallel_for(items, grain, [&](int64_t i0, int64_t i1) {
      switch (x.nt) {
        case 1: phase1<S, 1>(x, b0, i0, i1, nbw, zbuf); break;
        case 9: phase1<S, 9>(x, b0, i0, i1, nbw, zbuf); break;
        default: phase1<S, kGroupTaps>(x, b0, i0, i1, nbw, zbuf); break;
      }
    });
    const int64_t p2_grain = std::max<int64_t>(1, kGrainCycles / (x.HW * (x.taps + 20) / 4 + 1));
    host.parallel_for(nbw, p2_grain, [&](int64_t bw0, int64_t bw1) { phase2(x, b0, bw0, bw1, nbw, zbuf); });
    host.parallel_for(items, grain, [&](int64_t i0, int64_t i1) {
      if (stream)
        phase3<S, true>(x, b0, i0, i1);
      else
        phase3<S, false>(x, b0, i0, i1);
    });
  }
}

}  // namespace

namespace attention_detail {

template <typename T>
void attention_forward_path(const AttentionShape& shape, const T* feat, Strides4 feat_strides, const T* eh,
                            Strides4 eh_strides, const T* weight, T bias, T slope, T* out, Strides4 out_strides,
                            T* alpha, const Host& host, int flags) {
  const int64_t K = shape.kernel;
  if (K < 1 || K % 2 == 0) throw std::invalid_argument("jsla::attention_forward: kernel must be odd and >= 1, got " +
                                                       std::to_string(K));
  if (shape.batch < 0 || shape.channels < 0 || shape.height < 0 || shape.width < 0)
    throw std::invalid_argument("jsla::attention_forward: negative size");
  if (shape.batch == 0 || shape.height == 0 || shape.width == 0) return;

  Ctx<T> x{};
  x.B = shape.batch;
  x.C = shape.channels;
  x.H = shape.height;
  x.W = shape.width;
  x.K = K;
  x.HW = x.H * x.W;
  x.taps = K * K;
  x.feat = feat;
  x.fs = feat_strides;
  x.eh = eh;
  x.es = eh_strides;
  x.bias = bias;
  x.slope = slope;
  x.out = out;
  x.os = out_strides;
  x.alpha = alpha;

  // Tap groups: k = 1, 3, 5 use one group of exactly k*k taps and W as given; larger k packs W
  // into groups of 25 taps, the last one padded with zeros.
  std::unique_ptr<T[]> wpacked;
  if (x.taps <= kGroupTaps) {
    x.ngroups = 1;
    x.nt = x.taps;
    x.w = weight;
  } else {
    x.ngroups = (x.taps + kGroupTaps - 1) / kGroupTaps;
    x.nt = kGroupTaps;
    wpacked.reset(new T[x.ngroups * std::max<int64_t>(1, x.C) * kGroupTaps]());
    for (int64_t g = 0; g < x.ngroups; ++g)
      for (int64_t c = 0; c < x.C; ++c)
        for (int64_t t = 0; t < kGroupTaps && g * kGroupTaps + t < x.taps; ++t)
          wpacked[(g * x.C + c) * kGroupTaps + t] = weight[c * x.taps + g * kGroupTaps + t];
    x.w = wpacked.get();
  }
  x.tp = x.ngroups * x.nt;

  const bool generic = (flags & kForceGeneric) != 0;
  if (!generic && unit_positions(x.fs, x.H, x.W) && unit_positions(x.es, x.H, x.W))
    x.amode = AMode::kUnitPositions;
  else if (!generic && (x.C == 1 || (x.fs.c == 1 && x.es.c == 1)))
    x.amode = AMode::kChannelsLast;
  else
    x.amode = AMode::kGeneric;
  if (!generic && unit_positions(x.fs, x.H, x.W) && unit_positions(x.os, x.H, x.W))
    x.omode = OMode::kUnitPositions;
  else if (!generic && (x.C == 1 || (x.fs.c == 1 && x.os.c == 1)))
    x.omode = OMode::kChannelsLast;
  else
    x.omode = OMode::kGeneric;

#ifdef __AVX512F__
  if ((flags & kForcePortable) == 0) {
    run_waves<NativeOps<T>>(x, host, (flags & kForceStream) != 0);
    return;
  }
#endif
  run_waves<PortableOps<T>>(x, host, false);
}

template void attention_forward_path<float>(const AttentionShape&, const float*, Strides4, const float*, Strides4,
                                            const float*, float, float, float*, Strides4, float*, const Host&, int);
template void attention_forward_path<double>(const AttentionShape&, const double*, Strides4, const double*, Strides4,
                                             const double*, double, double, double*, Strides4, double*, const Host&,
                                             int);

}  // namespace attention_detail

template <typename T>
void attention_forward(const AttentionShape& shape, const T* feat, Strides4 feat_strides, const T* eh,
                       Strides4 eh_strides, const T* weight, T bias, T slope, T* out, Strides4 out_strides,
                       T* alpha, const Host& host) {
  attention_detail::attention_forward_path<T>(shape, feat, feat_strides, eh, eh_strides, weight, bias, slope, out,
                                              out_strides, alpha, host, 0);
}

template void attention_forward<float>(const AttentionShape&, const float*, Strides4, const float*, Strides4,
                                       const float*, float, float, float*, Strides4, float*, const Host&);
template void attention_forward<double>(const AttentionShape&, const double*, Strides4, const double*, Strides4,
                                        const double*, double, double, double*, Strides4, double*, const Host&);

}  // namespace jsla
