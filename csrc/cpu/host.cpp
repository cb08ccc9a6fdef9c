#include "host.h"

namespace jsla {

namespace {
template <typename T>
void naive_batched_gemm(int64_t batch, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, int64_t stride_a,
                        const T* b, int64_t ldb, int64_t stride_b, T* c, int64_t ldc, int64_t stride_c) {
  for (int64_t i = 0; i < batch; ++i) {
    const T* ai = a + i * stride_a;
    const T* bi = b + i * stride_b;
    T* ci = c + i * stride_c;
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < n; ++j) ci[r * ldc + j] = T(0);
      for (int64_t p = 0; p < k; ++p) {
        const T av = ai[r * lda + p];
        for (int64_t j = 0; j < n; ++j) ci[r * ldc + j] += av * bi[p * ldb + j];
      }
    }
  }
}
}  // namespace

Host serial_host() {
  Host host;
  host.parallel_for = [](int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& body) {
    if (n > 0) body(0, n);
  };
  host.sgemm = naive_batched_gemm<float>;
  host.dgemm = naive_batched_gemm<double>;
  return host;
}

}  // namespace jsla
