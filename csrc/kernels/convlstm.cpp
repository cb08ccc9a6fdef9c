// Multi-kernel ConvLSTM step: Winograd F(2x2, k x k) convolutions fused with the LSTM update.
//
// Shapes (convlstm.h): x [B,D,H,W], h, c [B,hid,H,W] (any element strides); branch b has kernel
// k_b (odd) and n = hid / branches hidden channels; its weights are [4n, Cin, k, k] with
// Cin = D + hid, gate order i, f, g, o. Outputs h', c' [B,hid,H,W] through their strides.
//
// Algorithm (one call):
//  A. Pack xh = [x, h] once into P [B][Hp][Wp][Cp], channels innermost (Cp = Cin rounded up to
//     one 64-byte vector), zero padded by PAD = max k/2 on every side plus one extra row/column
//     on the bottom/right (odd H, W end in a partial 2x2 tile).
//  B. Input transform (branches with k = 3, 5, 7): for every 2x2 output tile and channel vector,
//     V = B^T d B over the alpha x alpha input patch (alpha = k + 1), vectorised over 16 (float)
//     channels, written as V[tile][xi][Cp] (xi = one of the alpha^2 Winograd points).
//  C. Winograd-domain GEMMs: for every branch and point xi,
//        M[tile][xi][:] = V[tile][xi][:] @ U[xi]        (tiles x Cin) @ (Cin x 4n)
//     with U = G w G^T prepared once by ConvLSTMWeights (in double, rounded once). Branches with
//     k = 1 or k >= 9 run the direct convolution as the same kind of GEMM with k*k shifted
//     segments of P as A and the raw weights as B (a plain GEMM for k = 1). Our own register-
//     blocked micro-kernel: 4 rows (tiles/pixels) x 96 columns (6 zmm) accumulators, rows
//     broadcast from A, columns loaded from the packed B; the K sum is split in blocks of <= 64
//     channels added in memory (halves the float rounding error of long sums).
//  D. Epilogue per tile: output transform Y = A^T M A (2x2 outputs) of the four gate columns of
//     each hidden channel (packed side by side: column (j/8)*32 + gate*8 + j%8), + bias, then
//     c' = sig(f) c + sig(i) tanh(g), h' = sig(o) tanh(c'); the gate tensor is never written.
// Interpolation points (float error, see below): k=3: 0,+-1,inf; k=5: 0,+-1,+-1/2,inf;
// k=7: 0,+-1,+-2,+-1/2,inf. B^T rows are scaled to small integers (exact in float), G carries
// the fractions (applied in double at packing time), A^T = [1..1 0; p_j 1] is exact.
//
// Work split: every phase is one host.parallel_for over equal-cost items: A over padded image
// rows, B over tiles, C over (branch, xi) GEMM tasks (direct branches split by pixel rows to the
// same cost), D over tile rows. Large batches are processed in chunks of tile rows whose V and M
// scratch (~150 KB per tile at the real shape) fit in the last-level cache; the packed weights
// are streamed once per chunk. Scratch is cached per calling thread (no page faults per call).
// host.gemm is not used: MKL through at::bmm was erratic on these small batched shapes
// (17-170 GFLOP/s), and our kernel reads A rows through pointers, so the direct branches need no
// im2col.
//
// Cost at the real shape (D=128, hid=96, 14x14, kernels 1,3,5,7), per image:
//   direct convolution 2*196*96*224*(1+9+25+49) = 708 MFLOP; here GEMM 2*96*224*(196 + 49*(16+36+64))
//   = 253 MFLOP (+ ~8 MFLOP input transforms, ~2 MFLOP output transforms and LSTM).
//   Minimum bytes: x, h, c in and h', c' out = 400 KB per image, plus the transformed weights
//   224*96*(1+16+36+64)*4 B = 10.1 MB once per call (per chunk for large batches; they live in
//   L3 between calls). Floor on this machine (2 Zen 4 cores, ~195 GFLOP/s fp32 FMA peak):
//   compute bound, 253 MFLOP / 195 GFLOP/s = 1.3 ms per image; the weights add ~0.1 ms from L3.
// Float accuracy (measured by csrc/tests/test_convlstm.cpp against a double naive loop, inputs in
// [-1,1], default PyTorch init): max |err| on h', c' ~1e-6..4e-6 (k=7 worst); with weights 10x the
// init scale the error grows ~10x (Winograd amplifies the fp32 rounding of the K sum).
// double: the same algorithm, ~1e-15.

#include "convlstm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

namespace jsla {

namespace {

// ---------------------------------------------------------------------------------------------
// SIMD: GCC vector extensions (portable; AVX-512 intrinsics for the fused multiply-add).

template <typename T, int N>
struct VecT {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <typename T>
constexpr int kLanes = 64 / int(sizeof(T));       // one zmm
template <typename T>
using Vz = typename VecT<T, kLanes<T>>::type;      // micro-kernel / transform vector (64 bytes)
template <typename T>
using V8 = typename VecT<T, 8>::type;              // epilogue vector: one gate chunk of 8 channels

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
template <typename V, typename T>
inline V splat(T s) {
  V v = {};
  return v + s;
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

// ---------------------------------------------------------------------------------------------
// Scratch memory: 64-byte aligned, grow-only, one set per calling thread.

struct AlignedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(ptr); }
  template <typename T>
  T* get(size_t count) {
    const size_t need = ((count * sizeof(T) + 63) / 64) * 64 + 64;
    if (need > bytes) {
      std::free(ptr);
      ptr = std::aligned_alloc(64, need);
      if (!ptr) throw std::bad_alloc();
      bytes = need;
    }
    return static_cast<T*>(ptr);
  }
};

struct Scratch {
  AlignedBuffer packed, wino_in, wino_out, direct_out;
};
Scratch& thread_scratch() {
  static thread_local Scratch s;
  return s;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------------
// Winograd F(2, k) matrices. B^T (input) and A^T (output) are applied by the hand-written
// transforms below (pairs of points +-p share their even and odd parts); G is applied to the
// weights in double.

// G for k = 3 (points 0, 1, -1, inf), 4 x 3
const double kG3[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
// k = 5 (points 0, 1, -1, 1/2, -1/2, inf), 6 x 5
const double kG5[6][5] = {{1, 0, 0, 0, 0},
                          {1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6},
                          {1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6, 1.0 / 6},
                          {4.0 / 3, 2.0 / 3, 1.0 / 3, 1.0 / 6, 1.0 / 12},
                          {4.0 / 3, -2.0 / 3, 1.0 / 3, -1.0 / 6, 1.0 / 12},
                          {0, 0, 0, 0, 0.25}};
// k = 7 (points 0, 1, -1, 2, -2, 1/2, -1/2, inf), 8 x 7
const double kG7[8][7] = {{0.25, 0, 0, 0, 0, 0, 0},
                          {1.0 / 18, 1.0 / 18, 1.0 / 18, 1.0 / 18, 1.0 / 18, 1.0 / 18, 1.0 / 18},
                          {1.0 / 18, -1.0 / 18, 1.0 / 18, -1.0 / 18, 1.0 / 18, -1.0 / 18, 1.0 / 18},
                          {1.0 / 360, 1.0 / 180, 1.0 / 90, 1.0 / 45, 2.0 / 45, 4.0 / 45, 8.0 / 45},
                          {1.0 / 360, -1.0 / 180, 1.0 / 90, -1.0 / 45, 2.0 / 45, -4.0 / 45, 8.0 / 45},
                          {16.0 / 45, 8.0 / 45, 4.0 / 45, 2.0 / 45, 1.0 / 45, 1.0 / 90, 1.0 / 180},
                          {16.0 / 45, -8.0 / 45, 4.0 / 45, -2.0 / 45, 1.0 / 45, -1.0 / 90, 1.0 / 180},
                          {0, 0, 0, 0, 0, 0, 0.25}};

const double* g_matrix(int k) {
  switch (k) {
    case 3: return &kG3[0][0];
    case 5: return &kG5[0][0];
    case 7: return &kG7[0][0];
    default: return nullptr;
  }
}
bool is_winograd(int64_t k) { return k == 3 || k == 5 || k == 7; }

// 1-D input transform o = B^T d (alpha = K + 1 values).
template <int K, typename V>
struct In1d;

template <typename V>
struct In1d<3, V> {
  static inline void run(const V* d, V* o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[3] - d[1];
  }
};
template <typename V>
struct In1d<5, V> {
  // B^T rows: [1,0,-5,0,4,0] [0,-1,-1,4,4,0] [0,1,-1,-4,4,0] [0,1,2,-1,-2,0] [0,-1,2,1,-2,0]
  //           [0,1,0,-5,0,4]
  static inline void run(const V* d, V* o) {
    o[0] = d[0] + (V{} + 4) * d[4] - (V{} + 5) * d[2];
    const V e1 = (V{} + 4) * d[4] - d[2], o1 = d[1] - (V{} + 4) * d[3];
    o[1] = e1 - o1;
    o[2] = e1 + o1;
    const V e3 = (V{} + 2) * (d[2] - d[4]), o3 = d[1] - d[3];
    o[3] = e3 + o3;
    o[4] = e3 - o3;
    o[5] = d[1] + (V{} + 4) * d[5] - (V{} + 5) * d[3];
  }
};
template <typename V>
struct In1d<7, V> {
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

// 1-D output transform (y0, y1) = A^T m; A^T = [1 ... 1 0 ; p_0 ... p_{a-2} 1].
template <int K, typename V>
struct Out1d;
template <typename V>
struct Out1d<3, V> {
  static inline void run(const V* m, V& y0, V& y1) {
    y0 = m[0] + (m[1] + m[2]);
    y1 = (m[1] - m[2]) + m[3];
  }
};
template <typename V>
struct Out1d<5, V> {
  static inline void run(const V* m, V& y0, V& y1) {
    y0 = m[0] + (m[1] + m[2]) + (m[3] + m[4]);
    y1 = (m[1] - m[2]) + (V{} + 0.5) * (m[3] - m[4]) + m[5];
  }
};
template <typename V>
struct Out1d<7, V> {
  static inline void run(const V* m, V& y0, V& y1) {
    y0 = m[0] + (m[1] + m[2]) + (m[3] + m[4]) + (m[5] + m[6]);
    y1 = (m[1] - m[2]) + (V{} + 2) * (m[3] - m[4]) + (V{} + 0.5) * (m[5] - m[6]) + m[7];
  }
};

// First stage of the 2-D input transform (along the rows of the patch), shared by all tiles of
// a tile row: for every column x < ncols, T1[i][x] = sum_a B^T[i][a] P[row0 + a][x] for one
// channel vector. p: P at (row0, column 0, c0); t1: T1 at (i = 0, x = 0, c0), point stride t1_is.
template <typename T, int K>
inline void column_transform(const T* p, int64_t rs, int64_t cs, int64_t ncols, T* t1, int64_t t1_is) {
  using V = Vz<T>;
  constexpr int A = K + 1;
  for (int64_t x = 0; x < ncols; ++x) {
    V d[A], o[A];
    for (int a = 0; a < A; ++a) d[a] = loadv<V>(p + a * rs + x * cs);
    In1d<K, V>::run(d, o);
    for (int i = 0; i < A; ++i) storev(t1 + i * t1_is + x * cs, o[i]);
  }
}

// Second stage for one tile and one first-stage row i: V[l] = sum_b T1[i][x0 + b] B^T[l][b],
// all channel vectors. t1: T1 at (i, x0, 0) (column stride cp); v: V at (l = 0, 0), point stride cp.
template <typename T, int K>
inline void row_transform(const T* t1, int64_t cp, T* v) {
  using V = Vz<T>;
  constexpr int A = K + 1;
  for (int64_t c0 = 0; c0 < cp; c0 += kLanes<T>) {
    V d[A], o[A];
    for (int b = 0; b < A; ++b) d[b] = loadv<V>(t1 + b * cp + c0);
    In1d<K, V>::run(d, o);
    for (int l = 0; l < A; ++l) storev(v + l * cp + c0, o[l]);
  }
}

// Output transform along one axis for ncol columns: (y0, y1) = A^T m, m[j] at m + j*ms.
template <typename T, int K>
inline void output_axis(const T* m, int64_t ms, int64_t ncol, T* y0, T* y1) {
  using V = Vz<T>;
  constexpr int A = K + 1;
  for (int64_t c0 = 0; c0 < ncol; c0 += kLanes<T>) {
    V col[A], a, b;
    for (int j = 0; j < A; ++j) col[j] = loadv<V>(m + j * ms + c0);
    Out1d<K, V>::run(col, a, b);
    storev(y0 + c0, a);
    storev(y1 + c0, b);
  }
}

// ---------------------------------------------------------------------------------------------
// Element-wise LSTM update on 8 lanes.

inline V8<float> exp_approx(V8<float> x) {
  // exp(x) = 2^n * e^r, n = round(x / ln 2), |r| <= ln2/2, degree-7 Taylor (rel. error < 1e-8).
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

// gates: pre-activations i, f, g, o of 8 hidden channels; c: in c, out c'; h: out h'.
template <typename T>
inline void lstm8(const V8<T>& gi, const V8<T>& gf, const V8<T>& gg, const V8<T>& go, T* c, T* h) {
  const V8<T> c_old = loadv<V8<T>>(c);
  const V8<T> c_new = sigmoid8(gf) * c_old + sigmoid8(gi) * tanh8(gg);
  storev(c, c_new);
  storev(h, sigmoid8(go) * tanh8(c_new));
}

// ---------------------------------------------------------------------------------------------
// GEMM micro-kernel: C[R rows][NV vectors] = sum over segments s and k < K of
//   A[r][seg_off[s] + k] * B[s*seg_bstride + k*ldb + v*L + lane]
// accumulated in registers over K blocks of kb, each block added to C in memory.

template <typename T, int R, int NV>
void ukernel(const T* const* a, const int64_t* seg_off, int nseg, int64_t K, int64_t kb, const T* b, int64_t ldb,
             int64_t seg_bstride, T* const* c) {
  using V = Vz<T>;
  constexpr int L = kLanes<T>;
  bool first = true;
  for (int s = 0; s < nseg; ++s) {
    const T* ar[R];
    for (int r = 0; r < R; ++r) ar[r] = a[r] + seg_off[s];
    const T* bs = b + s * seg_bstride;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
      const int64_t k1 = std::min(K, k0 + kb);
      V acc[R][NV];
#pragma GCC unroll 32
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = V{};
      const T* bk = bs + k0 * ldb;
      for (int64_t k = k0; k < k1; ++k, bk += ldb) {
        V bv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) bv[v] = loadv<V>(bk + v * L);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const V av = splat<V>(ar[r][k]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(av, bv[v], acc[r][v]);
        }
      }
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
                           T* const*);

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

// C rows (pointers c[r], ncol columns) = A rows (pointers a[r]) x B, all column panels.
template <typename T>
void gemm_rows(int rows, const T* const* a, const int64_t* seg_off, int nseg, int64_t K, const T* b, int64_t ncol,
               int64_t seg_bstride, T* const* c) {
  constexpr int L = kLanes<T>;
  const int64_t nblk = (K + 63) / 64;
  const int64_t kb = std::max<int64_t>(1, (K + nblk - 1) / nblk);
  const int64_t nvec = ncol / L;
  for (int64_t v0 = 0; v0 < nvec; v0 += kMaxVecs) {
    const int nv = int(std::min<int64_t>(kMaxVecs, nvec - v0));
    T* cw[kMaxRows];
    for (int r = 0; r < rows; ++r) cw[r] = c[r] + v0 * L;
    pick_ukernel<T>(rows, nv)(a, seg_off, nseg, K, kb, b + v0 * L, ncol, seg_bstride, cw);
  }
}

// ---------------------------------------------------------------------------------------------

template <typename T>
struct Branch {
  int64_t k = 0;
  bool winograd = false;
  int64_t alpha = 0;   // k + 1 (Winograd)
  int64_t npts = 0;    // Winograd points alpha^2, or k*k segments (direct)
  int64_t n = 0;       // hidden channels
  int64_t hid0 = 0;    // first hidden channel
  int64_t hoff = 0;    // first slot in the padded per-pixel epilogue buffer
  int64_t nchunk = 0;  // ceil(n / 8)
  int64_t ncol = 0;    // packed gate columns: nchunk * 32
  T* w = nullptr;      // [npts][Cin][ncol]
  T* bias = nullptr;   // [ncol]
};

int64_t packed_column(int64_t gate, int64_t j) { return (j / 8) * 32 + gate * 8 + (j % 8); }

// G applied to K values in[a*is] of 8 lanes (8 output channels): out[i*os] = sum_a G[i][a] in[a].
// Row 0 and row K are unit vectors (scaled); rows (1,2), (3,4), ... are pairs of points +-p that
// share the even and odd partial sums.
template <int K>
inline void apply_g(const V8<double>* in, int64_t is, V8<double>* out, int64_t os) {
  constexpr int A = K + 1;
  const double* G = g_matrix(K);
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

// Packs the weights of output channels o = gate*n + j, j in [j0, j0 + 8), of one branch (8
// adjacent packed columns): U[xi][c][col] = (G w[o][c] G^T)[xi] in double (Winograd) or
// W[s][c][col] = w[o][c][s] (direct), vectorised over the 8 channels.
template <typename T, int K>
void pack_group(const T* w, int64_t cin, int64_t n, int64_t gate, int64_t j0, T* dst, int64_t ncol) {
  constexpr int A = K + 1;
  const int64_t lanes = std::min<int64_t>(8, n - j0), col0 = packed_column(gate, j0);
  V8<double> g[K * K], t[A * K], u[A * A];
  for (int64_t c = 0; c < cin; ++c) {
    for (int s = 0; s < K * K; ++s) g[s] = V8<double>{};
    for (int64_t lane = 0; lane < lanes; ++lane) {
      const T* src = w + ((gate * n + j0 + lane) * cin + c) * K * K;
      for (int s = 0; s < K * K; ++s) g[s][lane] = double(src[s]);
    }
    for (int b = 0; b < K; ++b) apply_g<K>(g + b, K, t + b, K);      // t[i][b] = sum_a G[i][a] g[a][b]
    for (int i = 0; i < A; ++i) apply_g<K>(t + i * K, 1, u + i * A, 1);  // u[i][l] = sum_b t[i][b] G[l][b]
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


}  // namespace

template <typename T>
struct ConvLSTMWeights<T>::Impl {
  int64_t D = 0, hid = 0, cin = 0, cp = 0, pad = 0, hid_padded = 0;
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
  int64_t hoff = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t k = kernel_sizes[b];
    if (k <= 0 || k % 2 == 0) throw std::invalid_argument("ConvLSTMWeights: kernel sizes must be odd and positive");
    Branch<T> br;
    br.k = k;
    br.winograd = is_winograd(k);
    br.alpha = br.winograd ? k + 1 : 0;
    br.npts = br.winograd ? br.alpha * br.alpha : k * k;
    br.n = n;
    br.hid0 = b * n;
    br.nchunk = (n + 7) / 8;
    br.ncol = br.nchunk * 32;
    br.hoff = hoff;
    hoff += br.nchunk * 8;
    im.pad = std::max(im.pad, k / 2);
    total += size_t(br.npts * im.cin * br.ncol + br.ncol);
    im.branches.push_back(br);
  }
  im.hid_padded = hoff;
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
  // Pack: one task per (branch, gate, chunk of 8 hidden channels), most expensive first.
  struct PackTask {
    int64_t cost, branch, gate, j0;
  };
  std::vector<PackTask> tasks;
  for (int64_t b = 0; b < nb; ++b) {
    const Branch<T>& br = im.branches[size_t(b)];
    const int64_t cost = br.winograd ? br.alpha * br.alpha * br.k : br.k * br.k;
    for (int64_t gate = 0; gate < 4; ++gate)
      for (int64_t j0 = 0; j0 < n; j0 += 8) tasks.push_back({cost, b, gate, j0});
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const PackTask& a, const PackTask& b) { return a.cost > b.cost; });
  run_tasks(host, int64_t(tasks.size()), [&](int64_t ti) {
    const PackTask& task = tasks[size_t(ti)];
    const Branch<T>& br = im.branches[size_t(task.branch)];
    const T* w = weights[size_t(task.branch)];
    switch (br.winograd ? br.k : 0) {
      case 3: pack_group<T, 3>(w, im.cin, n, task.gate, task.j0, br.w, br.ncol); break;
      case 5: pack_group<T, 5>(w, im.cin, n, task.gate, task.j0, br.w, br.ncol); break;
      case 7: pack_group<T, 7>(w, im.cin, n, task.gate, task.j0, br.w, br.ncol); break;
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

// Scratch of the thread executing a task (GEMM operands of one task, epilogue rows).
struct WorkerScratch {
  AlignedBuffer v, m, e;
};
WorkerScratch& worker_scratch() {
  static thread_local WorkerScratch s;
  return s;
}

constexpr int64_t kChunkTiles = 64;  // tiles per GEMM task (and per chunk of a large batch)

struct GemmTask {
  int64_t cost;
  int32_t branch;
  int32_t row;          // Winograd: first-stage row i; direct: unused
  int64_t begin, end;   // Winograd: chunk tiles; direct: chunk pixels
};

// One Winograd GEMM task: second-stage input transform of row i for tiles [t0, t1), the alpha
// GEMMs of the points (i, l), and the output transform along l into Z[t][i][px][ncol].
template <typename T, int K>
void winograd_task(const Branch<T>& br, int64_t cin, int64_t cp, int64_t TW, int64_t wc, const T* t1buf, T* zbuf,
                   int64_t i, int64_t t0, int64_t t1) {
  constexpr int64_t A = K + 1;
  const int64_t nt = t1 - t0, ncol = br.ncol;
  WorkerScratch& ws = worker_scratch();
  T* vi = ws.v.get<T>(size_t(nt * A * cp));
  T* mi = ws.m.get<T>(size_t(nt * A * ncol));
  for (int64_t tl = 0; tl < nt; ++tl) {
    const int64_t t = t0 + tl, gl = t / TW, tx = t % TW;
    row_transform<T, K>(t1buf + ((gl * A + i) * wc + 2 * tx) * cp, cp, vi + tl * A * cp);
  }
  const int64_t seg0 = 0;
  const T* arow[kMaxRows];
  T* crow[kMaxRows];
  for (int64_t l = 0; l < A; ++l) {
    const T* u = br.w + (i * A + l) * cin * ncol;
    for (int64_t r0 = 0; r0 < nt; r0 += kMaxRows) {
      const int rows = int(std::min<int64_t>(kMaxRows, nt - r0));
      for (int r = 0; r < rows; ++r) {
        arow[r] = vi + ((r0 + r) * A + l) * cp;
        crow[r] = mi + ((r0 + r) * A + l) * ncol;
      }
      gemm_rows<T>(rows, arow, &seg0, 1, cin, u, ncol, 0, crow);
    }
  }
  for (int64_t tl = 0; tl < nt; ++tl) {
    T* z = zbuf + ((t0 + tl) * A + i) * 2 * ncol;
    output_axis<T, K>(mi + tl * A * ncol, ncol, ncol, z, z + ncol);
  }
}

template <typename T>
void winograd_task_k(int64_t k, const Branch<T>& br, int64_t cin, int64_t cp, int64_t TW, int64_t wc,
                     const T* t1buf, T* zbuf, int64_t i, int64_t t0, int64_t t1) {
  switch (k) {
    case 3: winograd_task<T, 3>(br, cin, cp, TW, wc, t1buf, zbuf, i, t0, t1); break;
    case 5: winograd_task<T, 5>(br, cin, cp, TW, wc, t1buf, zbuf, i, t0, t1); break;
    default: winograd_task<T, 7>(br, cin, cp, TW, wc, t1buf, zbuf, i, t0, t1); break;
  }
}

template <typename T>
void column_transform_k(int64_t k, const T* p, int64_t rs, int64_t cs, int64_t ncols, T* t1, int64_t t1_is) {
  switch (k) {
    case 3: column_transform<T, 3>(p, rs, cs, ncols, t1, t1_is); break;
    case 5: column_transform<T, 5>(p, rs, cs, ncols, t1, t1_is); break;
    default: column_transform<T, 7>(p, rs, cs, ncols, t1, t1_is); break;
  }
}

template <typename T>
void output_axis_k(int64_t k, const T* m, int64_t ms, int64_t ncol, T* y0, T* y1) {
  switch (k) {
    case 3: output_axis<T, 3>(m, ms, ncol, y0, y1); break;
    case 5: output_axis<T, 5>(m, ms, ncol, y0, y1); break;
    default: output_axis<T, 7>(m, ms, ncol, y0, y1); break;
  }
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
  const int64_t Hp = H + 2 * PAD + 1, Wp = W + 2 * PAD + 1;
  const int64_t TH = (H + 1) / 2, TW = (W + 1) / 2;
  constexpr int64_t L = kLanes<T>;
  const auto& branches = im.branches;
  const int64_t nbr = int64_t(branches.size());

  Scratch& scratch = thread_scratch();
  T* P = scratch.packed.get<T>(size_t(B * Hp * Wp * cp));

  // ---- A: pack [x, h] into P [B][Hp][Wp][cp]. The zero border is rewritten only when the
  // buffer or the geometry changed since this thread's last call.
  PackKey key;
  key.ptr = P;
  key.b = B, key.hp = Hp, key.wp = Wp, key.cp = cp, key.h = H, key.w = W, key.pad = PAD, key.elem = sizeof(T);
  const bool border_ok = last_pack_key() == key;
  last_pack_key() = PackKey();  // invalid until the pack below completes
  host.parallel_for(B * Hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / Hp, yp = row % Hp, y = yp - PAD;
      T* dst = P + row * Wp * cp;
      if (y < 0 || y >= H) {
        if (!border_ok) std::memset(dst, 0, sizeof(T) * size_t(Wp * cp));
        continue;
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
    }
  });
  last_pack_key() = key;

  // ---- chunks of tile rows g = b*TH + ty, about kChunkTiles tiles each.
  const int64_t total_rows = B * TH;
  const int64_t chunk_rows = std::max<int64_t>(1, std::min<int64_t>(total_rows, kChunkTiles / TW));
  const int64_t max_tiles = chunk_rows * TW, max_pixels = chunk_rows * 2 * W;
  std::vector<int64_t> t1_off(size_t(nbr), 0), z_off(size_t(nbr), 0), d_off(size_t(nbr), 0), wcols(size_t(nbr), 0);
  size_t t1_total = 0, z_total = 0, d_total = 0;
  int64_t min_wino_cost = -1;
  for (int64_t i = 0; i < nbr; ++i) {
    const auto& br = branches[size_t(i)];
    if (br.winograd) {
      wcols[size_t(i)] = 2 * TW + br.alpha - 2;
      t1_off[size_t(i)] = int64_t(t1_total);
      t1_total += size_t(chunk_rows * br.alpha * wcols[size_t(i)] * cp);
      z_off[size_t(i)] = int64_t(z_total);
      z_total += size_t(max_tiles * br.alpha * 2 * br.ncol);
    } else {
      d_off[size_t(i)] = int64_t(d_total);
      d_total += size_t(max_pixels * br.ncol);
    }
  }
  T* T1buf = scratch.wino_in.get<T>(t1_total);
  T* Zbuf = scratch.wino_out.get<T>(z_total);
  T* Dbuf = scratch.direct_out.get<T>(d_total);

  std::vector<int64_t> seg_offsets;  // direct branches: the k*k offsets into P
  std::vector<int64_t> seg_begin(size_t(nbr), 0);
  for (int64_t i = 0; i < nbr; ++i) {
    const auto& br = branches[size_t(i)];
    seg_begin[size_t(i)] = int64_t(seg_offsets.size());
    if (!br.winograd)
      for (int64_t dy = 0; dy < br.k; ++dy)
        for (int64_t dx = 0; dx < br.k; ++dx) seg_offsets.push_back((dy * Wp + dx) * cp);
  }
  std::vector<GemmTask> tasks;
  const int64_t ncv = cp / L;                       // channel vectors
  const int64_t cblk = 4, ncblk = (ncv + cblk - 1) / cblk;

  for (int64_t g0 = 0; g0 < total_rows; g0 += chunk_rows) {
    const int64_t g1 = std::min(total_rows, g0 + chunk_rows), nrows = g1 - g0;
    const int64_t ntiles = nrows * TW, npix = nrows * 2 * W;

    // ---- B: first-stage input transforms, items (tile row, block of channel vectors).
    run_tasks(host, nrows * ncblk, [&](int64_t item) {
      const int64_t gl = item / ncblk, cb = item % ncblk, g = g0 + gl, b = g / TH, ty = g % TH;
      for (int64_t i = 0; i < nbr; ++i) {
        const auto& br = branches[size_t(i)];
        if (!br.winograd) continue;
        const int64_t r0 = 2 * ty + PAD - br.k / 2, x0 = PAD - br.k / 2, wc = wcols[size_t(i)];
        for (int64_t v = cb * cblk; v < std::min(ncv, (cb + 1) * cblk); ++v)
          column_transform_k<T>(br.k, P + ((b * Hp + r0) * Wp + x0) * cp + v * L, Wp * cp, cp, wc,
                                T1buf + t1_off[size_t(i)] + gl * br.alpha * wc * cp + v * L, wc * cp);
      }
    });

    // ---- C: GEMM tasks, most expensive first.
    tasks.clear();
    for (int64_t i = 0; i < nbr; ++i) {
      const auto& br = branches[size_t(i)];
      if (!br.winograd) continue;
      const int64_t nsub = (ntiles + kChunkTiles - 1) / kChunkTiles;
      for (int64_t s = 0; s < nsub; ++s) {
        const int64_t t0 = s * ntiles / nsub, t1 = (s + 1) * ntiles / nsub;
        for (int64_t r = 0; r < br.alpha; ++r) {
          tasks.push_back({(t1 - t0) * br.alpha, int32_t(i), int32_t(r), t0, t1});
          min_wino_cost = min_wino_cost < 0 ? tasks.back().cost : std::min(min_wino_cost, tasks.back().cost);
        }
      }
    }
    for (int64_t i = 0; i < nbr; ++i) {
      const auto& br = branches[size_t(i)];
      if (br.winograd) continue;
      const int64_t target = min_wino_cost > 0 ? std::max<int64_t>(64, min_wino_cost / 2) : 256;
      const int64_t step = round_up(std::max<int64_t>(1, target / br.npts), kMaxRows);
      for (int64_t p0 = 0; p0 < npix; p0 += step) {
        const int64_t p1 = std::min(npix, p0 + step);
        tasks.push_back({(p1 - p0) * br.npts, int32_t(i), 0, p0, p1});
      }
    }
    std::stable_sort(tasks.begin(), tasks.end(),
                     [](const GemmTask& a, const GemmTask& b) { return a.cost > b.cost; });
    run_tasks(host, int64_t(tasks.size()), [&](int64_t ti) {
      const GemmTask& task = tasks[size_t(ti)];
      const size_t bi = size_t(task.branch);
      const auto& br = branches[bi];
      if (br.winograd) {
        winograd_task_k<T>(br.k, br, cin, cp, TW, wcols[bi], T1buf + t1_off[bi], Zbuf + z_off[bi], task.row,
                           task.begin, task.end);
        return;
      }
      const T* arow[kMaxRows];
      T* crow[kMaxRows];
      T* db = Dbuf + d_off[bi];
      for (int64_t r0 = task.begin; r0 < task.end; r0 += kMaxRows) {
        const int rows = int(std::min<int64_t>(kMaxRows, task.end - r0));
        for (int r = 0; r < rows; ++r) {
          const int64_t pix = r0 + r, gl = pix / (2 * W), py = (pix / W) % 2, xx = pix % W;
          const int64_t g = g0 + gl, b = g / TH, y = 2 * (g % TH) + py;  // y == H (odd H): zero rows, unused
          arow[r] = P + ((b * Hp + y + PAD - br.k / 2) * Wp + xx + PAD - br.k / 2) * cp;
          crow[r] = db + pix * br.ncol;
        }
        gemm_rows<T>(rows, arow, seg_offsets.data() + seg_begin[bi], int(br.npts), cin, br.w, br.ncol,
                     cin * br.ncol, crow);
      }
    });

    // ---- D: output transform along i + bias + LSTM, items (tile row, branch).
    run_tasks(host, nrows * nbr, [&](int64_t item) {
      const int64_t gl = item / nbr, bi = item % nbr;
      const auto& br = branches[size_t(bi)];
      const int64_t g = g0 + gl, b = g / TH, ty = g % TH, y0 = 2 * ty, ny = std::min<int64_t>(2, H - y0);
      const int64_t npad = br.nchunk * 8, ncol = br.ncol;
      WorkerScratch& ws = worker_scratch();
      T* cb = ws.e.get<T>(size_t(4 * W * npad + 4 * ncol));
      T* hb = cb + 2 * W * npad;
      T* yt = hb + 2 * W * npad;  // [py][px][ncol]
      for (int64_t j = 0; j < br.n; ++j) {
        const T* src = c + b * cs.n + (br.hid0 + j) * cs.c + y0 * cs.h;
        for (int64_t py = 0; py < ny; ++py)
          for (int64_t xx = 0; xx < W; ++xx) cb[(py * W + xx) * npad + j] = src[py * cs.h + xx * cs.w];
      }
      for (int64_t tx = 0; tx < TW; ++tx) {
        const int64_t nx = std::min<int64_t>(2, W - 2 * tx);
        if (br.winograd) {
          const T* z = Zbuf + z_off[size_t(bi)] + (gl * TW + tx) * br.alpha * 2 * ncol;
          for (int64_t px = 0; px < 2; ++px)
            output_axis_k<T>(br.k, z + px * ncol, 2 * ncol, ncol, yt + px * ncol, yt + (2 + px) * ncol);
        } else {
          for (int64_t py = 0; py < ny; ++py)
            for (int64_t px = 0; px < nx; ++px)
              std::memcpy(yt + (py * 2 + px) * ncol,
                          Dbuf + d_off[size_t(bi)] + ((gl * 2 + py) * W + 2 * tx + px) * ncol, sizeof(T) * size_t(ncol));
        }
        for (int64_t py = 0; py < ny; ++py)
          for (int64_t px = 0; px < nx; ++px) {
            const T* gate = yt + (py * 2 + px) * ncol;
            for (int64_t ch = 0; ch < br.nchunk; ++ch) {
              const T* gc = gate + ch * 32;
              const T* bc = br.bias + ch * 32;
              const int64_t off = (py * W + 2 * tx + px) * npad + ch * 8;
              lstm8<T>(loadv<V8<T>>(gc) + loadv<V8<T>>(bc), loadv<V8<T>>(gc + 8) + loadv<V8<T>>(bc + 8),
                       loadv<V8<T>>(gc + 16) + loadv<V8<T>>(bc + 16), loadv<V8<T>>(gc + 24) + loadv<V8<T>>(bc + 24),
                       cb + off, hb + off);
            }
          }
      }
      for (int64_t j = 0; j < br.n; ++j) {
        T* hd = h_out + b * hos.n + (br.hid0 + j) * hos.c + y0 * hos.h;
        T* cd = c_out + b * cos.n + (br.hid0 + j) * cos.c + y0 * cos.h;
        for (int64_t py = 0; py < ny; ++py)
          for (int64_t xx = 0; xx < W; ++xx) {
            hd[py * hos.h + xx * hos.w] = hb[(py * W + xx) * npad + j];
            cd[py * cos.h + xx * cos.w] = cb[(py * W + xx) * npad + j];
          }
      }
    });
  }
}

template class ConvLSTMWeights<float>;
template class ConvLSTMWeights<double>;
template void convlstm_step_forward<float>(const ConvLSTMWeights<float>&, const ConvLSTMShape&, const float*,
                                           Strides4, const float*, Strides4, const float*, Strides4, float*,
                                           Strides4, float*, Strides4, const Host&);
template void convlstm_step_forward<double>(const ConvLSTMWeights<double>&, const ConvLSTMShape&, const double*,
                                            Strides4, const double*, Strides4, const double*, Strides4, double*,
                                            Strides4, double*, Strides4, const Host&);

}  // namespace jsla
