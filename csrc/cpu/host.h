// What the torch-free kernels need from their host: a parallel loop and a batched GEMM.
// The torch binding (csrc/torch/cpu.cpp) supplies at::parallel_for and torch's BLAS; the C++ unit
// tests supply serial_host() (plain loops), so the kernels build and test without torch.
#pragma once

#include <cstdint>
#include <functional>

namespace jsla {

// Element strides of a 4-d tensor [n, c, h, w] (any layout: NCHW, NHWC, sliced views).
struct Strides4 {
  int64_t n, c, h, w;
};

// Runs body(begin, end) over disjoint chunks covering [0, n), possibly concurrently; a chunk
// holds at least `grain` items unless n is smaller.
using ParallelFor =
    std::function<void(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body)>;

// C[i] = A[i] @ B[i] for i < batch, row-major, C overwritten:
// A[i] = a + i*stride_a (m x k, leading dim lda), B[i] = b + i*stride_b (k x n, ldb),
// C[i] = c + i*stride_c (m x n, ldc).
template <typename T>
using BatchedGemm = std::function<void(int64_t batch, int64_t m, int64_t n, int64_t k,
                                       const T* a, int64_t lda, int64_t stride_a,
                                       const T* b, int64_t ldb, int64_t stride_b,
                                       T* c, int64_t ldc, int64_t stride_c)>;

struct Host {
  ParallelFor parallel_for;
  BatchedGemm<float> sgemm;
  BatchedGemm<double> dgemm;

  template <typename T>
  const BatchedGemm<T>& gemm() const;
};

template <>
inline const BatchedGemm<float>& Host::gemm<float>() const { return sgemm; }
template <>
inline const BatchedGemm<double>& Host::gemm<double>() const { return dgemm; }

// Serial loops for both: the reference host of the unit tests.
Host serial_host();

}  // namespace jsla
