// Fused spatial attention: jsla::attention_forward<T> (contract in attention.h, specification
// jsla_fast.ops.attention_reference), float and double.
//
// Shapes and layout
//   F, Eh: [B,C,h,w], any element strides (NCHW, NHWC, sliced or cropped views); W: [C,k,k]
//   contiguous; O: [B,C,h,w] through its own strides; alpha: [B,h,w] contiguous.
//   k odd >= 1, C >= 0, B, h, w >= 0 (empty is a no-op).
//
// Algorithm. With A = lrelu(F + Eh) (never stored) and taps t = (dy, dx), o_t = (dy-k/2, dx-k/2):
//   Z[q, t] = sum_c A[c, q] W[c, t]      a GEMM (positions x C) . (C x k*k)
//   L[p]    = bias + sum_t Z[p + o_t, t]  the 'same' conv as a k*k-term shifted sum, zero padding
//                                         = clipped ranges
//   alpha   = softmax_p L ;  O = F * alpha
//
// Work split. Images go in waves whose F + Eh fit in ~6 MB (so that phase 3 re-reads F from cache,
// not DRAM, at large batch); in a wave the positions of all its images are flattened and cut into
// blocks of V = one 512-bit vector (16 floats / 8 doubles; a block may straddle two images, so
// 7x7 grids waste no lanes at batch > 1). Three host.parallel_for passes per wave:
//   1. items (channel chunk, position block): the block's k*k <= 25 accumulator vectors stay in
//      registers while the channel loop forms A's vector for channel c and does one FMA per tap
//      with W[c, t] broadcast from memory (25 FMAs per 2 loads + 3 ops). A's vector is loaded
//      straight from F and Eh when positions are unit-stride (NCHW, channel- or batch-sliced
//      NCHW views; two masked loads where a block straddles images), with a software prefetch
//      two blocks ahead (2C rows advance one line per block); channels-last inputs are
//      transposed in registers from V x V tiles (positions x channels) into an L1 panel; any
//      other layout is gathered with scalar loads. Channels are split into chunks only when a
//      wave has < 16 blocks (batch 1 at 14x14 and 7x7), so that batch 1 keeps both threads busy.
//      k > 5 runs the taps in groups of 25, the last one zero-padded.
//   2. per image: sum the channel-chunk partials of Z, the shifted sum, softmax (max-subtracted,
//      sum in double) straight into alpha.
//   3. O = F * alpha over the same items with the same grain, hence the same chunking as pass 1,
//      so each thread re-reads the F it streamed; walks O's unit stride (rows of positions for
//      NCHW-like, rows of channels for NHWC-like; strided loops otherwise).
//
// Cost per image (T = k*k taps, here float, k = 5):
//   FLOPs: 2*T*C*h*w (logits GEMM) + ~3*C*h*w (add, lrelu) + ~(2T+10)*h*w (shift-sum, softmax)
//          + C*h*w (O): the GEMM is > 90%.
//   bytes: read F and Eh once, write O and alpha = (3*C*h*w + h*w) * 4; F is re-read once more by
//          pass 3 (from L2/L3, not counted). Z scratch: 4*T*h*w bytes per image, stays in cache.
//   Floors on the 2-core Zen 4 host at 3.65 GHz, 1 zmm FMA/cycle/core = 234 GFLOP/s; inputs hot
//   in L3 at batch 1, so compute-bound:
//     480x28x28: 18.8 MFLOP, 4.5 MB -> 80 us ;  512x14x14: 5.0 MFLOP, 1.2 MB -> 21 us
//     832x14x14:  8.2 MFLOP, 2.0 MB -> 35 us ; 1024x7x7:   2.5 MFLOP, 0.6 MB -> 11 us (14 us as
//     issued: 49 positions fill 4 blocks of 16 at batch 1).
//   At batch 40 the 28x28 and 14x14 shapes are DRAM-bound instead (~31 GB/s read, ~38 GB/s
//   copy on that host): 480x28x28 moves 181 MB (+60 MB of O read-for-ownership) -> ~5-6 ms.
//
// Paths: AVX-512 intrinsics when compiled with __AVX512F__; otherwise, or when forced through
// attention_detail::attention_forward_path (the unit test forces each path), the same code over
// GCC vector extensions (32-byte vectors with AVX, 16-byte otherwise; 13-tap groups so that a
// block's accumulators fit 16 registers).

#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
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
constexpr int kForcePortable = 1;  // portable vectors instead of AVX-512 intrinsics
constexpr int kForceGeneric = 2;   // scalar strided gather for A and strided loops for O

template <typename T>
void attention_forward_path(const AttentionShape& shape, const T* feat, Strides4 feat_strides, const T* eh,
                            Strides4 eh_strides, const T* weight, T bias, T slope, T* out, Strides4 out_strides,
                            T* alpha, const Host& host, int flags);

}  // namespace attention_detail

namespace {

constexpr int64_t kPackChannels = 128;  // channels per panel of the packed (transposed) A
constexpr int64_t kWaveBytes = 6 << 20;  // F + Eh bytes of the images processed per wave
constexpr int64_t kMinItems = 16;        // items per wave below which channels are split
constexpr int64_t kMinChunk = 64;        // smallest channel chunk
constexpr int64_t kGrainCycles = 20000;  // rough work per parallel chunk at least
constexpr int64_t kPrefetchBlocks = 2;   // unit-stride positions: prefetch distance, in blocks
constexpr int64_t kPackPrefetch = 64;    // channels-last: prefetch distance, in channels

// ---------------------------------------------------------------------------------------------
// Vector types: the same kernel code runs over PortableOps or NativeOps (AVX-512).

// Portable: 32-byte vectors with AVX, 16-byte ones otherwise (GCC/Clang vector extensions, which
// the compiler maps to the target's SIMD registers or to scalars; a plain array elsewhere), and at
// most 13 taps per group, so that a block's accumulators fit 16 vector registers.
#if defined(__AVX__)
constexpr int kPortableBytes = 32;
#else
constexpr int kPortableBytes = 16;
#endif

template <typename T>
struct PortableOps {
  static constexpr int V = kPortableBytes / sizeof(T);
  static constexpr int kMaxTaps = 13;
#if defined(__GNUC__)
  typedef T vec __attribute__((vector_size(kPortableBytes)));
#else
  struct vec {
    T v[V];
    T& operator[](int l) { return v[l]; }
    const T& operator[](int l) const { return v[l]; }
  };
#endif
  static inline vec zero() { return set1(T(0)); }
  static inline vec set1(T a) {
    vec r;
    for (int l = 0; l < V; ++l) r[l] = a;
    return r;
  }
  static inline vec load(const T* p) { return loadu(p); }
  static inline vec loadu(const T* p) {
    vec r;
    std::memcpy(&r, p, sizeof(vec));
    return r;
  }
  static inline vec loadn(const T* p, int n) {
    vec r = zero();
    for (int l = 0; l < n; ++l) r[l] = p[l];
    return r;
  }
  // a with lanes [lo, hi) replaced by p[lane].
  static inline vec load_lanes(vec a, const T* p, int lo, int hi) {
    for (int l = lo; l < hi; ++l) a[l] = p[l];
    return a;
  }
  static inline void store(T* p, const vec& a) { std::memcpy(p, &a, sizeof(vec)); }
#if defined(__GNUC__)
  static inline vec add(const vec& a, const vec& b) { return a + b; }
  static inline vec lrelu(const vec& x, const vec& s) { return x < zero() ? x * s : x; }
  static inline vec fmadd_bcast(const vec& x, const T* w, const vec& acc) { return acc + x * *w; }
#else
  static inline vec add(const vec& a, const vec& b) {
    vec r;
    for (int l = 0; l < V; ++l) r[l] = a[l] + b[l];
    return r;
  }
  static inline vec lrelu(const vec& x, const vec& s) {
    vec r;
    for (int l = 0; l < V; ++l) r[l] = x[l] < T(0) ? x[l] * s[l] : x[l];
    return r;
  }
  static inline vec fmadd_bcast(const vec& x, const T* w, const vec& acc) {
    vec r;
    for (int l = 0; l < V; ++l) r[l] = acc[l] + x[l] * *w;
    return r;
  }
#endif
  static inline void transpose(vec* r) {
    for (int i = 0; i < V; ++i)
      for (int j = i + 1; j < V; ++j) {
        const T t = r[i][j];
        r[i][j] = r[j][i];
        r[j][i] = t;
      }
  }
  static inline void prefetch(const T*) {}
};

#ifdef __AVX512F__
template <typename T>
struct NativeOps;

template <>
struct NativeOps<float> {
  static constexpr int V = 16;
  static constexpr int kMaxTaps = 25;  // 25 accumulators + A + spare of the 32 zmm registers
  using vec = __m512;
  static inline vec zero() { return _mm512_setzero_ps(); }
  static inline vec set1(float a) { return _mm512_set1_ps(a); }
  static inline vec load(const float* p) { return _mm512_load_ps(p); }
  static inline vec loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline vec loadn(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  }
  static inline vec load_lanes(vec a, const float* p, int lo, int hi) {
    return _mm512_mask_loadu_ps(a, static_cast<__mmask16>(((1u << hi) - 1u) & ~((1u << lo) - 1u)), p);
  }
  static inline void store(float* p, vec a) { _mm512_store_ps(p, a); }
  static inline vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static inline vec lrelu(vec x, vec s) {
    return _mm512_mask_mul_ps(x, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), x, s);
  }
  static inline vec fmadd_bcast(vec x, const float* w, vec acc) { return _mm512_fmadd_ps(x, _mm512_set1_ps(*w), acc); }
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
  static constexpr int kMaxTaps = 25;
  using vec = __m512d;
  static inline vec zero() { return _mm512_setzero_pd(); }
  static inline vec set1(double a) { return _mm512_set1_pd(a); }
  static inline vec load(const double* p) { return _mm512_load_pd(p); }
  static inline vec loadu(const double* p) { return _mm512_loadu_pd(p); }
  static inline vec loadn(const double* p, int n) {
    return _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p);
  }
  static inline vec load_lanes(vec a, const double* p, int lo, int hi) {
    return _mm512_mask_loadu_pd(a, static_cast<__mmask8>(((1u << hi) - 1u) & ~((1u << lo) - 1u)), p);
  }
  static inline void store(double* p, vec a) { _mm512_store_pd(p, a); }
  static inline vec add(vec a, vec b) { return _mm512_add_pd(a, b); }
  static inline vec lrelu(vec x, vec s) {
    return _mm512_mask_mul_pd(x, _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_LT_OQ), x, s);
  }
  static inline vec fmadd_bcast(vec x, const double* w, vec acc) {
    return _mm512_fmadd_pd(x, _mm512_set1_pd(*w), acc);
  }
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
  int64_t ngroups, nt, tp;  // tap groups, taps per group (1, 9 or S::kMaxTaps), padded taps
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
    for (int l = 0; l < V; ++l) {
      S::prefetch(fl[l] + cc + j + kPackPrefetch);
      S::prefetch(el[l] + cc + j + kPackPrefetch);
      r[l] = S::lrelu(S::add(S::loadu(fl[l] + cc + j), S::loadu(el[l] + cc + j)), slope);
    }
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

// A wave: images [b0, b0 + nbw) whose h*w positions are flattened to g = (b - b0)*h*w + q and
// cut into npb blocks of V (a block may span images); Z is [nck][tp][ldz] over g.
struct Wave {
  int64_t b0, nbw, G, npb, ldz;
};

// Phase 1 for items [i0, i1) of a wave; item = (channel chunk ck, position block).
template <class S, int NT, typename T>
void phase1(const Ctx<T>& x, const Wave& wv, int64_t i0, int64_t i1, T* zbuf) {
  using vec = typename S::vec;
  constexpr int V = S::V;
  const vec slope = S::set1(x.slope);
  const int64_t fsc = x.fs.c, esc = x.es.c, HW = x.HW;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t ck = i / wv.npb, blk = i % wv.npb;
    const int64_t c0 = ck * x.cchunk, c1 = std::min(x.C, c0 + x.cchunk);
    const int64_t g0 = blk * V;
    const int n = static_cast<int>(std::min<int64_t>(V, wv.G - g0));  // valid lanes
    const int64_t bw = g0 / HW, q0 = g0 - bw * HW;
    const int n1 = static_cast<int>(std::min<int64_t>(n, HW - q0));  // lanes in the first image
    const T* f = x.feat + (wv.b0 + bw) * x.fs.n;
    const T* e = x.eh + (wv.b0 + bw) * x.es.n;
    T* z = zbuf + ck * x.tp * wv.ldz + g0;

    if (x.amode == AMode::kUnitPositions && (n1 == n || n - n1 <= HW)) {
      // Unit-stride positions: A's vector of channel c is one (or, for a block that straddles two
      // images, two masked) contiguous loads. Each block runs over all the chunk's channels, so
      // 2*(c1 - c0) rows of F and Eh advance by one cache line per block: a software prefetch
      // runs kPrefetchBlocks blocks ahead (the hardware prefetchers do not follow that many).
      const T* fq = f + q0;
      const T* eq = e + q0;
      for (int64_t g = 0; g < x.ngroups; ++g) {
        const T* w = x.w + g * x.C * NT;
        T* zg = z + g * NT * wv.ldz;
        if (n == V && n1 == V) {
          block_gemm<S, NT>(
              [&](int64_t c) {
                S::prefetch(fq + c * fsc + kPrefetchBlocks * V);
                S::prefetch(eq + c * esc + kPrefetchBlocks * V);
                return S::lrelu(S::add(S::loadu(fq + c * fsc), S::loadu(eq + c * esc)), slope);
              },
              c0, c1, w, zg, wv.ldz);
        } else if (n1 == n) {
          block_gemm<S, NT>(
              [&](int64_t c) { return S::lrelu(S::add(S::loadn(fq + c * fsc, n), S::loadn(eq + c * esc, n)), slope); },
              c0, c1, w, zg, wv.ldz);
        } else {
          // Lanes [n1, n) are positions [0, n - n1) of the next image, read at lane - n1.
          const T* f2 = f + x.fs.n;
          const T* e2 = e + x.es.n;
          block_gemm<S, NT>(
              [&](int64_t c) {
                const vec fv = S::load_lanes(S::loadn(fq + c * fsc, n1), f2 + c * fsc - n1, n1, n);
                const vec ev = S::load_lanes(S::loadn(eq + c * esc, n1), e2 + c * esc - n1, n1, n);
                return S::lrelu(S::add(fv, ev), slope);
              },
              c0, c1, w, zg, wv.ldz);
        }
      }
      continue;
    }

    // Packed A: per-lane row pointers (lanes past the last position repeat lane 0; their Z
    // columns are never read).
    const T* fl[V];
    const T* el[V];
    for (int l = 0; l < V; ++l) {
      const int64_t gl = g0 + (l < n ? l : 0), bl = gl / HW, ql = gl - bl * HW, yy = ql / x.W, xx = ql % x.W;
      fl[l] = x.feat + (wv.b0 + bl) * x.fs.n + yy * x.fs.h + xx * x.fs.w;
      el[l] = x.eh + (wv.b0 + bl) * x.es.n + yy * x.es.h + xx * x.es.w;
    }
    for (int64_t g = 0; g < x.ngroups; ++g) {
      const T* w = x.w + g * x.C * NT;
      T* zg = z + g * NT * wv.ldz;
      if (x.amode == AMode::kChannelsLast) {
        block_gemm_packed<S, NT>(
            [&fl, &el, slope](int64_t cc, int64_t m, T* buf) { pack_channels_last<S>(fl, el, cc, m, slope, buf); }, c0,
            c1, w, zg, wv.ldz);
      } else {
        const T sl = x.slope;
        block_gemm_packed<S, NT>(
            [&fl, &el, fsc, esc, sl](int64_t cc, int64_t m, T* buf) {
              for (int64_t u = 0; u < m; ++u) {
                const int64_t fo = (cc + u) * fsc, eo = (cc + u) * esc;
                for (int l = 0; l < V; ++l) buf[u * V + l] = lrelu_scalar<T>(fl[l][fo] + el[l][eo], sl);
              }
            },
            c0, c1, w, zg, wv.ldz);
      }
    }
  }
}

// Phase 2 for images [bw0, bw1) of the wave: reduce Z over channel chunks, shifted sum, softmax.
template <typename T>
void phase2(const Ctx<T>& x, const Wave& wv, int64_t bw0, int64_t bw1, T* zbuf) {
  const int64_t H = x.H, W = x.W, HW = x.HW, r = x.K / 2;
  for (int64_t bw = bw0; bw < bw1; ++bw) {
    T* __restrict__ z0 = zbuf + bw * HW;
    for (int64_t ck = 1; ck < x.nck; ++ck) {
      const T* __restrict__ zk = zbuf + ck * x.tp * wv.ldz + bw * HW;
      for (int64_t t = 0; t < x.taps; ++t)
        for (int64_t q = 0; q < HW; ++q) z0[t * wv.ldz + q] += zk[t * wv.ldz + q];
    }
    T* __restrict__ L = x.alpha + (wv.b0 + bw) * HW;
    for (int64_t q = 0; q < HW; ++q) L[q] = x.bias;
    for (int64_t dy = 0; dy < x.K; ++dy) {
      const int64_t oy = dy - r;
      const int64_t y0 = std::max<int64_t>(0, -oy), y1 = std::min<int64_t>(H, H - oy);
      for (int64_t dx = 0; dx < x.K; ++dx) {
        const int64_t ox = dx - r;
        const int64_t x0 = std::max<int64_t>(0, -ox), x1 = std::min<int64_t>(W, W - ox);
        const T* __restrict__ zt = z0 + (dy * x.K + dx) * wv.ldz;
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

// O = F * alpha for image b, channel chunk ck, positions [q0, q1), walking O's unit stride.
template <typename T>
void output_positions(const Ctx<T>& x, int64_t b, int64_t ck, int64_t q0, int64_t q1) {
  const int64_t c0 = ck * x.cchunk, c1 = std::min(x.C, c0 + x.cchunk);
  const T* __restrict__ al = x.alpha + b * x.HW;
  const T* f = x.feat + b * x.fs.n;
  T* o = x.out + b * x.os.n;
  if (x.omode == OMode::kUnitPositions) {
    for (int64_t c = c0; c < c1; ++c) {
      const T* __restrict__ fc = f + c * x.fs.c;
      T* __restrict__ oc = o + c * x.os.c;
      for (int64_t q = q0; q < q1; ++q) oc[q] = fc[q] * al[q];
    }
  } else if (x.omode == OMode::kChannelsLast) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t yy = q / x.W, xx = q % x.W;
      const T* __restrict__ fq = f + yy * x.fs.h + xx * x.fs.w;
      T* __restrict__ oq = o + yy * x.os.h + xx * x.os.w;
      const T a = al[q];
      for (int64_t c = c0; c < c1; ++c) oq[c] = fq[c] * a;
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

// Phase 3 for items [i0, i1): O = F * alpha over the items' positions and channels, a run of
// consecutive blocks of one channel chunk at a time, cut at image boundaries.
template <typename T>
void phase3(const Ctx<T>& x, const Wave& wv, int64_t i0, int64_t i1, int V) {
  int64_t i = i0;
  while (i < i1) {
    const int64_t ck = i / wv.npb, blk = i % wv.npb;
    const int64_t run = std::min(i1 - i, wv.npb - blk);
    const int64_t g1 = std::min(wv.G, (blk + run) * V);
    for (int64_t g = blk * V; g < g1;) {
      const int64_t bw = g / x.HW, q0 = g - bw * x.HW, q1 = std::min(x.HW, q0 + (g1 - g));
      output_positions(x, wv.b0 + bw, ck, q0, q1);
      g += q1 - q0;
    }
    i += run;
  }
}

template <class S, typename T>
void run_waves(Ctx<T>& x, const T* weight, const Host& host) {
  constexpr int V = S::V;
  constexpr int G = S::kMaxTaps;
  // Tap groups: k*k = 1 or 9 or 25 (<= G) is one group and W is used as given; otherwise W is
  // packed into groups of G taps, the last one padded with zeros.
  std::unique_ptr<T[]> wpacked;
  if (x.taps <= G && (x.taps == 1 || x.taps == 9 || x.taps == G)) {
    x.ngroups = 1;
    x.nt = x.taps;
    x.w = weight;
  } else {
    x.ngroups = (x.taps + G - 1) / G;
    x.nt = G;
    wpacked.reset(new T[x.ngroups * std::max<int64_t>(1, x.C) * G]());
    for (int64_t g = 0; g < x.ngroups; ++g)
      for (int64_t c = 0; c < x.C; ++c)
        for (int64_t t = 0; t < G && g * G + t < x.taps; ++t)
          wpacked[(g * x.C + c) * G + t] = weight[c * x.taps + g * G + t];
    x.w = wpacked.get();
  }
  x.tp = x.ngroups * x.nt;

  // Wave size: F + Eh of a wave (and its Z) within kWaveBytes, at least one image.
  const int64_t img_bytes = (2 * x.C + x.tp) * x.HW * static_cast<int64_t>(sizeof(T));
  const int64_t nbw_max = std::max<int64_t>(1, std::min<int64_t>(x.B, kWaveBytes / std::max<int64_t>(1, img_bytes)));
  const int64_t npb_max = (nbw_max * x.HW + V - 1) / V;
  // Channel chunks: only when a wave has too few position blocks to spread over the threads.
  int64_t nck = 1;
  if (npb_max < kMinItems) nck = std::min((kMinItems + npb_max - 1) / npb_max, std::max<int64_t>(1, x.C / kMinChunk));
  x.cchunk = std::max<int64_t>(1, (x.C + nck - 1) / nck);
  if (nck > 1) x.cchunk = (x.cchunk + V - 1) / V * V;
  x.nck = std::max<int64_t>(1, (x.C + x.cchunk - 1) / x.cchunk);

  const int64_t item_cycles = x.cchunk * x.ngroups * (x.nt + 4) + x.tp * 2 + 16;
  const int64_t grain = std::max<int64_t>(1, kGrainCycles / item_cycles);
  const int64_t p2_grain = std::max<int64_t>(1, kGrainCycles / (x.HW * (x.taps * (x.nck + 1) + 20) / 4 + 1));

  const int64_t zsize = x.nck * x.tp * npb_max * V;
  std::unique_ptr<T[]> zmem(new T[zsize + 64 / sizeof(T)]);
  T* zbuf = zmem.get();
  zbuf += ((64 - reinterpret_cast<std::uintptr_t>(zbuf) % 64) % 64) / sizeof(T);

  for (int64_t b0 = 0; b0 < x.B; b0 += nbw_max) {
    Wave wv;
    wv.b0 = b0;
    wv.nbw = std::min(nbw_max, x.B - b0);
    wv.G = wv.nbw * x.HW;
    wv.npb = (wv.G + V - 1) / V;
    wv.ldz = wv.npb * V;
    const int64_t items = x.nck * wv.npb;
    host.parallel_for(items, grain, [&](int64_t i0, int64_t i1) {
      switch (x.nt) {
        case 1: phase1<S, 1>(x, wv, i0, i1, zbuf); break;
        case 9: phase1<S, 9>(x, wv, i0, i1, zbuf); break;
        default: phase1<S, G>(x, wv, i0, i1, zbuf); break;
      }
    });
    host.parallel_for(wv.nbw, p2_grain, [&](int64_t bw0, int64_t bw1) { phase2(x, wv, bw0, bw1, zbuf); });
    host.parallel_for(items, grain, [&](int64_t i0, int64_t i1) { phase3(x, wv, i0, i1, V); });
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
    run_waves<NativeOps<T>>(x, weight, host);
    return;
  }
#endif
  run_waves<PortableOps<T>>(x, weight, host);
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
