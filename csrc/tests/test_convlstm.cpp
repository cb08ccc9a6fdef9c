// Unit test of jsla::convlstm_step_forward (csrc/cpu/convlstm.cpp) against a naive loop in
// double: direct 'same' convolution with zero padding per branch, gates i, f, g, o per branch,
// then the LSTM update. Covers the real shape (D=128, hid=96, kernels 1,3,5,7, 14x14, batch 1-3),
// odd grids and channel counts, a single branch, kernel 9 (direct path), a large grid (processed
// in bands of rows) and a batch of small images (several chunks), NCHW / NHWC / strided views for
// every tensor, the default PyTorch conv init scale and 10x that, float and double,
// jsla::serial_host() and a 2-thread std::thread host.
//
// Tolerances (max abs error on h' and c'):
//   double: 1e-10.
//   float, default init scale (uniform +-1/sqrt(fan_in)): 1e-5 (measured max ~3e-6, k = 5, 7).
//   float, weights 10x the default scale: 1e-4 (= 1e-5 x scale). The pre-activations are 10x
//     larger and so is the fp32 rounding of the Winograd K sums (F(4x4,5x5), F(2x2,7x7) amplify it
//     ~3x over a direct convolution); measured max ~4e-5. The maxima are printed per kernel size.
#include <algorithm>
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

#include "cpu/convlstm.h"

namespace {

int g_failures = 0;

jsla::Host threaded_host() {
  jsla::Host host = jsla::serial_host();
  host.parallel_for = [](int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    if (n <= grain) {
      body(0, n);
      return;
    }
    const int64_t mid = (n + 1) / 2;
    std::thread worker([&] { body(mid, n); });
    body(0, mid);
    worker.join();
  };
  return host;
}

enum class Layout { NCHW, NHWC, View };
const char* layout_name(Layout l) { return l == Layout::NCHW ? "nchw" : l == Layout::NHWC ? "nhwc" : "view"; }

// A 4-d tensor [n, c, h, w] living inside a (possibly larger) storage.
template <typename T>
struct Tensor4 {
  std::vector<T> storage;
  int64_t offset = 0;
  jsla::Strides4 st{};
  int64_t n = 0, c = 0, h = 0, w = 0;
  Tensor4(int64_t n_, int64_t c_, int64_t h_, int64_t w_, Layout layout, T fill) : n(n_), c(c_), h(h_), w(w_) {
    switch (layout) {
      case Layout::NCHW:
        st = {c * h * w, h * w, w, 1};
        storage.assign(size_t(n * c * h * w), fill);
        break;
      case Layout::NHWC:
        st = {h * w * c, 1, w * c, c};
        storage.assign(size_t(n * c * h * w), fill);
        break;
      case Layout::View: {
        // a slice [1:n+1, 2:c+2, 1:h+1, 0:2w:2] of an NCHW tensor [n+1, c+3, h+2, 2w+1]
        const int64_t W2 = 2 * w + 1, H2 = h + 2, C2 = c + 3;
        st = {C2 * H2 * W2, H2 * W2, W2, 2};
        offset = st.n + 2 * st.c + st.h;
        storage.assign(size_t((n + 1) * C2 * H2 * W2), fill);
        break;
      }
    }
  }
  int64_t index(int64_t i, int64_t j, int64_t y, int64_t x) const {
    return offset + i * st.n + j * st.c + y * st.h + x * st.w;
  }
  T& at(int64_t i, int64_t j, int64_t y, int64_t x) { return storage[size_t(index(i, j, y, x))]; }
  T* data() { return storage.data() + offset; }
};

struct Case {
  std::string name;
  int64_t B, D, hid, H, W;
  std::vector<int64_t> ks;
  double wscale;
};

// Data in double; every value is representable in float (the float kernel sees the same inputs).
struct Data {
  std::vector<double> x, h, c;                 // [B][C][H][W] contiguous
  std::vector<std::vector<double>> w, b;       // per branch
  std::vector<double> h_ref, c_ref;            // [B][hid][H][W]
};

double to_float_exact(double v) { return double(float(v)); }

Data make_data(const Case& cs, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  Data d;
  const int64_t cin = cs.D + cs.hid, hw = cs.H * cs.W, n = cs.hid / int64_t(cs.ks.size());
  auto fill = [&](std::vector<double>& v, size_t count, double scale) {
    v.resize(count);
    for (auto& e : v) e = to_float_exact(u(rng) * scale);
  };
  fill(d.x, size_t(cs.B * cs.D * hw), 1.0);
  fill(d.h, size_t(cs.B * cs.hid * hw), 1.0);
  fill(d.c, size_t(cs.B * cs.hid * hw), 1.0);
  for (int64_t k : cs.ks) {
    const double bound = cs.wscale / std::sqrt(double(cin * k * k));
    d.w.emplace_back();
    d.b.emplace_back();
    fill(d.w.back(), size_t(4 * n * cin * k * k), bound);
    fill(d.b.back(), size_t(4 * n), bound);
  }
  // naive reference
  d.h_ref.assign(size_t(cs.B * cs.hid * hw), 0.0);
  d.c_ref.assign(size_t(cs.B * cs.hid * hw), 0.0);
  auto xh = [&](int64_t b, int64_t ch, int64_t y, int64_t x) {
    return ch < cs.D ? d.x[size_t(((b * cs.D + ch) * cs.H + y) * cs.W + x)]
                     : d.h[size_t(((b * cs.hid + ch - cs.D) * cs.H + y) * cs.W + x)];
  };
  auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  std::vector<double> gates(size_t(4 * n));
  for (int64_t b = 0; b < cs.B; ++b)
    for (size_t br = 0; br < cs.ks.size(); ++br) {
      const int64_t k = cs.ks[br], p = k / 2;
      const std::vector<double>& w = d.w[br];
      for (int64_t y = 0; y < cs.H; ++y)
        for (int64_t x = 0; x < cs.W; ++x) {
          for (int64_t o = 0; o < 4 * n; ++o) {
            double acc = d.b[br][size_t(o)];
            for (int64_t ch = 0; ch < cin; ++ch)
              for (int64_t dy = 0; dy < k; ++dy) {
                const int64_t yy = y + dy - p;
                if (yy < 0 || yy >= cs.H) continue;
                for (int64_t dx = 0; dx < k; ++dx) {
                  const int64_t xx = x + dx - p;
                  if (xx < 0 || xx >= cs.W) continue;
                  acc += w[size_t(((o * cin + ch) * k + dy) * k + dx)] * xh(b, ch, yy, xx);
                }
              }
            gates[size_t(o)] = acc;
          }
          for (int64_t j = 0; j < n; ++j) {
            const int64_t hj = int64_t(br) * n + j;
            const size_t idx = size_t(((b * cs.hid + hj) * cs.H + y) * cs.W + x);
            const double gi = gates[size_t(j)], gf = gates[size_t(n + j)], gg = gates[size_t(2 * n + j)],
                         go = gates[size_t(3 * n + j)];
            const double cn = sig(gf) * d.c[idx] + sig(gi) * std::tanh(gg);
            d.c_ref[idx] = cn;
            d.h_ref[idx] = sig(go) * std::tanh(cn);
          }
        }
    }
  return d;
}

template <typename T>
std::vector<double> run_variant(const Case& cs, const Data& d, Layout lx, Layout lh, Layout lc, Layout lo,
                                const jsla::Host& host, const char* host_name) {
  const int64_t cin = cs.D + cs.hid;
  (void)cin;
  std::vector<std::vector<T>> wt, bt;
  std::vector<const T*> wp, bp;
  for (size_t i = 0; i < cs.ks.size(); ++i) {
    wt.emplace_back(d.w[i].begin(), d.w[i].end());
    bt.emplace_back(d.b[i].begin(), d.b[i].end());
  }
  for (size_t i = 0; i < cs.ks.size(); ++i) {
    wp.push_back(wt[i].data());
    bp.push_back(bt[i].data());
  }
  jsla::ConvLSTMWeights<T> weights(cs.D, cs.hid, cs.ks, wp, bp, host);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  Tensor4<T> x(cs.B, cs.D, cs.H, cs.W, lx, nan), h(cs.B, cs.hid, cs.H, cs.W, lh, nan),
      c(cs.B, cs.hid, cs.H, cs.W, lc, nan), ho(cs.B, cs.hid, cs.H, cs.W, lo, nan),
      co(cs.B, cs.hid, cs.H, cs.W, lo == Layout::View ? Layout::NHWC : lo, nan);
  for (int64_t b = 0; b < cs.B; ++b)
    for (int64_t y = 0; y < cs.H; ++y)
      for (int64_t xx = 0; xx < cs.W; ++xx) {
        for (int64_t ch = 0; ch < cs.D; ++ch) x.at(b, ch, y, xx) = T(d.x[size_t(((b * cs.D + ch) * cs.H + y) * cs.W + xx)]);
        for (int64_t ch = 0; ch < cs.hid; ++ch) {
          const size_t idx = size_t(((b * cs.hid + ch) * cs.H + y) * cs.W + xx);
          h.at(b, ch, y, xx) = T(d.h[idx]);
          c.at(b, ch, y, xx) = T(d.c[idx]);
        }
      }
  const jsla::ConvLSTMShape shape{cs.B, cs.D, cs.hid, cs.H, cs.W};
  // Twice: the second call reuses the cached scratch.
  for (int rep = 0; rep < 2; ++rep)
    jsla::convlstm_step_forward<T>(weights, shape, x.data(), x.st, h.data(), h.st, c.data(), c.st, ho.data(), ho.st,
                                   co.data(), co.st, host);
  // Per-branch max error on h' and c'; untouched storage outside the views must stay NaN.
  const int64_t n = cs.hid / int64_t(cs.ks.size());
  std::vector<double> err(cs.ks.size(), 0.0);
  bool bad = false;
  for (int64_t b = 0; b < cs.B; ++b)
    for (int64_t ch = 0; ch < cs.hid; ++ch)
      for (int64_t y = 0; y < cs.H; ++y)
        for (int64_t xx = 0; xx < cs.W; ++xx) {
          const size_t idx = size_t(((b * cs.hid + ch) * cs.H + y) * cs.W + xx);
          const double eh = std::fabs(double(ho.at(b, ch, y, xx)) - d.h_ref[idx]);
          const double ec = std::fabs(double(co.at(b, ch, y, xx)) - d.c_ref[idx]);
          if (!(eh == eh) || !(ec == ec)) bad = true;
          double& e = err[size_t(ch / n)];
          e = std::max(e, std::max(eh, ec));
          ho.at(b, ch, y, xx) = nan;  // mark as checked
          co.at(b, ch, y, xx) = nan;
        }
  size_t written_outside = 0;
  for (const T v : ho.storage) written_outside += !(v != v);
  for (const T v : co.storage) written_outside += !(v != v);
  const double tol = sizeof(T) == 8 ? 1e-10 : 1e-5 * std::max(1.0, cs.wscale);
  double worst = 0;
  for (double e : err) worst = std::max(worst, e);
  const bool ok = !bad && written_outside == 0 && worst <= tol;
  std::printf("%-5s %-34s %-6s x:%s h:%s c:%s out:%s  max err", ok ? "ok" : "FAIL", cs.name.c_str(),
              sizeof(T) == 8 ? "double" : "float", layout_name(lx), layout_name(lh), layout_name(lc),
              layout_name(lo));
  for (size_t i = 0; i < err.size(); ++i) std::printf(" k%lld:%.2e", (long long)cs.ks[i], err[i]);
  std::printf("  [%s]%s%s\n", host_name, bad ? " NaN in output" : "",
              written_outside ? " wrote outside the output view" : "");
  if (!ok) ++g_failures;
  return err;
}

void check_mismatch_throws() {
  const jsla::Host host = jsla::serial_host();
  std::vector<float> w(4 * 2 * 7 * 9, 0.01f), b(8, 0.0f);
  jsla::ConvLSTMWeights<float> weights(5, 2, {3}, {w.data()}, {b.data()}, host);
  std::vector<float> buf(5 * 4 * 4, 0.0f);
  bool threw = false;
  try {
    jsla::convlstm_step_forward<float>(weights, {1, 4, 2, 4, 4}, buf.data(), {80, 16, 4, 1}, buf.data(),
                                       {32, 16, 4, 1}, buf.data(), {32, 16, 4, 1}, buf.data(), {32, 16, 4, 1},
                                       buf.data(), {32, 16, 4, 1}, host);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  bool threw_even = false;
  try {
    jsla::ConvLSTMWeights<float> even(5, 2, {2}, {w.data()}, {b.data()}, host);
  } catch (const std::invalid_argument&) {
    threw_even = true;
  }
  std::printf("%-5s shape mismatch / even kernel rejected\n", threw && threw_even ? "ok" : "FAIL");
  if (!(threw && threw_even)) ++g_failures;
}

}  // namespace

int main() {
  const jsla::Host serial = jsla::serial_host();
  const jsla::Host threads = threaded_host();
  std::vector<Case> cases;
  for (double s : {1.0, 10.0}) {
    const std::string tag = s == 1.0 ? "" : " w x10";
    cases.push_back({"real B=1 14x14" + tag, 1, 128, 96, 14, 14, {1, 3, 5, 7}, s});
    cases.push_back({"real B=3 14x14" + tag, 3, 128, 96, 14, 14, {1, 3, 5, 7}, s});
    cases.push_back({"real B=2 5x7" + tag, 2, 128, 96, 5, 7, {1, 3, 5, 7}, s});
    cases.push_back({"D5 hid6 {1,3} 5x7" + tag, 2, 5, 6, 5, 7, {1, 3}, s});
    cases.push_back({"D5 hid6 {3,5,7} 3x2" + tag, 3, 5, 6, 3, 2, {3, 5, 7}, s});
    cases.push_back({"D5 hid6 {3,5,7} 1x1" + tag, 2, 5, 6, 1, 1, {3, 5, 7}, s});
    cases.push_back({"D5 hid6 {7} 5x7" + tag, 1, 5, 6, 5, 7, {7}, s});
    cases.push_back({"D7 hid4 {9,1} 5x7" + tag, 2, 7, 4, 5, 7, {9, 1}, s});
    cases.push_back({"D3 hid20 {5,9} 6x9" + tag, 1, 3, 20, 6, 9, {5, 9}, s});
    cases.push_back({"D0 hid17 {1} 4x3" + tag, 2, 0, 17, 4, 3, {1}, s});
    // a large grid is processed in bands of rows; small images in chunks of several images
    cases.push_back({"D5 hid8 {3,5,7,1} 45x37" + tag, 1, 5, 8, 45, 37, {3, 5, 7, 1}, s});
    cases.push_back({"D4 hid6 {1,5,7} B=30 7x6" + tag, 30, 4, 6, 7, 6, {1, 5, 7}, s});
  }
  const Layout layouts[3] = {Layout::NCHW, Layout::NHWC, Layout::View};
  std::vector<int64_t> ksizes;
  std::vector<double> worst_f1, worst_f10, worst_d;  // by kernel size index
  auto record = [&](std::vector<double>& dst, const Case& cs, const std::vector<double>& err) {
    for (size_t i = 0; i < cs.ks.size(); ++i) {
      auto it = std::find(ksizes.begin(), ksizes.end(), cs.ks[i]);
      size_t pos = size_t(it - ksizes.begin());
      if (it == ksizes.end()) {
        ksizes.push_back(cs.ks[i]);
        worst_f1.push_back(0);
        worst_f10.push_back(0);
        worst_d.push_back(0);
      }
      dst[pos] = std::max(dst[pos], err[i]);
    }
  };
  uint64_t seed = 1;
  for (const Case& cs : cases) {
    const Data d = make_data(cs, seed++);
    for (int v = 0; v < 3; ++v) {
      const Layout lx = layouts[v], lh = layouts[(v + 1) % 3], lc = layouts[(v + 2) % 3], lo = layouts[(v + 2) % 3];
      const jsla::Host& host = v == 1 ? serial : threads;
      const char* hn = v == 1 ? "serial" : "2 threads";
      auto ef = run_variant<float>(cs, d, lx, lh, lc, lo, host, hn);
      record(cs.wscale == 1.0 ? worst_f1 : worst_f10, cs, ef);
      auto ed = run_variant<double>(cs, d, lx, lh, lc, lo, v == 1 ? threads : serial, v == 1 ? "2 threads" : "serial");
      record(worst_d, cs, ed);
    }
  }
  check_mismatch_throws();
  std::printf("\nmax abs error on h', c' by kernel size (float init scale | float 10x scale | double):\n");
  for (size_t i = 0; i < ksizes.size(); ++i)
    std::printf("  k=%lld: %.2e | %.2e | %.2e\n", (long long)ksizes[i], worst_f1[i], worst_f10[i], worst_d[i]);
  if (g_failures) {
    std::printf("%d check(s) FAILED\n", g_failures);
    return 1;
  }
  std::printf("all checks passed\n");
  return 0;
}
