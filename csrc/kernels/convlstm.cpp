// Multi-kernel ConvLSTM step: Winograd convolutions fused with the LSTM update (CPU, no torch).
//
// Shapes (convlstm.h): x [B,D,H,W], h, c [B,hid,H,W] with any element strides; branch b has an
// odd kernel k_b and n = hid / branches hidden channels; its weights are [4n, Cin, k, k] with
// Cin = D + hid, gate order i, f, g, o. Outputs h', c' [B,hid,H,W] through their strides.
//
// Algorithm. Each branch is a 'same' convolution of xh = [x, h] computed exactly (up to
// rounding) with Winograd minimal filtering F(m x m, k x k): alpha = m + k - 1 points per axis,
//   Y = A^T [ (G w G^T) (.) (B^T d B) ] A     per m x m output tile and channel pair,
// the sum over the Cin input channels being a GEMM per Winograd point (alpha^2 GEMMs):
//   k = 3: F(2x2,3x3), alpha 4, points 0, +-1, inf             (16 products per 4 outputs)
//   k = 5: F(4x4,5x5), alpha 8, points 0, +-1, +-2, +-1/2, inf (64 per 16, vs 36 per 4 for F(2x2))
//   k = 7: F(2x2,7x7), alpha 8, same points                    (64 per 4)
//   k = 1 and k >= 9: direct convolution as a GEMM over k*k shifted views of the packed input.
// B^T rows are scaled to small integers (exact in float), G = diag(gamma) Vandermonde carries the
// fractions and is applied to the weights in double once (ConvLSTMWeights), A^T is exact.
// The alpha = 8 point set is the most accurate known for 8 points; F(4x4,5x5) has about the
// same float error as F(2x2,7x7) (measured below) and 42% fewer products than F(2x2,5x5) here.
//
// Data flow of one call (one "chunk" = whole images, or bands of 4-row multiples of one large
// image, sized so that the Winograd scratch stays in the last-level cache):
//  A. pack xh once into P [B][Hp][Wp][Cp] (channels innermost, Cp = Cin rounded up to one
//     64-byte vector, zero border of max k/2 plus the partial last tile);
//  B. first stage of the input transform, shared by all tiles of a tile row (they overlap):
//     T1[tile row][i][x][Cp] = sum_a B^T[i][a] P[m*ty + a][x];
//  C. GEMM tasks (branch, first-stage row i, <= 64 tiles): second stage V[t][l] = B^T T1 for the
//     row's alpha points, then M[t][(i,l)] = V[t][(i,l)][:] @ U[(i,l)] for l < alpha (our own
//     register-blocked micro-kernel: 4 tiles x 96 columns = 24 zmm accumulators; the K = Cin sum
//     is accumulated in blocks of <= 64 channels added in memory, which halves the float rounding
//     of the long sums), then the output transform along l: Z[t][i][px] = sum_l M[t][(i,l)] A[l][px].
//     M and V never leave the task's L2-resident scratch. Direct branches: same micro-kernel,
//     rows = pixels, k*k segments;
//  D. epilogue per (branch, tile row): output transform along i, + bias, LSTM update
//     c' = sig(f) c + sig(i) tanh(g), h' = sig(o) tanh(c') on 8 hidden channels at a time; the
//     four gate columns of hidden channel j are packed side by side (column (j/8)*32 + gate*8 +
//     j%8), so no gate tensor is ever written.
// Work split: every phase is one host.parallel_for whose bodies take tasks from an atomic
// counter (largest first), so any thread count and a busy machine stay balanced. Scratch is
// cached per thread (no page faults per call). host.gemm is not used: MKL through at::bmm ran
// these small batched shapes at 17-170 GFLOP/s, our kernel reaches ~93 GFLOP/s per core (~96%
// of the FMA peak) and reads A through row pointers (no im2col for the direct branches).
//
// Cost at the real shape (D=128, hid=96, 14x14, kernels 1,3,5,7), per image:
//   direct convolution 2*196*96*224*(1+9+25+49) = 708 MFLOP;
//   here GEMM 2*96*224*(196 + 49*16 + 16*64 + 49*64) = 221 MFLOP (the 4x4 tiles of k=5 cover
//   16x16 for 14x14), + ~8 MFLOP transforms, ~2 MFLOP LSTM.
//   Minimum bytes: x, h, c in and h', c' out, 400 KB per image, plus the transformed weights
//   224*96*(1+16+64+64)*4 B = 12.5 MB read once per chunk (L3-resident between calls).
//   Floor on this machine (2 Zen 4 cores, ~195 GFLOP/s fp32 FMA peak): compute bound,
//   221 MFLOP / 195 GFLOP/s = 1.13 ms per image; the weights add ~0.1 ms when read from L3.
// Float accuracy (csrc/tests/test_convlstm.cpp, double naive loop, inputs in [-1,1]): max abs
// error on h', c' ~3e-6 for k=5 and 7 with PyTorch's default init, ~5e-5 with 10x larger weights
// (the error scales with the pre-activations; F(m, k) with 8 points amplifies the fp32 rounding
// of the K sums ~3x over a direct convolution). double: ~1e-13.

#include "convlstm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace jsla {

namespace {

// ---------------------------------------------------------------------------------------------
// SIMD: GCC vector extensions (portable to any ISA), AVX-512 intrinsics for FMA and broadcast.

template <typename T, int N>
struct VecT {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <typename T>
constexpr int kLanes = 64 / int(sizeof(T));   // one zmm
template <typename T>
using Vz = typename VecT<T, kLanes<T>>::type;  // micro-kernel and transform vector (64 bytes)
template <typename T>
using V8 = typename VecT<T, 8>::type;          // epilogue vector: 8 hidden channels

template <typename V, typename T>
inline V loadv(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void storev(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

inline Vz<float> splat_z(float s) {
#if defined(__AVX512F__)
  return _mm512_set1_ps(s);
#else
  Vz<float> v;
  for (int i = 0; i < kLanes<float>; ++i) v[i] = s;
  return v;
#endif
}
inline Vz<double> splat_z(double s) {
#if defined(__AVX512F__)
  return _mm512_set1_pd(s);
#else
  Vz<double> v;
  for (int i = 0; i < kLanes<double>; ++i) v[i] = s;
  return v;
#endif
}
inline Vz<float> fmadd(Vz<float> a, Vz<float> b, Vz<float> c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}
inline Vz<double> fmadd(Vz<double> a, Vz<double> b, Vz<double> c) {
#if defined(__AVX512F__)
  return _mm512_fmadd_pd(a, b, c);
#else
  return a * b + c;
#endif
}

inline void prefetch_l2(const char* p) { __builtin_prefetch(p, 0, 2); }

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------------
// Scratch memory: 64-byte aligned, grow-only.

struct AlignedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(ptr); }
  template <typename T>
  T* get(size_t count) {
    const size_t need = round_up(int64_t(count * sizeof(T)), 64) + 64;
    if (need > bytes) {
      std::free(ptr);
      ptr = nullptr;
      bytes = 0;
      ptr = std::aligned_alloc(64, need);
      if (!ptr) throw std::bad_alloc();
      bytes = need;
    }
    return static_cast<T*>(ptr);
  }
};

// Of the calling thread: packed input, first-stage transforms, Z, direct-branch outputs.
struct Scratch {
  AlignedBuffer packed, stage1, z, direct;
};
Scratch& caller_scratch() {
  static thread_local Scratch s;
  return s;
}
// Of the thread executing a task: V and M of one GEMM task, epilogue rows.
struct WorkerScratch {
  AlignedBuffer v, m, e;
};
WorkerScratch& worker_scratch() {
  static thread_local WorkerScratch s;
  return s;
}

// Runs fn(task) for every task in [0, ntasks) on the host's threads; tasks are handed out in
// order through an atomic counter (list them from the most to the least expensive).
template <typename Fn>
void run_tasks(const Host& host, int64_t ntasks, const Fn& fn) {
  if (ntasks <= 0) return;
  std::atomic<int64_t> next(0);
  host.parallel_for(ntasks, 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < ntasks;
         t = next.fetch_add(1, std::memory_order_relaxed))
      fn(t);
  });
}

// ---------------------------------------------------------------------------------------------
// Winograd point sets. Points are ordered 0, +p_0, -p_0, +p_1, -p_1, ..., inf; G row j is
// gamma_j * (p_j^0, ..., p_j^{k-1}) (inf: gamma * e_{k-1}); the gammas make B^T integral.

struct PointSet {
  int alpha;
  double pairs[3];  // p_q of the pairs +-p_q
  double gamma0, gamma_pair[3], gamma_inf;
};
const PointSet kPoints4 = {4, {1, 0, 0}, 1.0, {0.5, 0, 0}, 1.0};
const PointSet kPoints6 = {6, {1, 0.5, 0}, 1.0, {1.0 / 6, 4.0 / 3, 0}, 0.25};
const PointSet kPoints8 = {8, {1, 2, 0.5}, 0.25, {1.0 / 18, 1.0 / 360, 16.0 / 45}, 0.25};
const PointSet& point_set(int alpha) { return alpha == 4 ? kPoints4 : alpha == 6 ? kPoints6 : kPoints8; }

// Output tile size m per kernel size (0: direct convolution).
int tile_size(int64_t k) {
  switch (k) {
    case 3: return 2;  // F(2x2,3x3)
    case 5: return 4;  // F(4x4,5x5)
    case 7: return 2;  // F(2x2,7x7)
    default: return 0;
  }
}
int alpha_of(int64_t k) { return tile_size(k) ? tile_size(k) + int(k) - 1 : 0; }

// G (alpha x k, row-major) in double.
std::vector<double> g_matrix(int64_t k) {
  const int A = alpha_of(k);
  const PointSet& ps = point_set(A);
  std::vector<double> g(size_t(A * k), 0.0);
  g[0] = ps.gamma0;  // p = 0: (1, 0, ..., 0)
  for (int q = 0; q < (A - 2) / 2; ++q)
    for (int64_t a = 0; a < k; ++a) {
      const double v = ps.gamma_pair[q] * std::pow(ps.pairs[q], double(a));
      g[size_t((2 * q + 1) * k + a)] = v;
      g[size_t((2 * q + 2) * k + a)] = a % 2 ? -v : v;
    }
  g[size_t((A - 1) * k + k - 1)] = ps.gamma_inf;
  return g;
}

// 1-D input transform o = B^T d, alpha values.
template <int A, typename V>
struct In1d;
template <typename V>
struct In1d<4, V> {  // B^T rows [1,0,-1,0] [0,1,1,0] [0,-1,1,0] [0,-1,0,1]
  static inline void run(const V* d, V* o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[3] - d[1];
  }
};
template <typename V>
struct In1d<6, V> {
  // B^T rows: [1,0,-5,0,4,0] [0,-1,-1,4,4,0] [0,1,-1,-4,4,0] [0,1,2,-1,-2,0] [0,-1,2,1,-2,0]
  //           [0,1,0,-5,0,4]
  static inline void run(const V* d, V* o) {
    const V c2 = V{} + 2, c4 = V{} + 4, c5 = V{} + 5;
    o[0] = d[0] + c4 * d[4] - c5 * d[2];
    const V e1 = c4 * d[4] - d[2], o1 = d[1] - c4 * d[3];
    o[1] = e1 - o1;
    o[2] = e1 + o1;
    const V e3 = c2 * (d[2] - d[4]), o3 = d[1] - d[3];
    o[3] = e3 + o3;
    o[4] = e3 - o3;
    o[5] = d[1] + c4 * d[5] - c5 * d[3];
  }
};
template <typename V>
struct In1d<8, V> {
  // B^T rows: [4,0,-21,0,21,0,-4,0] [0,-4,-4,17,17,-4,-4,0] [0,4,-4,-17,17,4,-4,0]
  //           [0,2,1,-10,-5,8,4,0] [0,-2,1,10,-5,-8,4,0] [0,4,8,-5,-10,1,2,0]
  //           [0,-4,8,5,-10,-1,2,0] [0,-4,0,21,0,-21,0,4]
  static inline void run(const V* d, V* o) {
    const V c2 = V{} + 2, c4 = V{} + 4, c5 = V{} + 5, c8 = V{} + 8, c10 = V{} + 10, c17 = V{} + 17,
            c21 = V{} + 21;
    o[0] = c4 * (d[0] - d[6]) + c21 * (d[4] - d[2]);
    const V e1 = c17 * d[4] - c4 * (d[2] + d[6]), o1 = c4 * (d[1] + d[5]) - c17 * d[3];
    o[1] = e1 - o1;
    o[2] = e1 + o1;
    const V e3 = d[2] + c4 * d[6] - c5 * d[4], o3 = c2 * d[1] + c8 * d[5] - c10 * d[3];
    o[3] = e3 + o3;
    o[4] = e3 - o3;
    const V e5 = c8 * d[2] + c2 * d[6] - c10 * d[4], o5 = c4 * d[1] + d[5] - c5 * d[3];
    o[5] = e5 + o5;
    o[6] = e5 - o5;
    o[7] = c4 * (d[7] - d[1]) + c21 * (d[3] - d[5]);
  }
};

constexpr double kPairs4[1] = {1};
constexpr double kPairs6[2] = {1, 0.5};
constexpr double kPairs8[3] = {1, 2, 0.5};
template <int A>
constexpr double pair_point(int q) {
  return A == 4 ? kPairs4[q] : A == 6 ? kPairs6[q] : kPairs8[q];
}
constexpr double ipow(double p, int e) { return e == 0 ? 1.0 : p * ipow(p, e - 1); }

// 1-D output transform y[i] = sum_j A^T[i][j] m[j*ms], i < M: A^T[i][j] = p_j^i, A^T[i][inf] =
// [i == M-1]; the pairs +-p share m_p + m_-p (even i) and m_p - m_-p (odd i).
template <int M, int A, typename V, typename T>
inline void out1d(const T* m, int64_t ms, V* y) {
  constexpr int NP = (A - 2) / 2;
  V s[NP], d[NP];
  for (int q = 0; q < NP; ++q) {
    const V a = loadv<V>(m + (2 * q + 1) * ms), b = loadv<V>(m + (2 * q + 2) * ms);
    s[q] = a + b;
    d[q] = a - b;
  }
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    V acc = i % 2 ? d[0] : s[0];  // p_0 = 1
    for (int q = 1; q < NP; ++q) acc += (i % 2 ? d[q] : s[q]) * T(ipow(pair_point<A>(q), i));
    if (i == 0) acc += loadv<V>(m);
    if (i == M - 1) acc += loadv<V>(m + (A - 1) * ms);
    y[i] = acc;
  }
}

// First stage of the 2-D input transform of one tile row (shared by its overlapping tiles):
// T1[i][x] = sum_a B^T[i][a] P[row0 + a][x] for x < ncols and one channel vector.
// p: P at (row0, first column, c0); t1: T1 at (i = 0, x = 0, c0), point stride t1_is.
template <typename T, int A>
inline void column_transform(const T* p, int64_t rs, int64_t cs, int64_t ncols, T* t1, int64_t t1_is) {
  using V = Vz<T>;
  for (int64_t x = 0; x < ncols; ++x) {
    V d[A], o[A];
    for (int a = 0; a < A; ++a) d[a] = loadv<V>(p + a * rs + x * cs);
    In1d<A, V>::run(d, o);
    for (int i = 0; i < A; ++i) storev(t1 + i * t1_is + x * cs, o[i]);
  }
}

// Second stage for one tile and first-stage row i: V[l] = sum_b T1[i][x0 + b] B^T[l][b], all
// channel vectors. t1: T1 at (i, x0, 0), column stride cp; v: V at (l = 0, 0), point stride cp.
template <typename T, int A>
inline void row_transform(const T* t1, int64_t cp, T* v) {
  using V = Vz<T>;
  for (int64_t c0 = 0; c0 < cp; c0 += kLanes<T>) {
    V d[A], o[A];
    for (int b = 0; b < A; ++b) d[b] = loadv<V>(t1 + b * cp + c0);
    In1d<A, V>::run(d, o);
    for (int l = 0; l < A; ++l) storev(v + l * cp + c0, o[l]);
  }
}

// Output transform along one axis for ncol columns: y[i*ys + col] = sum_j A^T[i][j] m[j*ms + col].
template <typename T, int M, int A>
inline void output_axis(const T* m, int64_t ms, int64_t ncol, T* y, int64_t ys) {
  using V = Vz<T>;
  for (int64_t c0 = 0; c0 < ncol; c0 += kLanes<T>) {
    V out[M];
    out1d<M, A, V>(m + c0, ms, out);
    for (int i = 0; i < M; ++i) storev(y + i * ys + c0, out[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Element-wise LSTM update on 8 hidden channels.

inline V8<float> exp_approx(V8<float> x) {
  // exp(x) = 2^n e^r, n = round(x / ln 2), |r| <= ln2/2, degree-7 Taylor (relative error < 1e-8).
  typedef int32_t vi8 __attribute__((vector_size(32)));
  const V8<float> hi = V8<float>{} + 88.0f, lo = V8<float>{} - 87.0f;
  x = x < lo ? lo : (x > hi ? hi : x);
  const V8<float> nf = __builtin_convertvector(
      __builtin_convertvector(x * 1.44269504088896341f + (x < 0 ? V8<float>{} - 0.5f : V8<float>{} + 0.5f), vi8),
      V8<float>);
  const V8<float> r = (x - nf * 0.693145751953125f) - nf * 1.428606765330187045e-06f;
  V8<float> p = V8<float>{} + 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi8 bits = (__builtin_convertvector(nf, vi8) + 127) << 23;
  V8<float> scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline V8<float> sigmoid8(V8<float> x) { return 1.0f / (1.0f + exp_approx(-x)); }
inline V8<float> tanh8(V8<float> x) { return 1.0f - 2.0f / (1.0f + exp_approx(x + x)); }

inline V8<double> sigmoid8(V8<double> x) {
  for (int l = 0; l < 8; ++l) x[l] = 1.0 / (1.0 + std::exp(-x[l]));
  return x;
}
inline V8<double> tanh8(V8<double> x) {
  for (int l = 0; l < 8; ++l) x[l] = std::tanh(x[l]);
  return x;
}

// gate: pre-activations of gates i, f, g, o at gate + 0, 8, 16, 24, bias likewise; c: c in, c'
// out; h: h' out.
template <typename T>
inline void lstm8(const T* gate, const T* bias, T* c, T* h) {
  using V = V8<T>;
  const V gi = loadv<V>(gate) + loadv<V>(bias), gf = loadv<V>(gate + 8) + loadv<V>(bias + 8);
  const V gg = loadv<V>(gate + 16) + loadv<V>(bias + 16), go = loadv<V>(gate + 24) + loadv<V>(bias + 24);
  const V c_new = sigmoid8(gf) * loadv<V>(c) + sigmoid8(gi) * tanh8(gg);
  storev(c, c_new);
  storev(h, sigmoid8(go) * tanh8(c_new));
}

// ---------------------------------------------------------------------------------------------
// GEMM micro-kernel: C[R rows][NV vectors] = sum over segments s and k < K of
//   A[r][seg_off[s] + k] * B[s*seg_bstride + k*ldb + v*L + lane],
// accumulated in registers over K blocks of kb, each block then added to C in memory.

template <typename T, int R, int NV>
void ukernel(const T* const* a, const int64_t* seg_off, int nseg, int64_t K, int64_t kb, const T* b, int64_t ldb,
             int64_t seg_bstride, T* const* c, const char* pf, int64_t pf_lines) {
  using V = Vz<T>;
  constexpr int L = kLanes<T>;
  bool first = true;
  for (int s = 0; s < nseg; ++s) {
    const T* ar[R];
    for (int r = 0; r < R; ++r) ar[r] = a[r] + seg_off[s];
    const T* bs = b + s * seg_bstride;
    if (s > 0) pf_lines = 0;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
      const int64_t k1 = std::min(K, k0 + kb);
      V acc[R][NV];
#pragma GCC unroll 32
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = V{};
      auto step = [&](int64_t k) __attribute__((always_inline)) {
        const T* bk = bs + k * ldb;
        V bv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) bv[v] = loadv<V>(bk + v * L);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const V av = splat_z(ar[r][k]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(av, bv[v], acc[r][v]);
        }
      };
      const int64_t kp = std::min(k1, std::max(k0, pf_lines));
      for (int64_t k = k0; k < kp; ++k) {
        prefetch_l2(pf + k * 64);
        step(k);
      }
      for (int64_t k = kp; k < k1; ++k) step(k);
      if (first) {
#pragma GCC unroll 32
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) storev(c[r] + v * L, acc[r][v]);
      } else {
#pragma GCC unroll 32
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) storev(c[r] + v * L, loadv<V>(c[r] + v * L) + acc[r][v]);
      }
      first = false;
    }
  }
}

constexpr int kMaxRows = 4;  // R
constexpr int kMaxVecs = 6;  // NV: 96 float columns

template <typename T>
using UkernelFn = void (*)(const T* const*, const int64_t*, int, int64_t, int64_t, const T*, int64_t, int64_t,
                           T* const*, const char*, int64_t);

template <typename T, int R>
UkernelFn<T> pick_nv(int nv) {
  switch (nv) {
    case 1: return ukernel<T, R, 1>;
    case 2: return ukernel<T, R, 2>;
    case 3: return ukernel<T, R, 3>;
    case 4: return ukernel<T, R, 4>;
    case 5: return ukernel<T, R, 5>;
    default: return ukernel<T, R, 6>;
  }
}
template <typename T>
UkernelFn<T> pick_ukernel(int rows, int nv) {
  switch (rows) {
    case 1: return pick_nv<T, 1>(nv);
    case 2: return pick_nv<T, 2>(nv);
    case 3: return pick_nv<T, 3>(nv);
    default: return pick_nv<T, 4>(nv);
  }
}

// Rows of the next micro-kernel call when `left` rows remain: 4s, ending 3 + 2 rather than 4 + 1.
inline int next_rows(int64_t left) { return left == 5 ? 3 : int(std::min<int64_t>(kMaxRows, left)); }

// C rows (pointers c[r], ncol columns) = A rows (pointers a[r]) x B, over all column panels;
// meanwhile prefetches pf_lines cache lines from pf into L2 (at most K).
template <typename T>
void gemm_rows(int rows, const T* const* a, const int64_t* seg_off, int nseg, int64_t K, const T* b, int64_t ncol,
               int64_t seg_bstride, T* const* c, const char* pf = nullptr, int64_t pf_lines = 0) {
  constexpr int L = kLanes<T>;
  const int64_t nblk = ceil_div(K, 64);
  const int64_t kb = std::max<int64_t>(1, ceil_div(K, nblk));
  const int64_t nvec = ncol / L;
  T* cw[kMaxRows];
  for (int64_t v0 = 0; v0 < nvec; v0 += kMaxVecs) {
    const int nv = int(std::min<int64_t>(kMaxVecs, nvec - v0));
    for (int r = 0; r < rows; ++r) cw[r] = c[r] + v0 * L;
    pick_ukernel<T>(rows, nv)(a, seg_off, nseg, K, kb, b + v0 * L, ncol, seg_bstride, cw, pf, std::min(pf_lines, K));
    pf_lines = 0;
  }
}

// ---------------------------------------------------------------------------------------------

template <typename T>
struct Branch {
  int64_t k = 0;
  int m = 0;           // output tile (Winograd), 0: direct
  int alpha = 0;       // m + k - 1
  int64_t npts = 0;    // alpha^2 Winograd points, or k*k segments (direct)
  int64_t n = 0;       // hidden channels
  int64_t hid0 = 0;    // first hidden channel
  int64_t nchunk = 0;  // ceil(n / 8)
  int64_t ncol = 0;    // packed gate columns: nchunk * 32
  T* w = nullptr;      // [npts][Cin][ncol]
  T* bias = nullptr;   // [ncol]
};

int64_t packed_column(int64_t gate, int64_t j) { return (j / 8) * 32 + gate * 8 + (j % 8); }

// G (alpha x K) applied to K values in[a*is] of 8 output channels: out[i*os] = sum_a G[i][a] in[a].
// Row 0 and row alpha-1 have one nonzero; rows (1,2), (3,4), ... (points +-p) share the even and
// odd partial sums.
template <int K, int A>
inline void apply_g(const double* G, const V8<double>* in, int64_t is, V8<double>* out, int64_t os) {
  out[0] = in[0] * G[0];
  for (int i = 1; i < A - 1; i += 2) {
    V8<double> e = in[0] * G[i * K], o = in[is] * G[i * K + 1];
    for (int a = 2; a < K; a += 2) e += in[a * is] * G[i * K + a];
    for (int a = 3; a < K; a += 2) o += in[a * is] * G[i * K + a];
    out[i * os] = e + o;
    out[(i + 1) * os] = e - o;
  }
  out[(A - 1) * os] = in[(K - 1) * is] * G[(A - 1) * K + K - 1];
}

template <typename T>
inline void store8(T* dst, const V8<double>& v) {
  if constexpr (sizeof(T) == sizeof(double)) {
    storev(dst, v);
  } else {
    storev(dst, __builtin_convertvector(v, V8<T>));
  }
}

// Packs output channels o = gate*n + j, j in [j0, j0 + 8), of one Winograd branch (8 adjacent
// packed columns): U[xi][c][col] = (G w[o][c] G^T)[xi], in double, vectorised over the 8 channels.
template <typename T, int K, int A>
void pack_group(const T* w, const double* G, int64_t cin, int64_t n, int64_t gate, int64_t j0, T* dst,
                int64_t ncol) {
  const int64_t lanes = std::min<int64_t>(8, n - j0), col0 = packed_column(gate, j0);
  V8<double> g[K * K], t[A * K], u[A * A];
  for (int64_t c = 0; c < cin; ++c) {
    for (int s = 0; s < K * K; ++s) g[s] = V8<double>{};
    for (int64_t lane = 0; lane < lanes; ++lane) {
      const T* src = w + ((gate * n + j0 + lane) * cin + c) * K * K;
      for (int s = 0; s < K * K; ++s) g[s][lane] = double(src[s]);
    }
    for (int b = 0; b < K; ++b) apply_g<K, A>(G, g + b, K, t + b, K);       // t[i][b] = sum_a G[i][a] g[a][b]
    for (int i = 0; i < A; ++i) apply_g<K, A>(G, t + i * K, 1, u + i * A, 1);  // u[i][l] = sum_b t[i][b] G[l][b]
    for (int xi = 0; xi < A * A; ++xi) store8<T>(dst + (xi * cin + c) * ncol + col0, u[xi]);
  }
}

template <typename T>
void pack_group_direct(const T* w, int64_t cin, int64_t n, int64_t k, int64_t gate, int64_t j0, T* dst,
                       int64_t ncol) {
  const int64_t lanes = std::min<int64_t>(8, n - j0), col0 = packed_column(gate, j0), kk = k * k;
  for (int64_t lane = 0; lane < lanes; ++lane) {
    const T* src = w + (gate * n + j0 + lane) * cin * kk;
    for (int64_t c = 0; c < cin; ++c)
      for (int64_t s = 0; s < kk; ++s) dst[(s * cin + c) * ncol + col0 + lane] = src[c * kk + s];
  }
}

}  // namespace

template <typename T>
struct ConvLSTMWeights<T>::Impl {
  int64_t D = 0, hid = 0, cin = 0, cp = 0, pad = 0, max_tile = 1;
  std::vector<int64_t> kernel_sizes;
  std::vector<Branch<T>> branches;
  AlignedBuffer storage;
};

template <typename T>
ConvLSTMWeights<T>::ConvLSTMWeights(int64_t input_channels, int64_t hidden_channels,
                                    const std::vector<int64_t>& kernel_sizes, const std::vector<const T*>& weights,
                                    const std::vector<const T*>& biases, const Host& host)
    : impl_(new Impl) {
  Impl& im = *impl_;
  const int64_t nb = int64_t(kernel_sizes.size());
  if (input_channels < 0 || hidden_channels <= 0 || nb == 0 || hidden_channels % nb != 0)
    throw std::invalid_argument("ConvLSTMWeights: hidden_channels must be a positive multiple of the branch count");
  if (int64_t(weights.size()) != nb || int64_t(biases.size()) != nb)
    throw std::invalid_argument("ConvLSTMWeights: one weight and one bias per kernel size");
  im.D = input_channels;
  im.hid = hidden_channels;
  im.cin = input_channels + hidden_channels;
  im.cp = round_up(im.cin, kLanes<T>);
  im.kernel_sizes = kernel_sizes;
  const int64_t n = hidden_channels / nb;
  size_t total = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t k = kernel_sizes[size_t(b)];
    if (k <= 0 || k % 2 == 0) throw std::invalid_argument("ConvLSTMWeights: kernel sizes must be odd and positive");
    Branch<T> br;
    br.k = k;
    br.m = tile_size(k);
    br.alpha = alpha_of(k);
    br.npts = br.m ? br.alpha * br.alpha : k * k;
    br.n = n;
    br.hid0 = b * n;
    br.nchunk = ceil_div(n, 8);
    br.ncol = br.nchunk * 32;
    im.pad = std::max(im.pad, k / 2);
    im.max_tile = std::max<int64_t>(im.max_tile, br.m);
    total += size_t(br.npts * im.cin * br.ncol + br.ncol);
    im.branches.push_back(br);
  }
  T* mem = im.storage.template get<T>(total);
  std::memset(mem, 0, total * sizeof(T));
  for (auto& br : im.branches) {
    br.w = mem;
    mem += br.npts * im.cin * br.ncol;
    br.bias = mem;
    mem += br.ncol;
  }
  for (int64_t b = 0; b < nb; ++b) {
    const Branch<T>& br = im.branches[size_t(b)];
    for (int64_t o = 0; o < 4 * n; ++o) br.bias[packed_column(o / n, o % n)] = biases[size_t(b)][o];
  }
  std::vector<std::vector<double>> gs;
  for (const auto& br : im.branches) gs.push_back(br.m ? g_matrix(br.k) : std::vector<double>());
  // One task per (branch, gate, chunk of 8 hidden channels), most expensive first.
  struct PackTask {
    int64_t cost, branch, gate, j0;
  };
  std::vector<PackTask> tasks;
  for (int64_t b = 0; b < nb; ++b) {
    const Branch<T>& br = im.branches[size_t(b)];
    const int64_t cost = br.m ? br.alpha * br.alpha * br.k : br.k * br.k;
    for (int64_t gate = 0; gate < 4; ++gate)
      for (int64_t j0 = 0; j0 < n; j0 += 8) tasks.push_back({cost, b, gate, j0});
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const PackTask& a, const PackTask& b) { return a.cost > b.cost; });
  run_tasks(host, int64_t(tasks.size()), [&](int64_t ti) {
    const PackTask& task = tasks[size_t(ti)];
    const Branch<T>& br = im.branches[size_t(task.branch)];
    const T* w = weights[size_t(task.branch)];
    const double* G = gs[size_t(task.branch)].data();
    const int key = br.m ? int(br.k) * 100 + br.alpha : 0;
    switch (key) {
      case 304: pack_group<T, 3, 4>(w, G, im.cin, n, task.gate, task.j0, br.w, br.ncol); break;
      case 306: pack_group<T, 3, 6>(w, G, im.cin, n, task.gate, task.j0, br.w, br.ncol); break;
      case 506: pack_group<T, 5, 6>(w, G, im.cin, n, task.gate, task.j0, br.w, br.ncol); break;
      case 508: pack_group<T, 5, 8>(w, G, im.cin, n, task.gate, task.j0, br.w, br.ncol); break;
      case 708: pack_group<T, 7, 8>(w, G, im.cin, n, task.gate, task.j0, br.w, br.ncol); break;
      default: pack_group_direct<T>(w, im.cin, n, br.k, task.gate, task.j0, br.w, br.ncol); break;
    }
  });
}

template <typename T>
ConvLSTMWeights<T>::~ConvLSTMWeights() = default;
template <typename T>
int64_t ConvLSTMWeights<T>::input_channels() const { return impl_->D; }
template <typename T>
int64_t ConvLSTMWeights<T>::hidden_channels() const { return impl_->hid; }
template <typename T>
const std::vector<int64_t>& ConvLSTMWeights<T>::kernel_sizes() const { return impl_->kernel_sizes; }

namespace {

constexpr int64_t kTaskTiles = 64;      // tiles (rows) per GEMM task: V, M of a task stay in L2
constexpr int64_t kChunkPixels = 256;   // output pixels per chunk (the Winograd scratch in L3)

// Geometry of one branch inside one chunk (images [b0, b1), rows [y0, y1)).
struct ChunkGeometry {
  int64_t tw = 0, ty0 = 0, ntr = 0;  // tiles per tile row, first tile row, tile rows per image
  int64_t ntiles = 0, wc = 0;        // tiles in the chunk, first-stage columns
  int64_t nrows = 0, npix = 0;       // direct: image rows per image, pixels in the chunk
};

// One Winograd GEMM task: second stage of row i for tiles [t0, t1), the alpha GEMMs of points
// (i, l), and the output transform along l into Z[t][i][px][ncol].
template <typename T, int M, int A>
void winograd_task(const Branch<T>& br, int64_t cin, int64_t cp, const ChunkGeometry& cg, const T* t1buf, T* zbuf,
                   int64_t i, int64_t t0, int64_t t1) {
  const int64_t nt = t1 - t0, ncol = br.ncol;
  WorkerScratch& ws = worker_scratch();
  T* vi = ws.v.template get<T>(size_t(nt * A * cp));
  T* mi = ws.m.template get<T>(size_t(nt * A * ncol));
  for (int64_t tl = 0; tl < nt; ++tl) {
    const int64_t t = t0 + tl, row = t / cg.tw, tx = t % cg.tw;
    row_transform<T, A>(t1buf + ((row * A + i) * cg.wc + M * tx) * cp, cp, vi + tl * A * cp);
  }
  const int64_t seg0 = 0;
  const T* arow[kMaxRows];
  T* crow[kMaxRows];
  // U of one point is cin*ncol values (86 KB at the real shape): its first row block would wait
  // on memory, so the next point's U is prefetched into L2, spread over this point's row blocks.
  const int64_t u_lines = ceil_div(cin * ncol * int64_t(sizeof(T)), 64), nblocks = ceil_div(nt, kMaxRows);
  const int64_t pf_per_block = ceil_div(u_lines, nblocks);
  for (int64_t l = 0; l < A; ++l) {
    const T* u = br.w + (i * A + l) * cin * ncol;
    const char* next = reinterpret_cast<const char*>(u + cin * ncol);
    for (int64_t r0 = 0, blk = 0; r0 < nt; ++blk) {
      const int rows = next_rows(nt - r0);
      for (int r = 0; r < rows; ++r) {
        arow[r] = vi + ((r0 + r) * A + l) * cp;
        crow[r] = mi + ((r0 + r) * A + l) * ncol;
      }
      const int64_t first = blk * pf_per_block, count = l + 1 < A ? std::min(pf_per_block, u_lines - first) : 0;
      gemm_rows<T>(rows, arow, &seg0, 1, cin, u, ncol, 0, crow, next + first * 64, std::max<int64_t>(0, count));
      r0 += rows;
    }
  }
  for (int64_t tl = 0; tl < nt; ++tl) {
    T* z = zbuf + ((t0 + tl) * A + i) * M * ncol;
    output_axis<T, M, A>(mi + tl * A * ncol, ncol, ncol, z, ncol);
  }
}

// Dispatch on the (m, alpha) of a Winograd branch.
#define JSLA_WINO_DISPATCH(br, CALL)                        \
  switch ((br).m * 100 + (br).alpha) {                      \
    case 204: { constexpr int M = 2, A = 4; (void)M; CALL; } break;  \
    case 206: { constexpr int M = 2, A = 6; (void)M; CALL; } break;  \
    case 406: { constexpr int M = 4, A = 6; (void)M; CALL; } break;  \
    case 408: { constexpr int M = 4, A = 8; (void)M; CALL; } break;  \
    default: { constexpr int M = 2, A = 8; (void)M; CALL; } break;   \
  }

struct PackKey {
  const void* ptr = nullptr;
  int64_t b = -1, hp = -1, wp = -1, cp = -1, h = -1, w = -1, pad = -1, elem = -1;
  bool operator==(const PackKey& o) const {
    return ptr == o.ptr && b == o.b && hp == o.hp && wp == o.wp && cp == o.cp && h == o.h && w == o.w &&
           pad == o.pad && elem == o.elem;
  }
};
PackKey& last_pack_key() {
  static thread_local PackKey k;
  return k;
}

struct Chunk {
  int64_t b0, b1, y0, y1;
};

}  // namespace

template <typename T>
void convlstm_step_forward(const ConvLSTMWeights<T>& weights, const ConvLSTMShape& shape, const T* x,
                           Strides4 xs, const T* h, Strides4 hs, const T* c, Strides4 cs, T* h_out,
                           Strides4 hos, T* c_out, Strides4 cos, const Host& host) {
  using Impl = typename ConvLSTMWeights<T>::Impl;
  const Impl& im = weights.impl();
  if (shape.input_channels != im.D || shape.hidden_channels != im.hid)
    throw std::invalid_argument("convlstm_step_forward: shape does not match the weights (D " +
                                std::to_string(shape.input_channels) + " vs " + std::to_string(im.D) + ", hid " +
                                std::to_string(shape.hidden_channels) + " vs " + std::to_string(im.hid) + ")");
  const int64_t B = shape.batch, H = shape.height, W = shape.width;
  if (B <= 0 || H <= 0 || W <= 0) return;
  const int64_t D = im.D, cin = im.cin, cp = im.cp, PAD = im.pad;
  const int64_t Hp = H + 2 * PAD + im.max_tile - 1, Wp = W + 2 * PAD + im.max_tile - 1;
  constexpr int64_t L = kLanes<T>;
  const auto& branches = im.branches;
  const int64_t nbr = int64_t(branches.size());

  Scratch& scratch = caller_scratch();
  T* P = scratch.packed.template get<T>(size_t(B * Hp * Wp * cp));

  // ---- A: pack [x, h] into P [B][Hp][Wp][cp]. The zero border is rewritten only when the
  // buffer or the geometry changed since this thread's last call.
  PackKey key;
  key.ptr = P;
  key.b = B, key.hp = Hp, key.wp = Wp, key.cp = cp, key.h = H, key.w = W, key.pad = PAD, key.elem = sizeof(T);
  const bool border_ok = last_pack_key() == key;
  last_pack_key() = PackKey();  // invalid until the pack below completes
  run_tasks(host, B * Hp, [&](int64_t row) {
    const int64_t b = row / Hp, y = row % Hp - PAD;
    T* dst = P + row * Wp * cp;
    if (y < 0 || y >= H) {
      if (!border_ok) std::memset(dst, 0, sizeof(T) * size_t(Wp * cp));
      return;
    }
    if (!border_ok) {
      std::memset(dst, 0, sizeof(T) * size_t(PAD * cp));
      std::memset(dst + (PAD + W) * cp, 0, sizeof(T) * size_t((Wp - PAD - W) * cp));
    }
    T* d0 = dst + PAD * cp;
    if (cp > cin)
      for (int64_t xx = 0; xx < W; ++xx) std::memset(d0 + xx * cp + cin, 0, sizeof(T) * size_t(cp - cin));
    for (int64_t ch = 0; ch < cin; ++ch) {
      const T* src = ch < D ? x + b * xs.n + ch * xs.c + y * xs.h : h + b * hs.n + (ch - D) * hs.c + y * hs.h;
      const int64_t sw = ch < D ? xs.w : hs.w;
      if (sw == 1)
        for (int64_t xx = 0; xx < W; ++xx) d0[xx * cp + ch] = src[xx];
      else
        for (int64_t xx = 0; xx < W; ++xx) d0[xx * cp + ch] = src[xx * sw];
    }
  });
  last_pack_key() = key;

  // ---- chunks: whole images, or bands of rows (multiples of 4) of a large image.
  std::vector<Chunk> chunks;
  if (H * W * 2 <= kChunkPixels * 3) {
    const int64_t per = std::max<int64_t>(1, kChunkPixels / (H * W));
    for (int64_t b0 = 0; b0 < B; b0 += per) chunks.push_back({b0, std::min(B, b0 + per), 0, H});
  } else {
    const int64_t rows = std::max<int64_t>(4, kChunkPixels / W / 4 * 4);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t y0 = 0; y0 < H; y0 += rows) chunks.push_back({b, b + 1, y0, std::min(H, y0 + rows)});
  }
  const int64_t max_imgs = chunks[0].b1 - chunks[0].b0, max_rows = chunks[0].y1 - chunks[0].y0;
  auto geometry = [&](const Branch<T>& br, const Chunk& ch) {
    ChunkGeometry g;
    const int64_t nimg = ch.b1 - ch.b0;
    if (br.m) {
      g.tw = ceil_div(W, br.m);
      g.ty0 = ch.y0 / br.m;
      g.ntr = ceil_div(ch.y1, br.m) - g.ty0;
      g.ntiles = nimg * g.ntr * g.tw;
      g.wc = br.m * (g.tw - 1) + br.alpha;
    } else {
      g.nrows = ch.y1 - ch.y0;
      g.npix = nimg * g.nrows * W;
    }
    return g;
  };
  // Scratch offsets, sized for the largest chunk (the first).
  std::vector<int64_t> t1_off(size_t(nbr), 0), z_off(size_t(nbr), 0), d_off(size_t(nbr), 0);
  size_t t1_total = 0, z_total = 0, d_total = 0;
  for (int64_t i = 0; i < nbr; ++i) {
    const auto& br = branches[size_t(i)];
    const ChunkGeometry g = geometry(br, {0, max_imgs, 0, max_rows});
    if (br.m) {
      t1_off[size_t(i)] = int64_t(t1_total);
      t1_total += size_t(max_imgs * g.ntr * br.alpha * g.wc * cp);
      z_off[size_t(i)] = int64_t(z_total);
      z_total += size_t(g.ntiles * br.alpha * br.m * br.ncol);
    } else {
      d_off[size_t(i)] = int64_t(d_total);
      d_total += size_t(g.npix * br.ncol);
    }
  }
  T* T1buf = scratch.stage1.template get<T>(t1_total);
  T* Zbuf = scratch.z.template get<T>(z_total);
  T* Dbuf = scratch.direct.template get<T>(d_total);

  std::vector<int64_t> seg_offsets;  // direct branches: the k*k offsets into P
  std::vector<int64_t> seg_begin(size_t(nbr), 0);
  for (int64_t i = 0; i < nbr; ++i) {
    const auto& br = branches[size_t(i)];
    seg_begin[size_t(i)] = int64_t(seg_offsets.size());
    if (!br.m)
      for (int64_t dy = 0; dy < br.k; ++dy)
        for (int64_t dx = 0; dx < br.k; ++dx) seg_offsets.push_back((dy * Wp + dx) * cp);
  }

  struct Item {  // a task of phase B, C or D
    int64_t cost;
    int32_t branch, row;  // C: first-stage row i (Winograd)
    int64_t begin, end;   // B: tile row, channel vectors; C: tiles or pixels; D: tile row / pixel rows
    int64_t v0, v1;
  };
  std::vector<Item> items;
  std::vector<ChunkGeometry> geo(static_cast<size_t>(nbr));
  const int64_t ncv = cp / L;
  auto sort_items = [&] {
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  };

  for (const Chunk& chunk : chunks) {
    const int64_t nimg = chunk.b1 - chunk.b0;
    for (int64_t i = 0; i < nbr; ++i) geo[size_t(i)] = geometry(branches[size_t(i)], chunk);

    // ---- B: first-stage input transforms, items (branch, tile row, block of 4 channel vectors).
    items.clear();
    for (int64_t i = 0; i < nbr; ++i) {
      const auto& br = branches[size_t(i)];
      const ChunkGeometry& g = geo[size_t(i)];
      if (!br.m) continue;
      for (int64_t row = 0; row < nimg * g.ntr; ++row)
        for (int64_t v = 0; v < ncv; v += 4)
          items.push_back({br.alpha * g.wc * std::min<int64_t>(4, ncv - v), int32_t(i), 0, row, 0, v,
                           std::min(ncv, v + 4)});
    }
    sort_items();
    run_tasks(host, int64_t(items.size()), [&](int64_t it) {
      const Item& item = items[size_t(it)];
      const auto& br = branches[size_t(item.branch)];
      const ChunkGeometry& g = geo[size_t(item.branch)];
      const int64_t b = chunk.b0 + item.begin / g.ntr, ty = g.ty0 + item.begin % g.ntr;
      const T* p = P + ((b * Hp + br.m * ty + PAD - br.k / 2) * Wp + PAD - br.k / 2) * cp;
      T* t1 = T1buf + t1_off[size_t(item.branch)] + item.begin * br.alpha * g.wc * cp;
      for (int64_t v = item.v0; v < item.v1; ++v) {
        JSLA_WINO_DISPATCH(br, (column_transform<T, A>(p + v * L, Wp * cp, cp, g.wc, t1 + v * L, g.wc * cp)));
      }
    });

    // ---- C: GEMM tasks, most expensive first.
    items.clear();
    int64_t min_cost = -1;
    for (int64_t i = 0; i < nbr; ++i) {
      const auto& br = branches[size_t(i)];
      const ChunkGeometry& g = geo[size_t(i)];
      if (!br.m) continue;
      const int64_t nsub = ceil_div(g.ntiles, kTaskTiles);
      for (int64_t s = 0; s < nsub; ++s) {
        const int64_t t0 = s * g.ntiles / nsub, t1 = (s + 1) * g.ntiles / nsub;
        for (int64_t r = 0; r < br.alpha; ++r) items.push_back({(t1 - t0) * br.alpha, int32_t(i), int32_t(r), t0, t1, 0, 0});
        min_cost = min_cost < 0 ? (t1 - t0) * br.alpha : std::min(min_cost, (t1 - t0) * br.alpha);
      }
    }
    for (int64_t i = 0; i < nbr; ++i) {
      const auto& br = branches[size_t(i)];
      const ChunkGeometry& g = geo[size_t(i)];
      if (br.m) continue;
      const int64_t target = min_cost > 0 ? std::max<int64_t>(64, min_cost / 2) : 256;
      const int64_t step = round_up(std::max<int64_t>(1, target / br.npts), kMaxRows);
      for (int64_t p0 = 0; p0 < g.npix; p0 += step) {
        const int64_t p1 = std::min(g.npix, p0 + step);
        items.push_back({(p1 - p0) * br.npts, int32_t(i), 0, p0, p1, 0, 0});
      }
    }
    sort_items();
    run_tasks(host, int64_t(items.size()), [&](int64_t it) {
      const Item& task = items[size_t(it)];
      const size_t bi = size_t(task.branch);
      const auto& br = branches[bi];
      const ChunkGeometry& g = geo[bi];
      if (br.m) {
        JSLA_WINO_DISPATCH(br, (winograd_task<T, M, A>(br, cin, cp, g, T1buf + t1_off[bi], Zbuf + z_off[bi],
                                                        task.row, task.begin, task.end)));
        return;
      }
      const T* arow[kMaxRows];
      T* crow[kMaxRows];
      T* db = Dbuf + d_off[bi];
      for (int64_t r0 = task.begin; r0 < task.end;) {
        const int rows = next_rows(task.end - r0);
        for (int r = 0; r < rows; ++r) {
          const int64_t pix = r0 + r, b = chunk.b0 + pix / (g.nrows * W), y = chunk.y0 + (pix / W) % g.nrows;
          arow[r] = P + ((b * Hp + y + PAD - br.k / 2) * Wp + pix % W + PAD - br.k / 2) * cp;
          crow[r] = db + pix * br.ncol;
        }
        gemm_rows<T>(rows, arow, seg_offsets.data() + seg_begin[bi], int(br.npts), cin, br.w, br.ncol,
                     cin * br.ncol, crow);
        r0 += rows;
      }
    });

    // ---- D: output transform along i, bias, LSTM; items (branch, image, rows of one tile row).
    items.clear();
    for (int64_t i = 0; i < nbr; ++i) {
      const auto& br = branches[size_t(i)];
      const ChunkGeometry& g = geo[size_t(i)];
      const int64_t rows_per_item = br.m ? br.m : 2;
      const int64_t nrow_items = br.m ? g.ntr : ceil_div(g.nrows, 2);
      for (int64_t b = 0; b < nimg; ++b)
        for (int64_t r = 0; r < nrow_items; ++r) {
          const int64_t y0 = br.m ? (g.ty0 + r) * br.m : chunk.y0 + 2 * r;
          const int64_t y1 = std::min({H, y0 + rows_per_item, chunk.y1});
          items.push_back({(y1 - y0) * W * (br.m ? br.alpha : 1), int32_t(i), 0, b, r, y0, y1});
        }
    }
    sort_items();
    run_tasks(host, int64_t(items.size()), [&](int64_t it) {
      const Item& item = items[size_t(it)];
      const auto& br = branches[size_t(item.branch)];
      const ChunkGeometry& g = geo[size_t(item.branch)];
      const int64_t b = chunk.b0 + item.begin, ya = item.v0, ny = item.v1 - item.v0;
      const int64_t npad = br.nchunk * 8, ncol = br.ncol, m = br.m ? br.m : 1;
      WorkerScratch& ws = worker_scratch();
      const int64_t rows = std::max<int64_t>(ny, m);
      T* cb = ws.e.template get<T>(size_t(2 * rows * W * npad + m * m * ncol));
      T* hb = cb + rows * W * npad;
      T* yt = hb + rows * W * npad;  // [py][px][ncol]
      // gather c of the rows [ya, ya + ny), channels of the branch: cb[(py*W + x)*npad + j]
      for (int64_t j = 0; j < br.n; ++j) {
        const T* src = c + b * cs.n + (br.hid0 + j) * cs.c + ya * cs.h;
        for (int64_t py = 0; py < ny; ++py)
          for (int64_t xx = 0; xx < W; ++xx) cb[(py * W + xx) * npad + j] = src[py * cs.h + xx * cs.w];
      }
      if (br.m) {
        const int64_t tile_row = (item.begin * g.ntr + item.end) * g.tw;
        for (int64_t tx = 0; tx < g.tw; ++tx) {
          const int64_t nx = std::min<int64_t>(m, W - m * tx);
          const T* z = Zbuf + z_off[size_t(item.branch)] + (tile_row + tx) * br.alpha * m * ncol;
          for (int64_t px = 0; px < m; ++px) {
            JSLA_WINO_DISPATCH(br, (output_axis<T, M, A>(z + px * ncol, M * ncol, ncol, yt + px * ncol, M * ncol)));
          }
          for (int64_t py = 0; py < ny; ++py)
            for (int64_t px = 0; px < nx; ++px)
              for (int64_t ch = 0; ch < br.nchunk; ++ch) {
                const int64_t off = (py * W + m * tx + px) * npad + ch * 8;
                lstm8<T>(yt + (py * m + px) * ncol + ch * 32, br.bias + ch * 32, cb + off, hb + off);
              }
        }
      } else {
        const T* rows0 = Dbuf + d_off[size_t(item.branch)] + (item.begin * g.nrows + (ya - chunk.y0)) * W * ncol;
        for (int64_t p = 0; p < ny * W; ++p)
          for (int64_t ch = 0; ch < br.nchunk; ++ch)
            lstm8<T>(rows0 + p * ncol + ch * 32, br.bias + ch * 32, cb + p * npad + ch * 8, hb + p * npad + ch * 8);
      }
      // scatter h', c'
      for (int64_t j = 0; j < br.n; ++j) {
        T* hd = h_out + b * hos.n + (br.hid0 + j) * hos.c + ya * hos.h;
        T* cd = c_out + b * cos.n + (br.hid0 + j) * cos.c + ya * cos.h;
        for (int64_t py = 0; py < ny; ++py)
          for (int64_t xx = 0; xx < W; ++xx) {
            hd[py * hos.h + xx * hos.w] = hb[(py * W + xx) * npad + j];
            cd[py * cos.h + xx * cos.w] = cb[(py * W + xx) * npad + j];
          }
      }
    });
  }
}

#undef JSLA_WINO_DISPATCH

template class ConvLSTMWeights<float>;
template class ConvLSTMWeights<double>;
template void convlstm_step_forward<float>(const ConvLSTMWeights<float>&, const ConvLSTMShape&, const float*,
                                           Strides4, const float*, Strides4, const float*, Strides4, float*,
                                           Strides4, float*, Strides4, const Host&);
template void convlstm_step_forward<double>(const ConvLSTMWeights<double>&, const ConvLSTMShape&, const double*,
                                            Strides4, const double*, Strides4, const double*, Strides4, double*,
                                            Strides4, double*, Strides4, const Host&);

}  // namespace jsla
