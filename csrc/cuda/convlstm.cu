// Multi-kernel ConvLSTM step on tensor cores (docs/DESIGN.md, "The fused ops"): torch.ops.jsla.convlstm_step, CUDA.
//
// What it computes (specification: jsla_fast.ops.convlstm_step_reference):
//   xh = [x, h] (D + hid channels, never materialised); branch b (kernel k_b, 'same' padding,
//   hid = count * n) gives gates_b = conv2d(xh, W_b [4n, D+hid, k_b, k_b], bias_b), split into
//   i, f, g, o (n channels each, in that order); hidden channel b*n + j (j < n):
//     c' = sigmoid(f) c + sigmoid(i) tanh(g) ;  h' = sigmoid(o) tanh(c').
//
// Design
//  * Implicit GEMM per branch: M = B*H*W positions (tiles of kBM = 64), N = the four gates of the
//    branch's n hidden channels in one block (4n = 96 for the model; n > 32 is cut into chunks of
//    <= 32 channels, i.e. <= 128 columns), K = (D+hid) * k_b^2 in W_b's own order (channel-major,
//    tap-minor), so each B tile is a contiguous, coalesced slab of W_b rows ([N][K] row-major =
//    a col_major K x N matrix). The A tile [64 x 32] is gathered on the fly from x (channels < D)
//    or h (channels >= D) through their strides; taps outside the image, K and M tails read 0.
//    The N tail (4n -> multiple of 16) is zero in shared memory.
//  * nvcuda::wmma: fp16 / bf16 in, fp32 accumulation (m16n16k16). fp32 inputs run as TF32
//    (m16n16k8, rounded with wmma::__float_to_tf32 when staged to shared memory), like cuDNN's
//    default for convolutions in PyTorch (torch.backends.cudnn.allow_tf32 = True): expect
//    ~1e-3 relative error against an fp32 reference for K ~ 11k (k = 7), not 1e-6.
//  * 256 threads = 8 warps: 4 along M (16 rows each) x 2 along N (16-column tiles t = warp_n +
//    2i, i < 4). One K step = 32; tiles are staged global -> registers -> shared memory, the
//    next step's global loads in flight during the current step's MMAs.
//  * Epilogue: the accumulators go through shared memory (fp32, col-major); the block adds the
//    bias, reads c and writes only h', c' (any strides, stored in the input dtype). The gates
//    never reach memory.
//  * Split-K (convlstm_plan): at small B a single pass is a few blocks per branch, and the k = 7
//    branch has 49x the K of the k = 1 one. Then branch b's K steps are cut into splits_b chunks
//    of about equal size (so splits_b ~ k_b^2), sized for ~3 blocks per SM. A split block writes
//    its fp32 partial tile to the workspace [splits_b][4n][M] (M contiguous: coalesced both
//    ways); a second kernel (one block = 64 positions x 4 gates of one hidden channel) sums the
//    partials in split order (deterministic), adds the bias and runs the same LSTM epilogue.
//    No counters, so no memset: every partial element is written before it is read, and the
//    workspace may hold anything on entry. A branch with splits_b = 1 keeps the fused epilogue.
//  * One launch for all branches: the grid is 1-D over (branch, N chunk, M tile, K split); the
//    per-branch pointers, k, splits and offsets travel in a by-value parameter struct, heaviest
//    blocks first so the long k = 7 blocks start in the first wave.
//  * At most 2 launches per call (GEMM + split-K epilogue), all on `stream`, no allocation, no
//    synchronisation, no host reads of device memory: capturable in a CUDA graph. x, h, c must
//    not overlap h_out, c_out (the op allocates its outputs).
//
// Launch configuration for the model (D=128, hid=96, n=24, k=1,3,5,7, 14x14; 132 SMs: H100, H200):
//  B=1 : M = 196 -> 4 M tiles; K steps 7/63/175/343; plan: splits 2/11/30/58 (6 steps each),
//        GEMM grid 404 x 256 threads (~3 blocks per SM), workspace 7.6 MB of partials;
//        epilogue grid (4, 96) x 256.
//  B=40: M = 7840 -> 123 M tiles x 4 branches = 492 blocks x 256 threads, splits 1 (the single
//        pass fills the GPU), no workspace, one launch.
//
// Cost (jsla_fast.ops.cost.convlstm_cost, fp16): B=1: 0.709 GFLOP, 3.81 MB minimum (3.61 MB of
// it the weights); B=40: 28.3 GFLOP, 11.6 MB. Floors at the measured ceilings of
// jsla_fast.ops.cost.GPU_CEILINGS: B=1 memory 1.27 us, compute 0.89 us on the H100 (0.89 / 0.90 us
// on the H200): memory/latency-bound (weight streaming; the 4 M tiles re-read the weights from
// L2, and split-K adds 2 x 7.6 MB of L2 partial traffic). B=40 compute-bound: 35.5 us on the
// H100, 36.0 us on the H200 at the dense bf16 rate (fp32 runs as TF32, nominally half that rate:
// ~71 us), against 3.9 / 2.7 us of memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>

#include "cuda/kernels.h"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "convlstm.cu needs sm_80+ (bf16 and tf32 wmma)"
#endif

namespace jsla {
namespace cuda {
namespace {

using namespace nvcuda;

constexpr int kBM = 64;          // positions per block (4 warps x 16 rows)
constexpr int kBK = 32;          // K per step (2 k16 or 4 k8 MMA steps)
constexpr int kBNMax = 128;      // columns per block: 4 gates x <= 32 hidden channels
constexpr int kMaxChunk = kBNMax / 4;
constexpr int kThreads = 256;    // 8 warps
constexpr int kARegs = kBM * kBK / kThreads;      // 8 A elements staged per thread
constexpr int kBRegs = kBNMax * kBK / kThreads;   // 16 B elements staged per thread
constexpr int kEpiPositions = 64;                 // split-K epilogue: positions per block (x 4 gates)
// A block's fp32 partial tile (64 x 96 x 4 B) weighs as much as ~4 steps of 16-bit weight tiles:
// shorter chunks would move more partial sums than weights.
constexpr int kMinChunkSteps = 4;
static_assert(kThreads == 4 * kEpiPositions, "epilogue block = positions x 4 gates");
static_assert(kThreads == kBM * 4 && kARegs == 8, "A staging: thread = 1 position x 8 consecutive K");
static_assert(kThreads / 32 * kBRegs == kBNMax, "B staging: warp = 1 column, lane = K");

// ---- dtype traits --------------------------------------------------------------------------
template <typename T>
struct Tc;
template <>
struct Tc<float> {
  using Smem = float;                        // staged already rounded to tf32
  using Frag = wmma::precision::tf32;
  static constexpr int kK = 8;
  static constexpr int kPad = 4;             // ld multiple of 4 for 32-bit wmma loads
  static __device__ __forceinline__ float zero() { return 0.f; }
  static __device__ __forceinline__ float to_smem(float v) { return wmma::__float_to_tf32(v); }
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float v) { return v; }
};
template <>
struct Tc<__half> {
  using Smem = __half;
  using Frag = __half;
  static constexpr int kK = 16;
  static constexpr int kPad = 8;             // ld multiple of 8 (16 B) for 16-bit wmma loads
  static __device__ __forceinline__ __half zero() { return __ushort_as_half(0); }
  static __device__ __forceinline__ __half to_smem(__half v) { return v; }
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};
template <>
struct Tc<__nv_bfloat16> {
  using Smem = __nv_bfloat16;
  using Frag = __nv_bfloat16;
  static constexpr int kK = 16;
  static constexpr int kPad = 8;
  static __device__ __forceinline__ __nv_bfloat16 zero() { return __ushort_as_bfloat16(0); }
  static __device__ __forceinline__ __nv_bfloat16 to_smem(__nv_bfloat16 v) { return v; }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};

// Shared-memory geometry. A: col-major [kBK][kLdA] (position fastest: the gather writes
// consecutive positions, conflict-free); B: [kBNMax][kLdB] (K fastest = W_b's order);
// C (fp32 accumulators, aliasing A/B after the main loop): col-major [kBNMax][kLdC].
// Leading dimensions: multiples of 8 (16-bit) / 4 (fp32) elements as wmma requires, padded so
// ldmatrix rows fall in distinct banks; every fragment pointer is 32-byte aligned.
template <typename T>
struct Layout {
  using S = typename Tc<T>::Smem;
  static constexpr int kLdA = kBM + Tc<T>::kPad;
  static constexpr int kLdB = kBK + Tc<T>::kPad;
  static constexpr int kLdC = kBM + 4;
  static constexpr int kABytes = kBK * kLdA * static_cast<int>(sizeof(S));
  static constexpr int kBBytes = kBNMax * kLdB * static_cast<int>(sizeof(S));
  static constexpr int kCBytes = kBNMax * kLdC * static_cast<int>(sizeof(float));
  static constexpr int kBytes = kABytes + kBBytes > kCBytes ? kABytes + kBBytes : kCBytes;
  static_assert(kABytes % 128 == 0, "B tile must stay 32-byte aligned");
  static_assert((16 * kLdA * sizeof(S)) % 32 == 0 && (16 * kLdB * sizeof(S)) % 32 == 0 &&
                    (16 * kLdC * sizeof(float)) % 32 == 0,
                "wmma fragment pointers must be 32-byte aligned");
};

// ---- kernel parameters (by value) ----------------------------------------------------------
struct BranchArgs {
  const void* w;      // [4n, D+hid, k, k] contiguous = row-major [4n][kb]
  const void* bias;   // [4n]
  int k, kk, kb;      // kernel size, k*k, K = (D+hid)*k*k
  int steps;          // ceil(kb / kBK)
  int splits;         // K chunks (1: fused epilogue)
  int steps_per_split;
  int block_begin;    // first grid block of this branch
  int64_t ws_offset;  // floats: partials [splits][4n][M] when splits > 1
};

struct Args {
  const void* x;
  const void* h;
  const void* c;
  void* h_out;
  void* c_out;
  float* ws;
  Strides4 sx, sh, sc, sho, sco;
  int height, width, hw, m_total;  // M = B*H*W
  int d, hid, ctot, n;             // ctot = D + hid, n = hid / count
  int mtiles, nj, count;           // nj: hidden channels per block (N chunk)
  int order[kMaxBranches];         // grid slot -> branch, heaviest blocks first
  BranchArgs br[kMaxBranches];     // indexed by branch
};

__device__ __forceinline__ float sigmoidf_(float v) { return 1.f / (1.f + __expf(-v)); }

// LSTM update of hidden channel `ch` at flat position `m` (b, y, x), gate pre-activations incl. bias.
template <typename T>
__device__ __forceinline__ void lstm_store(const Args& p, int m, int ch, float gi, float gf, float gg, float go) {
  const int bi = m / p.hw;
  const int r = m - bi * p.hw;
  const int y = r / p.width;
  const int xq = r - y * p.width;
  const T* c = static_cast<const T*>(p.c);
  const float c_prev =
      Tc<T>::to_float(c[bi * p.sc.n + ch * p.sc.c + y * p.sc.h + xq * p.sc.w]);
  const float c_new = sigmoidf_(gf) * c_prev + sigmoidf_(gi) * tanhf(gg);
  const float h_new = sigmoidf_(go) * tanhf(c_new);
  static_cast<T*>(p.c_out)[bi * p.sco.n + ch * p.sco.c + y * p.sco.h + xq * p.sco.w] = Tc<T>::from_float(c_new);
  static_cast<T*>(p.h_out)[bi * p.sho.n + ch * p.sho.c + y * p.sho.h + xq * p.sho.w] = Tc<T>::from_float(h_new);
}

// ---- implicit GEMM + (fused LSTM epilogue | split-K partial store) --------------------------
template <typename T>
__global__ void __launch_bounds__(kThreads, 2) convlstm_gemm_kernel(const Args p) {
  using L = Layout<T>;
  using S = typename L::S;
  constexpr int kLdA = L::kLdA, kLdB = L::kLdB, kLdC = L::kLdC, kMmaK = Tc<T>::kK;
  __shared__ __align__(128) unsigned char smem[L::kBytes];
  __shared__ int64_t s_wrow[kBNMax];  // W_b row offset (oc * kb) of each block column
  S* sa = reinterpret_cast<S*>(smem);
  S* sb = reinterpret_cast<S*>(smem + L::kABytes);
  float* sc = reinterpret_cast<float*>(smem);  // after the main loop only

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;

  // Which branch (slots ordered heaviest first, contiguous block ranges), N chunk, M tile, split.
  int slot = 0;
  for (int s = 1; s < p.count; ++s)
    if (static_cast<int>(blockIdx.x) >= p.br[p.order[s]].block_begin) slot = s;
  const int branch = p.order[slot];
  const BranchArgs& br = p.br[branch];
  const int k = br.k, kk = br.kk, kb = br.kb, splits = br.splits;
  const int local = static_cast<int>(blockIdx.x) - br.block_begin;
  const int split = local % splits;
  const int tile = local / splits;
  const int mtile = tile % p.mtiles;
  const int j0 = (tile / p.mtiles) * p.nj;
  const int nj_blk = min(p.nj, p.n - j0);  // hidden channels of this block
  const int ncols = 4 * nj_blk;            // block column col = gate * nj_blk + jj
  const int nt = (ncols + 15) >> 4;        // 16-wide N tiles
  const int m0 = mtile * kBM;
  const int step_begin = split * br.steps_per_split;
  const int step_end = min(step_begin + br.steps_per_split, br.steps);

  if (tid < ncols) {
    const int g = tid / nj_blk;
    s_wrow[tid] = static_cast<int64_t>(g * p.n + j0 + (tid - g * nj_blk)) * kb;
  }

  // A staging: this thread owns position am and K rows 8*aq .. 8*aq+7 of each step.
  const int am = tid % kBM;
  const int aq = tid / kBM;
  const int mg = m0 + am;
  const bool m_ok = mg < p.m_total;
  int py = 0, px = 0;
  int64_t xoff = 0, hoff = 0;
  if (m_ok) {
    const int bi = mg / p.hw;
    const int r = mg - bi * p.hw;
    py = r / p.width;
    px = r - py * p.width;
    xoff = bi * p.sx.n + py * p.sx.h + px * p.sx.w;
    hoff = bi * p.sh.n + py * p.sh.h + px * p.sh.w;
  }
  const T* __restrict__ xg = static_cast<const T*>(p.x) + xoff;
  const T* __restrict__ hg = static_cast<const T*>(p.h) + hoff;
  const T* __restrict__ wg = static_cast<const T*>(br.w);
  const int pad = k >> 1;
  const int kinv = (65536 + k - 1) / k;  // t / k == (t * kinv) >> 16 for t < k*k <= 961
  const int d = p.d, ctot = p.ctot, height = p.height, width = p.width;

  T ra[kARegs];
  T rb[kBRegs];

  // Gather K = step*32 + 8*aq + i (i < 8) at this thread's position: K = c*k*k + ty*k + tx.
  // c, ty, tx are warp-uniform (aq is), so the carries below do not diverge.
  auto load_a = [&](int step) {
    const int k0 = step * kBK + 8 * aq;
    int c = k0 / kk;
    const int t = k0 - c * kk;
    int ty = (t * kinv) >> 16;
    int tx = t - ty * k;
#pragma unroll
    for (int i = 0; i < kARegs; ++i) {
      const int dy = ty - pad, dx = tx - pad;
      T v = Tc<T>::zero();
      // zero padding of the 'same' conv, K tail (c >= ctot) and M tail read 0
      if (m_ok && c < ctot && static_cast<unsigned>(py + dy) < static_cast<unsigned>(height) &&
          static_cast<unsigned>(px + dx) < static_cast<unsigned>(width)) {
        v = c < d ? __ldg(xg + (c * p.sx.c + dy * p.sx.h + dx * p.sx.w))
                  : __ldg(hg + ((c - d) * p.sh.c + dy * p.sh.h + dx * p.sh.w));
      }
      ra[i] = v;
      if (++tx == k) {
        tx = 0;
        if (++ty == k) {
          ty = 0;
          ++c;
        }
      }
    }
  };
  // Weights: warp w loads columns w, w+8, ...; lane = K within the step (64/128 B coalesced).
  auto load_b = [&](int step) {
    const int kidx = step * kBK + lane;
    const bool k_ok = kidx < kb;
#pragma unroll
    for (int i = 0; i < kBRegs; ++i) {
      const int col = warp + 8 * i;
      T v = Tc<T>::zero();
      if (col < ncols && k_ok) v = __ldg(wg + (s_wrow[col] + kidx));
      rb[i] = v;
    }
  };
  auto store_tiles = [&]() {
#pragma unroll
    for (int i = 0; i < kARegs; ++i) sa[(8 * aq + i) * kLdA + am] = Tc<T>::to_smem(ra[i]);
#pragma unroll
    for (int i = 0; i < kBRegs; ++i) {
      const int col = warp + 8 * i;
      if (col < nt * 16) sb[col * kLdB + lane] = Tc<T>::to_smem(rb[i]);  // N tail: zeros
    }
  };

  const int warp_m = warp & 3;
  const int warp_n = warp >> 2;
  wmma::fragment<wmma::accumulator, 16, 16, kMmaK, float> acc[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) wmma::fill_fragment(acc[i], 0.f);

  __syncthreads();  // s_wrow
  if (step_begin < step_end) {
    load_a(step_begin);
    load_b(step_begin);
  }
  for (int step = step_begin; step < step_end; ++step) {
    store_tiles();
    __syncthreads();
    if (step + 1 < step_end) {  // next tiles in flight during this step's MMAs
      load_a(step + 1);
      load_b(step + 1);
    }
#pragma unroll
    for (int ks = 0; ks < kBK; ks += kMmaK) {
      wmma::fragment<wmma::matrix_a, 16, 16, kMmaK, typename Tc<T>::Frag, wmma::col_major> fa;
      wmma::load_matrix_sync(fa, sa + ks * kLdA + warp_m * 16, kLdA);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int t = warp_n + 2 * i;
        if (t < nt) {
          wmma::fragment<wmma::matrix_b, 16, 16, kMmaK, typename Tc<T>::Frag, wmma::col_major> fb;
          wmma::load_matrix_sync(fb, sb + t * 16 * kLdB + ks, kLdB);
          wmma::mma_sync(acc[i], fa, fb, acc[i]);
        }
      }
    }
    __syncthreads();  // the next store_tiles overwrites A/B
  }

  // Accumulators -> shared memory (aliases A/B: every warp is past the loop's last barrier).
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = warp_n + 2 * i;
    if (t < nt) wmma::store_matrix_sync(sc + t * 16 * kLdC + warp_m * 16, acc[i], kLdC, wmma::mem_col_major);
  }
  __syncthreads();

  if (splits == 1) {
    // Fused epilogue: each (position, hidden channel) once.
    const T* bias = static_cast<const T*>(br.bias);
    for (int idx = tid; idx < nj_blk * kBM; idx += kThreads) {
      const int jj = idx / kBM;
      const int m = idx - jj * kBM;
      if (m0 + m >= p.m_total) continue;
      const int j = j0 + jj;
      const float gi = sc[(0 * nj_blk + jj) * kLdC + m] + Tc<T>::to_float(bias[0 * p.n + j]);
      const float gf = sc[(1 * nj_blk + jj) * kLdC + m] + Tc<T>::to_float(bias[1 * p.n + j]);
      const float gg = sc[(2 * nj_blk + jj) * kLdC + m] + Tc<T>::to_float(bias[2 * p.n + j]);
      const float go = sc[(3 * nj_blk + jj) * kLdC + m] + Tc<T>::to_float(bias[3 * p.n + j]);
      lstm_store<T>(p, m0 + m, branch * p.n + j, gi, gf, gg, go);
    }
  } else {
    // Partial sums of this K chunk: ws[split][oc][M], every valid (oc, position) of the tile.
    float* part = p.ws + br.ws_offset + static_cast<int64_t>(split) * 4 * p.n * p.m_total;
    for (int idx = tid; idx < ncols * kBM; idx += kThreads) {
      const int col = idx / kBM;
      const int m = idx - col * kBM;
      if (m0 + m >= p.m_total) continue;
      const int g = col / nj_blk;
      const int oc = g * p.n + j0 + (col - g * nj_blk);
      part[static_cast<int64_t>(oc) * p.m_total + m0 + m] = sc[col * kLdC + m];
    }
  }
}

// ---- split-K epilogue: block = 64 positions x 4 gates of hidden channel blockIdx.y ----------
template <typename T>
__global__ void __launch_bounds__(kThreads) convlstm_splitk_epilogue_kernel(const Args p) {
  const int ch = blockIdx.y;
  const int branch = ch / p.n;
  const int j = ch - branch * p.n;
  const BranchArgs& br = p.br[branch];
  if (br.splits == 1) return;  // block-uniform: this branch ran the fused epilogue
  __shared__ float gates[4][kEpiPositions];
  const int g = threadIdx.x / kEpiPositions;
  const int ml = threadIdx.x - g * kEpiPositions;
  const int m = blockIdx.x * kEpiPositions + ml;
  if (m < p.m_total) {
    const int64_t stride = static_cast<int64_t>(4) * p.n * p.m_total;
    const float* part = p.ws + br.ws_offset + static_cast<int64_t>(g * p.n + j) * p.m_total + m;
    float s = 0.f;
#pragma unroll 8
    for (int i = 0; i < br.splits; ++i) s += part[i * stride];  // fixed order: deterministic
    gates[g][ml] = s + Tc<T>::to_float(static_cast<const T*>(br.bias)[g * p.n + j]);
  }
  __syncthreads();
  if (g == 0 && m < p.m_total) lstm_store<T>(p, m, ch, gates[0][ml], gates[1][ml], gates[2][ml], gates[3][ml]);
}

// ---- host side -----------------------------------------------------------------------------
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Shape facts shared by the plan and the launcher; ok = false for shapes the kernels do not take.
struct Geometry {
  bool ok = false;
  int64_t m = 0, mtiles = 0, n = 0, nj = 0, jchunks = 0, ctot = 0;
  int64_t steps[kMaxBranches] = {};
};

Geometry geometry(const ConvLSTMShape& s, const ConvLSTMBranches& br) {
  Geometry g;
  constexpr int64_t kIntMax = 0x7fffffff;
  if (br.count < 1 || br.count > kMaxBranches) return g;
  if (s.batch < 1 || s.input_channels < 0 || s.hidden_channels < 1 || s.height < 1 || s.width < 1) return g;
  if (s.hidden_channels % br.count != 0 || s.hidden_channels > 65535) return g;  // grid.y of the epilogue
  if (s.height > kIntMax / s.width || s.batch > (kIntMax - kBM) / (s.height * s.width)) return g;
  g.m = s.batch * s.height * s.width;
  g.mtiles = ceil_div(g.m, kBM);
  g.n = s.hidden_channels / br.count;
  g.ctot = s.input_channels + s.hidden_channels;
  // N chunks of <= 32 hidden channels (128 columns), as even as possible, none empty
  g.jchunks = ceil_div(g.n, kMaxChunk);
  g.nj = ceil_div(g.n, g.jchunks);
  g.jchunks = ceil_div(g.n, g.nj);
  for (int b = 0; b < br.count; ++b) {
    const int64_t k = br.kernel_sizes[b];
    if (k < 1 || k > 31 || k % 2 == 0 || br.weights[b] == nullptr || br.biases[b] == nullptr) return g;
    if (g.ctot * k * k > kIntMax - 2 * kBK) return g;
    g.steps[b] = ceil_div(g.ctot * k * k, kBK);
  }
  if (g.mtiles * g.jchunks * br.count > kIntMax) return g;
  g.ok = true;
  return g;
}

int64_t partial_floats(const Geometry& g, int64_t splits) { return splits * 4 * g.n * g.m; }

template <typename T>
cudaError_t launch(const Args& a, int64_t blocks, bool any_split, cudaStream_t stream) {
  convlstm_gemm_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || !any_split) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div(a.m_total, kEpiPositions)), static_cast<unsigned>(a.hid));
  convlstm_splitk_epilogue_kernel<T><<<grid, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

ConvLSTMPlan convlstm_plan(const ConvLSTMShape& shape, const ConvLSTMBranches& branches, int device) {
  ConvLSTMPlan plan{};
  plan.workspace_bytes = 0;
  for (int b = 0; b < kMaxBranches; ++b) plan.splits[b] = 1;
  const Geometry g = geometry(shape, branches);
  if (!g.ok) return plan;  // convlstm_step_forward reports the bad shape
  const int64_t tiles = g.mtiles * g.jchunks;  // blocks per branch without split
  const int64_t sms = multiprocessor_count(device);
  // Two 256-thread blocks fit per SM: a single pass with >= 2 blocks per SM fills the GPU.
  if (tiles * branches.count >= 2 * sms) return plan;
  // Otherwise cut every branch into chunks of about `chunk` K steps (splits_b ~ k_b^2, equal
  // work per block) so the grid is ~3 blocks per SM.
  int64_t total = 0;
  for (int b = 0; b < branches.count; ++b) total += tiles * g.steps[b];
  const int64_t chunk = std::max<int64_t>(kMinChunkSteps, ceil_div(total, 3 * sms));
  int64_t floats = 0;
  for (int b = 0; b < branches.count; ++b) {
    int64_t s = ceil_div(g.steps[b], chunk);
    s = ceil_div(g.steps[b], ceil_div(g.steps[b], s));  // no empty chunk
    plan.splits[b] = s;
    if (s > 1) floats += partial_floats(g, s);
  }
  plan.workspace_bytes = floats * static_cast<int64_t>(sizeof(float));
  return plan;
}

cudaError_t convlstm_step_forward(const ConvLSTMShape& shape, DType dtype, const ConvLSTMBranches& branches,
                                  const void* x, Strides4 x_strides, const void* h, Strides4 h_strides,
                                  const void* c, Strides4 c_strides, void* h_out, Strides4 h_out_strides,
                                  void* c_out, Strides4 c_out_strides, const ConvLSTMPlan& plan, void* workspace,
                                  cudaStream_t stream) {
  const Geometry g = geometry(shape, branches);
  if (!g.ok || x == nullptr || h == nullptr || c == nullptr || h_out == nullptr || c_out == nullptr)
    return cudaErrorInvalidValue;

  Args a{};
  a.x = x;
  a.h = h;
  a.c = c;
  a.h_out = h_out;
  a.c_out = c_out;
  a.ws = static_cast<float*>(workspace);
  a.sx = x_strides;
  a.sh = h_strides;
  a.sc = c_strides;
  a.sho = h_out_strides;
  a.sco = c_out_strides;
  a.height = static_cast<int>(shape.height);
  a.width = static_cast<int>(shape.width);
  a.hw = static_cast<int>(shape.height * shape.width);
  a.m_total = static_cast<int>(g.m);
  a.d = static_cast<int>(shape.input_channels);
  a.hid = static_cast<int>(shape.hidden_channels);
  a.ctot = static_cast<int>(g.ctot);
  a.n = static_cast<int>(g.n);
  a.mtiles = static_cast<int>(g.mtiles);
  a.nj = static_cast<int>(g.nj);
  a.count = branches.count;

  const int64_t tiles = g.mtiles * g.jchunks;
  int64_t floats = 0;
  bool any_split = false;
  for (int b = 0; b < branches.count; ++b) {
    const int64_t splits = plan.splits[b];
    if (splits < 1 || splits > g.steps[b]) return cudaErrorInvalidValue;
    BranchArgs& br = a.br[b];
    const int k = static_cast<int>(branches.kernel_sizes[b]);
    br.w = branches.weights[b];
    br.bias = branches.biases[b];
    br.k = k;
    br.kk = k * k;
    br.kb = static_cast<int>(g.ctot * k * k);
    br.steps = static_cast<int>(g.steps[b]);
    br.splits = static_cast<int>(splits);
    br.steps_per_split = static_cast<int>(ceil_div(g.steps[b], splits));
    br.ws_offset = floats;
    if (splits > 1) {
      any_split = true;
      floats += partial_floats(g, splits);
    }
    a.order[b] = b;
  }
  if (floats * static_cast<int64_t>(sizeof(float)) > plan.workspace_bytes || (floats > 0 && workspace == nullptr))
    return cudaErrorInvalidValue;
  // Heaviest blocks (most K steps) first: the long ones start in the first wave.
  std::stable_sort(a.order, a.order + branches.count,
                   [&](int l, int r) { return a.br[l].steps_per_split > a.br[r].steps_per_split; });
  int64_t blocks = 0;
  for (int s = 0; s < branches.count; ++s) {
    BranchArgs& br = a.br[a.order[s]];
    br.block_begin = static_cast<int>(blocks);
    blocks += tiles * br.splits;
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  }

  switch (dtype) {
    case DType::kFloat32:
      return launch<float>(a, blocks, any_split, stream);
    case DType::kFloat16:
      return launch<__half>(a, blocks, any_split, stream);
    case DType::kBFloat16:
      return launch<__nv_bfloat16>(a, blocks, any_split, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace jsla
