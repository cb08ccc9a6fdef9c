// Unit test of jsla::attention_forward against naive loops in double (A, the k x k 'same' conv
// with zero padding, softmax over positions, O = F * alpha), for float and double, over batch
// 1-3, the model's shapes and odd ones, k = 1..9, slopes 0 / 0.01 / 0.2, NCHW / NHWC / sliced
// and cropped views for the inputs and the output (mixed too), the AVX-512 and the portable
// paths and the strided gather path, with a serial host and with std::thread hosts (a static
// split like at::parallel_for and a dynamic one in grain-sized chunks) to catch chunking races.
// Plain main(): prints the failures and returns nonzero if any.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cpu/attention.h"
#include "cpu/host.h"

namespace jsla {
namespace attention_detail {
// Defined in attention.cpp: attention_forward with a forced path (flags below).
template <typename T>
void attention_forward_path(const AttentionShape& shape, const T* feat, Strides4 feat_strides, const T* eh,
                            Strides4 eh_strides, const T* weight, T bias, T slope, T* out, Strides4 out_strides,
                            T* alpha, const Host& host, int flags);
}  // namespace attention_detail
}  // namespace jsla

namespace {

constexpr int kForcePortable = 1;  // same values as in attention.cpp
constexpr int kForceGeneric = 2;

// A Host whose parallel_for runs on `threads` std::threads: static = at::parallel_for's split
// (min(threads, ceil(n / grain)) contiguous chunks), dynamic = grain-sized chunks handed out
// through an atomic counter (many chunk boundaries, any thread order).
jsla::Host thread_host(int threads, bool dynamic) {
  jsla::Host host = jsla::serial_host();
  host.parallel_for = [threads, dynamic](int64_t n, int64_t grain,
                                         const std::function<void(int64_t, int64_t)>& body) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    if (dynamic) {
      std::atomic<int64_t> next{0};
      auto worker = [&]() {
        for (;;) {
          const int64_t b = next.fetch_add(grain);
          if (b >= n) return;
          body(b, std::min(n, b + grain));
        }
      };
      std::vector<std::thread> pool;
      for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
      worker();
      for (auto& th : pool) th.join();
      return;
    }
    const int64_t tasks = std::min<int64_t>(threads, (n + grain - 1) / grain);
    const int64_t chunk = (n + tasks - 1) / tasks;
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < tasks; ++t) {
      const int64_t b = t * chunk, e = std::min(n, b + chunk);
      if (b < e) pool.emplace_back([&body, b, e]() { body(b, e); });
    }
    body(0, std::min(n, chunk));
    for (auto& th : pool) th.join();
  };
  return host;
}

enum Layout { kNCHW, kNHWC, kNCHWHalfC, kNHWCHalfC, kCropped, kHalfBatch, kNumLayouts };
const char* layout_name(int l) {
  static const char* names[] = {"nchw", "nhwc", "nchw[:, 1::2]", "nhwc[:, 1::2]", "cropped", "batch[1::2]"};
  return names[l];
}

// A [B,C,H,W] view into a buffer of `size` elements: element (n,c,y,x) at off + n*s.n + c*s.c + ...
struct View {
  int64_t size, off;
  jsla::Strides4 s;
  int64_t at(int64_t n, int64_t c, int64_t y, int64_t x) const { return off + n * s.n + c * s.c + y * s.h + x * s.w; }
};

View make_view(int layout, int64_t B, int64_t C, int64_t H, int64_t W) {
  const int64_t HW = H * W;
  switch (layout) {
    case kNCHW: return {B * C * HW, 0, {C * HW, HW, W, 1}};
    case kNHWC: return {B * C * HW, 0, {HW * C, 1, W * C, C}};
    case kNCHWHalfC: return {B * 2 * C * HW, HW, {2 * C * HW, 2 * HW, W, 1}};
    case kNHWCHalfC: return {B * HW * 2 * C, 1, {HW * 2 * C, 2, W * 2 * C, 2 * C}};
    case kCropped: {  // [B, C, H+2, W+3][:, :, 1:1+H, 2:2+W]
      const int64_t h2 = H + 2, w2 = W + 3;
      return {B * C * h2 * w2, w2 + 2, {C * h2 * w2, h2 * w2, w2, 1}};
    }
    default: return {2 * B * C * HW, C * HW, {2 * C * HW, HW, W, 1}};  // every other image of 2B
  }
}

struct Case {
  int64_t B, C, H, W, K;
  double slope;
  int fl, el, ol;  // layouts of F, Eh, O
  int flags;
  int host;  // 0 serial, 1 static 2 threads, 2 dynamic 3 threads
  uint64_t seed;
};

std::string describe(const Case& c, const char* dtype) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s B=%lld C=%lld %lldx%lld k=%lld slope=%g F=%s Eh=%s O=%s flags=%d host=%d seed=%llu",
                dtype, (long long)c.B, (long long)c.C, (long long)c.H, (long long)c.W, (long long)c.K, c.slope,
                layout_name(c.fl), layout_name(c.el), layout_name(c.ol), c.flags, c.host, (unsigned long long)c.seed);
  return buf;
}

int g_failures = 0;
int g_cases = 0;
double g_worst[2] = {0, 0};  // worst relative error seen, float / double

template <typename T>
void run_case(const Case& cs, const std::vector<jsla::Host>& hosts) {
  const char* dtype = sizeof(T) == 4 ? "float" : "double";
  const int64_t B = cs.B, C = cs.C, H = cs.H, W = cs.W, K = cs.K, HW = H * W, r = K / 2;
  std::mt19937_64 rng(cs.seed);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);

  const View fv = make_view(cs.fl, B, C, H, W), ev = make_view(cs.el, B, C, H, W), ov = make_view(cs.ol, B, C, H, W);
  std::vector<T> fbuf(fv.size), ebuf(ev.size);
  for (auto& v : fbuf) v = static_cast<T>(uni(rng));
  for (auto& v : ebuf) v = static_cast<T>(uni(rng));
  // Logits of spread ~1-2 so the softmax is neither flat nor one-hot.
  const double wscale = 2.5 / std::sqrt(static_cast<double>(std::max<int64_t>(1, C) * K * K) / 3.0);
  std::vector<T> weight(C * K * K);
  for (auto& v : weight) v = static_cast<T>(wscale * uni(rng));
  const T bias = static_cast<T>(uni(rng));
  const T slope = static_cast<T>(cs.slope);
  const T sentinel = static_cast<T>(-12345.0);
  std::vector<T> obuf(ov.size, sentinel), alpha(B * HW, sentinel);

  // Naive reference in double, from the values the kernel sees.
  std::vector<double> a_ref(C * HW), l_ref(HW), alpha_ref(B * HW), o_ref(B * C * HW);
  for (int64_t n = 0; n < B; ++n) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          const double s = static_cast<double>(fbuf[fv.at(n, c, y, x)]) + static_cast<double>(ebuf[ev.at(n, c, y, x)]);
          a_ref[(c * H + y) * W + x] = s < 0 ? s * static_cast<double>(slope) : s;
        }
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        double acc = static_cast<double>(bias);
        for (int64_t c = 0; c < C; ++c)
          for (int64_t dy = 0; dy < K; ++dy)
            for (int64_t dx = 0; dx < K; ++dx) {
              const int64_t yy = y + dy - r, xx = x + dx - r;
              if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
              acc += static_cast<double>(weight[(c * K + dy) * K + dx]) * a_ref[(c * H + yy) * W + xx];
            }
        l_ref[y * W + x] = acc;
      }
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    for (int64_t q = 0; q < HW; ++q) m = std::max(m, l_ref[q]);
    for (int64_t q = 0; q < HW; ++q) s += std::exp(l_ref[q] - m);
    for (int64_t q = 0; q < HW; ++q) alpha_ref[n * HW + q] = std::exp(l_ref[q] - m) / s;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x)
          o_ref[((n * C + c) * H + y) * W + x] =
              static_cast<double>(fbuf[fv.at(n, c, y, x)]) * alpha_ref[n * HW + y * W + x];
  }

  const jsla::AttentionShape shape{B, C, H, W, K};
  jsla::attention_detail::attention_forward_path<T>(shape, fbuf.data() + fv.off, fv.s, ebuf.data() + ev.off, ev.s,
                                                    weight.data(), bias, slope, obuf.data() + ov.off, ov.s,
                                                    alpha.data(), hosts[cs.host], cs.flags);

  const double rtol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  double worst = 0;
  int64_t bad = 0;
  std::string first;
  auto check = [&](double got, double ref, const char* what, int64_t i) {
    const double err = std::fabs(got - ref) / std::max(std::fabs(ref), 1e-30);
    if (!(err <= rtol)) {  // also catches NaN
      if (bad++ == 0) {
        char b[160];
        std::snprintf(b, sizeof b, "%s[%lld] = %.17g, reference %.17g", what, (long long)i, got, ref);
        first = b;
      }
    }
    if (err > worst || err != err) worst = err;
  };
  for (int64_t i = 0; i < B * HW; ++i) check(static_cast<double>(alpha[i]), alpha_ref[i], "alpha", i);
  std::vector<char> in_view(ov.size, 0);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          const int64_t at = ov.at(n, c, y, x);
          in_view[at] = 1;
          check(static_cast<double>(obuf[at]), o_ref[((n * C + c) * H + y) * W + x], "O", ((n * C + c) * H + y) * W + x);
        }
  for (int64_t i = 0; i < ov.size; ++i)
    if (!in_view[i] && obuf[i] != sentinel) {
      if (bad++ == 0) first = "wrote outside the output view at buffer element " + std::to_string(i);
    }

  ++g_cases;
  double& gw = g_worst[sizeof(T) == 4 ? 0 : 1];
  gw = std::max(gw, worst);
  if (bad) {
    ++g_failures;
    std::printf("FAIL %s: %lld bad values, worst rel err %.3g; first: %s\n", describe(cs, dtype).c_str(),
                (long long)bad, worst, first.c_str());
  }
}

template <typename T>
void expect_throw_even_kernel(const jsla::Host& host) {
  std::vector<T> buf(64, T(0)), w(16, T(0)), alpha(4);
  const jsla::Strides4 s{16, 4, 2, 1};
  bool threw = false;
  try {
    jsla::attention_forward<T>({1, 1, 2, 2, 4}, buf.data(), s, buf.data(), s, w.data(), T(0), T(0), buf.data(), s,
                               alpha.data(), host);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  ++g_cases;
  if (!threw) {
    ++g_failures;
    std::printf("FAIL: an even kernel size was accepted\n");
  }
}

template <typename T>
void run_all(const std::vector<jsla::Host>& hosts) {
  uint64_t seed = sizeof(T) == 4 ? 1000 : 2000;
  const double slopes[] = {0.0, 0.01, 0.2};
  const int all_flags[] = {0, kForcePortable, kForceGeneric, kForcePortable | kForceGeneric};

  // The model's shapes at batch 1, k = 5: NCHW and NHWC, each thread host, each path.
  const int64_t big[][3] = {{480, 28, 28}, {512, 14, 14}, {832, 14, 14}, {1024, 7, 7}};
  for (const auto& s : big) {
    for (int layout : {kNCHW, kNHWC}) {
      for (int flags : all_flags) {
        const int host = flags == 0 ? (layout == kNCHW ? 1 : 2) : 1;
        run_case<T>({1, s[0], s[1], s[2], 5, 0.01, layout, layout, layout, flags, host, seed++}, hosts);
      }
    }
    // Serial host, mixed layouts, a channel-sliced output.
    run_case<T>({1, s[0], s[1], s[2], 5, 0.2, kNHWC, kNCHW, kNCHWHalfC, 0, 0, seed++}, hosts);
  }
  // Batch > 1 on the model's shapes: blocks straddling images, several waves (the kernel
  // processes ~6 MB of F + Eh per wave: one 480x28x28 image, fifteen 1024x7x7 ones).
  run_case<T>({3, 512, 14, 14, 5, 0.01, kNCHW, kNCHW, kNCHW, 0, 1, seed++}, hosts);
  run_case<T>({2, 832, 14, 14, 5, 0.0, kNHWC, kNHWC, kNHWC, 0, 2, seed++}, hosts);
  run_case<T>({3, 1024, 7, 7, 5, 0.01, kHalfBatch, kNCHW, kNHWCHalfC, 0, 1, seed++}, hosts);
  run_case<T>({3, 480, 28, 28, 5, 0.01, kNCHW, kNCHW, kNCHW, 0, 1, seed++}, hosts);
  run_case<T>({2, 480, 28, 28, 5, 0.2, kNHWC, kNHWC, kNHWC, 0, 2, seed++}, hosts);
  run_case<T>({20, 1024, 7, 7, 5, 0.01, kNCHW, kNCHW, kNCHW, 0, 1, seed++}, hosts);
  run_case<T>({20, 1024, 7, 7, 5, 0.0, kNHWC, kNHWC, kNHWC, 0, 2, seed++}, hosts);

  // Odd shapes: every k, slope, layout, batch, host and path, a few seeds.
  const int64_t odd[][3] = {{13, 5, 7}, {1, 3, 1}, {1, 1, 1}, {13, 1, 1}, {20, 3, 1}, {37, 1, 9},
                            {17, 6, 6}, {24, 2, 11}, {5, 4, 4}, {70, 3, 5}, {33, 9, 2}, {150, 5, 5}};
  const int64_t ks[] = {1, 3, 5, 7, 9};
  std::mt19937 pick(sizeof(T) == 4 ? 7 : 8);  // slope, host and layout mixing per case
  for (const auto& s : odd) {
    for (int64_t k : ks) {
      if (k >= 7 && s[0] > 40) continue;
      for (int b = 1; b <= 3; ++b) {
        for (int layout = 0; layout < kNumLayouts; ++layout) {
          for (int flags : all_flags) {
            const double slope = slopes[pick() % 3];
            const int host = static_cast<int>(pick() % 3);
            // Mostly one layout for all three tensors; one case in three mixes them.
            const bool mix = pick() % 3 == 0;
            const int el = mix ? static_cast<int>(pick() % kNumLayouts) : layout;
            const int ol = mix ? static_cast<int>(pick() % kNumLayouts) : layout;
            run_case<T>({b, s[0], s[1], s[2], k, slope, layout, el, ol, flags, host, seed++}, hosts);
          }
        }
      }
    }
  }
  // Channel counts around the vector width and the packing panel, tails of position blocks.
  for (int64_t C : {7, 8, 9, 15, 16, 17, 31, 33, 127, 128, 129, 255, 257}) {
    for (int layout : {kNCHW, kNHWC, kNHWCHalfC}) {
      for (int flags : {0, kForcePortable}) {
        const int64_t b = 1 + pick() % 3, h = 3 + pick() % 5, w = 5 + pick() % 4;
        run_case<T>({b, C, h, w, 5, slopes[pick() % 3], layout, layout, layout, flags, static_cast<int>(pick() % 3),
                     seed++},
                    hosts);
      }
    }
  }
  expect_throw_even_kernel<T>(hosts[0]);
}

}  // namespace

int main() {
  const std::vector<jsla::Host> hosts = {jsla::serial_host(), thread_host(2, false), thread_host(3, true)};
  run_all<float>(hosts);
  run_all<double>(hosts);
  std::printf("test_attention: %d cases, %d failed; worst relative error float %.3g (tol 1e-5), double %.3g (tol 1e-12)\n",
              g_cases, g_failures, g_worst[0], g_worst[1]);
  return g_failures == 0 ? 0 : 1;
}
