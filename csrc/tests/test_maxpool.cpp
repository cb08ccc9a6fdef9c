// Unit test of jsla::max_pool2d_nhwc against naive loops in double over the clipped window: float,
// double and bfloat16 bits, batch 1-2, the model's pools and odd ones (channels not a multiple of
// 16, 1x1 maps, kernel 1-4, stride 1-3, padding up to half the kernel, outputs sized as torch's
// ceil_mode does), NaNs that must win, the AVX-512 and portable paths, a serial host and a host
// on std::threads. Plain main(): prints the failures and returns nonzero if any.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "cpu/host.h"
#include "cpu/maxpool.h"

namespace jsla {
namespace pool_detail {
template <typename T>
void max_pool2d_nhwc_path(const PoolShape& s, const T* x, T* y, const Host& host, bool portable);
}  // namespace pool_detail
}  // namespace jsla

namespace {

using jsla::PoolShape;

int64_t pooled(int64_t in, int64_t k, int64_t pad, int64_t stride) {  // torch, ceil_mode=True
  int64_t out = (in + 2 * pad - k + stride - 1) / stride + 1;
  if ((out - 1) * stride >= in + pad) --out;
  return out;
}

double as_double(float v) { return v; }
double as_double(double v) { return v; }
double as_double(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
template <typename T>
T from_float(float f) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    return static_cast<uint16_t>(bits >> 16);  // truncation: some bf16 value
  } else {
    return static_cast<T>(f);
  }
}

jsla::Host threaded_host(int threads) {
  jsla::Host h = jsla::serial_host();
  h.parallel_for = [threads](int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& body) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      int64_t b = n * t / threads, e = n * (t + 1) / threads;
      if (b < e) pool.emplace_back([&body, b, e] { body(b, e); });
    }
    for (auto& th : pool) th.join();
  };
  return h;
}

int failures = 0;

template <typename T>
void check(const char* type, int64_t B, int64_t C, int64_t H, int64_t W, int64_t k, int64_t stride, int64_t pad,
           bool nans, bool portable, const jsla::Host& host, std::mt19937& rng) {
  PoolShape s{B, C, H, W, pooled(H, k, pad, stride), pooled(W, k, pad, stride), k, k, stride, stride, pad, pad};
  std::normal_distribution<float> normal;
  std::vector<T> x(B * H * W * C), y(B * s.out_height * s.out_width * C, from_float<T>(7.0f));
  for (auto& v : x) v = from_float<T>(normal(rng));
  if (nans)
    for (int64_t i = 0; i < static_cast<int64_t>(x.size()); i += 37) x[i] = from_float<T>(std::nanf(""));
  jsla::pool_detail::max_pool2d_nhwc_path(s, x.data(), y.data(), host, portable);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < s.out_height; ++oh)
      for (int64_t ow = 0; ow < s.out_width; ++ow)
        for (int64_t c = 0; c < C; ++c) {
          double want = -std::numeric_limits<double>::infinity();
          bool nan = false;
          for (int64_t ih = std::max<int64_t>(oh * stride - pad, 0); ih < std::min(oh * stride - pad + k, H); ++ih)
            for (int64_t iw = std::max<int64_t>(ow * stride - pad, 0); iw < std::min(ow * stride - pad + k, W); ++iw) {
              double v = as_double(x[((n * H + ih) * W + iw) * C + c]);
              nan = nan || std::isnan(v);
              want = std::max(want, v);
            }
          double got = as_double(y[((n * s.out_height + oh) * s.out_width + ow) * C + c]);
          if (nan ? !std::isnan(got) : got != want) {
            if (++failures <= 10)
              std::printf("FAIL %s B%lld C%lld %lldx%lld k%lld s%lld p%lld%s%s at (%lld,%lld,%lld,%lld): got %g want %s%g\n",
                          type, (long long)B, (long long)C, (long long)H, (long long)W, (long long)k, (long long)stride,
                          (long long)pad, nans ? " nans" : "", portable ? " portable" : "", (long long)n, (long long)c,
                          (long long)oh, (long long)ow, got, nan ? "NaN, not " : "", want);
            return;
          }
        }
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  const jsla::Host hosts[] = {jsla::serial_host(), threaded_host(3)};
  struct Case { int64_t C, H, W, k, stride, pad; };
  const Case cases[] = {
      {64, 112, 112, 3, 2, 0}, {192, 28, 28, 3, 1, 1}, {832, 14, 14, 3, 2, 0}, {832, 7, 7, 3, 1, 1},  // the model's
      {832, 14, 14, 2, 2, 0}, {17, 9, 11, 3, 2, 1}, {5, 1, 1, 3, 1, 1}, {33, 8, 5, 4, 3, 2}, {3, 6, 7, 1, 1, 0},
      {16, 5, 5, 3, 3, 0}, {31, 4, 9, 2, 1, 1},
  };
  int runs = 0;
  for (const auto& host : hosts)
    for (const auto& c : cases)
      for (int64_t B : {1, 2})
        for (bool nans : {false, true})
          for (bool portable : {false, true}) {
            if (c.H * c.W * c.C * B > 300000 && (B > 1 || portable)) continue;  // the big one once per path
            check<float>("float", B, c.C, c.H, c.W, c.k, c.stride, c.pad, nans, portable, host, rng);
            check<double>("double", B, c.C, c.H, c.W, c.k, c.stride, c.pad, nans, portable, host, rng);
            check<uint16_t>("bf16", B, c.C, c.H, c.W, c.k, c.stride, c.pad, nans, portable, host, rng);
            runs += 3;
          }
  std::printf("test_maxpool: %d runs, %d failures\n", runs, failures);
  return failures ? 1 : 0;
}
