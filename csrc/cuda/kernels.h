// CUDA kernels behind torch.ops.jsla.* on the CUDA dispatch key (docs/DESIGN.md, "The fused
// ops"). Torch-free: nvcc compiles csrc/cuda/*.cu with only the CUDA toolkit (CMake builds them
// for JSLA_FAST_CUDA_ARCHS, sm_80 and sm_90 by default, on machines without a GPU);
// csrc/torch/cuda.cpp binds them to torch.
//
// Conventions shared by every entry point here:
// - dtype: fp32, fp16 or bf16 for every tensor argument of one call; arithmetic in fp32.
// - tensors are device pointers with element strides (Strides4: any 4-d layout, NCHW or
//   channels_last, sliced views); weights and biases are contiguous.
// - `workspace` is device memory of at least the plan's workspace_bytes (the caller allocates it
//   with its caching allocator, so calls can be captured in a CUDA graph); its contents on entry
//   are irrelevant.
// - every launch goes to `stream`; nothing synchronises the device or allocates, so a call can
//   be captured in a CUDA graph. The return value is the first CUDA error (cudaSuccess if none);
//   the caller turns it into an exception.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cpu/attention.h"  // AttentionShape, Strides4
#include "cpu/convlstm.h"   // ConvLSTMShape

namespace jsla {
namespace cuda {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Multiprocessors of `device` (cached per device), for sizing grids.
int multiprocessor_count(int device);

// -- fused attention (≤ 2 kernel launches) ---------------------------------------------------
struct AttentionPlan {
  int64_t splits;           // channel splits of the logit pass
  int64_t workspace_bytes;  // fp32 partial logits [B, splits, h*w]
};
AttentionPlan attention_plan(const AttentionShape& shape, int device);

// feat, eh: [B,C,h,w]; weight: [C,k,k] contiguous; bias: [1] (device memory, so no host sync);
// out: [B,C,h,w]; alpha: [B,h,w] contiguous.
cudaError_t attention_forward(const AttentionShape& shape, DType dtype, const void* feat, Strides4 feat_strides,
                              const void* eh, Strides4 eh_strides, const void* weight, const void* bias, float slope,
                              void* out, Strides4 out_strides, void* alpha, const AttentionPlan& plan,
                              void* workspace, cudaStream_t stream);

// -- multi-kernel ConvLSTM step (implicit GEMM, gates in registers, LSTM epilogue) ----------
constexpr int kMaxBranches = 8;

struct ConvLSTMBranches {
  int count;                              // branches, 1..kMaxBranches; hid = count * n
  int64_t kernel_sizes[kMaxBranches];     // odd k_b
  const void* weights[kMaxBranches];      // [4n, D+hid, k_b, k_b] contiguous, gate order i, f, g, o
  const void* biases[kMaxBranches];       // [4n] contiguous
};

struct ConvLSTMPlan {
  int64_t workspace_bytes;  // split-K partial sums and tile counters (0 when no split is needed)
  int64_t splits[kMaxBranches];  // K chunks per branch (1 = no split)
};
ConvLSTMPlan convlstm_plan(const ConvLSTMShape& shape, const ConvLSTMBranches& branches, int device);

// x: [B,D,H,W]; h, c: [B,hid,H,W]; h_out, c_out: [B,hid,H,W], each through its strides.
cudaError_t convlstm_step_forward(const ConvLSTMShape& shape, DType dtype, const ConvLSTMBranches& branches,
                                  const void* x, Strides4 x_strides, const void* h, Strides4 h_strides,
                                  const void* c, Strides4 c_strides, void* h_out, Strides4 h_out_strides,
                                  void* c_out, Strides4 c_out_strides, const ConvLSTMPlan& plan, void* workspace,
                                  cudaStream_t stream);

}  // namespace cuda
}  // namespace jsla
