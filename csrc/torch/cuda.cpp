// CUDA implementations of torch.ops.jsla.*: argument checks, output and workspace allocation
// (torch's caching allocator, so the ops can be captured in a CUDA graph) and the current
// stream, around the torch-free kernels of csrc/cuda. Built only when torch has CUDA and nvcc
// is found (setup.py); elsewhere CMake compiles this file alone as a check.
//
// Only c10/cuda headers here: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers that a
// bare CUDA toolkit may lack.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/kernels.h"
#include "torch/checks.h"

namespace jsla {
namespace {

using at::Tensor;

const OpPlace kCuda{c10::DeviceType::CUDA, {at::kFloat, at::kHalf, at::kBFloat16}, "float32, float16 and bfloat16",
                    "use backend='cpp' for CPU tensors"};

cuda::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return cuda::DType::kFloat16;
    case at::kBFloat16:
      return cuda::DType::kBFloat16;
    default:
      return cuda::DType::kFloat32;
  }
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "jsla::", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

Tensor workspace(int64_t bytes, const Tensor& like) {
  return at::empty({std::max<int64_t>(bytes, 1)}, like.options().dtype(at::kByte));
}

std::tuple<Tensor, Tensor> attention_cuda(const Tensor& feat, const Tensor& eh, const Tensor& weight,
                                          const Tensor& bias, double slope) {
  check_attention(feat, eh, weight, bias, kCuda);
  c10::cuda::CUDAGuard guard(feat.device());
  auto out = at::empty_like(feat);
  auto alpha = at::empty({feat.size(0), 1, feat.size(2), feat.size(3)}, feat.options());
  if (feat.numel() == 0) return {out, alpha};
  // no-ops for the model's weights, which keep the layout the kernels read (SpatialAttention,
  // MultiKernelConvLSTM); another layout is copied here, at every call
  auto w = weight.contiguous();
  auto b = bias.reshape({1}).contiguous();
  AttentionShape shape{feat.size(0), feat.size(1), feat.size(2), feat.size(3), weight.size(2)};
  auto plan = cuda::attention_plan(shape, feat.get_device());
  auto ws = workspace(plan.workspace_bytes, feat);
  check_launch(cuda::attention_forward(shape, kernel_dtype(feat.scalar_type()), feat.const_data_ptr(), strides4(feat),
                                       eh.const_data_ptr(), strides4(eh), w.const_data_ptr(), b.const_data_ptr(),
                                       static_cast<float>(slope), out.mutable_data_ptr(), strides4(out),
                                       alpha.mutable_data_ptr(), plan, ws.mutable_data_ptr(),
                                       c10::cuda::getCurrentCUDAStream(feat.get_device()).stream()),
               "attention");
  return {out, alpha};
}

std::tuple<Tensor, Tensor> convlstm_step_cuda(const Tensor& x, const Tensor& h, const Tensor& c,
                                              at::TensorList weights, at::TensorList biases) {
  check_convlstm(x, h, c, weights, biases, kCuda);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) <= cuda::kMaxBranches, "jsla::convlstm_step: the CUDA kernel takes at most ",
              cuda::kMaxBranches, " branches, got ", weights.size());
  c10::cuda::CUDAGuard guard(x.device());
  auto fmt = h.suggest_memory_format();
  auto h_out = at::empty(h.sizes(), h.options().memory_format(fmt));
  auto c_out = at::empty(h.sizes(), h.options().memory_format(fmt));
  if (h.numel() == 0) return {h_out, c_out};
  std::vector<Tensor> held;  // contiguous weights (the model's already are) live until the launch is queued
  cuda::ConvLSTMBranches branches{};
  branches.count = static_cast<int>(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    held.push_back(weights[i].contiguous());
    branches.weights[i] = held.back().const_data_ptr();
    branches.kernel_sizes[i] = weights[i].size(2);
    held.push_back(biases[i].contiguous());
    branches.biases[i] = held.back().const_data_ptr();
  }
  ConvLSTMShape shape{x.size(0), x.size(1), h.size(1), x.size(2), x.size(3)};
  auto plan = cuda::convlstm_plan(shape, branches, x.get_device());
  auto ws = workspace(plan.workspace_bytes, x);
  check_launch(cuda::convlstm_step_forward(shape, kernel_dtype(x.scalar_type()), branches, x.const_data_ptr(),
                                           strides4(x), h.const_data_ptr(), strides4(h), c.const_data_ptr(),
                                           strides4(c), h_out.mutable_data_ptr(), strides4(h_out),
                                           c_out.mutable_data_ptr(), strides4(c_out), plan, ws.mutable_data_ptr(),
                                           c10::cuda::getCurrentCUDAStream(x.get_device()).stream()),
               "convlstm_step");
  return {h_out, c_out};
}

}  // namespace
}  // namespace jsla

TORCH_LIBRARY_IMPL(jsla, CUDA, m) {
  m.impl("attention", &jsla::attention_cuda);
  m.impl("convlstm_step", &jsla::convlstm_step_cuda);
}
