// Multi-kernel ConvLSTM step: Winograd convolutions fused with the LSTM update (CPU, no torch).
//
// Shapes (convlstm.h): x [B,D,H,W], h, c [B,hid,H,W] with any element strides; branch b has an
// odd kernel k_b and n = hid / branches hidden channels; its weights are [4n, Cin, k, k] with
// Cin = D + hid, gate order i, f, g, o. Outputs h', c' [B,hid,H,W] through their strides.
//
// Algorithm. Each branch is a 'same' convolution of xh = [x, h] computed exactly (up to
// rounding) by Winograd minimal filtering F(m x m, k x k), alpha = m + k - 1 points per axis,
//   Y = A^T [ (G w G^T) (.) (B^T d B) ] A     per m x m output tile and channel pair,
// the sum over the Cin input channels being one GEMM per Winograd point (alpha^2 GEMMs):
//   k = 3: F(2x2,3x3), alpha 4, points 0, +-1, inf              16 products per 4 outputs
//   k = 5: F(4x4,5x5), alpha 8, points 0, +-1, +-2, +-1/2, inf  64 per 16 (F(2x2,5x5): 36 per 4)
//   k = 7: F(2x2,7x7), alpha 8, the same points                 64 per 4
//   k = 1 and k >= 9: direct convolution, the same GEMM over k*k shifted views of the input.
// B^T rows are scaled to small integers (exact in float); G = diag(gamma) x Vandermonde carries
// the fractions and is applied to the weights in double, once (ConvLSTMWeights); A^T is exact.
// 8 points is the most that keeps fp32 within the tolerance: F(2x2,7x7) and F(4x4,5x5) have
// about the same error (~3x a direct convolution's), 9 or 10 points (F(3x3,7x7), F(4x4,7x7))
// were ~20x worse in a simulation. F(4x4,3x3) would be 2% faster here but 15x less accurate.
//
// Layouts. P [B][Hp][Wp][Cp]: xh packed once, channels innermost (Cp = Cin rounded up to one
// 64-byte vector), zero border of max k/2 plus the partial last tile. U [(i,l)][Cin][ncol]: the
// transformed weights; the four gate columns of hidden channel j sit side by side, column
// (j/8)*32 + gate*8 + j%8 (ncol = 96 for n = 24), so the LSTM update reads i, f, g, o of 8
// channels as four 8-lane vectors. Z [tile][i][px][ncol]: Winograd products transformed along one
// axis. No gate tensor [B,4*hid,H,W] is ever written.
//
// One call: (A) pack P; then per chunk (whole images, or bands of rows of one large image, sized
// to keep the Winograd scratch in the caches):
//  (C) GEMM tasks = (branch, first-stage row i, <= 256 tiles): first stage of the input transform
//      (row i of B^T down the rows of each tile row's patches, shared by the overlapping tiles),
//      second stage (all l) per tile, the alpha GEMMs M[t][(i,l)] = V[t][(i,l)][:] @ U[(i,l)],
//      then the output transform along l into Z (V and M are the task's scratch).
//      Direct branches: tasks of pixel rows. The GEMM micro-kernel (ours; host.gemm is not used:
//      MKL through at::bmm ran these small batched shapes at 17-170 GFLOP/s, and A is read
//      through row pointers, so the direct branches need no im2col) keeps 8 rows x 3 zmm = 24
//      accumulators, the 3 B vectors and a broadcast in registers and reaches ~110 GFLOP/s per
//      core (the FMA peak; 4 x 6 blocking is load-bound at ~88). The K = Cin sum is accumulated
//      in blocks of <= 64 channels added in memory, which halves the fp32 rounding of long sums.
//      The next point's U is prefetched during each GEMM (U streams from memory, 12.5 MB).
//  (D) per (branch, tile row): output transform along i, + bias, c' = sig(f) c + sig(i) tanh(g),
//      h' = sig(o) tanh(c') on 8 channels at a time, c read and h', c' written through their
//      strides (AVX-512 gathers / scatters).
// Work split: each phase is one host.parallel_for whose bodies take tasks, largest first, from
// an atomic counter: any thread count, and a machine shared with other work, stay balanced.
// Scratch is cached per thread, so calls do not page-fault.
//
// Cost at the real shape (D=128, hid=96, 14x14, kernels 1,3,5,7), per image:
//   direct convolution 2*196*96*224*(1+9+25+49) = 708 MFLOP; here the GEMMs are
//   2*96*224*(196 + 49*16 + 16*64 + 49*64) = 221 MFLOP (the 4x4 tiles of k=5 cover 16x16), plus
//   ~8 MFLOP of transforms and ~2 MFLOP of LSTM update.
//   Minimum bytes: x, h, c in and h', c' out, 400 KB per image, and the transformed weights,
//   224*96*(1+16+64+64)*4 B = 12.5 MB, once per chunk (once per call at batch 1).
//   Floor on this machine (2 Zen 4 cores, ~110 GFLOP/s fp32 FMA each): 221 MFLOP / 220 GFLOP/s
//   = 1.0 ms per image compute; the weights take 0.45 ms at the measured 28 GB/s when they come
//   from DRAM (overlapped by the prefetch), ~0.1 ms from L3.
// Float accuracy (csrc/tests/test_convlstm.cpp against a double naive loop, inputs in [-1,1]):
// max abs error on h', c' ~3e-6 for k = 5, 7 and 2e-7 for k = 1, 3 at PyTorch's default init,
// ~10x that with 10x larger weights (the error scales with the pre-activations). double: ~1e-13.

#include "convlstm.h"

// Internal helpers pass vectors by value; their ABI does not matter (internal linkage).
#pragma GCC diagnostic ignored "-Wpsabi"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

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

// prefetchnta measured best on Zen 4 for the next U (92 vs 73 GFLOP/s when U streams from DRAM;
// t0/t1 hints thrash L1).
inline void prefetch_next(const char* p) { __builtin_prefetch(p, 0, 0); }

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

// Of the calling thread: packed input, Z, direct-branch outputs.
struct Scratch {
  AlignedBuffer packed, z, direct;
};
Scratch& caller_scratch() {
  static thread_local Scratch s;
  return s;
}
// Of the thread executing a task: first stage, V and M of one GEMM task, epilogue rows.
struct WorkerScratch {
  AlignedBuffer s, v, m, e;
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
    case 3: return 2;  // F(2x2,3x3) (F(4x4,3x3) is 2% faster here but 15x less accurate)
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

// B^T as integer tables, for the first stage of the input transform, which computes one row of
// B^T at a time (a GEMM task needs only its own first-stage row i).
template <int A>
struct BTable;
template <>
struct BTable<4> {
  static constexpr int v[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, -1, 0, 1}};
};
template <>
struct BTable<6> {
  static constexpr int v[6][6] = {{1, 0, -5, 0, 4, 0},  {0, -1, -1, 4, 4, 0}, {0, 1, -1, -4, 4, 0},
                                  {0, 1, 2, -1, -2, 0}, {0, -1, 2, 1, -2, 0}, {0, 1, 0, -5, 0, 4}};
};
template <>
struct BTable<8> {
  static constexpr int v[8][8] = {{4, 0, -21, 0, 21, 0, -4, 0},  {0, -4, -4, 17, 17, -4, -4, 0},
                                  {0, 4, -4, -17, 17, 4, -4, 0},  {0, 2, 1, -10, -5, 8, 4, 0},
                                  {0, -2, 1, 10, -5, -8, 4, 0},   {0, 4, 8, -5, -10, 1, 2, 0},
                                  {0, -4, 8, 5, -10, -1, 2, 0},   {0, -4, 0, 21, 0, -21, 0, 4}};
};

// First stage, row I of B^T, over n contiguous values: t1[j] = sum_a B^T[I][a] p[a*rs + j]
// (p: the patch rows of one tile row, all columns and channels; n a multiple of one vector).
// Meanwhile prefetches pf_lines cache lines from pf, one per vector.
template <typename T, int A, int I>
void first_stage_row(const T* p, int64_t rs, int64_t n, T* t1, const char* pf, int64_t pf_lines) {
  using V = Vz<T>;
  for (int64_t j = 0, line = 0; j < n; j += kLanes<T>, ++line) {
    if (line < pf_lines) prefetch_next(pf + line * 64);
    V acc = V{};
    bool first = true;
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a) {
      constexpr const int(&row)[A] = BTable<A>::v[I];
      if (row[a] == 0) continue;
      const V term = loadv<V>(p + a * rs + j) * T(row[a]);
      acc = first ? term : acc + term;
      first = false;
    }
    storev(t1 + j, acc);
  }
}
template <typename T, int A, int I = 0>
void first_stage(int64_t i, const T* p, int64_t rs, int64_t n, T* t1, const char* pf, int64_t pf_lines) {
  if constexpr (I < A) {
    if (i == I)
      first_stage_row<T, A, I>(p, rs, n, t1, pf, pf_lines);
    else
      first_stage<T, A, I + 1>(i, p, rs, n, t1, pf, pf_lines);
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

// gate: pre-activations of gates i, f, g, o at gate + 0, 8, 16, 24, bias likewise.
template <typename T>
inline void lstm8(const T* gate, const T* bias, const V8<T>& c, V8<T>& c_new, V8<T>& h_new) {
  using V = V8<T>;
  const V gi = loadv<V>(gate) + loadv<V>(bias), gf = loadv<V>(gate + 8) + loadv<V>(bias + 8);
  const V gg = loadv<V>(gate + 16) + loadv<V>(bias + 16), go = loadv<V>(gate + 24) + loadv<V>(bias + 24);
  c_new = sigmoid8(gf) * c + sigmoid8(gi) * tanh8(gg);
  h_new = sigmoid8(go) * tanh8(c_new);
}

// n <= 8 values p[l*stride] (strided tensor channels) to/from the first lanes of a vector;
// AVX-512 gathers/scatters (masked loads/stores for stride 1), plain loops otherwise.
inline bool int32_span(int64_t stride, int lanes) { return std::abs(stride) * lanes < (int64_t(1) << 30); }

template <typename T>
inline V8<T> gather8(const T* p, int64_t stride, int n) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
  const __mmask8 k = __mmask8((1u << n) - 1);
  if (stride == 1) {
    if constexpr (sizeof(T) == 4) return _mm256_maskz_loadu_ps(k, p);
    else return _mm512_maskz_loadu_pd(k, p);
  }
  if (int32_span(stride, 8)) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(stride)));
    if constexpr (sizeof(T) == 4) return _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), k, idx, p, 4);
    else return _mm512_mask_i32gather_pd(_mm512_setzero_pd(), k, idx, p, 8);
  }
#endif
  V8<T> v = {};
  for (int l = 0; l < n; ++l) v[l] = p[l * stride];
  return v;
}

template <typename T>
inline void scatter8(T* p, int64_t stride, int n, const V8<T>& v) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
  const __mmask8 k = __mmask8((1u << n) - 1);
  if (stride == 1) {
    if constexpr (sizeof(T) == 4) _mm256_mask_storeu_ps(p, k, v);
    else _mm512_mask_storeu_pd(p, k, v);
    return;
  }
  if (int32_span(stride, 8)) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(stride)));
    if constexpr (sizeof(T) == 4) _mm256_mask_i32scatter_ps(p, k, idx, v, 4);
    else _mm512_mask_i32scatter_pd(p, k, idx, v, 8);
    return;
  }
#endif
  for (int l = 0; l < n; ++l) p[l * stride] = v[l];
}

// One packed pixel: dst[c] = c < D ? x[c*sx] : c < cin ? h[(c - D)*sh] : 0 for c < cp.
template <typename T>
inline void pack_pixel(const T* x, int64_t sx, int64_t D, const T* h, int64_t sh, int64_t cin, int64_t cp, T* dst) {
#if defined(__AVX512F__)
  if (int32_span(sx, 2 * kLanes<T>) && int32_span(sh, 2 * kLanes<T>)) {
    constexpr int L = kLanes<T>;
    for (int64_t c0 = 0; c0 < cp; c0 += L) {
      // lanes c0 + l < D from x, D <= c0 + l < cin from h (indices relative to x and h)
      const int64_t nx = std::clamp<int64_t>(D - c0, 0, L), nh = std::clamp<int64_t>(cin - c0, 0, L) - nx;
      if constexpr (sizeof(T) == 4) {
        const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        const __mmask16 kx = __mmask16((1u << nx) - 1), kh = __mmask16(((1u << (nx + nh)) - 1) & ~unsigned(kx));
        __m512 v = _mm512_setzero_ps();
        if (kx) v = _mm512_mask_i32gather_ps(v, kx, _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(int(c0))), _mm512_set1_epi32(int(sx))), x, 4);
        if (kh) v = _mm512_mask_i32gather_ps(v, kh, _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(int(c0 - D))), _mm512_set1_epi32(int(sh))), h, 4);
        _mm512_storeu_ps(dst + c0, v);
      } else {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __mmask8 kx = __mmask8((1u << nx) - 1), kh = __mmask8(((1u << (nx + nh)) - 1) & ~unsigned(kx));
        __m512d v = _mm512_setzero_pd();
        if (kx) v = _mm512_mask_i32gather_pd(v, kx, _mm256_mullo_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(int(c0))), _mm256_set1_epi32(int(sx))), x, 8);
        if (kh) v = _mm512_mask_i32gather_pd(v, kh, _mm256_mullo_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(int(c0 - D))), _mm256_set1_epi32(int(sh))), h, 8);
        _mm512_storeu_pd(dst + c0, v);
      }
    }
    return;
  }
#endif
  for (int64_t c = 0; c < cp; ++c) dst[c] = c < D ? x[c * sx] : c < cin ? h[(c - D) * sh] : T(0);
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
      // The k loop, once with the prefetch of one line per step and once without.
#define JSLA_UKERNEL_STEP                                                                  \
  {                                                                                        \
    const T* bk = bs + k * ldb;                                                            \
    V bv[NV];                                                                              \
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) bv[v] = loadv<V>(bk + v * L);    \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                                  \
      const V av = splat_z(ar[r][k]);                                                      \
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(av, bv[v], acc[r][v]); \
    }                                                                                      \
  }
      const int64_t kp = std::min(k1, std::max(k0, pf_lines));
      for (int64_t k = k0; k < kp; ++k) {
        prefetch_next(pf + k * 64);
        JSLA_UKERNEL_STEP
      }
      for (int64_t k = kp; k < k1; ++k) JSLA_UKERNEL_STEP
#undef JSLA_UKERNEL_STEP
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

// Register blocking: up to 8 rows x 3 vectors (48 float columns) = 24 zmm accumulators, with the
// 3 B vectors and one broadcast in registers too. (4 x 6 runs load-bound on Zen 4: its B operands
// are re-read from L1 for every FMA, 24 + 4 loads per 24 FMAs; 8 x 3 needs 3 + 8 and reaches the
// FMA peak, ~110 vs ~88 GFLOP/s per core measured.)
constexpr int kMaxRows = 8;  // R
constexpr int kMaxVecs = 3;  // NV

template <typename T>
using UkernelFn = void (*)(const T* const*, const int64_t*, int, int64_t, int64_t, const T*, int64_t, int64_t,
                           T* const*, const char*, int64_t);

template <typename T, int R>
UkernelFn<T> pick_nv(int nv) {
  switch (nv) {
    case 1: return ukernel<T, R, 1>;
    case 2: return ukernel<T, R, 2>;
    default: return ukernel<T, R, 3>;
  }
}
template <typename T>
UkernelFn<T> pick_ukernel(int rows, int nv) {
  switch (rows) {
    case 1: return pick_nv<T, 1>(nv);
    case 2: return pick_nv<T, 2>(nv);
    case 3: return pick_nv<T, 3>(nv);
    case 4: return pick_nv<T, 4>(nv);
    case 5: return pick_nv<T, 5>(nv);
    case 6: return pick_nv<T, 6>(nv);
    case 7: return pick_nv<T, 7>(nv);
    default: return pick_nv<T, 8>(nv);
  }
}

// n rows in ceil(n/8) blocks of nearly equal size (49 = 7 x 7, 16 = 2 x 8): block b is
// [block_begin(n, b), block_begin(n, b + 1)).
inline int64_t row_blocks(int64_t n) { return ceil_div(n, kMaxRows); }
inline int64_t block_begin(int64_t n, int64_t b) { return b * n / row_blocks(n); }

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
  // The 8 channels' weights of a block of input channels, transposed to [c][s][lane] in double
  // by scalar copies (contiguous reads), then read as vectors.
  constexpr int64_t kCB = 8;
  alignas(64) double gt[kCB * K * K * 8];
  for (int64_t c = 0; c < cin; ++c) {
    if (c % kCB == 0) {
      const int64_t nc = std::min(kCB, cin - c);
      for (int64_t lane = 0; lane < 8; ++lane) {
        const T* src = w + ((gate * n + j0 + std::min(lane, lanes - 1)) * cin + c) * K * K;
        for (int64_t e = 0; e < nc * K * K; ++e) gt[e * 8 + lane] = lane < lanes ? double(src[e]) : 0.0;
      }
    }
    for (int s = 0; s < K * K; ++s) g[s] = loadv<V8<double>>(gt + ((c % kCB) * K * K + s) * 8);
    for (int b = 0; b < K; ++b) apply_g<K, A>(G, g + b, K, t + b, K);       // t[i][b] = sum_a G[i][a] g[a][b]
    for (int i = 0; i < A; ++i) apply_g<K, A>(G, t + i * K, 1, u + i * A, 1);  // u[i][l] = sum_b t[i][b] G[l][b]
    for (int xi = 0; xi < A * A; ++xi) store8<T>(dst + (xi * cin + c) * ncol + col0, u[xi]);
  }
}

template <typename T>
void pack_group_direct(const T* w, int64_t cin, int64_t n, int64_t k, int64_t gate, int64_t j0, T* dst,
                       int64_t ncol) {
  const int64_t lanes = std::min<int64_t>(8, n - j0), col0 = packed_column(gate, j0), kk = k * k;
  for (int64_t lane = 0; lane < 8; ++lane) {  // lanes >= n - j0 are padding: zero
    const T* src = w + (gate * n + j0 + std::min(lane, lanes - 1)) * cin * kk;
    for (int64_t c = 0; c < cin; ++c)
      for (int64_t s = 0; s < kk; ++s) dst[(s * cin + c) * ncol + col0 + lane] = lane < lanes ? src[c * kk + s] : T(0);
  }
}

// Storage of destroyed weight objects, reused by the next ones: training repacks the weights at
// every step, and a fresh 12 MB allocation would page-fault on every one of them. Never
// destroyed (weights may be released during static destruction).
class StoragePool {
 public:
  static StoragePool& instance() {
    static StoragePool* pool = new StoragePool;
    return *pool;
  }
  std::unique_ptr<AlignedBuffer> take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if ((*it)->bytes >= bytes && (best == free_.end() || (*it)->bytes < (*best)->bytes)) best = it;
    if (best == free_.end()) return std::make_unique<AlignedBuffer>();
    auto out = std::move(*best);
    free_.erase(best);
    return out;
  }
  void give(std::unique_ptr<AlignedBuffer> buffer) {
    if (!buffer || !buffer->ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.size() < 2) free_.push_back(std::move(buffer));
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<AlignedBuffer>> free_;
};

}  // namespace

template <typename T>
struct ConvLSTMWeights<T>::Impl {
  int64_t D = 0, hid = 0, cin = 0, cp = 0, pad = 0, max_tile = 1;
  std::vector<int64_t> kernel_sizes;
  std::vector<Branch<T>> branches;
  std::unique_ptr<AlignedBuffer> storage;
  ~Impl() { StoragePool::instance().give(std::move(storage)); }
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
  im.storage = StoragePool::instance().take(total * sizeof(T));
  T* mem = im.storage->template get<T>(total);  // every value is written below
  for (auto& br : im.branches) {
    br.w = mem;
    mem += br.npts * im.cin * br.ncol;
    br.bias = mem;
    mem += br.ncol;
  }
  for (int64_t b = 0; b < nb; ++b) {
    const Branch<T>& br = im.branches[size_t(b)];
    std::fill(br.bias, br.bias + br.ncol, T(0));
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

// Tiles per GEMM task and output pixels per chunk. Larger tasks reuse each U (86 KB, read from
// memory) over more tiles but spill V and M from L2: at batch 40 (14x14) 256 / 1024 measured 13%
// faster than 64 / 256, and equal to 512 / 2048.
constexpr int64_t kTaskTiles = 256;
constexpr int64_t kChunkPixels = 1024;

// Geometry of one branch inside one chunk (images [b0, b1), rows [y0, y1)).
struct ChunkGeometry {
  int64_t tw = 0, ty0 = 0, ntr = 0;  // tiles per tile row, first tile row, tile rows per image
  int64_t ntiles = 0, wc = 0;        // tiles in the chunk, first-stage columns
  int64_t nrows = 0, npix = 0;       // direct: image rows per image, pixels in the chunk
};

// What a GEMM task reads besides its branch.
template <typename T>
struct TaskInput {
  const T* P;
  int64_t Hp, Wp, pad, cp, cin, b0;
};

// One Winograd GEMM task for the first-stage row i and tiles [t0, t1) of the chunk: first stage
// (row i of B^T down the patch rows) for the tile rows involved, second stage (all l) per tile,
// the alpha GEMMs of points (i, l), and the output transform along l into Z[t][i][px][ncol].
template <typename T, int M, int A>
void winograd_task(const TaskInput<T>& in, const Branch<T>& br, const ChunkGeometry& cg, T* zbuf, int64_t i,
                   int64_t t0, int64_t t1) {
  const int64_t nt = t1 - t0, ncol = br.ncol, cp = in.cp, cin = in.cin;
  const int64_t row_a = t0 / cg.tw, nrows = (t1 - 1) / cg.tw - row_a + 1;
  WorkerScratch& ws = worker_scratch();
  T* s1 = ws.s.template get<T>(size_t(nrows * cg.wc * cp));
  T* vi = ws.v.template get<T>(size_t(nt * A * cp));
  T* mi = ws.m.template get<T>(size_t(nt * A * ncol));
  // The first point's U is prefetched during the first stage, the next point's during each GEMM
  // (U of one point is cin*ncol values, 86 KB at the real shape; all of U, 12.5 MB, is read from
  // memory once per chunk).
  const int64_t u_lines = ceil_div(cin * ncol * int64_t(sizeof(T)), 64), nblocks = row_blocks(nt);
  const char* u0 = reinterpret_cast<const char*>(br.w + i * A * cin * ncol);
  const int64_t pf_per_row = ceil_div(u_lines, nrows);
  for (int64_t r = 0; r < nrows; ++r) {
    const int64_t row = row_a + r, b = in.b0 + row / cg.ntr, ty = cg.ty0 + row % cg.ntr;
    const T* p = in.P + ((b * in.Hp + M * ty + in.pad - br.k / 2) * in.Wp + in.pad - br.k / 2) * cp;
    const int64_t first = r * pf_per_row;
    first_stage<T, A>(i, p, in.Wp * cp, cg.wc * cp, s1 + r * cg.wc * cp, u0 + first * 64,
                      std::max<int64_t>(0, std::min(pf_per_row, u_lines - first)));
  }
  for (int64_t tl = 0; tl < nt; ++tl) {
    const int64_t t = t0 + tl, r = t / cg.tw - row_a, tx = t % cg.tw;
    row_transform<T, A>(s1 + (r * cg.wc + M * tx) * cp, cp, vi + tl * A * cp);
  }
  const int64_t seg0 = 0;
  const T* arow[kMaxRows];
  T* crow[kMaxRows];
  const int64_t pf_per_block = ceil_div(u_lines, nblocks);
  for (int64_t l = 0; l < A; ++l) {
    const T* u = br.w + (i * A + l) * cin * ncol;
    const char* next = reinterpret_cast<const char*>(u + cin * ncol);
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t r0 = block_begin(nt, blk);
      const int rows = int(block_begin(nt, blk + 1) - r0);
      for (int r = 0; r < rows; ++r) {
        arow[r] = vi + ((r0 + r) * A + l) * cp;
        crow[r] = mi + ((r0 + r) * A + l) * ncol;
      }
      const int64_t first = blk * pf_per_block, count = l + 1 < A ? std::min(pf_per_block, u_lines - first) : 0;
      gemm_rows<T>(rows, arow, &seg0, 1, cin, u, ncol, 0, crow, next + first * 64, std::max<int64_t>(0, count));
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
    const T* xr = x + b * xs.n + y * xs.h;
    const T* hr = h + b * hs.n + y * hs.h;
    for (int64_t xx = 0; xx < W; ++xx) pack_pixel(xr + xx * xs.w, xs.c, D, hr + xx * hs.w, hs.c, cin, cp, d0 + xx * cp);
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
  std::vector<int64_t> z_off(size_t(nbr), 0), d_off(size_t(nbr), 0);
  size_t z_total = 0, d_total = 0;
  for (int64_t i = 0; i < nbr; ++i) {
    const auto& br = branches[size_t(i)];
    const ChunkGeometry g = geometry(br, {0, max_imgs, 0, max_rows});
    if (br.m) {
      z_off[size_t(i)] = int64_t(z_total);
      z_total += size_t(g.ntiles * br.alpha * br.m * br.ncol);
    } else {
      d_off[size_t(i)] = int64_t(d_total);
      d_total += size_t(g.npix * br.ncol);
    }
  }
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
  auto sort_items = [&] {
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  };

  for (const Chunk& chunk : chunks) {
    const int64_t nimg = chunk.b1 - chunk.b0;
    for (int64_t i = 0; i < nbr; ++i) geo[size_t(i)] = geometry(branches[size_t(i)], chunk);

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
      const int64_t step = std::max<int64_t>(kMaxRows, target / br.npts), ntask = ceil_div(g.npix, step);
      for (int64_t s = 0; s < ntask; ++s) {
        const int64_t p0 = s * g.npix / ntask, p1 = (s + 1) * g.npix / ntask;
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
        const TaskInput<T> in{P, Hp, Wp, PAD, cp, cin, chunk.b0};
        JSLA_WINO_DISPATCH(br, (winograd_task<T, M, A>(in, br, g, Zbuf + z_off[bi], task.row, task.begin, task.end)));
        return;
      }
      const T* arow[kMaxRows];
      T* crow[kMaxRows];
      T* db = Dbuf + d_off[bi];
      const int64_t np = task.end - task.begin;
      for (int64_t blk = 0; blk < row_blocks(np); ++blk) {
        const int64_t r0 = task.begin + block_begin(np, blk);
        const int rows = int(task.begin + block_begin(np, blk + 1) - r0);
        for (int r = 0; r < rows; ++r) {
          const int64_t pix = r0 + r, b = chunk.b0 + pix / (g.nrows * W), y = chunk.y0 + (pix / W) % g.nrows;
          arow[r] = P + ((b * Hp + y + PAD - br.k / 2) * Wp + pix % W + PAD - br.k / 2) * cp;
          crow[r] = db + pix * br.ncol;
        }
        gemm_rows<T>(rows, arow, seg_offsets.data() + seg_begin[bi], int(br.npts), cin, br.w, br.ncol,
                     cin * br.ncol, crow);
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
      const int64_t ncol = br.ncol, m = br.m ? br.m : 1;
      // one pixel: LSTM on its 8-channel chunks, c read and h', c' written through the strides
      const T* cb = c + b * cs.n + br.hid0 * cs.c;
      T* hb = h_out + b * hos.n + br.hid0 * hos.c;
      T* ob = c_out + b * cos.n + br.hid0 * cos.c;
      auto pixel = [&](int64_t y, int64_t xx, const T* gates) {
        for (int64_t ch = 0; ch < br.nchunk; ++ch) {
          const int lanes = int(std::min<int64_t>(8, br.n - ch * 8));
          const V8<T> c_old = gather8(cb + ch * 8 * cs.c + y * cs.h + xx * cs.w, cs.c, lanes);
          V8<T> c_new, h_new;
          lstm8<T>(gates + ch * 32, br.bias + ch * 32, c_old, c_new, h_new);
          scatter8(ob + ch * 8 * cos.c + y * cos.h + xx * cos.w, cos.c, lanes, c_new);
          scatter8(hb + ch * 8 * hos.c + y * hos.h + xx * hos.w, hos.c, lanes, h_new);
        }
      };
      if (br.m) {
        T* yt = worker_scratch().e.template get<T>(size_t(m * m * ncol));  // [py][px][ncol]
        const int64_t tile_row = (item.begin * g.ntr + item.end) * g.tw;
        for (int64_t tx = 0; tx < g.tw; ++tx) {
          const int64_t nx = std::min<int64_t>(m, W - m * tx);
          const T* z = Zbuf + z_off[size_t(item.branch)] + (tile_row + tx) * br.alpha * m * ncol;
          for (int64_t px = 0; px < m; ++px) {
            JSLA_WINO_DISPATCH(br, (output_axis<T, M, A>(z + px * ncol, M * ncol, ncol, yt + px * ncol, M * ncol)));
          }
          for (int64_t py = 0; py < ny; ++py)
            for (int64_t px = 0; px < nx; ++px) pixel(ya + py, m * tx + px, yt + (py * m + px) * ncol);
        }
      } else {
        const T* rows0 = Dbuf + d_off[size_t(item.branch)] + (item.begin * g.nrows + (ya - chunk.y0)) * W * ncol;
        for (int64_t p = 0; p < ny * W; ++p) pixel(ya + p / W, p % W, rows0 + p * ncol);
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
